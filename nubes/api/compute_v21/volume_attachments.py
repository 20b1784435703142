"""``/servers/{id}/os-volume_attachments``: answered as Nova answers with no volumes.

nubes has no block storage service: no server has a volume attached (as
``os-extended-volumes:volumes_attached`` says) and no volume exists to
attach. So the list is empty, and naming a volume is Nova's 404 for a
volume the block storage service does not know, or for one that is not
attached. Request bodies are still checked per version (2.49 ``tag``,
2.79 ``delete_on_termination``; 2.85 lets ``PUT`` change the latter), so a
malformed request is a 400 as in Nova. 2.101 changes only a successful
attach (202 and no body, instead of the attachment): with no volume to
attach, every attach is the 404 at every version.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api import validation as v
from nubes.api.compute_v21 import common, servers
from nubes.api.compute_v21.server_schemas import TAG
from nubes.api.policy import Rule

_UUID = {"type": "string", "format": "uuid"}
_DEVICE = {"type": ["string", "null"], "pattern": "(^/dev/x{0,1}[a-z]{0,1}d{0,1})([a-z]+)[0-9]*$"}


def _body(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "volumeAttachment": {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": False,
            }
        },
        "required": ["volumeAttachment"],
        "additionalProperties": False,
    }


_ATTACH = {"volumeId": _UUID, "device": _DEVICE}
_TAGGED = {**_ATTACH, "tag": TAG}
ATTACH: v.Versioned = [
    (("2.1", "2.48"), _body(_ATTACH, ["volumeId"])),
    (("2.49", "2.78"), _body(_TAGGED, ["volumeId"])),
    (("2.79", None), _body({**_TAGGED, "delete_on_termination": v.BOOLEAN}, ["volumeId"])),
]
#: 2.85: the body may repeat the attachment as shown, to change delete_on_termination.
_UPDATE_285 = {
    "volumeId": _UUID,
    "device": {"type": ["string", "null"]},
    "id": _UUID,
    "serverId": _UUID,
    "tag": TAG,
    "delete_on_termination": v.BOOLEAN,
}
UPDATE: v.Versioned = [
    (("2.1", "2.84"), _body({"volumeId": _UUID}, ["volumeId"])),
    (("2.85", None), _body(_UPDATE_285, ["volumeId"])),
]


def _not_attached(volume_id: str) -> Exception:
    return common.not_found(f"No volume Block Device Mapping with id {volume_id}.")


async def _server(request: Request, action: str, rule: Rule) -> None:
    row = await servers.get_server(request, request.path_params["server_id"])
    common.authorize(request, f"os-volumes-attachments:{action}", rule, row["project_id"])


async def _attachment(request: Request, schema: v.Versioned) -> dict[str, Any]:
    body = await v.json_body(request)
    v.validate(body, schema, common.version(request))
    found: dict[str, Any] = body["volumeAttachment"]
    return found


async def index(request: Request) -> Response:
    await _server(request, "index", Rule.PROJECT_READER)
    return common.json({"volumeAttachments": []})


async def show(request: Request) -> Response:
    await _server(request, "show", Rule.PROJECT_READER)
    raise _not_attached(request.path_params["volume_id"])


async def create(request: Request) -> Response:
    await _server(request, "create", Rule.PROJECT_MEMBER)
    volume_id = (await _attachment(request, ATTACH))["volumeId"]
    raise common.not_found(f"Volume {volume_id} could not be found.")


async def update(request: Request) -> Response:
    await _server(request, "update", Rule.PROJECT_MEMBER)
    await _attachment(request, UPDATE)
    raise _not_attached(request.path_params["volume_id"])


async def delete(request: Request) -> Response:
    await _server(request, "delete", Rule.PROJECT_MEMBER)
    raise _not_attached(request.path_params["volume_id"])


_PATH = "/servers/{server_id}/os-volume_attachments"
ROUTES = [
    Route(_PATH, common.known_query(index, {"2.75": ("limit", "offset")}), methods=["GET"]),
    Route(_PATH, create, methods=["POST"]),
    Route(f"{_PATH}/{{volume_id}}", show, methods=["GET"]),
    Route(f"{_PATH}/{{volume_id}}", update, methods=["PUT"]),
    Route(f"{_PATH}/{{volume_id}}", delete, methods=["DELETE"]),
]
