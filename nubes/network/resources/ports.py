"""Ports: Neutron's ``/v2.0/ports`` rules; a port's groups are the security groups'."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.context import RequestContext
from nubes.db.api import network as net_db
from nubes.db.engine import Connection, Database
from nubes.db.transaction_batch import TransactionBatcher
from nubes.network.resources._common import (
    Page,
    Row,
    authorize_member,
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
from nubes.network.resources.security_groups import SecurityGroups

#: Neutron's MAC prefix for ports it generates (the OpenStack OUI).
MAC_PREFIX = "fa:16:3e"
#: A port owned by these is infrastructure: no security groups by default.
INFRA_OWNER_PREFIX = "network:"
#: Ports a router or a floating IP holds: changed through them, not the port API.
SERVICE_OWNERS = frozenset({net_db.ROUTER_INTERFACE, net_db.ROUTER_GATEWAY, net_db.FLOATING_IP})


@dataclasses.dataclass(frozen=True, eq=False)
class _PortAsk:
    """One caller's port create, waiting for its batch (each ask is its own key)."""

    ctxt: RequestContext
    item: Mapping[str, Any]


class Ports(SecurityGroups):
    """Ports: addresses from IPAM, MACs, security groups, bindings; concurrent
    creates share a transaction."""

    def __init__(self, db: Database, conf: cfg.ConfigOpts) -> None:
        super().__init__(db, conf)
        #: Concurrent port creates share a transaction (see create_port).
        self.port_creates: TransactionBatcher[_PortAsk, Row] = TransactionBatcher(
            db, self._create_ports
        )

    async def _groups_for_port(
        self,
        conn: Connection,
        ctxt: RequestContext,
        project_id: str,
        ids: Any,
        known: dict[tuple[str, str], Row] | None = None,
    ) -> list[str]:
        if not isinstance(ids, list):
            raise invalid("security_groups", ids, "is not a list")
        out = []
        for group_id in ids:
            gid = valid_uuid(group_id, "security_groups")
            missing = exception.SecurityGroupNotFound(id=gid)
            group = await visible_row(conn, ctxt, "security_groups", gid, missing, known)
            if group["project_id"] != project_id and not is_admin(ctxt):
                raise exception.SecurityGroupNotFound(id=group_id)
            out.append(group["id"])
        return out

    async def create_port_in(
        self, conn: Connection, ctxt: RequestContext, item: Mapping[str, Any]
    ) -> str:
        """Create a port in the caller's transaction; returns its id (see create_ports_in)."""
        (port_id,) = await self.create_ports_in(conn, [(ctxt, item)])
        return port_id

    async def create_ports_in(
        self, conn: Connection, items: Sequence[tuple[RequestContext, Mapping[str, Any]]]
    ) -> list[str]:
        """Create ports in the caller's transaction, each as its caller asked; their ids.

        The compute API creates a server's ports through here too, inside
        the transaction that records the server, so a failed boot request
        leaves no port behind; a batch of builds' ports (the conductor) are
        written together: one quota check per project, one statement per
        table, one IPAM pass per subnet. Any item's error fails them all.
        """
        # Rows many items name (their network, their groups) read once.
        known: dict[tuple[str, str], Row] = {}
        rows: list[dict[str, Any]] = []
        groups: dict[str, list[str]] = {}
        addresses: list[net_db.AddressRequest] = []
        per_project: dict[str, int] = {}
        for ctxt, item in items:
            network_id = valid_uuid(item.get("network_id"), "network_id")
            project_id = owner_of(ctxt, item)
            network = await visible_row(
                conn,
                ctxt,
                "networks",
                network_id,
                exception.NetworkNotFound(net_id=network_id),
                known,
            )
            if network["project_id"] != project_id and not network["shared"] and not is_admin(ctxt):
                raise exception.NetworkNotFound(net_id=network_id)
            device_owner = field_str(item, "device_owner")
            _check_owner(ctxt, "create_port", device_owner)
            security = field_bool(item, "port_security_enabled", network["port_security_enabled"])
            mac = item.get("mac_address")
            if mac is None:
                mac = random_mac()
            elif not is_admin(ctxt):
                raise exception.PolicyNotAuthorized(action="create_port:mac_address")
            else:
                mac = _mac(mac)
            fixed_ips = item.get("fixed_ips")
            if fixed_ips is not None:
                if not isinstance(fixed_ips, list) or not all(
                    isinstance(f, dict) for f in fixed_ips
                ):
                    raise invalid("fixed_ips", fixed_ips, "is not a list of objects")
                for entry in fixed_ips:
                    unknown = set(entry) - {"subnet_id", "ip_address"}
                    if unknown or not entry:
                        raise invalid("fixed_ips", entry, "is not a subnet_id/ip_address pair")
                    if "subnet_id" in entry:
                        entry["subnet_id"] = valid_uuid(entry["subnet_id"], "fixed_ips")
            if "security_groups" in item:
                port_groups = await self._groups_for_port(
                    conn, ctxt, project_id, item["security_groups"], known
                )
            elif security and not device_owner.startswith(INFRA_OWNER_PREFIX):
                port_groups = [await self.ensure_default_group(conn, project_id)]
            else:
                port_groups = []
            if port_groups and not security:
                raise exception.NetworkInvalid(
                    reason="Port has security group associated. Cannot disable port security "
                    "or ip address until security group is removed"
                )
            host = field_str(item, "binding:host_id")
            if host and not is_admin(ctxt):
                raise exception.PolicyNotAuthorized(action="create_port:binding:host_id")
            port_id = str(uuid.uuid4())
            per_project[project_id] = per_project.get(project_id, 0) + 1
            rows.append(
                {
                    "id": port_id,
                    "network_id": network_id,
                    "project_id": project_id,
                    "name": field_str(item, "name"),
                    "description": field_str(item, "description"),
                    "mac_address": mac,
                    "admin_state_up": field_bool(item, "admin_state_up", True),
                    "status": "DOWN",
                    "device_id": field_str(item, "device_id"),
                    "device_owner": device_owner,
                    "binding_host_id": host,
                    "port_security_enabled": security,
                    "revision_number": 0,
                }
            )
            groups[port_id] = port_groups
            addresses.append(net_db.AddressRequest(port_id, network_id, fixed_ips))
        for project_id, count in sorted(per_project.items()):
            await self._check_quota(conn, project_id, "ports", count)
        await net_db.create_many(conn, "ports", rows)
        await net_db.add_port_groups(conn, groups)
        # Last: the subnets' IPAM locks are then held only until the commit.
        await net_db.allocate_addresses(conn, addresses)
        return [row["id"] for row in rows]

    async def create_port(self, ctxt: RequestContext, item: Mapping[str, Any]) -> Row:
        """A port as the caller asked; its details.

        Concurrent requests are created together (:attr:`port_creates`):
        one transaction, the subnet's IPAM lock taken once for all of them
        instead of each waiting for the one before it to commit.
        """
        authorize_member(ctxt, "create_port")
        return await self.port_creates.run(_PortAsk(ctxt, item))

    async def _create_ports(
        self, conn: Connection, asks: Sequence[_PortAsk]
    ) -> dict[_PortAsk, Row]:
        made = await self.create_ports_in(conn, [(a.ctxt, a.item) for a in asks])
        return dict(zip(asks, await port_details(conn, made), strict=True))

    async def _visible_port(self, conn: Connection, ctxt: RequestContext, pid: str) -> Row:
        return await visible_row(conn, ctxt, "ports", pid, exception.PortNotFound(port_id=pid))

    async def get_port(self, ctxt: RequestContext, port_id: str) -> Row:
        async with self.db.reader() as conn:
            await self._visible_port(conn, ctxt, port_id)
            return (await port_details(conn, [port_id]))[0]

    async def list_ports(
        self, ctxt: RequestContext, page: Page, fixed_ips: Sequence[str] = ()
    ) -> list[Row]:
        visible = listable(ctxt)
        async with self.db.reader(allow_stale=True) as conn:
            wanted = dict(page.filters)
            if fixed_ips:
                addresses = [f.split("=", 1)[1] for f in fixed_ips if f.startswith("ip_address=")]
                subnets_wanted = [
                    f.split("=", 1)[1] for f in fixed_ips if f.startswith("subnet_id=")
                ]
                ids = None
                if addresses:
                    ids = set(await net_db.port_ids_with_address(conn, addresses))
                if subnets_wanted:
                    held = await net_db.port_ids_in_subnets(conn, subnets_wanted)
                    ids = set(held) if ids is None else ids & set(held)
                wanted["id"] = sorted(ids or ())
            rows = await list_page(
                conn, "ports", visible, dataclasses.replace(page, filters=wanted)
            )
            return await port_details(conn, [r["id"] for r in rows])

    async def update_port(self, ctxt: RequestContext, port_id: str, item: Mapping[str, Any]) -> Row:
        async with self.db.writer() as conn:
            row = await self._visible_port(conn, ctxt, port_id)
            owned_or_404(ctxt, row, exception.PortNotFound(port_id=port_id))
            await self.update_port_in(conn, ctxt, row, item)
            return (await port_details(conn, [port_id]))[0]

    async def update_port_in(
        self, conn: Connection, ctxt: RequestContext, row: Row, item: Mapping[str, Any]
    ) -> None:
        port_id = row["id"]
        values = field_strs(item, ("name", "description", "device_id", "device_owner"))
        owner = row["device_owner"]
        fixed_ok = owner == net_db.ROUTER_INTERFACE  # its address within its subnets
        if owner in SERVICE_OWNERS and (
            {"device_id", "device_owner"} & set(item) or ("fixed_ips" in item and not fixed_ok)
        ):
            # Its router or floating IP decides these (their own API changes them).
            raise exception.ServicePortInUse(port_id=port_id, reason=f"has device owner {owner}")
        if "device_owner" in values:
            _check_owner(ctxt, "update_port", values["device_owner"])
        if "admin_state_up" in item:
            values["admin_state_up"] = field_bool(item, "admin_state_up", True)
        if "binding:host_id" in item:
            if not is_admin(ctxt):
                raise exception.PolicyNotAuthorized(action="update_port:binding:host_id")
            values["binding_host_id"] = field_str(item, "binding:host_id")
        security = row["port_security_enabled"]
        if "port_security_enabled" in item:
            security = values["port_security_enabled"] = field_bool(
                item, "port_security_enabled", True
            )
        groups = (await net_db.groups_by_port(conn, [port_id]))[port_id]
        if "security_groups" in item:
            groups = await self._groups_for_port(
                conn, ctxt, row["project_id"], item["security_groups"] or []
            )
            await net_db.set_port_groups(conn, port_id, groups)
        if groups and not security:
            raise exception.NetworkInvalid(
                reason="Port has security group associated. Cannot disable port security "
                "or ip address until security group is removed"
            )
        if "fixed_ips" in item:
            requests = item["fixed_ips"]
            if not isinstance(requests, list) or not all(isinstance(f, dict) for f in requests):
                raise invalid("fixed_ips", requests, "is not a list of objects")
            before = {
                f["subnet_id"] for f in (await net_db.fixed_ips_by_port(conn, [port_id]))[port_id]
            }
            await net_db.release_addresses(conn, port_id)
            held = await net_db.allocate_addresses(
                conn,
                [
                    net_db.AddressRequest(
                        port_id,
                        row["network_id"],
                        requests,
                        gateway_ok=owner == net_db.ROUTER_INTERFACE,
                    )
                ],
            )
            if (
                owner == net_db.ROUTER_INTERFACE
                and {f["subnet_id"] for f in held[port_id]} != before
            ):
                # Neutron's rule: the router's subnets change through its interface API.
                raise exception.NetworkBadRequest(
                    resource="port",
                    msg="Changing the subnets of a router interface port is not allowed; "
                    "add or remove the router's interface instead",
                )
            # A floating IP mapped to an address the port no longer holds is unmapped.
            await net_db.disassociate_floating_ips(
                conn, port_id, keep=[f["ip_address"] for f in held[port_id]]
            )
        await net_db.update_row(conn, "ports", port_id, values)

    async def delete_port(self, ctxt: RequestContext, port_id: str) -> None:
        async with self.db.writer() as conn:
            row = await self._visible_port(conn, ctxt, port_id)
            owned_or_404(ctxt, row, exception.PortNotFound(port_id=port_id))
            if row["device_owner"] in SERVICE_OWNERS:
                # Its router or floating IP owns it; they delete it (Neutron's rule).
                raise exception.ServicePortInUse(
                    port_id=port_id, reason=f"has device owner {row['device_owner']}"
                )
            await net_db.delete_port(conn, port_id)


