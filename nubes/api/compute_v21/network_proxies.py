"""The network-proxy APIs Nova still answers up to microversion 2.35.

Nova proxies these to Neutron (nova-network is gone); from 2.36 they are
404, as in Nova. nubes answers them from its own network service
(:class:`~nubes.network.resources.NetworkService`), so the same rules
(visibility, quotas, the ``default`` group) apply:

- ``os-networks`` list and show (Nova's nova-network fields, None where a
  Neutron network has no such value; admins see the admin fields too); its
  writes (create, delete, add, associate) are 410 Gone, as in Nova.
- ``os-tenant-networks`` list and show (``id``, ``label``, ``cidr``); create
  and delete 410.
- ``os-security-groups`` list, show, create, update, delete, and
  ``os-security-group-rules`` create and delete, in Nova's shape (ingress
  rules only, ``ip_protocol``, ``from_port``/``to_port``, ``ip_range`` or
  ``group``). ``os-security-group-default-rules`` is 410 Gone.
- ``os-floating-ip-pools`` and ``os-floating-ips``: :mod:`.floating_ips`.

The network service's errors (a group or rule not found, a group in use,
over quota) are rendered in Nova's shape by the API's error handler.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.policy import Rule
from nubes.api.views import nova_time
from nubes.network.resources import NetworkService, Page

#: The last microversion that answers these APIs (2.36 removed them).
LAST = "2.35"

Handler = Callable[[Request], Awaitable[Response]]

#: os-networks fields every caller sees, and those admins see too (Nova's network_dict).
NETWORK_FIELDS = (
    "cidr", "netmask", "gateway", "broadcast", "dns1", "dns2", "cidr_v6", "gateway_v6",
    "netmask_v6",
)  # fmt: skip
NETWORK_ADMIN_FIELDS = (
    "injected", "bridge", "vlan", "vpn_public_address", "vpn_public_port",
    "vpn_private_address", "dhcp_start", "host", "bridge_interface", "multi_host", "priority",
    "rxtx_base", "dhcp_server", "enable_dhcp", "share_address", "deleted_at",
)  # fmt: skip


def _until_236(handler: Handler) -> Handler:
    """Served up to 2.35; from 2.36 the resource is not found, as in Nova."""

    async def serve(request: Request) -> Response:
        if not common.version(request).matches(max_version=LAST):
            raise common.not_found("The resource could not be found.")
        return await handler(request)

    serve.__name__ = handler.__name__
    return serve


def _gone(what: str) -> Handler:
    async def gone(request: Request) -> Response:
        raise exception.Gone(reason=what)

    return _until_236(gone)


def _service(request: Request) -> NetworkService:
    service: NetworkService = common.state(request).network_service()
    return service


# -- os-networks, os-tenant-networks ------------------------------------------------------------


def _network(row: dict[str, Any], *, admin: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"id": row["id"], "label": row["name"]}
    body.update(dict.fromkeys(NETWORK_FIELDS))
    if admin:
        body.update(dict.fromkeys(NETWORK_ADMIN_FIELDS))
        body.update(
            {
                "project_id": row["project_id"],
                "mtu": row["mtu"],
                "created_at": nova_time(row.get("created_at")),
                "updated_at": nova_time(row.get("updated_at")),
                "deleted": False,
            }
        )
    return body


@_until_236
async def networks_index(request: Request) -> Response:
    common.authorize(request, "os-networks:list", Rule.PROJECT_READER)
    admin = common.is_admin(request)
    rows = await _listed_networks(request)
    return common.json({"networks": [_network(r, admin=admin) for r in rows]})


async def _listed_networks(request: Request) -> list[dict[str, Any]]:
    """The networks a server of the project could be on: its own and shared
    ones (an external network every project reads is a floating IP pool,
    listed by ``os-floating-ip-pools``)."""
    ctxt = common.ctx(request)
    rows = await _service(request).list_networks(ctxt, Page(filters={}))
    return [
        r
        for r in rows
        if common.is_admin(request) or r["shared"] or r["project_id"] == ctxt.project_id
    ]


@_until_236
async def networks_show(request: Request) -> Response:
    common.authorize(request, "os-networks:show", Rule.PROJECT_READER)
    row = await _found_network(request)
    return common.json({"network": _network(row, admin=common.is_admin(request))})


async def _found_network(request: Request) -> dict[str, Any]:
    network_id = request.path_params["network_id"]
    try:
        return await _service(request).get_network(common.ctx(request), network_id)
    except exception.NetworkNotFound:
        raise common.not_found("Network not found") from None


def _tenant_network(row: dict[str, Any]) -> dict[str, Any]:
    # A Neutron network has no CIDR of its own (its subnets have).
    return {"id": row["id"], "label": row["name"], "cidr": None}


@_until_236
async def tenant_networks_index(request: Request) -> Response:
    common.authorize(request, "os-tenant-networks:list", Rule.PROJECT_READER)
    rows = await _listed_networks(request)
    return common.json({"networks": [_tenant_network(r) for r in rows]})


@_until_236
async def tenant_networks_show(request: Request) -> Response:
    common.authorize(request, "os-tenant-networks:show", Rule.PROJECT_READER)
    return common.json({"network": _tenant_network(await _found_network(request))})


# -- os-security-groups, os-security-group-rules ---------------------------------------------


def _rule(rule: dict[str, Any], groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A Neutron rule as Nova shows it (nova's security group API conversion)."""
    protocol = rule["protocol"]
    low, high = rule["port_range_min"], rule["port_range_max"]
    if protocol and low is None and high is None:
        low, high = (1, 65535) if protocol.upper() in ("TCP", "UDP") else (-1, -1)
    body: dict[str, Any] = {
        "id": rule["id"],
        "parent_group_id": rule["security_group_id"],
        "ip_protocol": protocol,
        "from_port": low,
        "to_port": high,
        "group": {},
        "ip_range": {},
    }
    remote = rule["remote_group_id"]
    if remote is not None:
        source = groups.get(remote) or {}
        body["group"] = {"name": source.get("name"), "tenant_id": source.get("project_id")}
    else:
        body["ip_range"] = {"cidr": rule["remote_ip_prefix"] or "0.0.0.0/0"}
    return body


