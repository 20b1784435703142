"""Subnets: Neutron's ``/v2.0/subnets`` rules."""

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
    ServiceBase,
    authorize_member,
    can_see,
    field_bool,
    field_int,
    field_list,
    field_str,
    field_strs,
    invalid,
    is_admin,
    list_page,
    owned_or_404,
    owner_of,
    valid_uuid,
)


class Subnets(ServiceBase):
    """Subnets: CIDR, gateway, pools, DNS, host routes (address arithmetic in nubes.ipam)."""

    async def create_subnet(self, ctxt: RequestContext, item: Mapping[str, Any]) -> Row:
        authorize_member(ctxt, "create_subnet")
        network_id = valid_uuid(item.get("network_id"), "network_id")
        ip_version = field_int(item, "ip_version", 4, 6) or 4
        if ip_version not in (4, 6):
            raise invalid("ip_version", ip_version, "is not in [4, 6]")
        if item.get("cidr") is None:
            # Subnet pools are not built: a CIDR is required.
            raise exception.NetworkInvalid(
                reason="Bad subnets request: a cidr must be specified in the absence of "
                "a subnet pool."
            )
        net = ipam.parse_cidr(field_str(item, "cidr"), ip_version)
        gateway: ipam.Address | None
        if "gateway_ip" in item and item["gateway_ip"] is None:
            gateway = None
        elif "gateway_ip" in item:
            gateway = ipam.parse_address(item["gateway_ip"], "gateway_ip")
            if gateway not in net or gateway == net.network_address:
                raise exception.NetworkInvalid(
                    reason=f"Gateway IP {gateway} is not a valid address of subnet {net}."
                )
        else:
            gateway = ipam.default_gateway(net)
        raw_pools = field_list(item, "allocation_pools")
        pools = (
            ipam.check_pools(net, raw_pools, gateway)
            if raw_pools
            else ipam.default_pools(net, gateway)
        )
        dns = []
        for server in field_list(item, "dns_nameservers"):
            dns.append(str(ipam.parse_address(server, "dns_nameservers")))
        if len(set(dns)) != len(dns):
            raise exception.NetworkInvalid(reason="Duplicate nameserver in dns_nameservers.")
        routes = []
        for route in field_list(item, "host_routes"):
            if not isinstance(route, dict) or set(route) != {"destination", "nexthop"}:
                raise invalid("host_routes", route, "is not a destination/nexthop pair")
            destination = ipam.parse_cidr(str(route["destination"]))
            nexthop = ipam.parse_address(route["nexthop"], "host_routes")
            routes.append({"destination": str(destination), "nexthop": str(nexthop)})
        ra_mode = item.get("ipv6_ra_mode")
        address_mode = item.get("ipv6_address_mode")
        for field, mode in (("ipv6_ra_mode", ra_mode), ("ipv6_address_mode", address_mode)):
            if mode is not None and (
                ip_version != 6 or mode not in ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")
            ):
                raise invalid(field, mode)
        async with self.db.writer() as conn:
            network = await net_db.get(conn, "networks", network_id)
            if not can_see(ctxt, network):
                raise exception.NetworkNotFound(net_id=network_id)
            owned_or_404(ctxt, network, exception.NetworkNotFound(net_id=network_id))
            project_id = owner_of(ctxt, item)
            for other in await net_db.subnets_of(conn, network_id):
                if ipam.parse_cidr(other["cidr"]).overlaps(net):
                    raise exception.NetworkInvalid(
                        reason=f"Invalid input for operation: Requested subnet with cidr: "
                        f"{net} for network: {network_id} overlaps with another subnet."
                    )
            await self._check_quota(conn, project_id, "subnets")
            values = {
                "id": str(uuid.uuid4()),
                "network_id": network_id,
                "project_id": project_id,
                "name": field_str(item, "name"),
                "description": field_str(item, "description"),
                "ip_version": ip_version,
                "cidr": str(net),
                "gateway_ip": None if gateway is None else str(gateway),
                "enable_dhcp": field_bool(item, "enable_dhcp", True),
                "allocation_pools": pools,
                "dns_nameservers": dns,
                "host_routes": routes,
                "ipv6_ra_mode": ra_mode,
                "ipv6_address_mode": address_mode,
                "ipam_generation": 0,
                "revision_number": 0,
            }
            await net_db.create(conn, "subnets", values)
            return await net_db.get(conn, "subnets", str(values["id"]))

    async def _visible_subnet(self, conn: Connection, ctxt: RequestContext, sid: str) -> Row:
        row = await net_db.get(conn, "subnets", sid)
        network = await net_db.get(conn, "networks", row["network_id"])
        # Its project's, and those of networks every project sees (shared, external).
        if not (row["project_id"] == ctxt.project_id or can_see(ctxt, network)):
            raise exception.SubnetNotFound(subnet_id=sid)
        return row

    async def get_subnet(self, ctxt: RequestContext, subnet_id: str) -> Row:
        async with self.db.reader() as conn:
            return await self._visible_subnet(conn, ctxt, subnet_id)

    async def list_subnets(self, ctxt: RequestContext, page: Page) -> list[Row]:
        async with self.db.reader(allow_stale=True) as conn:
            visible = None
            if not is_admin(ctxt):
                # The project's subnets and those of shared and external networks.
                shared = await net_db.list_rows(
                    conn, "networks", visible=None, filters={"shared": [True]}
                ) + await net_db.list_rows(
                    conn, "networks", visible=None, filters={"external": [True]}
                )
                visible = net_db.Visible(
                    ctxt.project_id or "", network_ids=[n["id"] for n in shared]
                )
            return await list_page(conn, "subnets", visible, page)

    async def update_subnet(
        self, ctxt: RequestContext, subnet_id: str, item: Mapping[str, Any]
    ) -> Row:
        async with self.db.writer() as conn:
            row = await self._visible_subnet(conn, ctxt, subnet_id)
            owned_or_404(ctxt, row, exception.SubnetNotFound(subnet_id=subnet_id))
            values = field_strs(item, ("name", "description"))
            if "enable_dhcp" in item:
                values["enable_dhcp"] = field_bool(item, "enable_dhcp", True)
            if "dns_nameservers" in item:
                values["dns_nameservers"] = [
                    str(ipam.parse_address(s, "dns_nameservers"))
                    for s in field_list(item, "dns_nameservers")
                ]
            if "host_routes" in item:
                values["host_routes"] = [
                    {
                        "destination": str(ipam.parse_cidr(str(r.get("destination")))),
                        "nexthop": str(ipam.parse_address(r.get("nexthop"), "host_routes")),
                    }
                    for r in field_list(item, "host_routes")
                    if isinstance(r, dict)
                ]
            if values:
                await net_db.update_row(conn, "subnets", subnet_id, values)
            return await net_db.get(conn, "subnets", subnet_id)

    async def delete_subnet(self, ctxt: RequestContext, subnet_id: str) -> None:
        async with self.db.writer() as conn:
            row = await self._visible_subnet(conn, ctxt, subnet_id)
            owned_or_404(ctxt, row, exception.SubnetNotFound(subnet_id=subnet_id))
            if await net_db.allocation_count(conn, subnet_id=subnet_id):
                raise exception.SubnetInUse(subnet_id=subnet_id)
            await net_db.delete_row(conn, "subnets", subnet_id)
