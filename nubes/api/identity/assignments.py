"""Roles, grants (a role given to a user or group on a project or domain)
and ``GET /v3/role_assignments`` with ``effective`` and ``include_names``.

Roles imply others by rules (``/v3/roles/{prior}/implies/{implied}``; the
defaults admin > manager > member > reader are rules too); an effective
listing shows the implied roles and not the domain-specific ones, and
expands a group's grants into one row per member, as Keystone does.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nubes import exception
from nubes.api import policy
from nubes.api.identity.common import (
    admin,
    base,
    collection_links,
    flag,
    in_domain,
    manager,
    role_view,
)
from nubes.api.middleware import api_state, request_context
from nubes.api.validation import json_body, validate
from nubes.db.api import identity
from nubes.db.api import roles as roles_db

_ROLE_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": {"type": ["string", "null"], "maxLength": 65535},
    "domain_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
}
ROLE_CREATE = {
    "type": "object",
    "properties": {"role": {"type": "object", "properties": _ROLE_FIELDS, "required": ["name"]}},
    "required": ["role"],
}
ROLE_UPDATE = {
    "type": "object",
    # A role stays where it was made (Keystone refuses to move it).
    "properties": {
        "role": {
            "type": "object",
            "properties": {**_ROLE_FIELDS, "domain_id": {"not": {}}},
        }
    },
    "required": ["role"],
}


async def list_roles(request: Request) -> Response:
    # Any authenticated user may list roles (the names are in every token).
    q = request.query_params
    async with api_state(request).db.reader() as conn:
        rows = await roles_db.role_get_all(conn, name=q.get("name"), domain_id=q.get("domain_id"))
    return JSONResponse(
        {"roles": [role_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def create_role(request: Request) -> Response:
    admin(request, "create_role")
    body = await json_body(request)
    validate(body, ROLE_CREATE)
    ref = body["role"]
    async with api_state(request).db.writer() as conn:
        if ref.get("domain_id"):
            # 404 for a domain that does not exist, as Keystone.
            await identity.domain_get(conn, ref["domain_id"])
        row = await roles_db.role_create(
            conn, ref["name"], description=ref.get("description"), domain_id=ref.get("domain_id")
        )
    return JSONResponse({"role": role_view(request, row)}, status_code=201)


async def show_role(request: Request) -> Response:
    async with api_state(request).db.reader() as conn:
        row = await roles_db.role_get(conn, request.path_params["role_id"])
    return JSONResponse({"role": role_view(request, row)})


async def update_role(request: Request) -> Response:
    admin(request, "update_role")
    role_id = request.path_params["role_id"]
    body = await json_body(request)
    validate(body, ROLE_UPDATE)
    values = {k: v for k, v in body["role"].items() if k in ("name", "description")}
    async with api_state(request).db.writer() as conn:
        if values:
            await roles_db.role_update(conn, role_id, values)
        row = await roles_db.role_get(conn, role_id)
    return JSONResponse({"role": role_view(request, row)})


async def delete_role(request: Request) -> Response:
    admin(request, "delete_role")
    async with api_state(request).db.writer() as conn:
        await roles_db.role_delete(conn, request.path_params["role_id"])
    return Response(status_code=204)


# --- implied roles -----------------------------------------------------------


def _inference_role(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    """A role as a rule shows it (Keystone's: id, name, description, links)."""
    view = role_view(request, row)
    return {k: view[k] for k in ("id", "name", "description", "links")}


def _inference_link(request: Request, prior_id: str, implied_id: str = "") -> dict[str, str]:
    path = f"roles/{prior_id}/implies" + (f"/{implied_id}" if implied_id else "")
    return {"self": f"{base(request)}/v3/{path}"}


async def _rule_body(conn: Any, request: Request, prior_id: str, implied_id: str) -> dict[str, Any]:
    prior, implied = (
        await roles_db.role_get(conn, prior_id),
        await roles_db.role_get(conn, implied_id),
    )
    return {
        "role_inference": {
            "prior_role": _inference_role(request, prior),
            "implies": _inference_role(request, implied),
        },
        "links": _inference_link(request, prior_id, implied_id),
    }


async def _rules_of(conn: Any, request: Request, prior_id: str) -> dict[str, Any]:
    """One prior role with every role it implies directly."""
    prior = await roles_db.role_get(conn, prior_id)
    implied = [
        _inference_role(request, await roles_db.role_get(conn, r["implied_role_id"]))
        for r in await roles_db.inferences(conn, prior_id)
    ]
    return {"prior_role": _inference_role(request, prior), "implies": implied}


async def one_rule(request: Request) -> Response:
    """PUT (201), GET (200), HEAD (204) and DELETE (204) of one rule."""
    prior_id, implied_id = request.path_params["prior_id"], request.path_params["implied_id"]
    db = api_state(request).db
    if request.method == "PUT":
        admin(request, "create_implied_role")
        async with db.writer() as conn:
            await roles_db.inference_create(conn, prior_id, implied_id)
            body = await _rule_body(conn, request, prior_id, implied_id)
        return JSONResponse(body, status_code=201)
    if request.method == "DELETE":
        admin(request, "delete_implied_role")
        async with db.writer() as conn:
            await roles_db.role_get(conn, prior_id)
            await roles_db.role_get(conn, implied_id)
            if not await roles_db.inference_delete(conn, prior_id, implied_id):
                raise exception.NotFound(reason=_no_rule(prior_id, implied_id))
        return Response(status_code=204)
    # Reading rules is open to anyone who may read roles (every token names them).
    async with db.reader() as conn:
        body = await _rule_body(conn, request, prior_id, implied_id)
        if await roles_db.inference_get(conn, prior_id, implied_id) is None:
            raise exception.NotFound(reason=_no_rule(prior_id, implied_id))
    if request.method == "HEAD":
        return Response(status_code=204)
    return JSONResponse(body)


def _no_rule(prior_id: str, implied_id: str) -> str:
    return f"{prior_id} does not imply {implied_id}."


async def list_rules_of(request: Request) -> Response:
    prior_id = request.path_params["prior_id"]
    async with api_state(request).db.reader() as conn:
        body = await _rules_of(conn, request, prior_id)
    return JSONResponse({"role_inference": body, "links": _inference_link(request, prior_id)})


async def list_all_rules(request: Request) -> Response:
    async with api_state(request).db.reader() as conn:
        priors = dict.fromkeys(r["prior_role_id"] for r in await roles_db.inferences(conn))
        out = [await _rules_of(conn, request, p) for p in priors]
    return JSONResponse(
        {"role_inferences": out, "links": {"self": f"{base(request)}/v3/role_inferences"}}
    )


# --- grants ------------------------------------------------------------------


async def _check_parties(
    conn: Any, actor: str, actor_id: str, target: str, target_id: str
) -> tuple[str, str]:
    """The actor's and the target's domains; 404 naming whichever of the
    actor and target does not exist."""
    if actor == "user":
        user = await identity.user_get_by_id(conn, actor_id)
        if user is None:
            raise exception.NotFound(reason=f"Could not find user: {actor_id}.")
        actor_domain = user["domain_id"]
    else:
        actor_domain = (await identity.group_get(conn, actor_id))["domain_id"]
    if target == "project":
        project = await identity.project_get_by_id(conn, target_id)
        if project is None:
            raise exception.NotFound(reason=f"Could not find project: {target_id}.")
        return actor_domain, project["domain_id"]
    if target == "system":
        # Nobody's domain: only an admin passes a domain check on it.
        return actor_domain, ""
    if (await identity.domain_get(conn, target_id))["id"] != target_id:
        raise exception.NotFound(reason=f"Could not find domain: {target_id}.")
    return actor_domain, target_id


def _grant_route(target: str, actor: str) -> tuple[Route, Route]:
    """The two routes of one grant kind: the list, and PUT/HEAD/DELETE of one role."""
    type_ = roles_db.assignment_type(actor, target)
    prefix = f"/v3/{target}s/{{target_id}}/{actor}s/{{actor_id}}/roles"
    if target == "system":
        prefix = f"/v3/system/{actor}s/{{actor_id}}/roles"

    async def list_grants(request: Request) -> Response:
        ctxt = manager(request, "list_grants")
        actor_id = request.path_params["actor_id"]
        target_id = request.path_params.get("target_id", identity.SYSTEM)
        async with api_state(request).db.reader() as conn:
            domains = await _check_parties(conn, actor, actor_id, target, target_id)
            in_domain(ctxt, "list_grants", *domains)
            rows = await roles_db.grants_on(conn, type_, actor_id, target_id)
        return JSONResponse(
            {"roles": [role_view(request, r) for r in rows], "links": collection_links(request)}
        )

    async def one_grant(request: Request) -> Response:
        action = {"PUT": "create_grant", "DELETE": "revoke_grant"}.get(
            request.method, "check_grant"
        )
        ctxt = manager(request, action)
        p = request.path_params
        actor_id, role_id = p["actor_id"], p["role_id"]
        target_id = p.get("target_id", identity.SYSTEM)
        writing = request.method in ("PUT", "DELETE")
        db = api_state(request).db
        async with db.writer() if writing else db.reader() as conn:
            # A domain manager: actor and target in its domain, and it gives
            # or takes only the roles up to manager (never admin).
            in_domain(ctxt, action, *await _check_parties(conn, actor, actor_id, target, target_id))
            role = await roles_db.role_get(conn, role_id)
            if writing and not policy.allowed(ctxt, policy.Rule.ADMIN):
                if role["name"] not in policy.MANAGER_ASSIGNABLE_ROLES:
                    raise exception.PolicyNotAuthorized(action=f"identity:{action}")
            if request.method == "PUT":
                await roles_db.grant(conn, type_, actor_id, target_id, role_id)
            elif request.method == "DELETE":
                if not await roles_db.revoke_grant(conn, type_, actor_id, target_id, role_id):
                    raise exception.NotFound(reason=f"Could not find role assignment: {role_id}.")
            elif not await roles_db.grant_exists(conn, type_, actor_id, target_id, role_id):
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
                    row = await roles_db.role_get(self.conn, id_)
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
    system = q.get("scope.system")
    role_id = q.get("role.id")
    effective = "effective" in q and flag(request, "effective") is not False
    names = "include_names" in q and flag(request, "include_names") is not False
    if user_id and group_id:
        raise exception.ValidationError(
            field="user.id", reason="give user.id or group.id, not both"
        )
    if len([x for x in (project_id, domain_id, system) if x]) > 1:
        raise exception.ValidationError(
            field="scope.project.id", reason="give a project, a domain or the system scope"
        )
    if system and system != identity.SYSTEM:
        raise exception.ValidationError(field="scope.system", reason="the only system is 'all'")
    types: list[str] = [*identity.USER_TYPES, *identity.GROUP_TYPES]
    if project_id:
        types = [t for t in types if t in identity.PROJECT_TYPES]
    if domain_id:
        types = [t for t in types if t in identity.DOMAIN_TYPES]
    if system:
        types = [t for t in types if t in identity.SYSTEM_TYPES]
    async with api_state(request).db.reader() as conn:
        # A user may list its own assignments (Keystone allows it for the
        # user's own ``user.id``); a domain manager those on its domain or
        # on a project in it; everything else is for admins.
        if user_id != ctxt.user_id:
            manager(request, "list_role_assignments")
            scope_domain = domain_id
            if project_id:
                project = await identity.project_get_by_id(conn, project_id)
                scope_domain = project["domain_id"] if project else None
            in_domain(ctxt, "list_role_assignments", scope_domain or "")
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
        rows = await roles_db.assignment_list(
            conn,
            types=types,
            actor_ids=actor_ids,
            target_id=project_id or domain_id or system,
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
    if row["type"] in identity.SYSTEM_TYPES:
        scope_kind = "system"
    entry = {
        actor_kind: row["actor_id"],
        "scope": (scope_kind, row["target_id"]),
        "role": row["role_id"],
    }
    if not effective:
        return [entry]
    role_ids = [r["id"] for r in await roles_db.effective_roles(conn, [row["role_id"]])]
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

    target = "system" if scope_kind == "system" else f"{scope_kind}s/{scope_id}"
    holder = f"groups/{e['via_group']}" if "via_group" in e else f"{actor_kind}s/{actor_id}"
    links: dict[str, Any] = {
        "assignment": f"{base(request)}/v3/{target}/{holder}/roles/{e['role']}"
    }
    if "via_group" in e:
        links["membership"] = f"{base(request)}/v3/groups/{e['via_group']}/users/{actor_id}"
    # Keystone shows the system scope as {"system": {"all": true}}.
    scope = {scope_id: True} if scope_kind == "system" else await ref(scope_kind, scope_id)
    return {
        "role": await ref("role", e["role"]),
        actor_kind: await ref(actor_kind, actor_id),
        "scope": {scope_kind: scope},
        "links": links,
    }


ROUTES = [
    Route("/v3/roles", list_roles, methods=["GET"]),
    Route("/v3/roles", create_role, methods=["POST"]),
    Route("/v3/roles/{role_id}", show_role, methods=["GET"]),
    Route("/v3/roles/{role_id}", update_role, methods=["PATCH"]),
    Route("/v3/roles/{role_id}", delete_role, methods=["DELETE"]),
    Route("/v3/roles/{prior_id}/implies", list_rules_of, methods=["GET", "HEAD"]),
    Route(
        "/v3/roles/{prior_id}/implies/{implied_id}",
        one_rule,
        methods=["PUT", "GET", "HEAD", "DELETE"],
    ),
    Route("/v3/role_inferences", list_all_rules, methods=["GET", "HEAD"]),
    *_grant_route("project", "user"),
    *_grant_route("project", "group"),
    *_grant_route("domain", "user"),
    *_grant_route("domain", "group"),
    *_grant_route("system", "user"),
    *_grant_route("system", "group"),
    Route("/v3/role_assignments", list_role_assignments, methods=["GET"]),
]
