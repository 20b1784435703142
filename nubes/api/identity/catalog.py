"""The service catalog: what tokens carry and ``/v3/regions``,
``/v3/services`` and ``/v3/endpoints`` show, from one place.

nubes' own services (compute, image, identity, network) and its region
(``[api] region_name``) are built in: their URLs follow the running
configuration, their ids are derived from those URLs, and they cannot be
changed over the API (403). Operators register more regions, services and
endpoints, which are rows (:mod:`nubes.db.api.catalog`); a token's catalog
is the built-in services plus every enabled registered service with its
enabled endpoints, so what these APIs list is what clients find.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nubes import exception
from nubes.api.identity.common import admin, collection_links, link
from nubes.api.middleware import api_state
from nubes.api.state import ApiState
from nubes.api.validation import json_body, validate
from nubes.db.api import catalog as db_catalog

#: (catalog type, catalog name, path of the versioned or unversioned endpoint)
SERVICES = (
    ("compute", "nova", "/compute/v2.1"),
    ("image", "glance", "/image"),
    ("identity", "keystone", "/identity"),
    ("network", "neutron", "/networking"),
)
INTERFACES = ("public", "internal", "admin")

_TEXT = {"type": ["string", "null"], "maxLength": 65535}
_NAME = {"type": "string", "minLength": 1, "maxLength": 255}
_REGION_FIELDS = {
    "description": _TEXT,
    "parent_region_id": {"type": ["string", "null"], "maxLength": 255},
}
REGION_CREATE = {
    "type": "object",
    "properties": {
        "region": {"type": "object", "properties": {"id": _NAME, **_REGION_FIELDS}},
    },
    "required": ["region"],
}
REGION_UPDATE = {
    "type": "object",
    "properties": {"region": {"type": "object", "properties": _REGION_FIELDS}},
    "required": ["region"],
}
_SERVICE_FIELDS = {
    "type": _NAME,
    "name": {"type": ["string", "null"], "maxLength": 255},
    "description": _TEXT,
    "enabled": {"type": "boolean"},
}
SERVICE_CREATE = {
    "type": "object",
    "properties": {
        "service": {"type": "object", "properties": _SERVICE_FIELDS, "required": ["type"]}
    },
    "required": ["service"],
}
SERVICE_UPDATE = {
    "type": "object",
    "properties": {"service": {"type": "object", "properties": _SERVICE_FIELDS}},
    "required": ["service"],
}
_ENDPOINT_FIELDS = {
    "service_id": {"type": "string", "minLength": 1, "maxLength": 64},
    "interface": {"enum": list(INTERFACES)},
    "url": {"type": "string", "minLength": 1, "maxLength": 2048},
    "region_id": {"type": ["string", "null"], "maxLength": 255},
    # Keystone's older name for region_id, still accepted.
    "region": {"type": ["string", "null"], "maxLength": 255},
    "enabled": {"type": "boolean"},
}
ENDPOINT_CREATE = {
    "type": "object",
    "properties": {
        "endpoint": {
            "type": "object",
            "properties": _ENDPOINT_FIELDS,
            "required": ["service_id", "interface", "url"],
        }
    },
    "required": ["endpoint"],
}
ENDPOINT_UPDATE = {
    "type": "object",
    "properties": {"endpoint": {"type": "object", "properties": _ENDPOINT_FIELDS}},
    "required": ["endpoint"],
}


# --- the built-in part -------------------------------------------------------


def _endpoint_base(state: ApiState, service: str) -> str:
    port = getattr(state.conf.api, f"{service}_port", 0)
    base = state.public_endpoint
    if port and not state.conf.api.public_endpoint:
        host = state.conf.api.bind_host
        base = f"http://{host}:{port}"
    return base


def _builtin(state: ApiState) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """nubes' own services and endpoints, as rows of the registered kind."""
    region = state.conf.api.region_name
    services, endpoints = [], []
    for kind, name, path in SERVICES:
        url = _endpoint_base(state, kind) + path
        service_id = uuid.uuid5(uuid.NAMESPACE_URL, url).hex
        services.append(
            {"id": service_id, "type": kind, "name": name, "description": None, "enabled": True}
        )
        endpoints += [
            {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{url}#{interface}").hex,
                "service_id": service_id,
                "interface": interface,
                "region_id": region,
                "url": url,
                "enabled": True,
            }
            for interface in INTERFACES
        ]
    return services, endpoints


def builtin_service_id(state: ApiState, kind: str) -> str:
    """The catalog id of nubes' own service of type ``kind`` (built in, always listed)."""
    services, _ = _builtin(state)
    return str(next(s["id"] for s in services if s["type"] == kind))


