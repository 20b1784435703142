"""Floating IPs: Neutron's ``/v2.0/floatingips`` rules.

A floating IP is an address of an external network's subnet, held by a
port of its own (owner ``network:floatingip``, no project, as Neutron
makes it), so it comes from IPAM's one atomic write path like any fixed
address. It may be mapped to one fixed IPv4 address of a port; the
mapping needs a router with an interface on that address's subnet and its
gateway on the floating IP's network (Neutron's 404
``ExternalGatewayForFloatingIPNotFound`` otherwise), and a fixed address
has at most one floating IP per external network (409
``FloatingIPPortAlreadyAssociated``; a unique constraint backs it).

``status`` is ACTIVE while mapped, DOWN otherwise. The hosts apply the
mapping (``nubes/compute/network/``): a host learns the floating IPs of the
ports bound to it through the conductor, nothing else.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping
from typing import Any

from nubes import exception
from nubes.context import RequestContext
from nubes.db.api import network as net_db
from nubes.db.engine import Connection
from nubes.network.resources._common import (
    Page,
    Row,
    authorize_member,
    field_str,
    is_admin,
    list_page,
    listable,
    owned_or_404,
    owner_of,
    valid_uuid,
    visible_row,
)
from nubes.network.resources.routers import Routers, make_service_port


def _bad(msg: str) -> exception.NetworkBadRequest:
    return exception.NetworkBadRequest(resource="floatingip", msg=msg)


def _ipv4(address: str) -> bool:
    return ipaddress.ip_address(address).version == 4


class FloatingIPs(Routers):
    """Floating IPs: create (with an address from IPAM), show, list, update, delete."""

    async def create_floatingip(self, ctxt: RequestContext, item: Mapping[str, Any]) -> Row:
        authorize_member(ctxt, "create_floatingip")
        project_id = owner_of(ctxt, item)
        network_id = valid_uuid(item.get("floating_network_id"), "floating_network_id")
        address = item.get("floating_ip_address")
        if address is not None and not is_admin(ctxt):
            # Neutron's default policy: a project takes the address IPAM gives.
            raise exception.PolicyNotAuthorized(action="create_floatingip:floating_ip_address")
        fip_id = str(uuid.uuid4())
        async with self.db.writer() as conn:
            network = await visible_row(
                conn, ctxt, "networks", network_id, exception.NetworkNotFound(net_id=network_id)
            )
            if not network["external"]:
                raise _bad(f"Network {network_id} is not a valid external network")
            subnets = [s for s in await net_db.subnets_of(conn, network_id) if s["ip_version"] == 4]
            if item.get("subnet_id") is not None:
                subnet_id = valid_uuid(item["subnet_id"], "subnet_id")
                if subnet_id not in {s["id"] for s in subnets}:
                    raise _bad(f"Subnet {subnet_id} is not an IPv4 subnet of network {network_id}")
            elif address is not None:
                subnet_id = None
            elif subnets:
                subnet_id = subnets[0]["id"]
            else:
                raise _bad(f"Network {network_id} has no IPv4 subnet")
            await self._check_quota(conn, project_id, "floatingips")
            wanted: dict[str, Any] = {}
            if subnet_id is not None:
                wanted["subnet_id"] = subnet_id
            if address is not None:
                wanted["ip_address"] = str(address)
            port_id = await make_service_port(
                conn,
                network_id=network_id,
                project_id="",
                owner=net_db.FLOATING_IP,
                device_id=fip_id,
                fixed_ips=[wanted],
            )
            (held,) = (await net_db.fixed_ips_by_port(conn, [port_id]))[port_id]
            values: dict[str, Any] = {
                "id": fip_id,
                "project_id": project_id,
                "description": field_str(item, "description"),
                "floating_network_id": network_id,
                "floating_port_id": port_id,
                "floating_ip_address": held["ip_address"],
                "status": "DOWN",
                "revision_number": 0,
            }
            if item.get("port_id") is not None:
                values.update(
                    await self._mapping(
                        conn, ctxt, values, item["port_id"], item.get("fixed_ip_address")
                    )
                )
            elif item.get("fixed_ip_address") is not None:
                raise _bad("fixed_ip_address cannot be specified without a port_id")
            await net_db.create(conn, "floatingips", values)
            return await net_db.get(conn, "floatingips", fip_id)

    async def _mapping(
        self,
        conn: Connection,
        ctxt: RequestContext,
        fip: Mapping[str, Any],
        raw_port_id: Any,
        raw_fixed: Any,
    ) -> dict[str, Any]:
        """The columns that map ``fip`` to a port's fixed address, if it may be."""
        port_id = valid_uuid(raw_port_id, "port_id")
        missing = exception.PortNotFound(port_id=port_id)
        port = await visible_row(conn, ctxt, "ports", port_id, missing)
        if port["project_id"] != fip["project_id"] and not is_admin(ctxt):
            raise missing
        if port["device_owner"].startswith("network:"):
            raise _bad(
                f"Port {port_id} has owner {port['device_owner']} and therefore cannot be "
                "assigned a floating IP"
            )
        held = (await net_db.fixed_ips_by_port(conn, [port_id]))[port_id]
        v4 = [f for f in held if _ipv4(f["ip_address"])]
        if raw_fixed is not None:
            fixed = str(raw_fixed)
            chosen = [f for f in v4 if f["ip_address"] == fixed]
            if not chosen:
                raise _bad(f"Port {port_id} does not have fixed ip {fixed}")
        elif len(v4) > 1:
            raise _bad(
                f"Port {port_id} has multiple fixed IPv4 addresses. Must provide a specific "
                "IPv4 address when assigning a floating IP"
            )
        elif not v4:
            raise _bad(f"Port {port_id} does not have any fixed IPv4 address")
        else:
            chosen = v4
        (target,) = chosen[:1]
        external = fip["floating_network_id"]
        candidates = (await net_db.interface_routers(conn, [target["subnet_id"]]))[
            target["subnet_id"]
        ]
        routers = await net_db.get_many(conn, "routers", candidates)
        via = sorted(r["id"] for r in routers if r["gw_network_id"] == external)
        if not via:
            raise exception.ExternalGatewayForFloatingIPNotFound(
                external_network_id=external, subnet_id=target["subnet_id"], port_id=port_id
            )
        for other in await net_db.floating_ips_of_ports(conn, [port_id]):
            if (
                other["id"] != fip["id"]
                and other["fixed_ip_address"] == target["ip_address"]
                and other["floating_network_id"] == external
            ):
                raise exception.FloatingIPPortAlreadyAssociated(
                    floating_ip_address=fip["floating_ip_address"],
                    fip_id=fip["id"],
                    port_id=port_id,
                    fixed_ip=target["ip_address"],
                    net_id=external,
                )
        return {
            "fixed_port_id": port_id,
            "fixed_ip_address": target["ip_address"],
            "router_id": via[0],
            "status": "ACTIVE",
        }

    async def _owned_fip(self, conn: Connection, ctxt: RequestContext, fip_id: str) -> Row:
        missing = exception.FloatingIPNotFound(floatingip_id=fip_id)
        row = await visible_row(conn, ctxt, "floatingips", fip_id, missing)
        return owned_or_404(ctxt, row, missing)

    async def get_floatingip(self, ctxt: RequestContext, fip_id: str) -> Row:
        async with self.db.reader() as conn:
            missing = exception.FloatingIPNotFound(floatingip_id=fip_id)
            return await visible_row(conn, ctxt, "floatingips", fip_id, missing)

    async def list_floatingips(self, ctxt: RequestContext, page: Page) -> list[Row]:
        async with self.db.reader(allow_stale=True) as conn:
            return await list_page(conn, "floatingips", listable(ctxt), page)

    async def update_floatingip(
        self, ctxt: RequestContext, fip_id: str, item: Mapping[str, Any]
    ) -> Row:
        async with self.db.writer() as conn:
            row = await self._owned_fip(conn, ctxt, fip_id)
            values: dict[str, Any] = {}
            if "description" in item:
                values["description"] = field_str(item, "description")
            if "port_id" in item:
                if item["port_id"] is None:
                    values.update(
                        fixed_port_id=None, fixed_ip_address=None, router_id=None, status="DOWN"
                    )
                else:
                    values.update(
                        await self._mapping(
                            conn, ctxt, row, item["port_id"], item.get("fixed_ip_address")
                        )
                    )
            elif item.get("fixed_ip_address") is not None:
                raise _bad("fixed_ip_address cannot be specified without a port_id")
            await net_db.update_row(conn, "floatingips", fip_id, values)
            return await net_db.get(conn, "floatingips", fip_id)

    async def delete_floatingip(self, ctxt: RequestContext, fip_id: str) -> None:
        async with self.db.writer() as conn:
            row = await self._owned_fip(conn, ctxt, fip_id)
            await net_db.delete_row(conn, "floatingips", fip_id)
            await net_db.delete_port(conn, row["floating_port_id"])
