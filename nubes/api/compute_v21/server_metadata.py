"""``/servers/{id}/metadata``: list, replace and merge a server's metadata;
``/servers/{id}/metadata/{key}``: show, set and delete one item (Nova's
shapes: ``{"metadata": {...}}`` for the whole, ``{"meta": {key: value}}``
for one item). The rules are in :mod:`nubes.api.server_metadata`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import server_metadata
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.compute_v21.servers import get_server
from nubes.api.policy import Rule

WHOLE = {
    "type": "object",
    "properties": {"metadata": v.METADATA},
    "required": ["metadata"],
    "additionalProperties": False,
}
ONE = {
    "type": "object",
    "properties": {"meta": {**v.METADATA, "minProperties": 1, "maxProperties": 1}},
    "required": ["meta"],
    "additionalProperties": False,
}


async def _server(request: Request, action: str, rule: Rule) -> dict[str, Any]:
    row = await get_server(request, request.path_params["server_id"])
    common.authorize(request, f"os_compute_api:server-metadata:{action}", rule, row["project_id"])
    return row


async def _change(request: Request, row: dict[str, Any], **how: Any) -> dict[str, str]:
    state = common.state(request)
    return await server_metadata.change(
        state.db, state.conf, common.ctx(request), row["uuid"], **how
    )


async def index(request: Request) -> Response:
    row = await _server(request, "index", Rule.PROJECT_READER)
    return common.json({"metadata": dict(row.get("metadata") or {})})


async def create(request: Request) -> Response:
    """POST: merge the given items into the metadata."""
    row = await _server(request, "create", Rule.PROJECT_MEMBER)
    body = await v.json_body(request)
    v.validate(body, WHOLE)
    return common.json({"metadata": await _change(request, row, set_items=body["metadata"])})


async def update_all(request: Request) -> Response:
    """PUT: make the given items the whole metadata."""
    row = await _server(request, "update_all", Rule.PROJECT_MEMBER)
    body = await v.json_body(request)
    v.validate(body, WHOLE)
    new = await _change(request, row, set_items=body["metadata"], replace=True)
    return common.json({"metadata": new})


async def show(request: Request) -> Response:
    row = await _server(request, "show", Rule.PROJECT_READER)
    key = request.path_params["key"]
    metadata = dict(row.get("metadata") or {})
    if key not in metadata:
        raise exception.NotFound(message="Metadata item was not found")
    return common.json({"meta": {key: metadata[key]}})


async def update(request: Request) -> Response:
    row = await _server(request, "update", Rule.PROJECT_MEMBER)
    key = request.path_params["key"]
    body = await v.json_body(request)
    v.validate(body, ONE)
    if key not in body["meta"]:
        raise common.bad_request("Request body and URI mismatch")
    await _change(request, row, set_items=body["meta"])
    return common.json({"meta": {key: body["meta"][key]}})


async def delete(request: Request) -> Response:
    row = await _server(request, "delete", Rule.PROJECT_MEMBER)
    await _change(request, row, delete_key=request.path_params["key"])
    return common.empty(204)


ROUTES = [
    Route("/servers/{server_id}/metadata", common.no_query(index), methods=["GET"]),
    Route("/servers/{server_id}/metadata", create, methods=["POST"]),
    Route("/servers/{server_id}/metadata", update_all, methods=["PUT"]),
    Route("/servers/{server_id}/metadata/{key}", common.no_query(show), methods=["GET"]),
    Route("/servers/{server_id}/metadata/{key}", update, methods=["PUT"]),
    Route("/servers/{server_id}/metadata/{key}", delete, methods=["DELETE"]),
]