def _region(state: ApiState) -> dict[str, Any]:
    return {"id": state.conf.api.region_name, "description": "", "parent_region_id": None}


def _refuse_builtin(kind: str, id_: str) -> exception.Forbidden:
    return exception.Forbidden(
        reason=f"The {kind} {id_} is nubes' own; it follows the [api] configuration."
    )


async def service_catalog(state: ApiState) -> list[dict[str, Any]]:
    """The catalog a token carries: every enabled service with its enabled endpoints."""
    services, endpoints = _builtin(state)
    async with state.db.reader() as conn:
        services += await db_catalog.service_get_all(conn)
        endpoints += await db_catalog.endpoint_get_all(conn)
    out = []
    for service in services:
        if not service["enabled"]:
            continue
        mine = [
            {
                "id": e["id"],
                "interface": e["interface"],
                "region": e["region_id"],
                "region_id": e["region_id"],
                "url": e["url"],
            }
            for e in endpoints
            if e["service_id"] == service["id"] and e["enabled"]
        ]
        out.append(
            {
                "endpoints": mine,
                "id": service["id"],
                "type": service["type"],
                "name": service["name"],
            }
        )
    return out


# --- views -------------------------------------------------------------------


def region_view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "description": row["description"] or "",
        "parent_region_id": row["parent_region_id"],
        "links": link(request, f"regions/{row['id']}"),
    }


def service_view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "type": row["type"],
        "enabled": row["enabled"],
        "links": link(request, f"services/{row['id']}"),
    }
    # Keystone shows name and description only when they were given.
    for key in ("name", "description"):
        if row[key] is not None:
            out[key] = row[key]
    return out


def endpoint_view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "service_id": row["service_id"],
        "interface": row["interface"],
        "region_id": row["region_id"],
        "region": row["region_id"],
        "url": row["url"],
        "enabled": row["enabled"],
        "links": link(request, f"endpoints/{row['id']}"),
    }


# --- regions -----------------------------------------------------------------


async def _region_or_404(request: Request, conn: Any, region_id: str) -> dict[str, Any]:
    if region_id == api_state(request).conf.api.region_name:
        return _region(api_state(request))
    row = await db_catalog.region_get(conn, region_id)
    if row is None:
        raise exception.NotFound(reason=f"Could not find region: {region_id}.")
    return row


async def _check_parent(request: Request, conn: Any, region_id: str, parent: str | None) -> None:
    """The parent exists (404) and is not the region itself or below it (400)."""
    seen = {region_id}
    while parent is not None:
        if parent in seen:
            raise exception.ValidationError(
                field="parent_region_id", reason="a region cannot be its own ancestor"
            )
        seen.add(parent)
        parent = (await _region_or_404(request, conn, parent))["parent_region_id"]


