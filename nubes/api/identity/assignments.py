"""Roles, grants (a role given to a user or group on a project or domain)
and ``GET /v3/role_assignments`` with ``effective`` and ``include_names``.

Roles imply weaker ones (admin > manager > member > reader, Keystone's
default implied roles); an effective listing shows them, and expands a
group's grants into one row per member, as Keystone does.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nubes import exception
from nubes.api.identity.common import admin, base, collection_links, flag, role_view
from nubes.api.middleware import api_state, request_context
from nubes.api.validation import json_body, validate
from nubes.db.api import identity

_ROLE_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": {"type": ["string", "null"], "maxLength": 65535},
    "domain_id": {"type": "null"},
}
ROLE_CREATE = {
    "type": "object",
    "properties": {"role": {"type": "object", "properties": _ROLE_FIELDS, "required": ["name"]}},
    "required": ["role"],
}
ROLE_UPDATE = {
    "type": "object",
    "properties": {"role": {"type": "object", "properties": _ROLE_FIELDS}},
    "required": ["role"],
}


async def list_roles(request: Request) -> Response:
    # Any authenticated user may list roles (the names are in every token).
    async with api_state(request).db.reader() as conn:
        rows = await identity.role_get_all(conn, name=request.query_params.get("name"))
    return JSONResponse(
        {"roles": [role_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def create_role(request: Request) -> Response:
    admin(request, "create_role")
    body = await json_body(request)
    validate(body, ROLE_CREATE)
    ref = body["role"]
    async with api_state(request).db.writer() as conn:
        row = await identity.role_create(conn, ref["name"], description=ref.get("description"))
    return JSONResponse({"role": role_view(request, row)}, status_code=201)


async def show_role(request: Request) -> Response:
    async with api_state(request).db.reader() as conn:
        row = await identity.role_get(conn, request.path_params["role_id"])
    return JSONResponse({"role": role_view(request, row)})


async def update_role(request: Request) -> Response:
    admin(request, "update_role")
    role_id = request.path_params["role_id"]
    body = await json_body(request)
    validate(body, ROLE_UPDATE)
    values = {k: v for k, v in body["role"].items() if k in ("name", "description")}
    async with api_state(request).db.writer() as conn:
        if values:
            await identity.role_update(conn, role_id, values)
        row = await identity.role_get(conn, role_id)
    return JSONResponse({"role": role_view(request, row)})


async def delete_role(request: Request) -> Response:
    admin(request, "delete_role")
    async with api_state(request).db.writer() as conn:
        await identity.role_delete(conn, request.path_params["role_id"])
    return Response(status_code=204)


# --- grants ------------------------------------------------------------------


async def _check_parties(conn: Any, actor: str, actor_id: str, target: str, target_id: str) -> None:
    """404 naming whichever of the actor and target does not exist."""
    if actor == "user":
        if await identity.user_get_by_id(conn, actor_id) is None:
            raise exception.NotFound(reason=f"Could not find user: {actor_id}.")
    else:
        await identity.group_get(conn, actor_id)
    if target == "project":
        row = await identity.project_get(conn, target_id)
        if row["id"] != target_id:
            raise exception.NotFound(reason=f"Could not find project: {target_id}.")
    else:
        if (await identity.domain_get(conn, target_id))["id"] != target_id:
            raise exception.NotFound(reason=f"Could not find domain: {target_id}.")


def _grant_route(target: str, actor: str) -> tuple[Route, Route]:
    """The two routes of one grant kind: the list, and PUT/HEAD/DELETE of one role."""
    type_ = identity.assignment_type(actor, target)
    prefix = f"/v3/{target}s/{{target_id}}/{actor}s/{{actor_id}}/roles"

    async def list_grants(request: Request) -> Response:
        admin(request, "list_grants")
        target_id, actor_id = request.path_params["target_id"], request.path_params["actor_id"]
        async with api_state(request).db.reader() as conn:
            await _check_parties(conn, actor, actor_id, target, target_id)
            rows = await identity.grants_on(conn, type_, actor_id, target_id)
        return JSONResponse(
            {"roles": [role_view(request, r) for r in rows], "links": collection_links(request)}
        )

    async def one_grant(request: Request) -> Response:
        admin(request, "create_grant" if request.method == "PUT" else "check_grant")
        p = request.path_params
        target_id, actor_id, role_id = p["target_id"], p["actor_id"], p["role_id"]
        writing = request.method in ("PUT", "DELETE")
        db = api_state(request).db
        async with db.writer() if writing else db.reader() as conn:
            await _check_parties(conn, actor, actor_id, target, target_id)
            await identity.role_get(conn, role_id)
            if request.method == "PUT":
                await identity.grant(conn, type_, actor_id, target_id, role_id)
            elif request.method == "DELETE":
                if not await identity.revoke_grant(conn, type_, actor_id, target_id, role_id):
                    raise exception.NotFound(reason=f"Could not find role assignment: {role_id}.")
            elif not await identity.grant_exists(conn, type_, actor_id, target_id, role_id):
                raise exception.NotFound(reason=f"Could not find role assignment: {role_id}.")
        return Response(status_code=204)

    return (
        Route(prefix, list_grants, methods=["GET"]),
        Route(prefix + "/{role_id}", one_grant, methods=["PUT", "GET", "HEAD", "DELETE"]),
    )


# --- role assignments --------------------------------------------------------


class _Names:
    """Names (and domains) of what a listing mentions, read once each."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cache: dict[tuple[str, str], dict[str, Any] | None] = {}

    async def get(self, kind: str, id_: str) -> dict[str, Any] | None:
        key = (kind, id_)
        if key not in self.cache:
            row: dict[str, Any] | None
            try:
                if kind == "user":
                    row = await identity.user_get_by_id(self.conn, id_)
                elif kind == "group":
                    row = await identity.group_get(self.conn, id_)
                elif kind == "project":
                    row = await identity.project_get(self.conn, id_)
                elif kind == "domain":
                    row = await identity.domain_get(self.conn, id_)
                else:
                    row = await identity.role_get(self.conn, id_)
            except exception.NotFound:
                row = None
            self.cache[key] = row
        return self.cache[key]

    async def ref(self, kind: str, id_: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": id_}
        row = await self.get(kind, id_)
        if row is None:
            return out
        out["name"] = row["name"]
        if kind in ("user", "group", "project"):
            domain = await self.get("domain", row["domain_id"])
            out["domain"] = {"id": row["domain_id"], "name": domain["name"] if domain else None}
        return out


async def list_role_assignments(request: Request) -> Response:
    ctxt = request_context(request)
    q = request.query_params
    user_id, group_id = q.get("user.id"), q.get("group.id")
    project_id, domain_id = q.get("scope.project.id"), q.get("scope.domain.id")
    role_id = q.get("role.id")
    effective = "effective" in q and flag(request, "effective") is not False
    names = "include_names" in q and flag(request, "include_names") is not False
    # A user may list its own assignments (Keystone allows it for the
    # user's own ``user.id`` with ``effective``); everything else is for admins.
    if user_id != ctxt.user_id:
        admin(request, "list_role_assignments")
    if user_id and group_id:
        raise exception.ValidationError(
            field="user.id", reason="give user.id or group.id, not both"
        )
    if project_id and domain_id:
        raise exception.ValidationError(
            field="scope.project.id", reason="give a project or a domain scope, not both"
        )
    types: list[str] = [
        identity.USER_PROJECT,
        identity.GROUP_PROJECT,
        identity.USER_DOMAIN,
        identity.GROUP_DOMAIN,
    ]
    if project_id:
        types = [t for t in types if t in identity.PROJECT_TYPES]
    if domain_id:
        types = [t for t in types if t in identity.DOMAIN_TYPES]
    async with api_state(request).db.reader() as conn:
        actor_ids: list[str] | None = None
        if user_id and effective:
            groups = [g["id"] for g in await identity.groups_for_user(conn, user_id)]
            actor_ids = [user_id, *groups]
        elif user_id:
            types = [t for t in types if t in identity.USER_TYPES]
            actor_ids = [user_id]
        elif group_id:
            if effective:
                raise exception.ValidationError(
                    field="group.id", reason="effective listings are of users, not groups"
                )
            types = [t for t in types if t in identity.GROUP_TYPES]
            actor_ids = [group_id]
        rows = await identity.assignment_list(
            conn,
            types=types,
            actor_ids=actor_ids,
            target_id=project_id or domain_id,
            role_id=None if effective else role_id,
        )
        found = [await _expand(conn, request, r, effective) for r in rows]
        entries = [e for group in found for e in group]
        if user_id and effective:
            entries = [e for e in entries if e["user"] == user_id]
        if role_id and effective:
            entries = [e for e in entries if e["role"] == role_id]
        lookup = _Names(conn)
        out = [await _entry(request, e, names, lookup) for e in _unique(entries)]
    return JSONResponse({"role_assignments": out, "links": collection_links(request)})


async def _expand(
    conn: Any, request: Request, row: dict[str, Any], effective: bool
) -> list[dict[str, Any]]:
    """One stored assignment as listing entries: itself, or (effective) one
    per member for a group and one per implied role."""
    actor_kind = "user" if row["type"] in identity.USER_TYPES else "group"
    scope_kind = "project" if row["type"] in identity.PROJECT_TYPES else "domain"
    entry = {
        actor_kind: row["actor_id"],
        "scope": (scope_kind, row["target_id"]),
        "role": row["role_id"],
    }
    if not effective:
        return [entry]
    role_ids = [row["role_id"]]
    try:
        role = await identity.role_get(conn, row["role_id"])
    except exception.NotFound:
        role = None
    if role is not None:
        implied = identity.implied_roles([role["name"]])[1:]
        for r in await identity.role_get_all(conn):
            if r["name"] in implied:
                role_ids.append(r["id"])
    if actor_kind == "group":
        members = [u["id"] for u in await identity.group_users(conn, row["actor_id"])]
        return [
            {"user": m, "scope": entry["scope"], "role": rid, "via_group": row["actor_id"]}
            for m in members
            for rid in role_ids
        ]
    return [{**entry, "role": rid} for rid in role_ids]


def _unique(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for e in entries:
        key = (e.get("user"), e.get("group"), e["scope"], e["role"])
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


async def _entry(
    request: Request, e: dict[str, Any], names: bool, lookup: _Names
) -> dict[str, Any]:
    scope_kind, scope_id = e["scope"]
    actor_kind = "user" if "user" in e else "group"
    actor_id = e[actor_kind]

    async def ref(kind: str, id_: str) -> dict[str, Any]:
        return await lookup.ref(kind, id_) if names else {"id": id_}

    path = f"{base(request)}/v3/{scope_kind}s/{scope_id}/{actor_kind}s/{actor_id}/roles/{e['role']}"
    if "via_group" in e:
        group = e["via_group"]
        path = f"{base(request)}/v3/{scope_kind}s/{scope_id}/groups/{group}/roles/{e['role']}"
    links: dict[str, Any] = {"assignment": path}
    if "via_group" in e:
        links["membership"] = f"{base(request)}/v3/groups/{e['via_group']}/users/{actor_id}"
    return {
        "role": await ref("role", e["role"]),
        actor_kind: await ref(actor_kind, actor_id),
        "scope": {scope_kind: await ref(scope_kind, scope_id)},
        "links": links,
    }


ROUTES = [
    Route("/v3/roles", list_roles, methods=["GET"]),
    Route("/v3/roles", create_role, methods=["POST"]),
    Route("/v3/roles/{role_id}", show_role, methods=["GET"]),
    Route("/v3/roles/{role_id}", update_role, methods=["PATCH"]),
    Route("/v3/roles/{role_id}", delete_role, methods=["DELETE"]),
    *_grant_route("project", "user"),
    *_grant_route("project", "group"),
    *_grant_route("domain", "user"),
    *_grant_route("domain", "group"),
    Route("/v3/role_assignments", list_role_assignments, methods=["GET"]),
]
