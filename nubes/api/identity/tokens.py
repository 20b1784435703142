"""Issuing, validating and revoking tokens (the catalog they carry is
:mod:`nubes.api.identity.catalog`'s).

A token is 32 random bytes (URL-safe text); the database keeps its SHA-256
with the user, project, roles (a snapshot, with the implied ones) and
expiry. Validation is one primary-key read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from nubes import exception
from nubes.api.identity import catalog, passwords
from nubes.api.state import ApiState
from nubes.api.views import keystone_time
from nubes.context import RequestContext
from nubes.db.api import identity
from nubes.db.api import roles as roles_db
from nubes.db.types import utcnow

DEFAULT_DOMAIN = {"id": "default", "name": "Default"}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _domain(conn: Any, ref: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The enabled domain ``ref`` names by id or name (both must agree when
    both are given); the default domain when there is no ref, as the
    openstack CLI and Keystone's own clients name one whenever they use
    names. None when there is no such enabled domain."""
    if not ref:
        ref = {"id": identity.DEFAULT_DOMAIN_ID}
    key = ref.get("id") or ref.get("name")
    if not isinstance(key, str) or not key:
        return None
    try:
        domain = await identity.domain_get(conn, key)
    except exception.NotFound:
        return None
    if "id" in ref and domain["id"] != ref["id"]:
        return None
    if "name" in ref and domain["name"] != ref["name"]:
        return None
    return domain if domain["enabled"] else None


async def _find_user(conn: Any, ref: Mapping[str, Any]) -> dict[str, Any] | None:
    """The enabled user ``ref`` names: by id (in the domain given, if one is),
    or by name inside the domain given (names are unique per domain)."""
    domain = await _domain(conn, ref.get("domain"))
    if domain is None:
        return None
    if "id" in ref:
        user = await identity.user_get_by_id(conn, ref["id"])
        if user is not None and ref.get("domain") and user["domain_id"] != domain["id"]:
            return None
    elif "name" in ref:
        user = await identity.user_get_by_name(conn, ref["name"], domain_id=domain["id"])
    else:
        return None
    if user is None or not user["enabled"]:
        return None
    # A user of a disabled domain cannot log in (Keystone's rule).
    if await _domain(conn, {"id": user["domain_id"]}) is None:
        return None
    return user


async def _scoped_project(conn: Any, ref: Mapping[str, Any]) -> dict[str, Any]:
    """The project a scope names: by id, or by name inside its domain; 401 otherwise."""
    project = None
    if isinstance(ref.get("id"), str):
        project = await identity.project_get_by_id(conn, ref["id"])
    elif isinstance(ref.get("name"), str):
        domain = await _domain(conn, ref.get("domain"))
        if domain is not None:
            project = await identity.project_get_by_name(conn, ref["name"], domain_id=domain["id"])
    if project is None or not project["enabled"]:
        raise exception.NotAuthenticated()
    if await _domain(conn, {"id": project["domain_id"]}) is None:
        raise exception.NotAuthenticated()
    return project


