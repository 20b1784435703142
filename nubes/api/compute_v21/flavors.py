"""Flavors: list, detail, show, create, update (2.55), delete, extra specs, access lists.

2.102 drops what nova-network left behind: ``rxtx_factor`` and
``OS-FLV-DISABLED:disabled`` leave the bodies, ``rxtx_factor`` the create
and the sort keys; the list takes a ``name`` filter instead.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import extra_specs
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.policy import Rule
from nubes.api.views import Field, View
from nubes.db.api import flavors as flavors_db

# --- views -------------------------------------------------------------------------


def _links(row: dict[str, Any], request: Request) -> list[dict[str, str]]:
    return common.links(request, "flavors", row["flavorid"])


BASIC = View(
    Field("id", lambda r, _: r["flavorid"]),
    Field("name"),
    Field("description", min="2.55"),
    Field("links", lambda r, req: _links(r, req)),
)
DETAIL = View(
    Field("id", lambda r, _: r["flavorid"]),
    Field("name"),
    Field("ram", lambda r, _: r["memory_mb"]),
    Field("disk", lambda r, _: r["root_gb"]),
    # Nova shows a swap of 0 as "" before 2.75.
    Field("swap", lambda r, _: r["swap"] or "", max="2.74"),
    Field("swap", lambda r, _: r["swap"], min="2.75"),
    Field("OS-FLV-EXT-DATA:ephemeral", lambda r, _: r["ephemeral_gb"]),
    Field("OS-FLV-DISABLED:disabled", lambda r, _: r["disabled"], max="2.101"),
    Field("vcpus"),
    Field("os-flavor-access:is_public", lambda r, _: r["is_public"]),
    Field("rxtx_factor", max="2.101"),
    Field("links", lambda r, req: _links(r, req)),
    Field("description", min="2.55"),
    Field("extra_specs", lambda r, _: dict(r["extra_specs"]), min="2.61"),
)

# --- schemas -----------------------------------------------------------------------

_FLAVOR_ID = {
    "type": ["string", "number", "null"],
    "minLength": 1,
    "maxLength": 255,
    "pattern": r"^(?! )[a-zA-Z0-9. _-]+(?<! )$",
}
_RXTX = {
    "type": ["number", "string"],
    "pattern": r"^[0-9]+(\.[0-9]+)?$",
    "minimum": 0,
    "exclusiveMinimum": True,
    "maximum": 3.40282e38,
}
_CREATE_PROPS: dict[str, Any] = {
    "name": v.NAME,
    "id": _FLAVOR_ID,
    "ram": v.POSITIVE_INT,
    "vcpus": v.POSITIVE_INT,
    "disk": v.NON_NEGATIVE_INT,
    "OS-FLV-EXT-DATA:ephemeral": v.NON_NEGATIVE_INT,
    "swap": v.NON_NEGATIVE_INT,
    "rxtx_factor": _RXTX,
    "os-flavor-access:is_public": v.BOOLEAN,
}


def _create_schema(props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "flavor": {
                "type": "object",
                "properties": props,
                "required": ["name", "ram", "vcpus", "disk"],
                "additionalProperties": False,
            }
        },
        "required": ["flavor"],
        "additionalProperties": False,
    }


_CREATE_PROPS_255 = {**_CREATE_PROPS, "description": v.DESCRIPTION}
CREATE: v.Versioned = [
    (("2.1", "2.54"), _create_schema(_CREATE_PROPS)),
    (("2.55", "2.101"), _create_schema(_CREATE_PROPS_255)),
    (
        ("2.102", None),
        _create_schema({k: s for k, s in _CREATE_PROPS_255.items() if k != "rxtx_factor"}),
    ),
]
UPDATE = {
    "type": "object",
    "properties": {
        "flavor": {
            "type": "object",
            "properties": {"description": v.DESCRIPTION},
            "required": ["description"],
            "additionalProperties": False,
        }
    },
    "required": ["flavor"],
    "additionalProperties": False,
}
_SPEC_KEY = r"^[a-zA-Z0-9-_:. ]{1,255}$"
_SPEC_VALUE = {"type": ["string", "number", "boolean"], "minLength": 0, "maxLength": 255}
EXTRA_SPECS = {
    "type": "object",
    "properties": {
        "extra_specs": {
            "type": "object",
            "patternProperties": {_SPEC_KEY: _SPEC_VALUE},
            "additionalProperties": False,
        }
    },
    "required": ["extra_specs"],
    "additionalProperties": False,
}
ONE_SPEC = {
    "type": "object",
    "patternProperties": {_SPEC_KEY: _SPEC_VALUE},
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
}
_TENANT = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[a-zA-Z0-9-_]*$"}
ACTION = {
    "type": "object",
    "properties": {
        "addTenantAccess": {
            "type": "object",
            "properties": {"tenant": _TENANT},
            "required": ["tenant"],
            "additionalProperties": False,
        },
        "removeTenantAccess": {
            "type": "object",
            "properties": {"tenant": _TENANT},
            "required": ["tenant"],
            "additionalProperties": False,
        },
    },
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
}

# --- logic ---------------------------------------------------------------------------


async def _get_visible(request: Request, flavorid: str) -> dict[str, Any]:
    """The flavor if the caller may see it (admins: any; others: public or granted)."""
    async with common.state(request).db.reader() as conn:
        row = await flavors_db.get_by_flavor_id(conn, flavorid)
    if not common.is_admin(request) and not row["is_public"]:
        if common.ctx(request).project_id not in row["projects"]:
            raise exception.FlavorNotFound(flavor_id=flavorid)
    return row


def _spec_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- handlers ------------------------------------------------------------------------

SORT_KEYS = (
    "created_at",
    "description",
    "disabled",
    "ephemeral_gb",
    "flavorid",
    "id",
    "is_public",
    "memory_mb",
    "name",
    "root_gb",
    "rxtx_factor",
    "swap",
    "updated_at",
    "vcpu_weight",
    "vcpus",
)
#: What the list's query may hold (Nova's index_query): from 2.75 nothing else.
LIST_QUERY = ("limit", "marker", "is_public", "minRam", "minDisk", "sort_key", "sort_dir")
#: The version that adds the name filter and drops the ``rxtx_factor`` sort key.
NAME_FILTER_FROM = "2.102"


def _list_query(request: Request) -> tuple[str | re.Pattern[str] | None, tuple[str, ...]]:
    """(the name filter, the valid sort keys) at the request's version,
    refusing a parameter the version does not know (from 2.75)."""
    version = common.version(request)
    if version.at_least(NAME_FILTER_FROM):
        v.refuse_unknown_query(request, (*LIST_QUERY, "name"))
        name = request.query_params.get("name")
        wanted = None if name is None else v.name_filter("name", name)
        return wanted, tuple(k for k in SORT_KEYS if k != "rxtx_factor")
    if version.at_least("2.75"):
        v.refuse_unknown_query(request, LIST_QUERY)
    return None, SORT_KEYS


async def _list(request: Request, view: View) -> Response:
    params = request.query_params
    admin = common.is_admin(request)
    name, sort_keys = _list_query(request)
    is_public: bool | None = True
    if admin and "is_public" in params:
        raw = params["is_public"]
        is_public = None if raw.lower() == "none" else v.parse_bool("is_public", raw)
    min_ram = v.query_int(request, "minRam")
    min_disk = v.query_int(request, "minDisk")
    sort_key = params.get("sort_key", "flavorid")
    sort_dir = params.get("sort_dir", "asc")
    if sort_key not in sort_keys:
        raise common.bad_request(f"Invalid sort_key {sort_key}")
    if sort_dir not in ("asc", "desc"):
        raise common.bad_request(f"Invalid sort_dir {sort_dir}")
    if sort_key not in flavors_db.SORT_KEYS:
        sort_key = "flavorid"
    limit = common.limit(request)
    ctxt = common.ctx(request)
    async with common.state(request).db.reader(allow_stale=True) as conn:
        try:
            rows = await flavors_db.get_all(
                conn,
                is_public=is_public if admin else None,
                # Admins see every flavor; others the public ones and those granted.
                project_id=None if admin else ctxt.project_id,
                min_memory_mb=min_ram,
                min_root_gb=min_disk,
                disabled=None if admin else False,
                name_like=name if isinstance(name, str) else None,
                sort_key=sort_key,
                sort_dir="desc" if sort_dir == "desc" else "asc",
                # A regular expression is matched here, after the query: the
                # page is cut once it has been.
                limit=None if isinstance(name, re.Pattern) else limit,
                marker=params.get("marker"),
            )
        except exception.MarkerNotFound:
            raise common.bad_request(f"marker [{params.get('marker')}] not found") from None
    if isinstance(name, re.Pattern):
        rows = [r for r in rows if name.search(r["name"])][:limit]
    version = common.version(request)
    body: dict[str, Any] = {"flavors": [view.render(r, version, request) for r in rows]}
    if rows and len(rows) == limit:
        body["flavors_links"] = common.next_link(request, "flavors", rows[-1]["flavorid"])
    return common.json(body)


async def index(request: Request) -> Response:
    return await _list(request, BASIC)


async def detail(request: Request) -> Response:
    return await _list(request, DETAIL)


async def show(request: Request) -> Response:
    row = await _get_visible(request, request.path_params["flavor_id"])
    return common.json({"flavor": DETAIL.render(row, common.version(request), request)})


async def create(request: Request) -> Response:
    common.authorize(request, "os-flavor-manage:create", Rule.ADMIN)
    body = await v.json_body(request)
    version = common.version(request)
    v.validate(body, CREATE, version)
    spec = body["flavor"]
    flavorid = spec.get("id")
    flavorid = str(uuid.uuid4()) if flavorid is None else str(flavorid)
    values = {
        "flavorid": flavorid,
        "name": spec["name"],
        "memory_mb": v.to_int("ram", spec["ram"], 1),
        "vcpus": v.to_int("vcpus", spec["vcpus"], 1),
        "root_gb": v.to_int("disk", spec["disk"]),
        "ephemeral_gb": v.to_int(
            "OS-FLV-EXT-DATA:ephemeral", spec.get("OS-FLV-EXT-DATA:ephemeral", 0)
        ),
        "swap": v.to_int("swap", spec.get("swap", 0)),
        "rxtx_factor": float(spec.get("rxtx_factor", 1.0)),
        "is_public": v.parse_bool(
            "os-flavor-access:is_public", spec.get("os-flavor-access:is_public", True)
        ),
        "description": spec.get("description"),
    }
    async with common.state(request).db.writer() as conn:
        try:
            row = await flavors_db.create(conn, values)
        except exception.DBDuplicateEntry as exc:
            columns = str(exc.kwargs.get("columns", ""))
            if "name" in columns:
                raise exception.Conflict(
                    message=f"Flavor with name {values['name']} already exists."
                ) from None
            raise exception.Conflict(message=f"Flavor with ID {flavorid} already exists.") from None
    return common.json({"flavor": DETAIL.render(row, version, request)})


async def update(request: Request) -> Response:
    version = common.version(request)
    if not version.at_least("2.55"):
        raise exception.NotFound(message="The resource could not be found.")
    common.authorize(request, "os-flavor-manage:update", Rule.ADMIN)
    body = await v.json_body(request)
    v.validate(body, UPDATE)
    async with common.state(request).db.writer() as conn:
        row = await flavors_db.update_description(
            conn, request.path_params["flavor_id"], body["flavor"]["description"]
        )
    return common.json({"flavor": DETAIL.render(row, version, request)})


async def delete(request: Request) -> Response:
    common.authorize(request, "os-flavor-manage:delete", Rule.ADMIN)
    async with common.state(request).db.writer() as conn:
        await flavors_db.destroy(conn, request.path_params["flavor_id"])
    return common.empty(202)


# --- extra specs -----------------------------------------------------------------------


async def specs_index(request: Request) -> Response:
    common.authorize(request, "os-flavor-extra-specs:index", Rule.ANY)
    row = await _get_visible(request, request.path_params["flavor_id"])
    return common.json({"extra_specs": row["extra_specs"]})


def _check_specs(request: Request, specs: dict[str, str]) -> None:
    """2.86: specs in Nova's namespaces must be known ones with fitting values."""
    if common.version(request).at_least("2.86"):
        for key, value in specs.items():
            extra_specs.validate(key, value)


