"""HTTP routes of Glance's metadata definitions catalog (``/v2/metadefs``)
and of its schemas (``/v2/schemas/metadefs/...``); the rules are in
:mod:`nubes.api.metadefs`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nubes import exception
from nubes.api import metadefs
from nubes.api.metadefs import Child, Metadefs
from nubes.api.middleware import api_state, request_context
from nubes.api.validation import json_body, query_int

_NS = "/v2/metadefs/namespaces"


def _api(request: Request) -> Metadefs:
    return Metadefs(api_state(request).db)


def _ns(request: Request) -> str:
    return str(request.path_params["namespace"])


async def list_namespaces(request: Request) -> Response:
    params = request.query_params
    limit = query_int(request, "limit", minimum=1)
    max_limit = api_state(request).conf.api.max_limit
    limit = min(limit or max_limit, max_limit)
    resource_types = [t for t in params.get("resource_types", "").split(",") if t]
    rows = await _api(request).list_namespaces(
        request_context(request),
        visibility=params.get("visibility"),
        resource_types=resource_types,
        sort_key=params.get("sort_key", "created_at"),
        sort_dir=params.get("sort_dir", "desc"),
        limit=limit,
        marker=params.get("marker"),
    )
    body: dict[str, Any] = {
        "namespaces": rows,
        "first": _NS,
        "schema": "/v2/schemas/metadefs/namespaces",
    }
    if rows and len(rows) == limit:
        query = {k: v for k, v in params.items() if k != "marker"}
        query["marker"] = rows[-1]["namespace"]
        body["next"] = f"{_NS}?{urlencode(query)}"
    return JSONResponse(body)


async def create_namespace(request: Request) -> Response:
    body = await _api(request).create_namespace(request_context(request), await json_body(request))
    return JSONResponse(body, status_code=201)


async def show_namespace(request: Request) -> Response:
    return JSONResponse(await _api(request).show_namespace(request_context(request), _ns(request)))


async def update_namespace(request: Request) -> Response:
    body = await _api(request).update_namespace(
        request_context(request), _ns(request), await json_body(request)
    )
    return JSONResponse(body)


async def delete_namespace(request: Request) -> Response:
    await _api(request).delete_namespace(request_context(request), _ns(request))
    return Response(status_code=204)


async def list_resource_types(request: Request) -> Response:
    rows = await _api(request).list_resource_types(request_context(request))
    return JSONResponse({"resource_types": rows})


async def list_associations(request: Request) -> Response:
    rows = await _api(request).list_associations(request_context(request), _ns(request))
    return JSONResponse({"resource_type_associations": rows})


async def associate(request: Request) -> Response:
    body = await _api(request).associate(
        request_context(request), _ns(request), await json_body(request)
    )
    return JSONResponse(body, status_code=201)


async def dissociate(request: Request) -> Response:
    await _api(request).dissociate(
        request_context(request), _ns(request), request.path_params["resource_type"]
    )
    return Response(status_code=204)


# --- objects, properties, tags: one set of handlers, the kind from the route -----------------


def _view(kind: Child, namespace: str, row: dict[str, Any]) -> dict[str, Any]:
    if kind == "object":
        return metadefs.object_view(namespace, row)
    if kind == "property":
        return metadefs.property_view(namespace, row)
    return metadefs.tag_view(row)


def _children(kind: Child) -> tuple[Any, ...]:
    """The five handlers of a kind: list, create, show, update, delete (and
    delete-all as a sixth)."""

    async def list_all(request: Request) -> Response:
        ns = _ns(request)
        rows = await _api(request).list_children(request_context(request), kind, ns)
        if kind == "property":
            # Glance lists properties as an object keyed by name.
            props = {r["name"]: metadefs.property_definition(r) for r in rows}
            return JSONResponse({"properties": props, "schema": "/v2/schemas/metadefs/properties"})
        key = {"object": "objects", "tag": "tags"}[kind]
        return JSONResponse(
            {key: [_view(kind, ns, r) for r in rows], "schema": f"/v2/schemas/metadefs/{key}"}
        )

    async def create(request: Request) -> Response:
        ns = _ns(request)
        row = await _api(request).create_child(
            request_context(request), kind, ns, await json_body(request)
        )
        return JSONResponse(_view(kind, ns, row), status_code=201)

    async def show(request: Request) -> Response:
        ns = _ns(request)
        row = await _api(request).show_child(
            request_context(request), kind, ns, request.path_params["name"]
        )
        return JSONResponse(_view(kind, ns, row))

    async def update(request: Request) -> Response:
        ns = _ns(request)
        row = await _api(request).update_child(
            request_context(request),
            kind,
            ns,
            request.path_params["name"],
            await json_body(request),
        )
        return JSONResponse(_view(kind, ns, row))

    async def delete(request: Request) -> Response:
        await _api(request).delete_child(
            request_context(request), kind, _ns(request), request.path_params["name"]
        )
        return Response(status_code=204)

    async def delete_all(request: Request) -> Response:
        await _api(request).delete_children(request_context(request), kind, _ns(request))
        return Response(status_code=204)

    return list_all, create, show, update, delete, delete_all


async def create_tag(request: Request) -> Response:
    """``POST .../tags/{name}``: one tag, named by the path (no body)."""
    ns = _ns(request)
    row = await _api(request).create_child(
        request_context(request), "tag", ns, {"name": request.path_params["name"]}
    )
    return JSONResponse(metadefs.tag_view(row), status_code=201)


async def create_tags(request: Request) -> Response:
    ns = _ns(request)
    append = request.headers.get("X-Openstack-Append", "false").lower() == "true"
    rows = await _api(request).create_tags(
        request_context(request), ns, await json_body(request), append=append
    )
    return JSONResponse({"tags": [{"name": r["name"]} for r in rows]}, status_code=201)


async def schema(request: Request) -> Response:
    kind = request.path_params["kind"]
    found = metadefs.schemas().get(kind)
    if found is None:
        raise exception.NotFound(reason=f"No schema metadefs/{kind}.")
    return JSONResponse(found)


def _routes() -> list[Route]:
    routes = [
        Route(_NS, list_namespaces, methods=["GET"]),
        Route(_NS, create_namespace, methods=["POST"]),
        Route(_NS + "/{namespace}", show_namespace, methods=["GET"]),
        Route(_NS + "/{namespace}", update_namespace, methods=["PUT"]),
        Route(_NS + "/{namespace}", delete_namespace, methods=["DELETE"]),
        Route("/v2/metadefs/resource_types", list_resource_types, methods=["GET"]),
        Route(_NS + "/{namespace}/resource_types", list_associations, methods=["GET"]),
        Route(_NS + "/{namespace}/resource_types", associate, methods=["POST"]),
        Route(_NS + "/{namespace}/resource_types/{resource_type}", dissociate, methods=["DELETE"]),
        Route(_NS + "/{namespace}/tags", create_tags, methods=["POST"]),
        Route(_NS + "/{namespace}/tags/{name}", create_tag, methods=["POST"]),
        Route("/v2/schemas/metadefs/{kind}", schema, methods=["GET"]),
    ]
    kinds: tuple[tuple[Child, str], ...] = (
        ("object", "objects"),
        ("property", "properties"),
        ("tag", "tags"),
    )
    for kind, path in kinds:
        list_all, create, show, update, delete, delete_all = _children(kind)
        base = f"{_NS}/{{namespace}}/{path}"
        routes += [
            Route(base, list_all, methods=["GET"]),
            Route(base, delete_all, methods=["DELETE"]),
            Route(base + "/{name}", show, methods=["GET"]),
            Route(base + "/{name}", update, methods=["PUT"]),
            Route(base + "/{name}", delete, methods=["DELETE"]),
        ]
        if kind != "tag":
            routes.append(Route(base, create, methods=["POST"]))
    return routes


ROUTES = _routes()
