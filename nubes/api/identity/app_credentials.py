"""Application credentials: a user's secret for one project, with a subset
of its roles there, for scripts and services that should not hold the
user's password (``openstack application credential create``).

The secret is hashed like a password and shown once. A token issued for
one carries at most the roles it was given, and only those the user still
holds: taking a role from the user takes it from its credentials too. A
*restricted* credential (the default) cannot create or delete
application credentials, so a leaked one cannot mint more.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nubes import exception
from nubes.api.identity import passwords, tokens
from nubes.api.identity.common import collection_links, link, self_or_admin
from nubes.api.middleware import api_state, request_context
from nubes.api.validation import json_body, validate
from nubes.db.api import identity
from nubes.db.api import roles as roles_db
from nubes.db.types import utcnow

_ROLE_REF = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": 64},
        "name": {"type": "string", "maxLength": 255},
    },
}
CREATE = {
    "type": "object",
    "properties": {
        "application_credential": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": {"type": ["string", "null"], "maxLength": 65535},
                "secret": {"type": ["string", "null"], "minLength": 1, "maxLength": 4096},
                "expires_at": {"type": ["string", "null"]},
                "roles": {"type": "array", "items": _ROLE_REF},
                "unrestricted": {"type": ["boolean", "null"]},
                "access_rules": {"type": "array", "maxItems": 0},
            },
            "required": ["name"],
        }
    },
    "required": ["application_credential"],
}


def _view(request: Request, row: dict[str, Any], roles: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        # As Keystone shows it: ISO 8601 of the UTC time, no zone suffix
        # (clients compare it with the naive time they sent).
        "expires_at": _naive_utc(row["expires_at"]).isoformat() if row["expires_at"] else None,
        "project_id": row["project_id"],
        "user_id": row["user_id"],
        "roles": [{"id": r["id"], "name": r["name"], "domain_id": None} for r in roles],
        "unrestricted": row["unrestricted"],
        "access_rules": [],
        "links": link(request, f"users/{row['user_id']}/application_credentials/{row['id']}"),
    }


async def _roles(conn: Any, ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for role_id in ids:
        try:
            out.append(await roles_db.role_get(conn, role_id))
        except exception.NotFound:
            continue  # deleted since: the credential no longer carries it
    return out


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _expiry(raw: str | None) -> dt.datetime | None:
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise exception.ValidationError(
            field="expires_at", reason=f"'{raw}' is not an ISO 8601 time"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if value <= utcnow():
        raise exception.ValidationError(field="expires_at", reason="the time is in the past")
    return value


async def _caller_token(request: Request) -> dict[str, Any]:
    return await tokens.validate(api_state(request), request.headers.get("x-auth-token", ""))


async def create(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    ctxt = request_context(request)
    if ctxt.user_id != user_id:
        # Keystone: only the user itself, for the project of its token.
        raise exception.PolicyNotAuthorized(action="identity:create_application_credential")
    if ctxt.project_id is None:
        raise exception.ValidationError(
            field="token", reason="an application credential needs a project-scoped token"
        )
    token = await _caller_token(request)
    await _refuse_if_restricted(request, token)
    body = await json_body(request)
    validate(body, CREATE)
    ref = body["application_credential"]
    secret = ref.get("secret") or secrets.token_urlsafe(48)
    expires = _expiry(ref.get("expires_at"))
    db = api_state(request).db
    async with db.reader() as conn:
        held = await roles_db.roles_for(conn, user_id, ctxt.project_id)
        by_id = {r["id"]: r for r in held}
        by_name = {r["name"]: r for r in held}
        if ref.get("roles"):
            chosen = []
            for wanted in ref["roles"]:
                role = by_id.get(wanted.get("id", "")) or by_name.get(wanted.get("name", ""))
                if role is None:
                    what = wanted.get("name") or wanted.get("id")
                    raise exception.Forbidden(
                        reason=f"You do not hold role {what} on this project to delegate."
                    )
                chosen.append(role)
        else:
            chosen = held
    if not chosen:
        raise exception.Forbidden(reason="You hold no role on this project to delegate.")
    secret_hash = await passwords.hash_password_async(secret)
    async with db.writer() as conn:
        row = await identity.app_cred_create(
            conn,
            {
                "name": ref["name"],
                "user_id": user_id,
                "project_id": ctxt.project_id,
                "secret_hash": secret_hash,
                "description": ref.get("description"),
                "expires_at": expires,
                "unrestricted": bool(ref.get("unrestricted")),
                "roles": [r["id"] for r in chosen],
                "created_at": utcnow(),
            },
        )
    view = _view(request, row, chosen)
    view["secret"] = secret
    return JSONResponse({"application_credential": view}, status_code=201)


async def _refuse_if_restricted(request: Request, token: dict[str, Any]) -> None:
    cred_id = token.get("application_credential_id")
    if not cred_id:
        return
    async with api_state(request).db.reader() as conn:
        cred = await identity.app_cred_get(conn, cred_id)
    if cred is None or not cred["unrestricted"]:
        raise exception.Forbidden(
            reason="A restricted application credential cannot manage application credentials."
        )


async def list_all(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    self_or_admin(request, user_id, "list_application_credentials")
    async with api_state(request).db.reader() as conn:
        rows = await identity.app_cred_get_all(conn, user_id, name=request.query_params.get("name"))
        views = [_view(request, r, await _roles(conn, r["roles"])) for r in rows]
    return JSONResponse({"application_credentials": views, "links": collection_links(request)})


async def _own(conn: Any, user_id: str, cred_id: str) -> dict[str, Any]:
    row = await identity.app_cred_get(conn, cred_id)
    if row is None or row["user_id"] != user_id:
        raise exception.NotFound(reason=f"Could not find Application Credential: {cred_id}.")
    return row


async def show(request: Request) -> Response:
    user_id, cred_id = request.path_params["user_id"], request.path_params["cred_id"]
    self_or_admin(request, user_id, "get_application_credential")
    async with api_state(request).db.reader() as conn:
        row = await _own(conn, user_id, cred_id)
        view = _view(request, row, await _roles(conn, row["roles"]))
    return JSONResponse({"application_credential": view})


async def delete(request: Request) -> Response:
    user_id, cred_id = request.path_params["user_id"], request.path_params["cred_id"]
    self_or_admin(request, user_id, "delete_application_credential")
    await _refuse_if_restricted(request, await _caller_token(request))
    async with api_state(request).db.writer() as conn:
        await _own(conn, user_id, cred_id)
        await identity.app_cred_delete(conn, cred_id)
    return Response(status_code=204)


ROUTES = [
    Route("/v3/users/{user_id}/application_credentials", list_all, methods=["GET"]),
    Route("/v3/users/{user_id}/application_credentials", create, methods=["POST"]),
    Route("/v3/users/{user_id}/application_credentials/{cred_id}", show, methods=["GET"]),
    Route("/v3/users/{user_id}/application_credentials/{cred_id}", delete, methods=["DELETE"]),
]