async def specs_create(request: Request) -> Response:
    common.authorize(request, "os-flavor-extra-specs:create", Rule.ADMIN)
    body = await v.json_body(request)
    v.validate(body, EXTRA_SPECS)
    specs = {k: _spec_str(val) for k, val in body["extra_specs"].items()}
    _check_specs(request, specs)
    async with common.state(request).db.writer() as conn:
        row = await flavors_db.get_by_flavor_id(conn, request.path_params["flavor_id"])
        await flavors_db.extra_specs_update_or_create(conn, row["id"], specs)
    return common.json({"extra_specs": specs})


async def specs_show(request: Request) -> Response:
    common.authorize(request, "os-flavor-extra-specs:show", Rule.ANY)
    flavorid, key = request.path_params["flavor_id"], request.path_params["key"]
    row = await _get_visible(request, flavorid)
    if key not in row["extra_specs"]:
        raise common.not_found(f"Flavor {flavorid} has no extra specs with key {key}.")
    return common.json({key: row["extra_specs"][key]})


async def specs_update(request: Request) -> Response:
    common.authorize(request, "os-flavor-extra-specs:update", Rule.ADMIN)
    key = request.path_params["key"]
    body = await v.json_body(request)
    if isinstance(body, dict) and len(body) > 1:
        raise common.bad_request("Request body contains too many items")
    v.validate(body, ONE_SPEC)
    if key not in body:
        raise common.bad_request("Request body and URI mismatch")
    value = _spec_str(body[key])
    _check_specs(request, {key: value})
    async with common.state(request).db.writer() as conn:
        row = await flavors_db.get_by_flavor_id(conn, request.path_params["flavor_id"])
        await flavors_db.extra_specs_update_or_create(conn, row["id"], {key: value})
    return common.json({key: value})