async def list_regions(request: Request) -> Response:
    parent = request.query_params.get("parent_region_id")
    async with api_state(request).db.reader() as conn:
        rows = await db_catalog.region_get_all(conn, parent_region_id=parent)
    if parent is None:
        rows = [_region(api_state(request)), *rows]
    return JSONResponse(
        {"regions": [region_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def show_region(request: Request) -> Response:
    async with api_state(request).db.reader() as conn:
        row = await _region_or_404(request, conn, request.path_params["region_id"])
    return JSONResponse({"region": region_view(request, row)})


async def create_region(request: Request) -> Response:
    """``POST /v3/regions`` (id given or made) and ``PUT /v3/regions/{id}``."""
    admin(request, "create_region")
    body = await json_body(request)
    validate(body, REGION_CREATE)
    ref = dict(body["region"])
    if "region_id" in request.path_params:
        if ref.get("id", request.path_params["region_id"]) != request.path_params["region_id"]:
            raise exception.ValidationError(field="id", reason="differs from the URL's region id")
        ref["id"] = request.path_params["region_id"]
    if ref.get("id") == api_state(request).conf.api.region_name:
        raise exception.Conflict(reason=f"Duplicate ID, {ref['id']}.")
    values = {k: ref.get(k) for k in ("description", "parent_region_id")}
    if "id" in ref:
        values["id"] = ref["id"]
    async with api_state(request).db.writer() as conn:
        await _check_parent(request, conn, ref.get("id", ""), values["parent_region_id"])
        row = await db_catalog.region_create(conn, values)
    return JSONResponse({"region": region_view(request, row)}, status_code=201)


async def update_region(request: Request) -> Response:
    admin(request, "update_region")
    region_id = request.path_params["region_id"]
    body = await json_body(request)
    validate(body, REGION_UPDATE)
    values = dict(body["region"])
    if region_id == api_state(request).conf.api.region_name:
        raise _refuse_builtin("region", region_id)
    async with api_state(request).db.writer() as conn:
        await _region_or_404(request, conn, region_id)
        if "parent_region_id" in values:
            await _check_parent(request, conn, region_id, values["parent_region_id"])
        if values:
            await db_catalog.region_update(conn, region_id, values)
        row = await _region_or_404(request, conn, region_id)
    return JSONResponse({"region": region_view(request, row)})


async def delete_region(request: Request) -> Response:
    admin(request, "delete_region")
    region_id = request.path_params["region_id"]
    if region_id == api_state(request).conf.api.region_name:
        raise _refuse_builtin("region", region_id)
    async with api_state(request).db.writer() as conn:
        await db_catalog.region_delete(conn, region_id)
    return Response(status_code=204)


# --- services ----------------------------------------------------------------


def _builtin_service(request: Request, service_id: str) -> dict[str, Any] | None:
    services, _ = _builtin(api_state(request))
    return next((s for s in services if s["id"] == service_id), None)


async def _service_or_404(request: Request, conn: Any, service_id: str) -> dict[str, Any]:
    row = _builtin_service(request, service_id) or await db_catalog.service_get(conn, service_id)
    if row is None:
        raise exception.NotFound(reason=f"Could not find service: {service_id}.")
    return row


async def list_services(request: Request) -> Response:
    admin(request, "list_services")
    q = request.query_params
    kind, name = q.get("type"), q.get("name")
    builtin, _ = _builtin(api_state(request))
    async with api_state(request).db.reader() as conn:
        rows = await db_catalog.service_get_all(conn, type=kind, name=name)
    rows = [
        *(s for s in builtin if kind in (None, s["type"]) and name in (None, s["name"])),
        *rows,
    ]
    return JSONResponse(
        {"services": [service_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def show_service(request: Request) -> Response:
    admin(request, "get_service")
    async with api_state(request).db.reader() as conn:
        row = await _service_or_404(request, conn, request.path_params["service_id"])
    return JSONResponse({"service": service_view(request, row)})


async def create_service(request: Request) -> Response:
    admin(request, "create_service")
    body = await json_body(request)
    validate(body, SERVICE_CREATE)
    ref = body["service"]
    values = {k: ref.get(k) for k in ("type", "name", "description")}
    values["enabled"] = ref.get("enabled", True)
    async with api_state(request).db.writer() as conn:
        row = await db_catalog.service_create(conn, values)
    return JSONResponse({"service": service_view(request, row)}, status_code=201)


async def update_service(request: Request) -> Response:
    admin(request, "update_service")
    service_id = request.path_params["service_id"]
    body = await json_body(request)
    validate(body, SERVICE_UPDATE)
    if _builtin_service(request, service_id) is not None:
        raise _refuse_builtin("service", service_id)
    values = dict(body["service"])
    async with api_state(request).db.writer() as conn:
        await _service_or_404(request, conn, service_id)
        if values:
            await db_catalog.service_update(conn, service_id, values)
        row = await _service_or_404(request, conn, service_id)
    return JSONResponse({"service": service_view(request, row)})


async def delete_service(request: Request) -> Response:
    admin(request, "delete_service")
    service_id = request.path_params["service_id"]
    if _builtin_service(request, service_id) is not None:
        raise _refuse_builtin("service", service_id)
    async with api_state(request).db.writer() as conn:
        await db_catalog.service_delete(conn, service_id)
    return Response(status_code=204)


# --- endpoints ---------------------------------------------------------------


def _builtin_endpoint(request: Request, endpoint_id: str) -> dict[str, Any] | None:
    _, endpoints = _builtin(api_state(request))
    return next((e for e in endpoints if e["id"] == endpoint_id), None)


async def _endpoint_or_404(request: Request, conn: Any, endpoint_id: str) -> dict[str, Any]:
    row = _builtin_endpoint(request, endpoint_id) or await db_catalog.endpoint_get(
        conn, endpoint_id
    )
    if row is None:
        raise exception.NotFound(reason=f"Could not find endpoint: {endpoint_id}.")
    return row


async def _endpoint_values(request: Request, conn: Any, ref: dict[str, Any]) -> dict[str, Any]:
    """The columns an endpoint body sets; 400 for a service or region that
    does not exist or a built-in service (whose endpoints are nubes' own)."""
    values: dict[str, Any] = {
        k: ref[k] for k in ("service_id", "interface", "url", "enabled") if k in ref
    }
    if "region_id" in ref or "region" in ref:
        values["region_id"] = ref.get("region_id", ref.get("region"))
    if "service_id" in values:
        if _builtin_service(request, values["service_id"]) is not None:
            raise _refuse_builtin("service", values["service_id"])
        if await db_catalog.service_get(conn, values["service_id"]) is None:
            raise exception.ValidationError(
                field="service_id", reason=f"Could not find service: {values['service_id']}."
            )
    if values.get("region_id") is not None:
        try:
            await _region_or_404(request, conn, values["region_id"])
        except exception.NotFound:
            if "region_id" in ref:
                raise exception.ValidationError(
                    field="region_id", reason=f"Could not find region: {values['region_id']}."
                ) from None
            # Keystone's legacy ``region`` names a region it creates when missing.
            await db_catalog.region_create(conn, {"id": values["region_id"]})
    return values


async def list_endpoints(request: Request) -> Response:
    admin(request, "list_endpoints")
    q = request.query_params
    filters = {k: q.get(k) for k in ("service_id", "interface", "region_id")}
    _, builtin = _builtin(api_state(request))
    async with api_state(request).db.reader() as conn:
        rows = await db_catalog.endpoint_get_all(conn, **filters)
    matching = (e for e in builtin if all(v in (None, e[k]) for k, v in filters.items()))
    rows = [*matching, *rows]
    return JSONResponse(
        {"endpoints": [endpoint_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def show_endpoint(request: Request) -> Response:
    admin(request, "get_endpoint")
    async with api_state(request).db.reader() as conn:
        row = await _endpoint_or_404(request, conn, request.path_params["endpoint_id"])
    return JSONResponse({"endpoint": endpoint_view(request, row)})


async def create_endpoint(request: Request) -> Response:
    admin(request, "create_endpoint")
    body = await json_body(request)
    validate(body, ENDPOINT_CREATE)
    async with api_state(request).db.writer() as conn:
        values = await _endpoint_values(request, conn, body["endpoint"])
        values.setdefault("enabled", True)
        row = await db_catalog.endpoint_create(conn, values)
    return JSONResponse({"endpoint": endpoint_view(request, row)}, status_code=201)


async def update_endpoint(request: Request) -> Response:
    admin(request, "update_endpoint")
    endpoint_id = request.path_params["endpoint_id"]
    body = await json_body(request)
    validate(body, ENDPOINT_UPDATE)
    if _builtin_endpoint(request, endpoint_id) is not None:
        raise _refuse_builtin("endpoint", endpoint_id)
    async with api_state(request).db.writer() as conn:
        await _endpoint_or_404(request, conn, endpoint_id)
        values = await _endpoint_values(request, conn, body["endpoint"])
        if values:
            await db_catalog.endpoint_update(conn, endpoint_id, values)
        row = await _endpoint_or_404(request, conn, endpoint_id)
    return JSONResponse({"endpoint": endpoint_view(request, row)})


async def delete_endpoint(request: Request) -> Response:
    admin(request, "delete_endpoint")
    endpoint_id = request.path_params["endpoint_id"]
    if _builtin_endpoint(request, endpoint_id) is not None:
        raise _refuse_builtin("endpoint", endpoint_id)
    async with api_state(request).db.writer() as conn:
        await db_catalog.endpoint_delete(conn, endpoint_id)
    return Response(status_code=204)


ROUTES = [
    Route("/v3/regions", list_regions, methods=["GET"]),
    Route("/v3/regions", create_region, methods=["POST"]),
    Route("/v3/regions/{region_id}", show_region, methods=["GET"]),
    Route("/v3/regions/{region_id}", create_region, methods=["PUT"]),
    Route("/v3/regions/{region_id}", update_region, methods=["PATCH"]),
    Route("/v3/regions/{region_id}", delete_region, methods=["DELETE"]),
    Route("/v3/services", list_services, methods=["GET"]),
    Route("/v3/services", create_service, methods=["POST"]),
    Route("/v3/services/{service_id}", show_service, methods=["GET"]),
    Route("/v3/services/{service_id}", update_service, methods=["PATCH"]),
    Route("/v3/services/{service_id}", delete_service, methods=["DELETE"]),
    Route("/v3/endpoints", list_endpoints, methods=["GET"]),
    Route("/v3/endpoints", create_endpoint, methods=["POST"]),
    Route("/v3/endpoints/{endpoint_id}", show_endpoint, methods=["GET"]),
    Route("/v3/endpoints/{endpoint_id}", update_endpoint, methods=["PATCH"]),
    Route("/v3/endpoints/{endpoint_id}", delete_endpoint, methods=["DELETE"]),
]
