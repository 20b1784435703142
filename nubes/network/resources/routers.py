"""Routers: Neutron's ``/v2.0/routers`` rules (gateway, interfaces).

A router is records only: nubes' data plane is distributed (as Neutron's
DVR without a network node), so no host runs a router. What it decides is
which subnets reach which external network: a floating IP can be mapped to
a port only through a router with an interface on the port's subnet and
its gateway on the floating IP's network (:mod:`.floating_ips`).

The gateway is a port on the external network (owner
``network:router_gateway``, no project, as Neutron makes it) holding an
address of it; an interface is a port on a subnet (owner
``network:router_interface``, the router's project) holding the subnet's
gateway address, which IPAM gives once, so a subnet is on one router at a
time (another router asking gets Neutron's 409 ``IpAddressAlreadyAllocated``).
These ports are changed through the router only: the port API refuses to
delete them (409 ``ServicePortInUse``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from nubes import exception, ipam
from nubes.context import RequestContext
from nubes.db.api import network as net_db
from nubes.db.engine import Connection
from nubes.network.resources._common import (
    Page,
    Row,
    authorize_member,
    can_see,
    field_bool,
    field_str,
    field_strs,
    invalid,
    is_admin,
    list_page,
    listable,
    owned_or_404,
    owner_of,
    valid_uuid,
    visible_row,
)
from nubes.network.resources.ports import Ports, random_mac
from nubes.network.resources.subnets import Subnets

#: The attributes ``external_gateway_info`` takes.
GATEWAY_ATTRS = frozenset({"network_id", "enable_snat", "external_fixed_ips"})


def _bad(msg: str) -> exception.NetworkBadRequest:
    return exception.NetworkBadRequest(resource="router", msg=msg)


def _check_flags(ctxt: RequestContext, action: str, item: Mapping[str, Any]) -> None:
    """``distributed`` and ``ha``: admin-only (Neutron's policy); nubes has one
    kind of router (its floating IPs are applied on the ports' hosts; it runs
    nowhere), shown as neither, so only false is taken."""
    for flag in ("distributed", "ha"):
        if flag not in item:
            continue
        if not is_admin(ctxt):
            raise exception.PolicyNotAuthorized(action=f"{action}:{flag}")
        if field_bool(item, flag, False):
            raise _bad(f"{flag} routers are not supported")


async def make_service_port(
    conn: Connection,
    *,
    network_id: str,
    project_id: str,
    owner: str,
    device_id: str,
    fixed_ips: list[dict[str, Any]] | None,
    gateway_ok: bool = False,
) -> str:
    """A port a router or floating IP holds (no groups, no port security), with
    its addresses from IPAM in the caller's transaction; its id."""
    port_id = str(uuid.uuid4())
    await net_db.create(
        conn,
        "ports",
        {
            "id": port_id,
            "network_id": network_id,
            "project_id": project_id,
            "mac_address": random_mac(),
            "status": "ACTIVE",
            "device_id": device_id,
            "device_owner": owner,
            "port_security_enabled": False,
            "revision_number": 0,
        },
    )
    await net_db.allocate_addresses(
        conn, [net_db.AddressRequest(port_id, network_id, fixed_ips, gateway_ok=gateway_ok)]
    )
    return port_id


class Routers(Subnets, Ports):
    """Routers: create, show, list, update (gateway), delete, interfaces."""

    async def _router_details(self, conn: Connection, rows: list[Row]) -> list[Row]:
        gateways = await net_db.fixed_ips_by_port(
            conn, [r["gw_port_id"] for r in rows if r["gw_port_id"]]
        )
        for row in rows:
            row["external_gateway_info"] = (
                {
                    "network_id": row["gw_network_id"],
                    "enable_snat": row["enable_snat"],
                    "external_fixed_ips": gateways.get(row["gw_port_id"], []),
                }
                if row["gw_port_id"]
                else None
            )
        return rows

    async def _router(self, conn: Connection, router_id: str) -> Row:
        (row,) = await self._router_details(conn, [await net_db.get(conn, "routers", router_id)])
        return row

    async def _owned_router(self, conn: Connection, ctxt: RequestContext, router_id: str) -> Row:
        missing = exception.RouterNotFound(router_id=router_id)
        row = await visible_row(conn, ctxt, "routers", router_id, missing)
        return owned_or_404(ctxt, row, missing)

    async def create_router(self, ctxt: RequestContext, item: Mapping[str, Any]) -> Row:
        authorize_member(ctxt, "create_router")
        project_id = owner_of(ctxt, item)
        _check_flags(ctxt, "create_router", item)
        router_id = str(uuid.uuid4())
        values = {
            "id": router_id,
            "project_id": project_id,
            "name": field_str(item, "name"),
            "description": field_str(item, "description"),
            "admin_state_up": field_bool(item, "admin_state_up", True),
            "status": "ACTIVE",
            # No SNAT for ports without a floating IP (see _set_gateway): shown as such.
            "enable_snat": False,
            "revision_number": 0,
        }
        async with self.db.writer() as conn:
            await self._check_quota(conn, project_id, "routers")
            await net_db.create(conn, "routers", values)
            info = item.get("external_gateway_info")
            if info:
                await self._set_gateway(conn, ctxt, {**values, "gw_port_id": None}, info)
            return await self._router(conn, router_id)

    async def get_router(self, ctxt: RequestContext, router_id: str) -> Row:
        async with self.db.reader() as conn:
            missing = exception.RouterNotFound(router_id=router_id)
            await visible_row(conn, ctxt, "routers", router_id, missing)
            return await self._router(conn, router_id)

    async def list_routers(self, ctxt: RequestContext, page: Page) -> list[Row]:
        async with self.db.reader(allow_stale=True) as conn:
            rows = await list_page(conn, "routers", listable(ctxt), page)
            return await self._router_details(conn, rows)

    async def update_router(
        self, ctxt: RequestContext, router_id: str, item: Mapping[str, Any]
    ) -> Row:
        async with self.db.writer() as conn:
            row = await self._owned_router(conn, ctxt, router_id)
            values = field_strs(item, ("name", "description"))
            if "admin_state_up" in item:
                values["admin_state_up"] = field_bool(item, "admin_state_up", True)
            if item.get("routes"):
                raise _bad("static routes are not supported")
            _check_flags(ctxt, "update_router", item)
            if "external_gateway_info" in item:
                await self._set_gateway(conn, ctxt, row, item["external_gateway_info"])
            await net_db.update_row(conn, "routers", router_id, values)
            return await self._router(conn, router_id)

    async def _set_gateway(
        self, conn: Connection, ctxt: RequestContext, router: Row, info: Any
    ) -> None:
        """The router's gateway as ``info`` says (``{}`` or None: none)."""
        router_id = router["id"]
        if info is not None and not isinstance(info, dict):
            raise invalid("external_gateway_info", info, "is not a dictionary")
        info = info or {}
        unknown = sorted(set(info) - GATEWAY_ATTRS)
        if unknown:
            raise invalid("external_gateway_info", info, f"has unknown keys {unknown}")
        if info and "network_id" not in info:
            raise invalid("external_gateway_info", info, "has no network_id")
        network_id = valid_uuid(info["network_id"], "network_id") if info else None
        for field in ("enable_snat", "external_fixed_ips"):
            # Neutron's default policy: only an admin sets these.
            if field in info and not is_admin(ctxt):
                raise exception.PolicyNotAuthorized(
                    action=f"update_router:external_gateway_info:{field}"
                )
        old_port = router.get("gw_port_id")
        same = network_id is not None and network_id == router.get("gw_network_id")
        if old_port and (not same or "external_fixed_ips" in info):
            if await net_db.floating_ips_via(conn, router_id):
                raise exception.RouterExternalGatewayInUseByFloatingIp(
                    router_id=router_id, net_id=router["gw_network_id"]
                )
        values: dict[str, Any] = {}
        if "enable_snat" in info:
            if field_bool(info, "enable_snat", False):
                # The router's gateway address would have to be one host's, with
                # its connection tracking: a network node, which nubes has not.
                raise _bad(
                    "SNAT through the router for ports without a floating IP is not "
                    "supported; give the port a floating IP"
                )
            values["enable_snat"] = False
        if not same or "external_fixed_ips" in info:
            values.update(gw_network_id=None, gw_port_id=None)
            if network_id is not None:
                network = await visible_row(
                    conn, ctxt, "networks", network_id, exception.NetworkNotFound(net_id=network_id)
                )
                if not network["external"]:
                    raise _bad(f"Network {network_id} is not an external network")
                fixed = info.get("external_fixed_ips")
                if fixed is not None and (
                    not isinstance(fixed, list) or not all(isinstance(f, dict) for f in fixed)
                ):
                    raise invalid("external_fixed_ips", fixed, "is not a list of objects")
                values["gw_network_id"] = network_id
                values["gw_port_id"] = await make_service_port(
                    conn,
                    network_id=network_id,
                    project_id="",
                    owner=net_db.ROUTER_GATEWAY,
                    device_id=router_id,
                    fixed_ips=fixed,
                )
        if values:
            await net_db.update_row(conn, "routers", router_id, values)
        if old_port and "gw_port_id" in values:
            await net_db.delete_port(conn, old_port)

    async def delete_router(self, ctxt: RequestContext, router_id: str) -> None:
        async with self.db.writer() as conn:
            row = await self._owned_router(conn, ctxt, router_id)
            if (await net_db.router_ports(conn, [router_id]))[router_id]:
                raise exception.RouterInUse(router_id=router_id, reason="still has ports")
            await net_db.delete_row(conn, "routers", router_id)
            if row["gw_port_id"]:
                await net_db.delete_port(conn, row["gw_port_id"])

    # -- interfaces ------------------------------------------------------------------------------

    @staticmethod
    def _interface_item(item: Any) -> tuple[str | None, str | None]:
        if not isinstance(item, dict):
            raise _bad("Resource body required")
        unknown = sorted(set(item) - {"subnet_id", "port_id"})
        if unknown:
            raise _bad("Unrecognized attribute(s) '" + ", ".join(unknown) + "'")
        subnet_id, port_id = item.get("subnet_id"), item.get("port_id")
        if subnet_id is None and port_id is None:
            raise _bad("Either subnet_id or port_id must be specified")
        return (
            valid_uuid(subnet_id, "subnet_id") if subnet_id is not None else None,
            valid_uuid(port_id, "port_id") if port_id is not None else None,
        )

    async def _interface_info(self, conn: Connection, router: Row, port_id: str) -> Row:
        port = await net_db.get(conn, "ports", port_id)
        subnet_ids = [
            f["subnet_id"] for f in (await net_db.fixed_ips_by_port(conn, [port_id]))[port_id]
        ]
        return {
            "id": router["id"],
            "tenant_id": router["project_id"],
            "project_id": router["project_id"],
            "port_id": port_id,
            "network_id": port["network_id"],
            "subnet_id": subnet_ids[0] if subnet_ids else None,
            "subnet_ids": subnet_ids,
        }

    async def _router_subnets(self, conn: Connection, router_id: str) -> list[Row]:
        interfaces = (await net_db.router_ports(conn, [router_id]))[router_id]
        held = await net_db.fixed_ips_by_port(conn, [p["id"] for p in interfaces])
        ids = sorted({f["subnet_id"] for fixed in held.values() for f in fixed})
        return await net_db.get_many(conn, "subnets", ids)

    async def _check_new_subnets(
        self, conn: Connection, router_id: str, subnets: list[Row]
    ) -> None:
        """No subnet the router already has, nor one overlapping them."""
        have = await self._router_subnets(conn, router_id)
        for subnet in subnets:
            for other in have:
                if other["id"] == subnet["id"]:
                    raise _bad(f"Router already has a port on subnet {subnet['id']}")
                if ipam.parse_cidr(other["cidr"]).overlaps(ipam.parse_cidr(subnet["cidr"])):
                    raise _bad(
                        f"Cidr {subnet['cidr']} of subnet {subnet['id']} overlaps with cidr "
                        f"{other['cidr']} of subnet {other['id']}"
                    )

    async def add_router_interface(self, ctxt: RequestContext, router_id: str, item: Any) -> Row:
        subnet_id, port_id = self._interface_item(item)
        if subnet_id is not None and port_id is not None:
            raise _bad("Cannot specify both subnet-id and port-id")
        async with self.db.writer() as conn:
            router = await self._owned_router(conn, ctxt, router_id)
            if port_id is not None:
                port = await visible_row(
                    conn, ctxt, "ports", port_id, exception.PortNotFound(port_id=port_id)
                )
                owned_or_404(ctxt, port, exception.PortNotFound(port_id=port_id))
                if port["device_id"] or port["device_owner"]:
                    raise exception.PortInUse(port_id=port_id, device_id=port["device_id"])
                fixed = (await net_db.fixed_ips_by_port(conn, [port_id]))[port_id]
                if not fixed:
                    raise _bad(f"Router port {port_id} must have at least one fixed IP")
                subnets = await net_db.get_many(conn, "subnets", {f["subnet_id"] for f in fixed})
                await self._check_new_subnets(conn, router_id, subnets)
                await net_db.set_port_groups(conn, port_id, [])
                await net_db.update_row(
                    conn,
                    "ports",
                    port_id,
                    {
                        "device_id": router_id,
                        "device_owner": net_db.ROUTER_INTERFACE,
                        "port_security_enabled": False,
                        "status": "ACTIVE",
                    },
                )
            else:
                assert subnet_id is not None
                subnet = await self._visible_subnet(conn, ctxt, subnet_id)
                network = await net_db.get(conn, "networks", subnet["network_id"])
                if not (is_admin(ctxt) or subnet["project_id"] == router["project_id"]):
                    if not can_see(ctxt, network) or not network["shared"]:
                        raise exception.SubnetNotFound(subnet_id=subnet_id)
                if network["external"]:
                    raise _bad(f"Subnet {subnet_id} is on an external network")
                if not subnet["gateway_ip"]:
                    raise _bad(f"Subnet {subnet_id} does not have a gateway IP")
                await self._check_new_subnets(conn, router_id, [subnet])
                port_id = await make_service_port(
                    conn,
                    network_id=subnet["network_id"],
                    project_id=router["project_id"],
                    owner=net_db.ROUTER_INTERFACE,
                    device_id=router_id,
                    fixed_ips=[{"subnet_id": subnet_id, "ip_address": subnet["gateway_ip"]}],
                    gateway_ok=True,
                )
            await net_db.update_row(conn, "routers", router_id, {})
            return await self._interface_info(conn, router, port_id)

    async def remove_router_interface(self, ctxt: RequestContext, router_id: str, item: Any) -> Row:
        subnet_id, port_id = self._interface_item(item)
        async with self.db.writer() as conn:
            router = await self._owned_router(conn, ctxt, router_id)
            interfaces = (await net_db.router_ports(conn, [router_id]))[router_id]
            held = await net_db.fixed_ips_by_port(conn, [p["id"] for p in interfaces])
            if port_id is not None:
                if port_id not in held:
                    raise exception.RouterInterfaceNotFound(router_id=router_id, port_id=port_id)
                if subnet_id is not None and subnet_id not in {
                    f["subnet_id"] for f in held[port_id]
                }:
                    raise exception.RouterInterfaceNotFoundForSubnet(
                        router_id=router_id, subnet_id=subnet_id
                    )
            else:
                found = [
                    p for p, fixed in held.items() if subnet_id in {f["subnet_id"] for f in fixed}
                ]
                if not found:
                    raise exception.RouterInterfaceNotFoundForSubnet(
                        router_id=router_id, subnet_id=subnet_id
                    )
                port_id = found[0]
            subnets = [f["subnet_id"] for f in held[port_id]]
            if await net_db.floating_ips_via(conn, router_id, subnets):
                raise exception.RouterInterfaceInUseByFloatingIP(
                    router_id=router_id, subnet_id=subnet_id or subnets[0]
                )
            info = await self._interface_info(conn, router, port_id)
            await net_db.delete_port(conn, port_id)
            await net_db.update_row(conn, "routers", router_id, {})
            return info
