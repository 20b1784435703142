"""Keystone's unified limits (``/v3/registered_limits``, ``/v3/limits``) for
the image service's quotas, which is how Glance's are set
(``openstack limit create --service glance --project P --resource-limit N
image_count_total``).

A registered limit is every project's default: the quota class
``default``'s row, else the ``[quota]`` option (read here; set it in the
configuration). A limit is one project's own, a row of ``quotas`` as the
compute and network quotas' (:mod:`nubes.api.quotas` holds the rules and
enforces them). A limit's id is derived from what identifies it, the
project and the resource, so it needs no column of its own.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nubes import exception
from nubes.api import policy, quotas
from nubes.api.identity import catalog
from nubes.api.identity.common import admin, collection_links, link
from nubes.api.middleware import api_state, request_context
from nubes.api.validation import json_body, validate
from nubes.db.api import identity
from nubes.db.api import quotas as quotas_db

_LIMIT_VALUE = {"type": "integer", "minimum": quotas.UNLIMITED, "maximum": 2**31 - 1}
CREATE = {
    "type": "object",
    "properties": {
        "limits": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "service_id": {"type": "string", "maxLength": 64},
                    "project_id": {"type": "string", "minLength": 1, "maxLength": 64},
                    "region_id": {"type": ["string", "null"], "maxLength": 255},
                    "resource_name": {"type": "string", "minLength": 1, "maxLength": 255},
                    "resource_limit": _LIMIT_VALUE,
                },
                "required": ["service_id", "project_id", "resource_name", "resource_limit"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["limits"],
    "additionalProperties": False,
}
UPDATE = {
    "type": "object",
    "properties": {
        "limit": {
            "type": "object",
            "properties": {"resource_limit": _LIMIT_VALUE},
            "required": ["resource_limit"],
            "additionalProperties": False,
        }
    },
    "required": ["limit"],
    "additionalProperties": False,
}


def image_service_id(request: Request) -> str:
    """The catalog id of the image service, the one service with limits here."""
    return catalog.builtin_service_id(api_state(request), "image")


def limit_id(project_id: str, resource: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"nubes-limit/{project_id}/{resource}").hex


def _registered_id(resource: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"nubes-registered-limit/{resource}").hex


def _region(request: Request) -> str:
    return str(api_state(request).conf.api.region_name)


def _limit_view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    lid = limit_id(row["project_id"], row["resource"])
    return {
        "id": lid,
        "project_id": row["project_id"],
        "domain_id": None,
        "service_id": image_service_id(request),
        "region_id": _region(request),
        "resource_name": row["resource"],
        "resource_limit": row["hard_limit"],
        "description": None,
        "links": link(request, f"limits/{lid}"),
    }


async def list_registered(request: Request) -> Response:
    """Every project's image limits (any authenticated caller, as Keystone)."""
    service = image_service_id(request)
    params = request.query_params
    async with api_state(request).db.reader() as conn:
        defaults = await quotas.image_defaults(conn, api_state(request).conf)
    out = [
        {
            "id": _registered_id(name),
            "service_id": service,
            "region_id": _region(request),
            "resource_name": name,
            "default_limit": value,
            "description": None,
            "links": link(request, f"registered_limits/{_registered_id(name)}"),
        }
        for name, value in defaults.items()
        if params.get("resource_name", name) == name
        and params.get("service_id", service) == service
    ]
    return JSONResponse({"registered_limits": out, "links": collection_links(request)})


async def _rows(request: Request, project_id: str | None) -> list[dict[str, Any]]:
    async with api_state(request).db.reader() as conn:
        return await quotas_db.project_limit_rows(conn, quotas.IMAGE_RESOURCES, project_id)