async def specs_delete(request: Request) -> Response:
    common.authorize(request, "os-flavor-extra-specs:delete", Rule.ADMIN)
    flavorid, key = request.path_params["flavor_id"], request.path_params["key"]
    async with common.state(request).db.writer() as conn:
        row = await flavors_db.get_by_flavor_id(conn, flavorid)
        try:
            await flavors_db.extra_specs_delete(conn, row["id"], key)
        except exception.NotFound:
            raise common.not_found(
                f"Flavor {flavorid} has no extra specs with key {key}."
            ) from None
    return common.empty(200)


# --- access ------------------------------------------------------------------------------


def _access_body(row: dict[str, Any], projects: list[str]) -> dict[str, Any]:
    return {"flavor_access": [{"flavor_id": row["flavorid"], "tenant_id": p} for p in projects]}


async def access_index(request: Request) -> Response:
    common.authorize(request, "os-flavor-access", Rule.ADMIN)
    row = await _get_visible(request, request.path_params["flavor_id"])
    if row["is_public"]:
        raise common.not_found("Access list not available for public flavors.")
    return common.json(_access_body(row, row["projects"]))


async def action(request: Request) -> Response:
    body = await v.json_body(request)
    v.validate(body, ACTION)
    flavorid = request.path_params["flavor_id"]
    async with common.state(request).db.writer() as conn:
        row = await flavors_db.get_by_flavor_id(conn, flavorid)
        if "addTenantAccess" in body:
            common.authorize(request, "os-flavor-access:add_tenant_access", Rule.ADMIN)
            tenant = body["addTenantAccess"]["tenant"]
            if row["is_public"]:
                raise exception.Conflict(message="Can not add access to a public flavor.")
            if tenant in row["projects"]:
                raise exception.Conflict(
                    message=f"Flavor access already exists for flavor {flavorid} "
                    f"and project {tenant} combination."
                )
            await flavors_db.access_add(conn, row["id"], tenant)
        else:
            common.authorize(request, "os-flavor-access:remove_tenant_access", Rule.ADMIN)
            tenant = body["removeTenantAccess"]["tenant"]
            try:
                await flavors_db.access_remove(conn, row["id"], tenant)
            except exception.NotFound:
                raise common.not_found(
                    f"Flavor access not found for {flavorid} / {tenant} combination."
                ) from None
        projects = await flavors_db.access_get(conn, row["id"])
    return common.json(_access_body(row, projects))


ROUTES = [
    Route("/flavors", index, methods=["GET"]),
    Route("/flavors", create, methods=["POST"]),
    Route("/flavors/detail", detail, methods=["GET"]),
    Route("/flavors/{flavor_id}", common.no_query(show), methods=["GET"]),
    Route("/flavors/{flavor_id}", update, methods=["PUT"]),
    Route("/flavors/{flavor_id}", delete, methods=["DELETE"]),
    Route("/flavors/{flavor_id}/action", action, methods=["POST"]),
    Route("/flavors/{flavor_id}/os-flavor-access", common.no_query(access_index), methods=["GET"]),
    Route("/flavors/{flavor_id}/os-extra_specs", common.no_query(specs_index), methods=["GET"]),
    Route("/flavors/{flavor_id}/os-extra_specs", specs_create, methods=["POST"]),
    Route(
        "/flavors/{flavor_id}/os-extra_specs/{key}", common.no_query(specs_show), methods=["GET"]
    ),
    Route("/flavors/{flavor_id}/os-extra_specs/{key}", specs_update, methods=["PUT"]),
    Route("/flavors/{flavor_id}/os-extra_specs/{key}", specs_delete, methods=["DELETE"]),
]
