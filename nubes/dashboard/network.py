"""A project's networks and security groups, through the network (Neutron) API."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from nubes.dashboard import web
from nubes.dashboard.client import ApiError


def _id(fields: dict[str, str]) -> str:
    return quote(fields.get("id", ""), safe="")


async def networks(request: Request, page: web.Page) -> Response:
    nets, subnets = await asyncio.gather(
        page.api.optional("network", "/networks"), page.api.optional("network", "/subnets")
    )
    by_network: dict[str, list[dict[str, Any]]] = {}
    for subnet in (subnets or {}).get("subnets", []):
        by_network.setdefault(subnet["network_id"], []).append(subnet)
    return page.render(
        "networks.html",
        networks=None if nets is None else nets["networks"],
        subnets=by_network,
    )


async def network_create(request: Request, page: web.Page) -> Response:
    """A network and, when a range is given, its subnet (the network goes if the subnet fails)."""
    fields = await page.form()
    name = fields.get("name", "")
    try:
        created = await page.api.post("network", "/networks", {"network": {"name": name}})
        net_id = created["network"]["id"]
        if fields.get("cidr", "").strip():
            subnet = {"network_id": net_id, "cidr": fields["cidr"].strip(), "ip_version": 4}
            subnet["name"] = fields.get("subnet_name") or f"{name}-subnet"
            try:
                await page.api.post("network", "/subnets", {"subnet": subnet})
            except ApiError:
                await page.api.delete("network", f"/networks/{net_id}")
                raise
    except ApiError as exc:
        if exc.status == 401:
            raise
        return web.redirect(request, "/networks", error=exc.message)
    return web.redirect(request, "/networks", message=f"Created network {name}.")


async def network_delete(request: Request, page: web.Page) -> Response:
    fields = await page.form()
    return await web.attempt(
        page,
        page.api.delete("network", f"/networks/{_id(fields)}"),
        "/networks",
        "Deleted the network.",
    )


async def security_groups(request: Request, page: web.Page) -> Response:
    body = await page.api.optional(
        "network", "/security-groups", project_id=page.session.project_id
    )
    return page.render(
        "security_groups.html", groups=None if body is None else body["security_groups"]
    )


async def group_create(request: Request, page: web.Page) -> Response:
    fields = await page.form()
    group = {"name": fields.get("name", ""), "description": fields.get("description", "")}
    return await web.attempt(
        page,
        page.api.post("network", "/security-groups", {"security_group": group}),
        "/security-groups",
        f"Created security group {group['name']}.",
    )


async def group_delete(request: Request, page: web.Page) -> Response:
    fields = await page.form()
    return await web.attempt(
        page,
        page.api.delete("network", f"/security-groups/{_id(fields)}"),
        "/security-groups",
        "Deleted the security group.",
    )


def _port(value: str) -> int | None:
    return int(value) if value.strip().isdigit() else None


async def rule_create(request: Request, page: web.Page) -> Response:
    fields = await page.form()
    rule: dict[str, Any] = {
        "security_group_id": fields.get("group_id", ""),
        "direction": fields.get("direction") or "ingress",
        "ethertype": "IPv4",
    }
    if fields.get("protocol"):
        rule["protocol"] = fields["protocol"]
    low, high = _port(fields.get("port_min", "")), _port(fields.get("port_max", ""))
    if low is not None:
        rule["port_range_min"] = low
        rule["port_range_max"] = high if high is not None else low
    if fields.get("remote_ip_prefix", "").strip():
        rule["remote_ip_prefix"] = fields["remote_ip_prefix"].strip()
    return await web.attempt(
        page,
        page.api.post("network", "/security-group-rules", {"security_group_rule": rule}),
        "/security-groups",
        "Added the rule.",
    )


async def rule_delete(request: Request, page: web.Page) -> Response:
    fields = await page.form()
    return await web.attempt(
        page,
        page.api.delete("network", f"/security-group-rules/{_id(fields)}"),
        "/security-groups",
        "Deleted the rule.",
    )