def _group(row: dict[str, Any], groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "tenant_id": row["project_id"],
        # Nova shows ingress rules only.
        "rules": [
            _rule(r, groups) for r in row["security_group_rules"] if r["direction"] == "ingress"
        ],
    }


async def _groups_by_id(request: Request) -> dict[str, dict[str, Any]]:
    rows = await _service(request).list_security_groups(common.ctx(request), Page(filters={}))
    return {r["id"]: r for r in rows}


GROUP = {
    "type": "object",
    "properties": {
        "security_group": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": {"type": "string", "maxLength": 255},
            },
            "required": ["name", "description"],
            "additionalProperties": True,
        }
    },
    "required": ["security_group"],
    "additionalProperties": True,
}
GROUP_SCHEMA: v.Versioned = [(("2.1", LAST), GROUP)]

_PORT = {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": "^-?[0-9]+$"}]}
RULE = {
    "type": "object",
    "properties": {
        "security_group_rule": {
            "type": "object",
            "properties": {
                "parent_group_id": {"type": "string", "minLength": 1},
                "ip_protocol": {"type": ["string", "null"]},
                "from_port": _PORT,
                "to_port": _PORT,
                "cidr": {"type": ["string", "null"]},
                "group_id": {"type": ["string", "null"]},
            },
            "required": ["parent_group_id"],
            "additionalProperties": True,
        }
    },
    "required": ["security_group_rule"],
    "additionalProperties": True,
}
RULE_SCHEMA: v.Versioned = [(("2.1", LAST), RULE)]


@_until_236
async def groups_index(request: Request) -> Response:
    common.authorize(request, "os-security-groups:get", Rule.PROJECT_READER)
    groups = await _groups_by_id(request)
    return common.json({"security_groups": [_group(g, groups) for g in groups.values()]})


@_until_236
async def groups_show(request: Request) -> Response:
    common.authorize(request, "os-security-groups:show", Rule.PROJECT_READER)
    row = await _service(request).get_security_group(
        common.ctx(request), request.path_params["group_id"]
    )
    return common.json({"security_group": _group(row, await _groups_by_id(request))})


@_until_236
async def groups_create(request: Request) -> Response:
    common.authorize(request, "os-security-groups:create", Rule.PROJECT_MEMBER)
    body = await v.json_body(request)
    v.validate(body, GROUP_SCHEMA, common.version(request))
    spec = body["security_group"]
    row = await _service(request).create_security_group(
        common.ctx(request), {"name": spec["name"], "description": spec["description"]}
    )
    return common.json({"security_group": _group(row, {})})


@_until_236
async def groups_update(request: Request) -> Response:
    common.authorize(request, "os-security-groups:update", Rule.PROJECT_MEMBER)
    body = await v.json_body(request)
    v.validate(body, GROUP_SCHEMA, common.version(request))
    spec = body["security_group"]
    row = await _service(request).update_security_group(
        common.ctx(request),
        request.path_params["group_id"],
        {"name": spec["name"], "description": spec["description"]},
    )
    return common.json({"security_group": _group(row, await _groups_by_id(request))})


@_until_236
async def groups_delete(request: Request) -> Response:
    common.authorize(request, "os-security-groups:delete", Rule.PROJECT_MEMBER)
    try:
        await _service(request).delete_security_group(
            common.ctx(request), request.path_params["group_id"]
        )
    except exception.SecurityGroupInUse as exc:
        # Nova's proxy answers the network's 409 for a group in use with a 400.
        raise common.bad_request(str(exc)) from None
    return common.empty(202)


def _port(value: Any, field: str) -> int | None:
    if value is None:
        return None
    number = int(value)
    if not -1 <= number <= 65535:
        raise common.bad_request(f"Invalid port range {field}={value}.")
    return number


def _rule_item(spec: dict[str, Any]) -> dict[str, Any]:
    """A Nova rule request as the Neutron rule the network service makes."""
    protocol = spec.get("ip_protocol")
    protocol = protocol.lower() if isinstance(protocol, str) else protocol
    low, high = _port(spec.get("from_port"), "from_port"), _port(spec.get("to_port"), "to_port")
    cidr, remote = spec.get("cidr"), spec.get("group_id")
    if cidr and remote:
        raise common.bad_request("Only cidr or group_id may be given, not both.")
    item: dict[str, Any] = {
        "security_group_id": spec["parent_group_id"],
        "direction": "ingress",
        "protocol": protocol,
    }
    if protocol == "icmp":
        # -1 is "any" for an ICMP type or code.
        low = None if low == -1 else low
        high = None if high == -1 else high
    elif protocol in ("tcp", "udp") and (low is None) != (high is None):
        raise common.bad_request("Both from_port and to_port are needed for TCP and UDP.")
    if low is not None:
        item["port_range_min"] = low
    if high is not None:
        item["port_range_max"] = high
    if remote:
        item["remote_group_id"] = remote
    else:
        try:
            net = ipaddress.ip_network(cidr or "0.0.0.0/0", strict=False)
        except ValueError:
            raise common.bad_request(f"Invalid cidr {cidr}.") from None
        # Passed on as given, host bits and all: the network service keeps
        # it so, as Neutron does, and Nova shows Neutron's value back.
        item["remote_ip_prefix"] = cidr or "0.0.0.0/0"
        item["ethertype"] = f"IPv{net.version}"
    return item


@_until_236
async def rules_create(request: Request) -> Response:
    common.authorize(request, "os-security-group-rules:create", Rule.PROJECT_MEMBER)
    body = await v.json_body(request)
    v.validate(body, RULE_SCHEMA, common.version(request))
    item = _rule_item(body["security_group_rule"])
    try:
        row = await _service(request).create_rule(common.ctx(request), item)
    except exception.SecurityGroupRuleExists:
        # Nova's proxy answers the network's 409 for a duplicate with a 400.
        raise common.bad_request(
            f"This rule already exists in group {item['security_group_id']}"
        ) from None
    return common.json({"security_group_rule": _rule(row, await _groups_by_id(request))})


@_until_236
async def rules_delete(request: Request) -> Response:
    common.authorize(request, "os-security-group-rules:delete", Rule.PROJECT_MEMBER)
    await _service(request).delete_rule(common.ctx(request), request.path_params["rule_id"])
    return common.empty(202)


ROUTES = [
    Route("/os-networks", networks_index, methods=["GET"]),
    Route("/os-networks", _gone("create a network with the network API"), methods=["POST"]),
    Route("/os-networks/add", _gone("add a network"), methods=["POST"]),
    Route("/os-networks/{network_id}", networks_show, methods=["GET"]),
    Route("/os-networks/{network_id}", _gone("delete a network"), methods=["DELETE"]),
    Route("/os-networks/{network_id}/action", _gone("network actions"), methods=["POST"]),
    Route("/os-tenant-networks", tenant_networks_index, methods=["GET"]),
    Route("/os-tenant-networks", _gone("create a tenant network"), methods=["POST"]),
    Route("/os-tenant-networks/{network_id}", tenant_networks_show, methods=["GET"]),
    Route("/os-tenant-networks/{network_id}", _gone("delete a tenant network"), methods=["DELETE"]),
    Route("/os-security-groups", groups_index, methods=["GET"]),
    Route("/os-security-groups", groups_create, methods=["POST"]),
    Route("/os-security-groups/{group_id}", groups_show, methods=["GET"]),
    Route("/os-security-groups/{group_id}", groups_update, methods=["PUT"]),
    Route("/os-security-groups/{group_id}", groups_delete, methods=["DELETE"]),
    Route("/os-security-group-rules", rules_create, methods=["POST"]),
    Route("/os-security-group-rules/{rule_id}", rules_delete, methods=["DELETE"]),
    Route(
        "/os-security-group-default-rules",
        _gone("security group default rules"),
        methods=["GET", "POST"],
    ),
    Route(
        "/os-security-group-default-rules/{rule_id}",
        _gone("security group default rules"),
        methods=["GET", "DELETE"],
    ),
]
