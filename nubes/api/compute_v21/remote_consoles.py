"""Remote consoles: ``POST /servers/{id}/remote-consoles`` (2.6+), the older
``os-getVNCConsole`` / ``os-getSPICEConsole`` / ``os-getRDPConsole`` /
``os-getSerialConsole`` actions (2.1-2.5), and ``os-console-auth-tokens``.

nubes serves noVNC consoles (``vnc``/``novnc``) through its console proxy;
every other console type is answered as Nova answers one switched off
(400, "Unavailable console type ..."). The host of the server names where the
proxy reaches the guest (compute RPC ``get_vnc_console``); the token is
stored hashed (``nubes/api/consoles.py``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import consoles
from nubes.api import validation as v
from nubes.api.compute_v21 import common, guest_host, servers
from nubes.api.policy import Rule

#: The first microversion with ``remote-consoles`` (and without the actions).
REMOTE_CONSOLES = "2.6"

_PROTOCOLS_26 = ["vnc", "spice", "rdp", "serial"]
_TYPES_26 = ["novnc", "xvpvnc", "rdp-html5", "spice-html5", "serial"]


def _remote_console_schema(protocols: list[str], types: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "remote_console": {
                "type": "object",
                "properties": {
                    "protocol": {"type": "string", "enum": protocols},
                    "type": {"type": "string", "enum": types},
                },
                "required": ["protocol", "type"],
                "additionalProperties": False,
            }
        },
        "required": ["remote_console"],
        "additionalProperties": False,
    }


#: Nova's schemas: 2.8 adds MKS (webmks), 2.99 SPICE direct.
CREATE: v.Versioned = [
    (("2.6", "2.7"), _remote_console_schema(_PROTOCOLS_26, _TYPES_26)),
    (("2.8", "2.98"), _remote_console_schema([*_PROTOCOLS_26, "mks"], [*_TYPES_26, "webmks"])),
    (
        ("2.99", None),
        _remote_console_schema([*_PROTOCOLS_26, "mks"], [*_TYPES_26, "webmks", "spice-direct"]),
    ),
]


def _action_schema(action: str, types: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            action: {
                "type": "object",
                "properties": {"type": {"type": "string", "enum": types}},
                "required": ["type"],
                "additionalProperties": False,
            }
        },
        "required": [action],
        "additionalProperties": False,
    }


#: The 2.1-2.5 actions: their protocol and the types each accepts.
LEGACY_ACTIONS: dict[str, tuple[str, list[str]]] = {
    "os-getVNCConsole": ("vnc", ["novnc", "xvpvnc"]),
    "os-getSPICEConsole": ("spice", ["spice-html5"]),
    "os-getRDPConsole": ("rdp", ["rdp-html5"]),
    "os-getSerialConsole": ("serial", ["serial"]),
}


async def _console_url(
    request: Request, row: dict[str, Any], protocol: str, console_type: str
) -> str:
    """Check, ask the server's host where its console is, issue a token: the URL."""
    common.authorize(request, "os-remote-consoles", Rule.PROJECT_MEMBER, row["project_id"])
    state = common.state(request)
    consoles.check_served(state.conf, protocol, console_type)
    ctxt = common.ctx(request)
    uuid = row["uuid"]
    endpoint = await guest_host.ask(
        request,
        row,
        f"{console_type} console",
        lambda compute, host: compute.get_vnc_console(ctxt, host, uuid),
    )
    return await consoles.issue(state.db, state.conf, row, console_type, endpoint)


async def create(request: Request) -> Response:
    if not common.version(request).at_least(REMOTE_CONSOLES):
        raise exception.NotFound(message="The resource could not be found.")
    body = await v.json_body(request)
    row = await servers.get_server(request, request.path_params["server_id"])
    v.validate(body, CREATE, common.version(request))
    protocol = body["remote_console"]["protocol"]
    console_type = body["remote_console"]["type"]
    url = await _console_url(request, row, protocol, console_type)
    return common.json({"remote_console": {"protocol": protocol, "type": console_type, "url": url}})


def _legacy(action: str) -> common.ActionHandler:
    protocol, types = LEGACY_ACTIONS[action]
    schema = _action_schema(action, types)

    async def handler(request: Request, row: dict[str, Any], body: Any) -> Response:
        # Nova serves these actions up to 2.5 only; later, the method is not there.
        if common.version(request).at_least(REMOTE_CONSOLES):
            raise exception.NotFound(message="The resource could not be found.")
        v.validate(body, schema)
        console_type = body[action]["type"]
        url = await _console_url(request, row, protocol, console_type)
        return common.json({"console": {"type": console_type, "url": url}})

    return handler


ACTIONS: dict[str, common.ActionHandler] = {name: _legacy(name) for name in LEGACY_ACTIONS}

#: Before 2.31 Nova shows only RDP tokens' details (for its Hyper-V RDP gateway).
ANY_TOKEN_TYPE = "2.31"


async def show_token(request: Request) -> Response:
    common.authorize(request, "os-console-auth-tokens", Rule.ADMIN)
    row = await consoles.show(common.state(request).db, request.path_params["token"])
    if not common.version(request).at_least(ANY_TOKEN_TYPE) and row["console_type"] != "rdp-html5":
        raise common.bad_request("The requested console type details are not accessible")
    console = {
        "instance_uuid": row["instance_uuid"],
        "host": row["host"],
        "port": row["port"],
        "internal_access_path": row["internal_access_path"],
    }
    if common.version(request).at_least("2.99"):
        console["tls_port"] = None
    return common.json({"console": console})


async def delete_token(request: Request) -> Response:
    """Revoke a console before it is used (an operator's kill switch; Nova
    has no such call, its tokens only expire)."""
    common.authorize(request, "os-console-auth-tokens", Rule.ADMIN)
    await consoles.revoke(common.state(request).db, request.path_params["token"])
    return common.empty(204)


ROUTES = [
    Route("/servers/{server_id}/remote-consoles", create, methods=["POST"]),
    Route("/os-console-auth-tokens/{token}", show_token, methods=["GET"]),
    Route("/os-console-auth-tokens/{token}", delete_token, methods=["DELETE"]),
]
