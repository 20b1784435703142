"""``os-server-tags`` (2.26): a server's tags.

``GET``/``PUT``/``DELETE /servers/{id}/tags`` list, replace and clear them;
``GET``/``PUT``/``DELETE /servers/{id}/tags/{tag}`` check, add and remove
one, with Nova's answers (201 with a Location for a new tag, 204 for one
the server had; 404 for a tag it has not got). At most 50 tags, each 1 to
60 characters without ``,`` or ``/``; tags change only while the server is
active, paused, suspended, stopped or shelved (409 otherwise). Listing
servers by tag (``tags``, ``tags-any``, ``not-tags``, ``not-tags-any``) is
in ``servers.py``; tags show in a server's body from 2.26.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.compute_v21.server_schemas import TAG
from nubes.api.compute_v21.servers import get_server
from nubes.api.policy import Rule
from nubes.db.api import tags as tags_db

MIN_VERSION = "2.26"

REPLACE = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": TAG}},
    "required": ["tags"],
    "additionalProperties": False,
}


async def _server(request: Request, action: str, rule: Rule) -> dict[str, Any]:
    if not common.version(request).at_least(MIN_VERSION):
        raise exception.NotFound(message="The resource could not be found.")
    row = await get_server(request, request.path_params["server_id"])
    common.authorize(request, f"os-server-tags:{action}", rule, row["project_id"])
    return row


def _tag(request: Request) -> str:
    tag: str = request.path_params["tag"]
    try:
        jsonschema.validate(tag, TAG)
    except jsonschema.ValidationError as exc:
        raise common.bad_request(
            f"Tag '{tag}' is invalid. It must be a non empty string without characters "
            f"'/' and ','. Validation error message: {exc.message}"
        ) from None
    return tag


async def index(request: Request) -> Response:
    row = await _server(request, "index", Rule.PROJECT_READER)
    async with common.state(request).db.reader() as conn:
        names = await tags_db.get(conn, row["uuid"])
    return common.json({"tags": names})


async def show(request: Request) -> Response:
    row = await _server(request, "show", Rule.PROJECT_READER)
    tag = request.path_params["tag"]
    async with common.state(request).db.reader() as conn:
        found = await tags_db.exists_on(conn, row["uuid"], tag)
    if not found:
        raise exception.InstanceTagNotFound(instance_id=row["uuid"], tag=tag)
    return common.empty(204)


async def update(request: Request) -> Response:
    row = await _server(request, "update", Rule.PROJECT_MEMBER)
    tag = _tag(request)
    servers = common.state(request).servers_api()
    if not await servers.add_tag(common.ctx(request), row["uuid"], tag):
        return common.empty(204)
    response = common.empty(201)
    base = common.base_url(request)
    response.headers["Location"] = f"{base}/v2.1/servers/{row['uuid']}/tags/{tag}"
    return response


async def update_all(request: Request) -> Response:
    row = await _server(request, "update_all", Rule.PROJECT_MEMBER)
    body = await v.json_body(request)
    v.validate(body, REPLACE)
    servers = common.state(request).servers_api()
    names = await servers.replace_tags(common.ctx(request), row["uuid"], body["tags"])
    return common.json({"tags": names})


async def delete(request: Request) -> Response:
    row = await _server(request, "delete", Rule.PROJECT_MEMBER)
    tag = request.path_params["tag"]
    servers = common.state(request).servers_api()
    await servers.remove_tag(common.ctx(request), row["uuid"], tag)
    return common.empty(204)


async def delete_all(request: Request) -> Response:
    row = await _server(request, "delete_all", Rule.PROJECT_MEMBER)
    servers = common.state(request).servers_api()
    await servers.remove_all_tags(common.ctx(request), row["uuid"])
    return common.empty(204)


ROUTES = [
    Route("/servers/{server_id}/tags", index, methods=["GET"]),
    Route("/servers/{server_id}/tags", update_all, methods=["PUT"]),
    Route("/servers/{server_id}/tags", delete_all, methods=["DELETE"]),
    Route("/servers/{server_id}/tags/{tag}", show, methods=["GET"]),
    Route("/servers/{server_id}/tags/{tag}", update, methods=["PUT"]),
    Route("/servers/{server_id}/tags/{tag}", delete, methods=["DELETE"]),
]
