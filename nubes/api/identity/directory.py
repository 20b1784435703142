"""Domains, projects, users and groups (Keystone v3's directory).

Managing them is for admins and, inside their domain, for domain managers
(Keystone's 2024.2 defaults, :mod:`nubes.api.policy`); a user may see
itself, its projects and its groups, and change its own password. Every
change that takes a right away revokes the tokens it concerns in the same
transaction (:mod:`nubes.db.api.identity`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nubes import exception
from nubes.api import policy
from nubes.api.identity import passwords
from nubes.api.identity.common import (
    admin,
    collection_links,
    domain_view,
    flag,
    group_view,
    in_domain,
    listing_domain,
    manager,
    new_in_domain,
    project_view,
    self_or_admin,
    self_or_manager,
    user_view,
)
from nubes.api.middleware import api_state, request_context
from nubes.api.validation import json_body, validate
from nubes.db.api import identity
from nubes.db.api import roles as roles_db

_NAME = {"type": "string", "minLength": 1, "maxLength": 255}
#: Keystone's limit for project and domain names is shorter than for users.
_SHORT_NAME = {"type": "string", "minLength": 1, "maxLength": 64}
_TEXT = {"type": ["string", "null"], "maxLength": 65535}
_ID = {"type": "string", "minLength": 1, "maxLength": 64}
_BOOL = {"type": "boolean"}


def _schema(key: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    inner: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        inner["required"] = list(required)
    return {"type": "object", "properties": {key: inner}, "required": [key]}


DOMAIN_CREATE = _schema(
    "domain", {"name": _SHORT_NAME, "description": _TEXT, "enabled": _BOOL}, ("name",)
)
DOMAIN_UPDATE = _schema("domain", {"name": _SHORT_NAME, "description": _TEXT, "enabled": _BOOL})
#: Keystone's project tag: no "/" or "," (they separate tags in URLs and filters).
_TAG = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^/,]+$"}
#: Keystone's limit on a project's tags.
MAX_TAGS = 80
_TAGS = {"type": "array", "items": _TAG, "maxItems": MAX_TAGS}
PROJECT_CREATE = _schema(
    "project",
    {
        "tags": _TAGS,
        "name": _SHORT_NAME,
        "description": _TEXT,
        "enabled": _BOOL,
        "domain_id": _ID,
        "parent_id": {"type": ["string", "null"]},
        # Projects acting as domains are not served: only false (a validator of
        # draft 4 knows no "const", which let true through).
        "is_domain": {"type": "boolean", "enum": [False]},
    },
    ("name",),
)
PROJECT_UPDATE = _schema(
    "project",
    {
        "tags": _TAGS,
        "name": _SHORT_NAME,
        "description": _TEXT,
        "enabled": _BOOL,
        # A project is not moved in the tree (Keystone's 400).
        "parent_id": {"not": {}},
    },
)
_PASSWORD = {"type": ["string", "null"], "maxLength": 4096}
_USER_FIELDS = {
    "name": _NAME,
    "password": _PASSWORD,
    "enabled": _BOOL,
    "domain_id": _ID,
    "default_project_id": {"type": ["string", "null"], "maxLength": 64},
    "description": _TEXT,
    "email": _TEXT,
}
USER_CREATE = _schema("user", _USER_FIELDS, ("name",))
USER_UPDATE = _schema("user", {k: v for k, v in _USER_FIELDS.items() if k != "domain_id"})
PASSWORD_CHANGE = _schema(
    "user",
    {
        "password": {"type": "string", "minLength": 1, "maxLength": 4096},
        "original_password": _PASSWORD,
    },
    ("password", "original_password"),
)
GROUP_CREATE = _schema("group", {"name": _NAME, "description": _TEXT, "domain_id": _ID}, ("name",))
GROUP_UPDATE = _schema("group", {"name": _NAME, "description": _TEXT})
#: User attributes kept in the row's ``extra`` (Keystone's free-form ones):
#: these two and any attribute the schema does not name, as Keystone keeps them.
_EXTRA = ("description", "email")
#: Attributes Keystone computes or refuses to store: never kept as extras.
_NOT_EXTRA = frozenset({"id", "links", "options", "password_expires_at", "federated"})


async def _body(request: Request, schema: dict[str, Any], key: str) -> dict[str, Any]:
    """The validated ``body[key]`` with only the attributes its schema names:
    Keystone's extra attributes are not columns here (unknown ones are dropped)."""
    return (await _body_and_extras(request, schema, key))[0]


