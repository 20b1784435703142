"""Networks: Neutron's ``/v2.0/networks`` rules (shared, external, MTU, VNI)."""

from __future__ import annotations

import random
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
    ServiceBase,
    authorize_member,
    can_see,
    field_bool,
    field_int,
    field_str,
    field_strs,
    is_admin,
    list_page,
    listable,
    owned_or_404,
    owner_of,
    visible_row,
)

#: Largest segmentation id (VXLAN VNIs are 24 bits).
MAX_VNI = 2**24 - 1
#: Neutron's provider network attributes (admin only).
PROVIDER_ATTRS = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")


class Networks(ServiceBase):
    """Networks: create, show, list, update, delete."""

    async def create_network(self, ctxt: RequestContext, item: Mapping[str, Any]) -> Row:
        authorize_member(ctxt, "create_network")
        project_id = owner_of(ctxt, item)
        shared = field_bool(item, "shared", False)
        external = field_bool(item, "router:external", False)
        if (shared or external) and not is_admin(ctxt):
            raise exception.PolicyNotAuthorized(
                action="create_network:shared" if shared else "create_network:router:external"
            )
        mtu = field_int(item, "mtu", 68, 9000) or int(self.conf.api.network_mtu)
        physnet, vni = self._provider(ctxt, item, external)
        values = {
            "id": str(uuid.uuid4()),
            "project_id": project_id,
            "name": field_str(item, "name"),
            "description": field_str(item, "description"),
            "admin_state_up": field_bool(item, "admin_state_up", True),
            "shared": shared,
            "external": external,
            "mtu": mtu,
            "port_security_enabled": field_bool(item, "port_security_enabled", True),
            # A flat network has a VNI too (unused): the column is unique and required.
            "segmentation_id": vni or random.SystemRandom().randint(1, MAX_VNI),
            "physical_network": physnet,
            "auto_allocated": bool(item.get("_auto_allocated", False)),
            "revision_number": 0,
        }
        async with self.db.writer() as conn:
            await self._check_quota(conn, project_id, "networks")
            await net_db.create(conn, "networks", values)
            return await self._network_with_subnets(conn, str(values["id"]))

    def _provider(
        self, ctxt: RequestContext, item: Mapping[str, Any], external: bool
    ) -> tuple[str | None, int | None]:
        """(physical network, VNI) from Neutron's provider attributes (admin only).

        Two types: ``vxlan`` (tenant networks; a VNI may be given) and ``flat``
        on a physical network, for external networks only (the hosts map the
        physical network to an interface; guests' ports on a flat provider
        network are not built). An external network named without them is
        flat on ``[api] external_physical_network``.
        """
        given = [k for k in PROVIDER_ATTRS if item.get(k) is not None]
        if given and not is_admin(ctxt):
            raise exception.PolicyNotAuthorized(action=f"create_network:{given[0]}")
        kind = item.get("provider:network_type")
        physnet = item.get("provider:physical_network")
        if kind is None:
            kind = "flat" if external or physnet is not None else "vxlan"
        if kind not in ("flat", "vxlan"):
            raise exception.NetworkInvalid(
                reason=f"Invalid input for operation: network_type value '{kind}' not supported."
            )
        if kind == "vxlan":
            if physnet is not None:
                raise exception.NetworkInvalid(
                    reason="Invalid input for operation: physical_network not allowed for "
                    "vxlan provider network."
                )
            return None, field_int(item, "provider:segmentation_id", 1, MAX_VNI)
        if item.get("provider:segmentation_id") is not None:
            raise exception.NetworkInvalid(
                reason="Invalid input for operation: segmentation_id not allowed for flat "
                "provider network."
            )
        if not external:
            raise exception.NetworkInvalid(
                reason="Invalid input for operation: a flat network must be external "
                "(provider networks for guests are not supported)."
            )
        physnet = field_str(item, "provider:physical_network", maxlen=64)
        return physnet or str(self.conf.api.external_physical_network), None

    async def _network_with_subnets(self, conn: Connection, network_id: str) -> Row:
        row = await net_db.get(conn, "networks", network_id)
        row["subnets"] = (await net_db.subnet_ids_by_network(conn, [network_id]))[network_id]
        return row

    async def get_network(self, ctxt: RequestContext, network_id: str) -> Row:
        async with self.db.reader() as conn:
            row = await self._network_with_subnets(conn, network_id)
        if not can_see(ctxt, row):
            raise exception.NetworkNotFound(net_id=network_id)
        return row

    async def list_networks(self, ctxt: RequestContext, page: Page) -> list[Row]:
        visible = listable(ctxt, shared=True)
        async with self.db.reader(allow_stale=True) as conn:
            rows = await list_page(conn, "networks", visible, page)
            subnet_ids = await net_db.subnet_ids_by_network(conn, [r["id"] for r in rows])
        for row in rows:
            row["subnets"] = subnet_ids[row["id"]]
        return rows

    async def update_network(
        self, ctxt: RequestContext, network_id: str, item: Mapping[str, Any]
    ) -> Row:
        async with self.db.writer() as conn:
            missing = exception.NetworkNotFound(net_id=network_id)
            row = await visible_row(conn, ctxt, "networks", network_id, missing)
            owned_or_404(ctxt, row, missing)
            values = field_strs(item, ("name", "description"))
            if "admin_state_up" in item:
                values["admin_state_up"] = field_bool(item, "admin_state_up", True)
            if "port_security_enabled" in item:
                values["port_security_enabled"] = field_bool(item, "port_security_enabled", True)
            if "mtu" in item:
                values["mtu"] = field_int(item, "mtu", 68, 9000)
            for field, column in (("shared", "shared"), ("router:external", "external")):
                if field in item:
                    if not is_admin(ctxt):
                        raise exception.PolicyNotAuthorized(action=f"update_network:{field}")
                    values[column] = field_bool(item, field, False)
            if row["physical_network"] and values.get("external") is False:
                raise exception.NetworkInvalid(
                    reason=f"Invalid input for operation: network {network_id} is flat; it "
                    "must stay external."
                )
            if values:
                await net_db.update_row(conn, "networks", network_id, values)
            return await self._network_with_subnets(conn, network_id)

    async def delete_network(self, ctxt: RequestContext, network_id: str) -> None:
        async with self.db.writer() as conn:
            missing = exception.NetworkNotFound(net_id=network_id)
            row = await visible_row(conn, ctxt, "networks", network_id, missing)
            owned_or_404(ctxt, row, missing)
            if await net_db.port_count(conn, network_id=network_id):
                raise exception.NetworkInUse(net_id=network_id)
            for subnet in await net_db.subnets_of(conn, network_id):
                await net_db.delete_row(conn, "subnets", subnet["id"])
            await net_db.delete_row(conn, "networks", network_id)
