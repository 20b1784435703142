"""``/servers/{id}/shares`` (2.97): answered as Nova answers with no file share service.

nubes has no shared file systems service: no server has a share attached
and no share exists to attach, so the list is empty and naming a share is
a 404. Bodies are checked as Nova's schema checks them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common, servers
from nubes.api.compute_v21.server_schemas import TAG
from nubes.api.policy import Rule

ATTACH = {
    "type": "object",
    "properties": {
        "share": {
            "type": "object",
            "properties": {"share_id": {"type": "string", "format": "uuid"}, "tag": TAG},
            "required": ["share_id"],
            "additionalProperties": False,
        }
    },
    "required": ["share"],
    "additionalProperties": False,
}


async def _server(request: Request, action: str, rule: Rule) -> None:
    if not common.version(request).at_least("2.97"):
        raise exception.NotFound(message="The resource could not be found.")
    row = await servers.get_server(request, request.path_params["server_id"])
    common.authorize(request, f"server:shares:{action}", rule, row["project_id"])


def _not_attached(request: Request) -> Exception:
    share_id = request.path_params["share_id"]
    return common.not_found(f"Share {share_id} is not attached to this server.")


async def index(request: Request) -> Response:
    await _server(request, "index", Rule.PROJECT_READER)
    return common.json({"shares": []})


async def show(request: Request) -> Response:
    await _server(request, "show", Rule.PROJECT_READER)
    raise _not_attached(request)


async def create(request: Request) -> Response:
    await _server(request, "create", Rule.PROJECT_MEMBER)
    body = await v.json_body(request)
    v.validate(body, ATTACH)
    raise common.not_found(f"Share {body['share']['share_id']} could not be found.")


async def delete(request: Request) -> Response:
    await _server(request, "delete", Rule.PROJECT_MEMBER)
    raise _not_attached(request)


_PATH = "/servers/{server_id}/shares"
ROUTES = [
    Route(_PATH, index, methods=["GET"]),
    Route(_PATH, create, methods=["POST"]),
    Route(f"{_PATH}/{{share_id}}", show, methods=["GET"]),
    Route(f"{_PATH}/{{share_id}}", delete, methods=["DELETE"]),
]
