"""Issuing, validating and revoking tokens; the service catalog.

A token is 32 random bytes (URL-safe text); the database keeps its SHA-256
with the user, project, roles (a snapshot, with the implied ones) and
expiry. Validation is one primary-key read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Mapping
from typing import Any

from nubes import exception
from nubes.api.identity import passwords
from nubes.api.state import ApiState
from nubes.api.views import keystone_time
from nubes.context import RequestContext
from nubes.db.api import identity
from nubes.db.types import utcnow

DEFAULT_DOMAIN = {"id": "default", "name": "Default"}
_DOMAIN_NAMES = ("default", "Default")

#: (catalog type, catalog name, path of the versioned or unversioned endpoint)
SERVICES = (
    ("compute", "nova", "/compute/v2.1"),
    ("image", "glance", "/image"),
    ("identity", "keystone", "/identity"),
    ("network", "neutron", "/networking"),
)
INTERFACES = ("public", "internal", "admin")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _endpoint_base(state: ApiState, service: str) -> str:
    port = getattr(state.conf.api, f"{service}_port", 0)
    base = state.public_endpoint
    if port and not state.conf.api.public_endpoint:
        host = state.conf.api.bind_host
        base = f"http://{host}:{port}"
    return base


def catalog(state: ApiState) -> list[dict[str, Any]]:
    region = state.conf.api.region_name
    out = []
    for kind, name, path in SERVICES:
        url = _endpoint_base(state, kind) + path
        endpoints = [
            {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{url}#{interface}").hex,
                "interface": interface,
                "region": region,
                "region_id": region,
                "url": url,
            }
            for interface in INTERFACES
        ]
        out.append(
            {
                "endpoints": endpoints,
                "id": uuid.uuid5(uuid.NAMESPACE_URL, url).hex,
                "type": kind,
                "name": name,
            }
        )
    return out


def _check_domain(domain: Mapping[str, Any] | None) -> None:
    if not domain:
        return
    if (
        domain.get("id", "default") != "default"
        or domain.get("name", "Default") not in _DOMAIN_NAMES
    ):
        raise exception.NotAuthenticated()


async def authenticate(state: ApiState, auth: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Password auth with optional project scope (a validated body's ``auth``).

    Returns the token text and the token body. Any failure is a plain 401:
    it never says whether the user exists.
    """
    ident = auth["identity"]
    if "password" not in ident["methods"] or "password" not in ident:
        raise exception.NotAuthenticated()
    user_ref = ident["password"]["user"]
    _check_domain(user_ref.get("domain"))
    async with state.db.reader() as conn:
        if "id" in user_ref:
            user = await identity.user_get_by_id(conn, user_ref["id"])
        elif "name" in user_ref:
            user = await identity.user_get_by_name(conn, user_ref["name"])
        else:
            user = None
    if user is None or not user["enabled"]:
        # Same work as a real check, so timing does not reveal unknown names.
        await passwords.verify_password_async(_DUMMY_HASH, user_ref.get("password", ""))
        raise exception.NotAuthenticated()
    if not await passwords.verify_password_async(user["password_hash"], user_ref["password"]):
        raise exception.NotAuthenticated()
    project = None
    role_rows: list[dict[str, Any]] = []
    scope = auth.get("scope")
    if isinstance(scope, Mapping) and "project" in scope:
        ref = scope["project"]
        _check_domain(ref.get("domain"))
        async with state.db.reader() as conn:
            try:
                project = await identity.project_get(conn, ref.get("id") or ref.get("name"))
            except exception.NotFound:
                raise exception.NotAuthenticated() from None
            if "id" in ref and project["id"] != ref["id"]:
                raise exception.NotAuthenticated()
            role_rows = await identity.roles_for(conn, user["id"], project["id"])
        if not role_rows or not project["enabled"]:
            raise exception.NotAuthenticated()
    return await _issue(state, user, project, role_rows, ["password"])


_DUMMY_HASH = passwords.hash_password(secrets.token_hex(8))


async def _issue(
    state: ApiState,
    user: Mapping[str, Any],
    project: Mapping[str, Any] | None,
    role_rows: list[dict[str, Any]],
    methods: list[str],
) -> tuple[str, dict[str, Any]]:
    token = secrets.token_urlsafe(32)
    issued = utcnow()
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
                "roles": roles,
                "methods": methods,
                "audit_id": audit_id,
                "issued_at": issued,
                "expires_at": expires,
            },
        )
    body = _token_body(state, user, project, roles, methods, audit_id, issued, expires)
    return token, body


async def _with_implied(state: ApiState, role_rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    names = identity.implied_roles(r["name"] for r in role_rows)
    by_name = {r["name"]: r["id"] for r in role_rows}
    missing = [n for n in names if n not in by_name]
    if missing:
        async with state.db.reader() as conn:
            for row in await identity.role_get_all(conn):
                by_name.setdefault(row["name"], row["id"])
    return [{"id": by_name.get(n, n), "name": n} for n in names]


def _token_body(
    state: ApiState,
    user: Mapping[str, Any],
    project: Mapping[str, Any] | None,
    roles: list[dict[str, str]],
    methods: list[str],
    audit_id: str,
    issued: dt.datetime,
    expires: dt.datetime,
) -> dict[str, Any]:
    token: dict[str, Any] = {
        "methods": methods,
        "user": {
            "domain": dict(DEFAULT_DOMAIN),
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
            "domain": dict(DEFAULT_DOMAIN),
            "id": project["id"],
            "name": project["name"],
        }
        token["is_domain"] = False
        token["roles"] = roles
        token["catalog"] = catalog(state)
    return {"token": token}


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
    if user is None:
        raise exception.NotFound(reason="Could not find token.")
    return _token_body(
        state,
        user,
        project,
        row["roles"] or [],
        row["methods"] or ["password"],
        row["audit_id"],
        row["issued_at"],
        row["expires_at"],
    )


async def revoke(state: ApiState, token: str) -> None:
    async with state.db.writer() as conn:
        if not await identity.token_revoke(conn, token_hash(token)):
            raise exception.NotFound(reason="Could not find token.")