async def authenticate(state: ApiState, auth: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Password, token (rescoping) or application-credential auth (a
    validated body's ``auth``), with an optional project, domain or system
    scope; a password login without one is scoped to the user's default
    project when it holds a role there (Keystone's rule).

    Returns the token text and the token body. Any failure is a plain 401:
    it never says whether the user exists.
    """
    ident = auth["identity"]
    if "application_credential" in ident["methods"] and "application_credential" in ident:
        return await _authenticate_app_cred(state, ident["application_credential"])
    expires: dt.datetime | None = None
    if "token" in ident["methods"] and isinstance(ident.get("token"), Mapping):
        user, methods, expires = await _rescoping(state, ident["token"])
    elif "password" in ident["methods"] and "password" in ident:
        user = await _password_user(state, ident["password"]["user"])
        methods = ["password"]
    else:
        raise exception.NotAuthenticated()
    scope = auth.get("scope")
    # ``"scope": "unscoped"`` asks for an unscoped token even with a default project.
    asked_unscoped = scope == "unscoped"
    if not isinstance(scope, Mapping):
        scope = {}
    project = domain = None
    system = None
    role_rows: list[dict[str, Any]] = []
    async with state.db.reader() as conn:
        if "project" in scope:
            project = await _scoped_project(conn, scope["project"])
            role_rows = await roles_db.roles_for(conn, user["id"], project["id"])
            if not role_rows:
                raise exception.NotAuthenticated()
        elif (
            not scope
            and not asked_unscoped
            and methods == ["password"]
            and user["default_project_id"]
        ):
            # No scope asked: the default project, if the user may work in it
            # (else an unscoped token, as Keystone).
            try:
                project = await _scoped_project(conn, {"id": user["default_project_id"]})
                role_rows = await roles_db.roles_for(conn, user["id"], project["id"])
            except exception.NotAuthenticated:
                project = None
            if not role_rows:
                project = None
        elif "domain" in scope:
            domain = await _domain(conn, scope["domain"])
            if domain is not None:
                role_rows = await roles_db.roles_on_domain(conn, user["id"], domain["id"])
            if domain is None or not role_rows:
                raise exception.NotAuthenticated()
        elif "system" in scope:
            wanted = scope["system"]
            if not isinstance(wanted, Mapping) or wanted.get("all") is not True:
                raise exception.NotAuthenticated()
            system = identity.SYSTEM
            role_rows = await roles_db.roles_on_system(conn, user["id"])
            if not role_rows:
                raise exception.NotAuthenticated()
    return await _issue(
        state,
        user,
        project,
        role_rows,
        methods,
        domain=domain,
        system=system,
        expires=expires,
    )


async def _password_user(state: ApiState, user_ref: Mapping[str, Any]) -> dict[str, Any]:
    """The user a password login names, its password checked; 401 otherwise."""
    async with state.db.reader() as conn:
        user = await _find_user(conn, user_ref)
    if user is None:
        # Same work as a real check, so timing does not reveal unknown names.
        await passwords.verify_password_async(_DUMMY_HASH, user_ref.get("password", ""))
        raise exception.NotAuthenticated()
    if not await passwords.verify_password_async(user["password_hash"], user_ref["password"]):
        raise exception.NotAuthenticated()
    return user


async def _rescoping(
    state: ApiState, ref: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str], dt.datetime]:
    """Keystone's ``token`` method: a live token stands for its user. The new
    token ends when the old one does and adds ``token`` to its methods. An
    application credential's token is bound to its project and cannot be
    rescoped (Keystone's rule)."""
    text = ref.get("id")
    if not isinstance(text, str) or not text:
        raise exception.NotAuthenticated()
    row = await validate(state, text)
    if row["application_credential_id"]:
        raise exception.NotAuthenticated()
    async with state.db.reader() as conn:
        user = await identity.user_get_by_id(conn, row["user_id"])
    if user is None:
        raise exception.NotAuthenticated()
    methods = list(row["methods"] or ["password"])
    if "token" not in methods:
        methods.append("token")
    return user, methods, row["expires_at"]


async def _authenticate_app_cred(
    state: ApiState, ref: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """A token for the credential's project with the roles it was given that
    the user still holds there; 401 for anything wrong or expired."""
    secret = ref.get("secret")
    if not isinstance(secret, str) or not secret:
        raise exception.NotAuthenticated()
    async with state.db.reader() as conn:
        cred = None
        if isinstance(ref.get("id"), str):
            cred = await identity.app_cred_get(conn, ref["id"])
        elif isinstance(ref.get("name"), str) and isinstance(ref.get("user"), Mapping):
            owner = await _find_user(conn, ref["user"])
            if owner is not None:
                cred = await identity.app_cred_get_by_name(conn, owner["id"], ref["name"])
        user = await identity.user_get_by_id(conn, cred["user_id"]) if cred else None
        project = await identity.project_get(conn, cred["project_id"]) if cred else None
        held = await roles_db.roles_for(conn, user["id"], project["id"]) if user and project else []
    if cred is None or user is None or project is None:
        await passwords.verify_password_async(_DUMMY_HASH, secret)
        raise exception.NotAuthenticated()
    if not await passwords.verify_password_async(cred["secret_hash"], secret):
        raise exception.NotAuthenticated()
    expired = cred["expires_at"] is not None and cred["expires_at"] <= utcnow()
    roles = [r for r in held if r["id"] in set(cred["roles"])]
    if expired or not roles or not user["enabled"] or not project["enabled"]:
        raise exception.NotAuthenticated()
    return await _issue(state, user, project, roles, ["application_credential"], app_cred=cred)


_DUMMY_HASH = passwords.hash_password(secrets.token_hex(8))


async def _issue(
    state: ApiState,
    user: Mapping[str, Any],
    project: Mapping[str, Any] | None,
    role_rows: list[dict[str, Any]],
    methods: list[str],
    *,
    app_cred: Mapping[str, Any] | None = None,
    domain: Mapping[str, Any] | None = None,
    system: str | None = None,
    expires: dt.datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """Record a new token and return its text and body; it ends at
    ``expires`` (a rescoped token's parent's end) or after the configured life."""
    token = secrets.token_urlsafe(32)
    issued = utcnow()
    if expires is None:
        expires = issued + dt.timedelta(seconds=state.conf.api.token_expiration)
    roles = await _with_implied(state, role_rows)
    audit_id = secrets.token_urlsafe(16)
    async with state.db.writer() as conn:
        await identity.token_create(
            conn,
            {
                "token_hash": token_hash(token),
                "user_id": user["id"],
                "project_id": project["id"] if project else None,
                "domain_id": domain["id"] if domain else None,
                "system_scope": system,
                "roles": roles,
                "methods": methods,
                "audit_id": audit_id,
                "issued_at": issued,
                "expires_at": expires,
                "application_credential_id": app_cred["id"] if app_cred else None,
            },
        )
    user = await _with_domain_name(state, user)
    if project is not None:
        project = await _with_domain_name(state, project)
    body = await _token_body(
        state,
        user,
        project,
        roles,
        methods,
        audit_id,
        issued,
        expires,
        app_cred=app_cred,
        domain=domain,
        system=system,
    )
    return token, body


async def _with_implied(state: ApiState, role_rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The token's roles: those held and all they imply (the rules' one home,
    :func:`roles_db.effective_roles`)."""
    async with state.db.reader() as conn:
        rows = await roles_db.effective_roles(conn, [r["id"] for r in role_rows])
    return [{"id": r["id"], "name": r["name"]} for r in rows]


async def _token_body(
    state: ApiState,
    user: Mapping[str, Any],
    project: Mapping[str, Any] | None,
    roles: list[dict[str, str]],
    methods: list[str],
    audit_id: str,
    issued: dt.datetime,
    expires: dt.datetime,
    *,
    app_cred: Mapping[str, Any] | None = None,
    domain: Mapping[str, Any] | None = None,
    system: str | None = None,
) -> dict[str, Any]:
    token: dict[str, Any] = {
        "methods": methods,
        "user": {
            "domain": _domain_ref(user),
            "id": user["id"],
            "name": user["name"],
            "password_expires_at": None,
        },
        "audit_ids": [audit_id],
        "expires_at": keystone_time(expires),
        "issued_at": keystone_time(issued),
    }
    if project is not None:
        token["project"] = {
            "domain": _domain_ref(project),
            "id": project["id"],
            "name": project["name"],
        }
        token["is_domain"] = False
    elif domain is not None:
        token["domain"] = {"id": domain["id"], "name": domain["name"]}
    elif system is not None:
        token["system"] = {system: True}
    if project is not None or domain is not None or system is not None:
        token["roles"] = roles
        token["catalog"] = await catalog.service_catalog(state)
    if app_cred is not None:
        token["application_credential"] = {
            "id": app_cred["id"],
            "name": app_cred["name"],
            "restricted": not app_cred["unrestricted"],
        }
    return {"token": token}


def _domain_ref(row: Mapping[str, Any]) -> dict[str, str]:
    """The user's or project's domain as a token shows it (its name is read
    into the row as ``domain_name`` by :func:`_with_domain_name`)."""
    domain_id = row.get("domain_id") or DEFAULT_DOMAIN["id"]
    name = row.get("domain_name") or (
        DEFAULT_DOMAIN["name"] if domain_id == "default" else domain_id
    )
    return {"id": domain_id, "name": name}


async def _with_domain_name(state: ApiState, row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    domain_id = out.get("domain_id")
    if domain_id and domain_id != DEFAULT_DOMAIN["id"]:
        async with state.db.reader() as conn:
            try:
                out["domain_name"] = (await identity.domain_get(conn, domain_id))["name"]
            except exception.NotFound:
                pass
    return out


async def validate(state: ApiState, token: str) -> dict[str, Any]:
    """The stored token row; NotAuthenticated when unknown, revoked or expired."""
    async with state.db.reader() as conn:
        row = await identity.token_get(conn, token_hash(token))
    if row is None:
        raise exception.NotAuthenticated()
    return row


async def context_for(state: ApiState, token: str, request_id: str) -> RequestContext:
    row = await validate(state, token)
    return RequestContext(
        request_id=request_id,
        user_id=row["user_id"],
        project_id=row["project_id"],
        domain_id=row["domain_id"],
        system_scope=row["system_scope"],
        roles=[r["name"] for r in row["roles"] or []],
    )


async def token_body(state: ApiState, token: str) -> dict[str, Any]:
    """The body ``GET /v3/auth/tokens`` shows for a token (404 when not valid)."""
    try:
        row = await validate(state, token)
    except exception.NotAuthenticated:
        raise exception.NotFound(reason="Could not find token.") from None
    async with state.db.reader() as conn:
        user = await identity.user_get_by_id(conn, row["user_id"])
        project = None
        if row["project_id"]:
            project = await identity.project_get(conn, row["project_id"])
        app_cred = None
        if row.get("application_credential_id"):
            app_cred = await identity.app_cred_get(conn, row["application_credential_id"])
        domain = None
        if row["domain_id"]:
            domain = await identity.domain_get(conn, row["domain_id"])
    if user is None:
        raise exception.NotFound(reason="Could not find token.")
    user = await _with_domain_name(state, user)
    if project is not None:
        project = await _with_domain_name(state, project)
    return await _token_body(
        state,
        user,
        project,
        row["roles"] or [],
        row["methods"] or ["password"],
        row["audit_id"],
        row["issued_at"],
        row["expires_at"],
        app_cred=app_cred,
        domain=domain,
        system=row["system_scope"],
    )


async def revoke(state: ApiState, token: str) -> None:
    async with state.db.writer() as conn:
        if not await identity.token_revoke(conn, token_hash(token)):
            raise exception.NotFound(reason="Could not find token.")