async def _body_and_extras(
    request: Request, schema: dict[str, Any], key: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The validated ``body[key]`` split into the attributes its schema names
    and the free-form others (a user's, which Keystone stores and shows back)."""
    body = await json_body(request)
    validate(body, schema)
    known = schema["properties"][key]["properties"]
    named = {k: v for k, v in body[key].items() if k in known}
    others = {k: v for k, v in body[key].items() if k not in known and k not in _NOT_EXTRA}
    return named, others


async def _domain_exists(conn: Any, domain_id: str) -> None:
    """404 for a new user's, project's or group's unknown domain (Keystone's answer)."""
    if (await identity.domain_get(conn, domain_id))["id"] != domain_id:
        raise exception.NotFound(reason=f"Could not find domain: {domain_id}.")


async def _is_domain(conn: Any, domain_id: str) -> bool:
    try:
        await _domain_exists(conn, domain_id)
    except exception.NotFound:
        return False
    return True


# --- domains -----------------------------------------------------------------


async def list_domains(request: Request) -> Response:
    # A domain manager sees its own domain (clients find a domain by name
    # through this listing: ``user create --domain NAME``).
    ctxt = manager(request, "list_domains")
    async with api_state(request).db.reader() as conn:
        rows = await identity.domain_get_all(
            conn, name=request.query_params.get("name"), enabled=flag(request, "enabled")
        )
    if not policy.allowed(ctxt, policy.Rule.ADMIN):
        rows = [r for r in rows if r["id"] == ctxt.domain_id]
    return JSONResponse(
        {"domains": [domain_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def create_domain(request: Request) -> Response:
    admin(request, "create_domain")
    ref = await _body(request, DOMAIN_CREATE, "domain")
    async with api_state(request).db.writer() as conn:
        row = await identity.domain_create(
            conn, ref["name"], description=ref.get("description"), enabled=ref.get("enabled", True)
        )
    return JSONResponse({"domain": domain_view(request, row)}, status_code=201)


async def show_domain(request: Request) -> Response:
    domain_id = request.path_params["domain_id"]
    ctxt = request_context(request)
    async with api_state(request).db.reader() as conn:
        row = await identity.domain_get(conn, domain_id)
        if not policy.allowed(ctxt, policy.Rule.ADMIN) and ctxt.domain_id != row["id"]:
            # Members see the domain of the project they work in, and a
            # domain-scoped token its domain, as in Keystone.
            project = await identity.project_get_by_id(conn, ctxt.project_id or "")
            if project is None or project["domain_id"] != row["id"]:
                policy.authorize(ctxt, "identity:get_domain", policy.Rule.ADMIN)
    return JSONResponse({"domain": domain_view(request, row)})


async def update_domain(request: Request) -> Response:
    admin(request, "update_domain")
    domain_id = request.path_params["domain_id"]
    ref = await _body(request, DOMAIN_UPDATE, "domain")
    async with api_state(request).db.writer() as conn:
        if domain_id == identity.DEFAULT_DOMAIN_ID and ref.get("enabled") is False:
            raise exception.Forbidden(reason="The default domain cannot be disabled.")
        await identity.domain_update(conn, domain_id, ref)
        row = await identity.domain_get(conn, domain_id)
    return JSONResponse({"domain": domain_view(request, row)})


async def delete_domain(request: Request) -> Response:
    admin(request, "delete_domain")
    async with api_state(request).db.writer() as conn:
        await identity.domain_delete(conn, request.path_params["domain_id"])
    return Response(status_code=204)


# --- projects ----------------------------------------------------------------


def _project_not_found(project_id: str) -> exception.NotFound:
    return exception.NotFound(reason=f"Could not find project: {project_id}.")


async def list_projects(request: Request) -> Response:
    """Admins list every project. Keystone refuses the listing to others, and
    so does nubes unless the listing names a project: then a member gets its
    own projects of that name (what clients need to find a project of theirs
    by name: ``openstack quota show --usage NAME``), and the same 403 as
    Keystone when none matches, so a client looking up a project it may not
    see takes the given id as it is (as against Keystone)."""
    ctxt = request_context(request)
    q = request.query_params
    name, domain_id, enabled = q.get("name"), q.get("domain_id"), flag(request, "enabled")
    parent_id = q.get("parent_id")
    filters: dict[str, Any] = {"name": name, "domain_id": domain_id, "enabled": enabled}
    async with api_state(request).db.reader() as conn:
        if policy.allowed(ctxt, policy.Rule.DOMAIN_MANAGER):
            domain_id = listing_domain(ctxt, "list_projects", domain_id)
            rows = await identity.project_get_all(
                conn, name=name, domain_id=domain_id, enabled=enabled, parent_id=parent_id
            )
        else:
            if name is None:
                raise exception.PolicyNotAuthorized(action="identity:list_projects")
            rows = [
                r
                for r in await roles_db.projects_for_user(conn, ctxt.user_id or "")
                if all(v is None or r[k] == v for k, v in filters.items())
                and parent_id in (None, r["parent_id"] or r["domain_id"])
            ]
            if not rows:
                raise exception.PolicyNotAuthorized(action="identity:list_projects")
        rows = [r for r in await identity.with_tags(conn, rows) if _tags_match(request, r["tags"])]
    return JSONResponse(
        {"projects": [project_view(request, r) for r in rows], "links": collection_links(request)}
    )


def _tags_match(request: Request, tags: list[str]) -> bool:
    """Keystone's tag filters: ``tags`` (all of), ``tags-any``, ``not-tags``
    (not all of) and ``not-tags-any`` (none of), each a comma-separated list."""
    held = set(tags)

    def asked(key: str) -> set[str] | None:
        raw = request.query_params.get(key)
        return None if raw is None else {t for t in raw.split(",") if t}

    checks = (
        ("tags", lambda want: want <= held),
        ("tags-any", lambda want: bool(want & held)),
        ("not-tags", lambda want: not want <= held),
        ("not-tags-any", lambda want: not want & held),
    )
    for key, passes in checks:
        want = asked(key)
        if want is not None and not passes(want):
            return False
    return True


async def create_project(request: Request) -> Response:
    ctxt = manager(request, "create_project")
    ref = await _body(request, PROJECT_CREATE, "project")
    domain_id = new_in_domain(ctxt, "create_project", ref.get("domain_id"))
    parent_id = ref.get("parent_id")
    async with api_state(request).db.writer() as conn:
        if parent_id and not ref.get("domain_id"):
            # Without a domain the project goes to its parent's (a parent
            # naming a domain puts it at that domain's top).
            parent = await identity.project_get_by_id(conn, parent_id)
            if parent is not None or await _is_domain(conn, parent_id):
                domain_id = new_in_domain(
                    ctxt, "create_project", parent["domain_id"] if parent else parent_id
                )
        if parent_id == domain_id:
            parent_id = None
        await _domain_exists(conn, domain_id)
        row = await identity.project_create(
            conn,
            ref["name"],
            description=ref.get("description"),
            domain_id=domain_id,
            enabled=ref.get("enabled", True),
            parent_id=parent_id,
        )
        await identity.project_tags_set(conn, row["id"], ref.get("tags", []))
        row = await _project(conn, row["id"])
    return JSONResponse({"project": project_view(request, row)}, status_code=201)


async def _project(conn: Any, project_id: str) -> dict[str, Any]:
    try:
        row = await identity.project_get(conn, project_id)
    except exception.NotFound:
        raise _project_not_found(project_id) from None
    if row["id"] != project_id:  # project_get also matches names
        raise _project_not_found(project_id)
    return (await identity.with_tags(conn, [row]))[0]


async def _readable_project(request: Request, conn: Any, action: str) -> dict[str, Any]:
    """The path's project if the caller may see it: a role on it, its
    domain's manager, or an admin. As Keystone, a project outside the
    caller's token is a 403 whether or not it exists."""
    ctxt = request_context(request)
    project_id = request.path_params["project_id"]
    if policy.allowed(ctxt, policy.Rule.PROJECT_READER, project_id):
        return await _project(conn, project_id)
    manager(request, action)
    row = await _project(conn, project_id)
    in_domain(ctxt, action, row["domain_id"])
    return row


async def _managed_project(request: Request, conn: Any, action: str) -> dict[str, Any]:
    """The path's project if the caller may change it: its domain's manager or an admin."""
    ctxt = manager(request, action)
    row = await _project(conn, request.path_params["project_id"])
    in_domain(ctxt, action, row["domain_id"])
    return row


async def show_project(request: Request) -> Response:
    """A project, with Keystone's ``parents_as_list``/``parents_as_ids`` and
    ``subtree_as_list``/``subtree_as_ids`` when asked. A caller who is not an
    admin or the domain's manager is shown only the relatives it holds a
    role on (Keystone's filtering of the lists)."""
    ctxt = request_context(request)
    view: dict[str, Any]
    async with api_state(request).db.reader() as conn:
        row = await _readable_project(request, conn, "get_project")
        view = project_view(request, row)
        asked = {k: flag(request, k) for k in _RELATIVES}
        for kind in ("parents", "subtree"):
            if asked[f"{kind}_as_list"] and asked[f"{kind}_as_ids"]:
                raise exception.ValidationError(
                    field=f"{kind}_as_list",
                    reason=f"{kind}_as_list and {kind}_as_ids cannot be used together",
                )
            if not (asked[f"{kind}_as_list"] or asked[f"{kind}_as_ids"]):
                continue
            if kind == "parents":
                found = await identity.project_parents(conn, row["id"])
            else:
                found = await identity.project_subtree(conn, row["id"])
            if not policy.allowed(ctxt, policy.Rule.DOMAIN_MANAGER, domain_id=row["domain_id"]):
                mine = {p["id"] for p in await roles_db.projects_for_user(conn, ctxt.user_id or "")}
                found = [p for p in found if p["id"] in mine]
            if asked[f"{kind}_as_list"]:
                tagged = await identity.with_tags(conn, found)
                view[f"{kind}_as_list"] = [{"project": project_view(request, p)} for p in tagged]
            elif kind == "parents":
                view["parents_as_ids"] = _parents_as_ids(found)
            else:
                view["subtree_as_ids"] = _subtree_as_ids(row["id"], found)
    return JSONResponse({"project": view})


_RELATIVES = ("parents_as_list", "parents_as_ids", "subtree_as_list", "subtree_as_ids")


def _parents_as_ids(parents: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Keystone's nesting: ``{parent: {grandparent: None}}``; None at the top."""
    nested: dict[str, Any] | None = None
    for p in reversed(parents):
        nested = {p["id"]: nested}
    return nested


def _subtree_as_ids(root: str, subtree: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Keystone's nesting: ``{child: {grandchild: None}, leaf: None}``; None for a leaf."""
    children: dict[str, list[str]] = {}
    for p in subtree:
        children.setdefault(p["parent_id"], []).append(p["id"])

    def nest(project_id: str) -> dict[str, Any] | None:
        kids = children.get(project_id)
        return {k: nest(k) for k in kids} if kids else None

    return nest(root)


async def update_project(request: Request) -> Response:
    ctxt = manager(request, "update_project")
    project_id = request.path_params["project_id"]
    ref = await _body(request, PROJECT_UPDATE, "project")
    tags = ref.pop("tags", None)
    async with api_state(request).db.writer() as conn:
        in_domain(ctxt, "update_project", (await _project(conn, project_id))["domain_id"])
        if ref:
            await identity.project_update(conn, project_id, ref)
        if tags is not None:
            await identity.project_tags_set(conn, project_id, tags)
        row = await _project(conn, project_id)
    return JSONResponse({"project": project_view(request, row)})


async def delete_project(request: Request) -> Response:
    ctxt = manager(request, "delete_project")
    project_id = request.path_params["project_id"]
    async with api_state(request).db.writer() as conn:
        in_domain(ctxt, "delete_project", (await _project(conn, project_id))["domain_id"])
        await identity.project_delete(conn, project_id)
    return Response(status_code=204)


# --- project tags ------------------------------------------------------------

TAGS_BODY = {"type": "object", "properties": {"tags": _TAGS}, "required": ["tags"]}


def _tag(request: Request) -> str:
    tag = request.path_params["tag"]
    validate(tag, _TAG)
    return tag


async def project_tags(request: Request) -> Response:
    """``GET`` (list), ``PUT`` (replace) and ``DELETE`` (clear) a project's tags."""
    if request.method == "GET":
        async with api_state(request).db.reader() as conn:
            row = await _readable_project(request, conn, "list_project_tags")
        return JSONResponse({"tags": row["tags"]})
    tags: list[str] = []
    if request.method == "PUT":
        body = await json_body(request)
        validate(body, TAGS_BODY)
        tags = body["tags"]
    async with api_state(request).db.writer() as conn:
        row = await _managed_project(request, conn, "update_project_tags")
        await identity.project_tags_set(conn, row["id"], tags)
    if request.method == "DELETE":
        return Response(status_code=204)
    return JSONResponse({"tags": sorted(set(tags))})


async def project_tag(request: Request) -> Response:
    """``GET``/``HEAD`` (204 if tagged), ``PUT`` (add) and ``DELETE`` one tag."""
    tag = _tag(request)
    if request.method in ("GET", "HEAD"):
        async with api_state(request).db.reader() as conn:
            row = await _readable_project(request, conn, "get_project_tag")
        if tag not in row["tags"]:
            raise exception.NotFound(reason=f"Tag {tag} not found on project {row['id']}.")
        return Response(status_code=204)
    async with api_state(request).db.writer() as conn:
        row = await _managed_project(request, conn, "update_project_tags")
        if request.method == "PUT":
            if tag not in row["tags"] and len(row["tags"]) >= MAX_TAGS:
                raise exception.ValidationError(
                    field="tags", reason=f"a project has at most {MAX_TAGS}"
                )
            await identity.project_tag_add(conn, row["id"], tag)
        elif not await identity.project_tag_remove(conn, row["id"], tag):
            raise exception.NotFound(reason=f"Tag {tag} not found on project {row['id']}.")
    if request.method == "PUT":
        return Response(status_code=201, headers={"Location": str(request.url)})
    return Response(status_code=204)


# --- users -------------------------------------------------------------------


def _user_not_found(user_id: str) -> exception.NotFound:
    return exception.NotFound(reason=f"Could not find user: {user_id}.")


async def _user(conn: Any, user_id: str) -> dict[str, Any]:
    row = await identity.user_get_by_id(conn, user_id)
    if row is None:
        raise _user_not_found(user_id)
    return row


async def list_users(request: Request) -> Response:
    ctxt = manager(request, "list_users")
    q = request.query_params
    domain_id = listing_domain(ctxt, "list_users", q.get("domain_id"))
    async with api_state(request).db.reader() as conn:
        rows = await identity.user_get_all(
            conn, name=q.get("name"), domain_id=domain_id, enabled=flag(request, "enabled")
        )
    return JSONResponse(
        {"users": [user_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def create_user(request: Request) -> Response:
    ctxt = manager(request, "create_user")
    ref, others = await _body_and_extras(request, USER_CREATE, "user")
    domain_id = new_in_domain(ctxt, "create_user", ref.get("domain_id"))
    password = ref.get("password")
    password_hash = await passwords.hash_password_async(password) if password else None
    async with api_state(request).db.writer() as conn:
        await _domain_exists(conn, domain_id)
        default_project = ref.get("default_project_id")
        if default_project:
            in_domain(ctxt, "create_user", (await _project(conn, default_project))["domain_id"])
        row = await identity.user_create(
            conn,
            ref["name"],
            password_hash,
            default_project_id=default_project,
            domain_id=domain_id,
            enabled=ref.get("enabled", True),
            extra={**others, **{k: ref[k] for k in _EXTRA if ref.get(k) is not None}},
        )
    return JSONResponse({"user": user_view(request, row)}, status_code=201)


async def show_user(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    async with api_state(request).db.reader() as conn:
        row = await _user(conn, user_id)
    self_or_manager(request, row, "get_user")
    return JSONResponse({"user": user_view(request, row)})


async def update_user(request: Request) -> Response:
    ctxt = manager(request, "update_user")
    user_id = request.path_params["user_id"]
    ref, others = await _body_and_extras(request, USER_UPDATE, "user")
    values: dict[str, Any] = {k: ref[k] for k in ("name", "enabled") if k in ref}
    if "default_project_id" in ref:
        values["default_project_id"] = ref["default_project_id"]
    if "password" in ref:
        password = ref["password"]
        values["password_hash"] = (
            await passwords.hash_password_async(password) if password else None
        )
    async with api_state(request).db.writer() as conn:
        row = await _user(conn, user_id)
        in_domain(ctxt, "update_user", row["domain_id"])
        if values.get("default_project_id"):
            project = await _project(conn, values["default_project_id"])
            in_domain(ctxt, "update_user", project["domain_id"])
        extra = {**(row.get("extra") or {}), **others}
        for key in _EXTRA:
            if key in ref:
                extra[key] = ref[key]
        if extra != (row.get("extra") or {}):
            values["extra"] = extra
        if values:
            await identity.user_update(conn, user_id, values)
        row = await _user(conn, user_id)
    return JSONResponse({"user": user_view(request, row)})


async def delete_user(request: Request) -> Response:
    ctxt = manager(request, "delete_user")
    user_id = request.path_params["user_id"]
    if user_id == ctxt.user_id:
        # Keystone allows it; a cloud left without its admin is not worth it.
        raise exception.Forbidden(reason="You cannot delete yourself.")
    async with api_state(request).db.writer() as conn:
        in_domain(ctxt, "delete_user", (await _user(conn, user_id))["domain_id"])
        await identity.user_delete(conn, user_id)
    return Response(status_code=204)


async def change_password(request: Request) -> Response:
    """``POST /v3/users/{id}/password``: the user itself or an admin (Keystone's
    default), knowing the old one either way."""
    user_id = request.path_params["user_id"]
    self_or_admin(request, user_id, "change_password")
    ref = await _body(request, PASSWORD_CHANGE, "user")
    async with api_state(request).db.reader() as conn:
        row = await _user(conn, user_id)
    if not await passwords.verify_password_async(
        row["password_hash"], ref.get("original_password") or ""
    ):
        raise exception.NotAuthenticated()
    new_hash = await passwords.hash_password_async(ref["password"])
    async with api_state(request).db.writer() as conn:
        await identity.user_update(conn, user_id, {"password_hash": new_hash})
    return Response(status_code=204)


async def user_projects(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    async with api_state(request).db.reader() as conn:
        self_or_manager(request, await _user(conn, user_id), "list_user_projects")
        rows = await identity.with_tags(conn, await roles_db.projects_for_user(conn, user_id))
    return JSONResponse(
        {"projects": [project_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def user_groups(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    async with api_state(request).db.reader() as conn:
        self_or_manager(request, await _user(conn, user_id), "list_groups_for_user")
        rows = await identity.groups_for_user(conn, user_id)
    return JSONResponse(
        {"groups": [group_view(request, r) for r in rows], "links": collection_links(request)}
    )


# --- groups ------------------------------------------------------------------


async def list_groups(request: Request) -> Response:
    ctxt = manager(request, "list_groups")
    q = request.query_params
    domain_id = listing_domain(ctxt, "list_groups", q.get("domain_id"))
    async with api_state(request).db.reader() as conn:
        rows = await identity.group_get_all(conn, name=q.get("name"), domain_id=domain_id)
    return JSONResponse(
        {"groups": [group_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def create_group(request: Request) -> Response:
    ctxt = manager(request, "create_group")
    ref = await _body(request, GROUP_CREATE, "group")
    domain_id = new_in_domain(ctxt, "create_group", ref.get("domain_id"))
    async with api_state(request).db.writer() as conn:
        await _domain_exists(conn, domain_id)
        row = await identity.group_create(
            conn, ref["name"], domain_id=domain_id, description=ref.get("description")
        )
    return JSONResponse({"group": group_view(request, row)}, status_code=201)


async def show_group(request: Request) -> Response:
    ctxt = manager(request, "get_group")
    async with api_state(request).db.reader() as conn:
        row = await identity.group_get(conn, request.path_params["group_id"])
    in_domain(ctxt, "get_group", row["domain_id"])
    return JSONResponse({"group": group_view(request, row)})


async def update_group(request: Request) -> Response:
    ctxt = manager(request, "update_group")
    group_id = request.path_params["group_id"]
    ref = await _body(request, GROUP_UPDATE, "group")
    async with api_state(request).db.writer() as conn:
        in_domain(ctxt, "update_group", (await identity.group_get(conn, group_id))["domain_id"])
        if ref:
            await identity.group_update(conn, group_id, ref)
        row = await identity.group_get(conn, group_id)
    return JSONResponse({"group": group_view(request, row)})


async def delete_group(request: Request) -> Response:
    ctxt = manager(request, "delete_group")
    group_id = request.path_params["group_id"]
    async with api_state(request).db.writer() as conn:
        in_domain(ctxt, "delete_group", (await identity.group_get(conn, group_id))["domain_id"])
        await identity.group_delete(conn, group_id)
    return Response(status_code=204)


async def group_members(request: Request) -> Response:
    ctxt = manager(request, "list_users_in_group")
    group_id = request.path_params["group_id"]
    async with api_state(request).db.reader() as conn:
        group = await identity.group_get(conn, group_id)
        in_domain(ctxt, "list_users_in_group", group["domain_id"])
        rows = await identity.group_users(conn, group_id)
    return JSONResponse(
        {"users": [user_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def group_membership(request: Request) -> Response:
    """PUT (add), HEAD/GET (check) and DELETE (remove) ``/groups/{g}/users/{u}``."""
    ctxt = manager(request, "manage_group_membership")
    group_id, user_id = request.path_params["group_id"], request.path_params["user_id"]
    writing = request.method in ("PUT", "DELETE")
    db = api_state(request).db
    async with db.writer() if writing else db.reader() as conn:
        group = await identity.group_get(conn, group_id)
        user = await _user(conn, user_id)
        # Both in the manager's domain (Keystone's add_user_to_group rule).
        in_domain(ctxt, "manage_group_membership", group["domain_id"], user["domain_id"])
        if request.method == "PUT":
            await identity.group_add_user(conn, group_id, user_id)
        elif request.method == "DELETE":
            if not await identity.group_remove_user(conn, group_id, user_id):
                raise exception.NotFound(
                    reason=f"User {user_id} is not a member of group {group_id}."
                )
        elif not await identity.group_has_user(conn, group_id, user_id):
            raise exception.NotFound(reason=f"User {user_id} is not a member of group {group_id}.")
    return Response(status_code=204)


ROUTES = [
    Route("/v3/domains", list_domains, methods=["GET"]),
    Route("/v3/domains", create_domain, methods=["POST"]),
    Route("/v3/domains/{domain_id}", show_domain, methods=["GET"]),
    Route("/v3/domains/{domain_id}", update_domain, methods=["PATCH"]),
    Route("/v3/domains/{domain_id}", delete_domain, methods=["DELETE"]),
    Route("/v3/projects", list_projects, methods=["GET"]),
    Route("/v3/projects", create_project, methods=["POST"]),
    Route("/v3/projects/{project_id}", show_project, methods=["GET"]),
    Route("/v3/projects/{project_id}", update_project, methods=["PATCH"]),
    Route("/v3/projects/{project_id}", delete_project, methods=["DELETE"]),
    Route("/v3/projects/{project_id}/tags", project_tags, methods=["GET", "PUT", "DELETE"]),
    Route(
        "/v3/projects/{project_id}/tags/{tag}",
        project_tag,
        methods=["GET", "HEAD", "PUT", "DELETE"],
    ),
    Route("/v3/users", list_users, methods=["GET"]),
    Route("/v3/users", create_user, methods=["POST"]),
    Route("/v3/users/{user_id}", show_user, methods=["GET"]),
    Route("/v3/users/{user_id}", update_user, methods=["PATCH"]),
    Route("/v3/users/{user_id}", delete_user, methods=["DELETE"]),
    Route("/v3/users/{user_id}/password", change_password, methods=["POST"]),
    Route("/v3/users/{user_id}/projects", user_projects, methods=["GET"]),
    Route("/v3/users/{user_id}/groups", user_groups, methods=["GET"]),
    Route("/v3/groups", list_groups, methods=["GET"]),
    Route("/v3/groups", create_group, methods=["POST"]),
    Route("/v3/groups/{group_id}", show_group, methods=["GET"]),
    Route("/v3/groups/{group_id}", update_group, methods=["PATCH"]),
    Route("/v3/groups/{group_id}", delete_group, methods=["DELETE"]),
    Route("/v3/groups/{group_id}/users", group_members, methods=["GET"]),
    Route(
        "/v3/groups/{group_id}/users/{user_id}",
        group_membership,
        methods=["PUT", "HEAD", "GET", "DELETE"],
    ),
]