async def list_limits(request: Request) -> Response:
    """Project limits: all of them for an admin, the caller's project's otherwise."""
    ctxt = request_context(request)
    params = request.query_params
    project_id = params.get("project_id")
    if not policy.allowed(ctxt, policy.Rule.ADMIN):
        project_id = ctxt.project_id or ""
    rows = await _rows(request, project_id)
    views = [_limit_view(request, r) for r in rows]
    for key in ("resource_name", "service_id", "region_id"):
        if key in params:
            views = [v for v in views if v[key] == params[key]]
    return JSONResponse({"limits": views, "links": collection_links(request)})


async def _find(request: Request, lid: str) -> dict[str, Any]:
    for row in await _rows(request, None):
        if limit_id(row["project_id"], row["resource"]) == lid:
            ctxt = request_context(request)
            if policy.allowed(ctxt, policy.Rule.ADMIN) or ctxt.project_id == row["project_id"]:
                return row
            break
    raise exception.NotFound(reason=f"Could not find limit for {lid}.")


async def show_limit(request: Request) -> Response:
    row = await _find(request, request.path_params["limit_id"])
    return JSONResponse({"limit": _limit_view(request, row)})


async def create_limits(request: Request) -> Response:
    """Keystone's create: every limit in the body, or none (400/409 for the first bad one)."""
    admin(request, "create_limits")
    body = await json_body(request)
    validate(body, CREATE)
    service = image_service_id(request)
    state = api_state(request)
    wanted: dict[tuple[str, str], int] = {}
    for item in body["limits"]:
        if item["service_id"] != service:
            raise exception.Invalid(
                reason=f"service {item['service_id']} has no registered limits "
                f"(only the image service {service} has)"
            )
        if item.get("region_id") not in (None, _region(request)):
            raise exception.Invalid(reason=f"region {item['region_id']} does not exist")
        if item["resource_name"] not in quotas.IMAGE_RESOURCES:
            raise exception.Invalid(
                reason=f"no registered limit for resource {item['resource_name']}"
            )
        key = (item["project_id"], item["resource_name"])
        if key in wanted:
            raise exception.Conflict(reason="Duplicate entry found with the same limit.")
        wanted[key] = item["resource_limit"]
    async with state.db.writer() as conn:
        for project_id, _ in wanted:
            await identity.project_get(conn, project_id)
        existing = await quotas_db.project_limit_rows(conn, quotas.IMAGE_RESOURCES)
        taken = {(r["project_id"], r["resource"]) for r in existing}
        if taken & set(wanted):
            raise exception.Conflict(reason="Duplicate entry found with the same limit.")
        for (project_id, resource), value in wanted.items():
            await quotas_db.limits_set(conn, project_id, {resource: value})
    rows = [{"project_id": p, "resource": r, "hard_limit": v} for (p, r), v in wanted.items()]
    return JSONResponse({"limits": [_limit_view(request, row) for row in rows]}, status_code=201)


async def update_limit(request: Request) -> Response:
    admin(request, "update_limit")
    body = await json_body(request)
    validate(body, UPDATE)
    row = await _find(request, request.path_params["limit_id"])
    value = body["limit"]["resource_limit"]
    async with api_state(request).db.writer() as conn:
        await quotas_db.limits_set(conn, row["project_id"], {row["resource"]: value})
    return JSONResponse({"limit": _limit_view(request, {**row, "hard_limit": value})})


async def delete_limit(request: Request) -> Response:
    admin(request, "delete_limit")
    row = await _find(request, request.path_params["limit_id"])
    async with api_state(request).db.writer() as conn:
        await quotas_db.limit_delete(conn, row["project_id"], row["resource"])
    return Response(status_code=204)


ROUTES = [
    Route("/v3/registered_limits", list_registered, methods=["GET"]),
    Route("/v3/limits", list_limits, methods=["GET"]),
    Route("/v3/limits", create_limits, methods=["POST"]),
    Route("/v3/limits/{limit_id}", show_limit, methods=["GET"]),
    Route("/v3/limits/{limit_id}", update_limit, methods=["PATCH"]),
    Route("/v3/limits/{limit_id}", delete_limit, methods=["DELETE"]),
]