async def port_details(conn: Connection, port_ids: Sequence[str]) -> list[Row]:
    """Ports with their ``fixed_ips`` and ``security_groups``, in the order asked."""
    rows = {r["id"]: r for r in await net_db.get_many(conn, "ports", port_ids)}
    addresses = await net_db.fixed_ips_by_port(conn, port_ids)
    groups = await net_db.groups_by_port(conn, port_ids)
    out = []
    for port_id in port_ids:
        row = rows[port_id]
        row["fixed_ips"] = addresses[port_id]
        row["security_groups"] = groups[port_id]
        out.append(row)
    return out


def _check_owner(ctxt: RequestContext, action: str, owner: str) -> None:
    """A router's or floating IP's owner names only ports their API made (or an
    admin): a project naming one on a port of its own could pose as another's
    router interface and keep that router from being deleted."""
    if owner in SERVICE_OWNERS and not is_admin(ctxt):
        raise exception.PolicyNotAuthorized(action=f"{action}:device_owner")


def random_mac() -> str:
    tail = random.SystemRandom().getrandbits(24)
    return f"{MAC_PREFIX}:{tail >> 16:02x}:{(tail >> 8) & 0xFF:02x}:{tail & 0xFF:02x}"


def _mac(value: Any) -> str:
    text = str(value).lower().replace("-", ":")
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise invalid("mac_address", value, "is not a valid MAC address")
    try:
        first = int(parts[0], 16)
        for part in parts[1:]:
            int(part, 16)
    except ValueError:
        raise invalid("mac_address", value, "is not a valid MAC address") from None
    if first & 1:
        raise invalid("mac_address", value, "is a multicast address")
    return text
