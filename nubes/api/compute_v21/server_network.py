"""A server's networking in the compute API: ``os-interface``, its security groups.

``os-interface`` (``server add/remove port``, ``server add/remove
network``) and the ``addSecurityGroup`` / ``removeSecurityGroup`` actions
change the server's ports through :mod:`nubes.network.ports`. The records
change at once; telling the host (plugging a tap, new firewall rules) waits
for the data plane (docs/networking.md).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common, servers
from nubes.api.policy import Rule
from nubes.network import ports

#: Where a server may have interfaces attached or detached (Nova's check).
ATTACHABLE = ("active", "paused", "stopped", "suspended", "shelved_offloaded")
_UUID = {"type": "string", "format": "uuid"}
ATTACH = {
    "type": "object",
    "properties": {
        "interfaceAttachment": {
            "type": "object",
            "properties": {
                "port_id": _UUID,
                "net_id": _UUID,
                "fixed_ips": {
                    "type": "array",
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {"ip_address": {"type": "string"}},
                        "required": ["ip_address"],
                        "additionalProperties": False,
                    },
                },
                "tag": {"type": "string", "maxLength": 60},
            },
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}
GROUP_ACTION = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 255}},
    "required": ["name"],
    "additionalProperties": False,
}


def _attachment(port: dict[str, Any], request: Request) -> dict[str, Any]:
    body = {
        "port_state": port["status"],
        "fixed_ips": list(port["fixed_ips"]),
        "port_id": port["id"],
        "net_id": port["network_id"],
        "mac_addr": port["mac_address"],
    }
    if common.version(request).at_least("2.70"):
        # No device tags are kept (server_params.NO_DEVICE_TAGS): none to show.
        body["tag"] = None
    return body


async def _server(request: Request, action: str, rule: Rule) -> dict[str, Any]:
    row = await servers.get_server(request, request.path_params["server_id"])
    common.authorize(request, f"os-attach-interfaces:{action}", rule, row["project_id"])
    return row


async def index(request: Request) -> Response:
    row = await _server(request, "list", Rule.PROJECT_READER)
    async with common.state(request).db.reader() as conn:
        held = await ports.interfaces(conn, row["uuid"])
    return common.json({"interfaceAttachments": [_attachment(p, request) for p in held]})


async def show(request: Request) -> Response:
    row = await _server(request, "show", Rule.PROJECT_READER)
    port_id = request.path_params["port_id"]
    async with common.state(request).db.reader() as conn:
        held = {p["id"]: p for p in await ports.interfaces(conn, row["uuid"])}
    if port_id not in held:
        raise exception.PortNotFound(port_id=port_id)
    return common.json({"interfaceAttachment": _attachment(held[port_id], request)})


def _check_state(request: Request, row: dict[str, Any]) -> None:
    if row.get("locked") and not common.is_admin(request):
        raise exception.Conflict(reason=f"Instance {row['uuid']} is locked")
    if row["vm_state"] not in ATTACHABLE or row["task_state"] is not None:
        raise exception.Conflict(
            reason=f"Cannot change the interfaces of instance {row['uuid']} while it is in "
            f"vm_state {row['vm_state']}"
        )


async def create(request: Request) -> Response:
    row = await _server(request, "create", Rule.PROJECT_MEMBER)
    body = await v.json_body(request)
    v.validate(body, ATTACH)
    spec = body.get("interfaceAttachment") or {}
    if spec.get("tag") is not None:
        raise common.bad_request(
            "Tagged network interface attachment is not supported for this instance."
        )
    port_id, net_id = spec.get("port_id"), spec.get("net_id")
    if port_id and net_id:
        raise common.bad_request("Must not input both network_id and port_id")
    if not port_id and not net_id:
        raise common.bad_request("Must input network_id or port_id")
    fixed = (spec.get("fixed_ips") or [{}])[0].get("ip_address")
    if fixed and not net_id:
        raise common.bad_request("Must input network_id when request IP address")
    _check_state(request, row)
    service = servers.network_service(request)
    try:
        made = await ports.attach(
            service,
            common.ctx(request),
            row,
            port_id=port_id,
            network_id=net_id,
            fixed_ip=fixed,
        )
    except exception.NetworkInvalid as exc:
        raise common.bad_request(exc.message) from None
    except (exception.NetworkNotFound, exception.PortNotFound) as exc:
        raise common.not_found(exc.message) from None
    async with common.state(request).db.reader() as conn:
        held = {p["id"]: p for p in await ports.interfaces(conn, row["uuid"])}
    return common.json({"interfaceAttachment": _attachment(held[made], request)})


async def delete(request: Request) -> Response:
    row = await _server(request, "delete", Rule.PROJECT_MEMBER)
    _check_state(request, row)
    try:
        await ports.detach(common.state(request).db, row["uuid"], request.path_params["port_id"])
    except exception.PortNotFound as exc:
        raise common.not_found(exc.message) from None
    return common.empty(202)


async def security_groups(request: Request) -> Response:
    row = await servers.get_server(request, request.path_params["server_id"])
    common.authorize(request, "os-security-groups:list", Rule.PROJECT_READER, row["project_id"])
    async with common.state(request).db.reader() as conn:
        groups = await ports.server_groups(conn, row["uuid"])
    return common.json(
        {
            "security_groups": [
                {
                    "id": g["id"],
                    "name": g["name"],
                    "description": g["description"],
                    "tenant_id": g["project_id"],
                    "rules": [
                        {
                            "id": r["id"],
                            "parent_group_id": g["id"],
                            "ip_protocol": r["protocol"],
                            "from_port": r["port_range_min"],
                            "to_port": r["port_range_max"],
                            "ip_range": (
                                {"cidr": r["remote_ip_prefix"]} if r["remote_ip_prefix"] else {}
                            ),
                            "group": {},
                        }
                        for r in g["security_group_rules"]
                        if r["direction"] == "ingress"
                    ],
                }
                for g in groups
            ]
        }
    )


async def _group_action(request: Request, row: dict[str, Any], body: Any, *, add: bool) -> None:
    name = "addSecurityGroup" if add else "removeSecurityGroup"
    common.authorize(
        request, f"os-security-groups:{'add' if add else 'remove'}", Rule.PROJECT_MEMBER,
        row["project_id"],
    )  # fmt: skip
    v.validate(body.get(name), GROUP_ACTION)
    try:
        await ports.change_group(
            servers.network_service(request),
            common.ctx(request),
            row["uuid"],
            body[name]["name"],
            add=add,
        )
    except exception.NetworkRequestInvalid as exc:
        if "not found" in exc.message:
            raise common.not_found(exc.message) from None
        raise


async def _add_group(request: Request, row: dict[str, Any], body: Any) -> None:
    await _group_action(request, row, body, add=True)


async def _remove_group(request: Request, row: dict[str, Any], body: Any) -> None:
    await _group_action(request, row, body, add=False)


ACTIONS: dict[str, common.ActionHandler] = {
    "addSecurityGroup": _add_group,
    "removeSecurityGroup": _remove_group,
}

ROUTES = [
    Route("/servers/{server_id}/os-interface", common.no_query(index), methods=["GET"]),
    Route("/servers/{server_id}/os-interface", create, methods=["POST"]),
    Route("/servers/{server_id}/os-interface/{port_id}", common.no_query(show), methods=["GET"]),
    Route("/servers/{server_id}/os-interface/{port_id}", delete, methods=["DELETE"]),
    Route(
        "/servers/{server_id}/os-security-groups", common.no_query(security_groups), methods=["GET"]
    ),
]
