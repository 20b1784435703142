"""The rules of the network service: validation, visibility, defaults, quotas.

Every write to a network resource goes through here, from the network API
(``nubes/api/network/routes.py``) and from the compute API (a server's
ports, :mod:`nubes.network.ports`). Bodies use Neutron's field names.

Visibility (Neutron's default policy): a project sees its own rows, and
networks marked ``shared``; admin sees everything. A row the caller may
not see is "not found" (404), never 403. Creating a shared or external
network, or a port on another project's behalf, is for admin only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg

from nubes import exception, ipam
from nubes.api import policy, quotas
from nubes.context import RequestContext
from nubes.db.api import network as net_db
from nubes.db.engine import Connection, Database
from nubes.db.transaction_batch import TransactionBatcher

Row = dict[str, Any]

#: Neutron's MAC prefix for ports it generates (the OpenStack OUI).
MAC_PREFIX = "fa:16:3e"
DIRECTIONS = ("ingress", "egress")
ETHERTYPES = ("IPv4", "IPv6")
#: Protocol names Neutron accepts besides numbers 0-255.
PROTOCOLS = {
    "ah": 51,
    "dccp": 33,
    "egp": 8,
    "esp": 50,
    "gre": 47,
    "icmp": 1,
    "icmpv6": 58,
    "igmp": 2,
    "ipip": 4,
    "ipv6-encap": 41,
    "ipv6-frag": 44,
    "ipv6-icmp": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "ipv6-route": 43,
    "ospf": 89,
    "pgm": 113,
    "rsvp": 46,
    "sctp": 132,
    "tcp": 6,
    "udp": 17,
    "udplite": 136,
    "vrrp": 112,
}
PORT_PROTOCOLS = ("tcp", "udp", "dccp", "sctp", "udplite", "6", "17", "33", "132", "136")
ICMP_PROTOCOLS = ("icmp", "icmpv6", "ipv6-icmp", "1", "58")
#: Largest segmentation id (VXLAN VNIs are 24 bits).
MAX_VNI = 2**24 - 1
DEFAULT_GROUP = "default"
#: A port owned by these is infrastructure: no security groups by default.
INFRA_OWNER_PREFIX = "network:"


def is_admin(ctxt: RequestContext) -> bool:
    return policy.allowed(ctxt, policy.Rule.ADMIN)


def _project(ctxt: RequestContext) -> str:
    if ctxt.project_id is None:
        raise exception.PolicyNotAuthorized(action="network:project_scope")
    return ctxt.project_id


def _member(ctxt: RequestContext, action: str, project_id: str | None = None) -> None:
    policy.authorize(ctxt, action, policy.Rule.PROJECT_MEMBER, project_id)


# --- field checks ----------------------------------------------------------------------------


def _invalid(field: str, value: Any, why: str = "") -> exception.NetworkInvalid:
    return exception.NetworkInvalid(
        reason=f"Invalid input for {field}. Reason: '{value}' {why or 'is not valid'}."
    )


def check_body(
    body: Any, resource: str, allowed: Sequence[str], required: Sequence[str] = ()
) -> dict[str, Any]:
    """``{resource: {...}}``: an object with known attributes only."""
    if not isinstance(body, dict) or not isinstance(body.get(resource), dict):
        raise exception.NetworkInvalid(reason=f"Resource body required: '{resource}'")
    item: dict[str, Any] = body[resource]
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise exception.NetworkInvalid(
            reason="Unrecognized attribute(s) '" + ", ".join(unknown) + "'"
        )
    for name in required:
        if name not in item:
            raise exception.NetworkInvalid(
                reason=f"Failed to parse request. Required attribute '{name}' not specified"
            )
    return item


def _string(item: Mapping[str, Any], field: str, default: str = "", maxlen: int = 255) -> str:
    value = item.get(field, default)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _invalid(field, value, "is not a valid string")
    if len(value) > maxlen:
        raise _invalid(field, value, f"exceeds maximum length of {maxlen}")
    return value


def _bool(item: Mapping[str, Any], field: str, default: bool) -> bool:
    value = item.get(field, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise _invalid(field, value, "cannot be converted to boolean")


def _int(item: Mapping[str, Any], field: str, low: int, high: int) -> int | None:
    value = item.get(field)
    if value is None:
        return None
    if isinstance(value, bool):
        raise _invalid(field, value, "is not an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _invalid(field, value, "is not an integer") from None
    if not low <= number <= high:
        raise _invalid(field, value, f"is not in the range {low}..{high}")
    return number


def _list(item: Mapping[str, Any], field: str) -> list[Any]:
    value = item.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(field, value, "is not a list")
    return value


def _uuid(value: Any, field: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise _invalid(field, value, "is not a valid UUID") from None


def _owner(ctxt: RequestContext, item: Mapping[str, Any]) -> str:
    """The project a new row belongs to: the caller's, or (admin only) the one named."""
    named = item.get("project_id") or item.get("tenant_id")
    if named is not None and named != ctxt.project_id:
        if not isinstance(named, str) or not is_admin(ctxt):
            raise exception.PolicyNotAuthorized(action="create with another project_id")
        return named
    return _project(ctxt)


# --- visibility ------------------------------------------------------------------------------


def can_see(ctxt: RequestContext, row: Mapping[str, Any]) -> bool:
    if is_admin(ctxt):
        return True
    if row.get("shared"):
        return True
    return row["project_id"] == ctxt.project_id


def _owned_or_404(ctxt: RequestContext, row: Row, error: exception.NotFound) -> Row:
    """A row the caller may change: their project's (or any, for admin)."""
    if is_admin(ctxt) or row["project_id"] == ctxt.project_id:
        _member(ctxt, "network:write", row["project_id"])
        return row
    raise error


def _strings(item: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """The free-text attributes of an update body that it names."""
    return {field: _string(item, field) for field in fields if field in item}


async def _visible(
    conn: Connection,
    ctxt: RequestContext,
    kind: net_db.Kind,
    row_id: str,
    error: exception.NotFound,
    known: dict[tuple[str, str], Row] | None = None,
) -> Row:
    """A row of ``kind`` the caller may see, else ``error`` (404, never 403).

    ``known``: rows already read in this transaction (a batch reads each once).
    """
    row = known.get((kind, row_id)) if known is not None else None
    if row is None:
        try:
            row = await net_db.get(conn, kind, row_id)
        except exception.NotFound:
            raise error from None
        if known is not None:
            known[(kind, row_id)] = row
    if not can_see(ctxt, row):
        raise error
    return row


@dataclasses.dataclass(frozen=True, eq=False)
class _PortAsk:
    """One caller's port create, waiting for its batch (each ask is its own key)."""

    ctxt: RequestContext
    item: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Page:
    """What a listing asks for: rows matching ``filters`` (column -> any of
    the values), then at most ``limit`` of them after ``marker`` by id."""

    filters: Mapping[str, Sequence[Any]]
    limit: int | None = None
    marker: str | None = None
    descending: bool = False


def _listable(ctxt: RequestContext, *, shared: bool = False) -> net_db.Visible | None:
    """Neutron's default listing scope: admin sees all, others their
    project's rows (and, for networks, shared ones)."""
    return None if is_admin(ctxt) else net_db.visible_to(ctxt.project_id, shared=shared)


async def _page(
    conn: Connection, kind: net_db.Kind, visible: net_db.Visible | None, page: Page
) -> list[Row]:
    """One page of a collection: what every ``list_*`` hands to the database."""
    return await net_db.list_rows(
        conn,
        kind,
        visible=visible,
        filters=page.filters,
        limit=page.limit,
        marker=page.marker,
        descending=page.descending,
    )


class NetworkService:
    """One per API process; every method runs its own transaction(s)."""

    def __init__(self, db: Database, conf: cfg.ConfigOpts) -> None:
        self.db = db
        self.conf = conf
        #: Concurrent port creates share a transaction (see create_port).
        self.port_creates: TransactionBatcher[_PortAsk, Row] = TransactionBatcher(
            db, self._create_ports
        )

    async def _check_quota(
        self, conn: Connection, project_id: str, kind: net_db.Kind, count: int = 1
    ) -> None:
        """``count`` more rows of ``kind`` must fit the project's quota (named in the singular)."""
        await quotas.check_network_resource(
            conn,
            self.conf,
            project_id=project_id,
            resource=kind[:-1],
            used=lambda c: net_db.count_by_project(c, kind, project_id),
            count=count,
        )

    # --- networks ----------------------------------------------------------------------------

    async def create_network(self, ctxt: RequestContext, item: Mapping[str, Any]) -> Row:
        _member(ctxt, "create_network")
        project_id = _owner(ctxt, item)
        shared = _bool(item, "shared", False)
        external = _bool(item, "router:external", False)
        if (shared or external) and not is_admin(ctxt):
            raise exception.PolicyNotAuthorized(
                action="create_network:shared" if shared else "create_network:router:external"
            )
        mtu = _int(item, "mtu", 68, 9000) or int(self.conf.api.network_mtu)
        values = {
            "id": str(uuid.uuid4()),
            "project_id": project_id,
            "name": _string(item, "name"),
            "description": _string(item, "description"),
            "admin_state_up": _bool(item, "admin_state_up", True),
            "shared": shared,
            "external": external,
            "mtu": mtu,
            "port_security_enabled": _bool(item, "port_security_enabled", True),
            "segmentation_id": random.SystemRandom().randint(1, MAX_VNI),
            "auto_allocated": bool(item.get("_auto_allocated", False)),
            "revision_number": 0,
        }
        async with self.db.writer() as conn:
            await self._check_quota(conn, project_id, "networks")
            await net_db.create(conn, "networks", values)
            return await self._network_with_subnets(conn, str(values["id"]))

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
        visible = _listable(ctxt, shared=True)
        async with self.db.reader(allow_stale=True) as conn:
            rows = await _page(conn, "networks", visible, page)
            subnet_ids = await net_db.subnet_ids_by_network(conn, [r["id"] for r in rows])
        for row in rows:
            row["subnets"] = subnet_ids[row["id"]]
        return rows

    async def update_network(
        self, ctxt: RequestContext, network_id: str, item: Mapping[str, Any]
    ) -> Row:
        async with self.db.writer() as conn:
            missing = exception.NetworkNotFound(net_id=network_id)
            row = await _visible(conn, ctxt, "networks", network_id, missing)
            _owned_or_404(ctxt, row, missing)
            values = _strings(item, ("name", "description"))
            if "admin_state_up" in item:
                values["admin_state_up"] = _bool(item, "admin_state_up", True)
            if "port_security_enabled" in item:
                values["port_security_enabled"] = _bool(item, "port_security_enabled", True)
            if "mtu" in item:
                values["mtu"] = _int(item, "mtu", 68, 9000)
            for field, column in (("shared", "shared"), ("router:external", "external")):
                if field in item:
                    if not is_admin(ctxt):
                        raise exception.PolicyNotAuthorized(action=f"update_network:{field}")
                    values[column] = _bool(item, field, False)
            if values:
                await net_db.update_row(conn, "networks", network_id, values)
            return await self._network_with_subnets(conn, network_id)

    async def delete_network(self, ctxt: RequestContext, network_id: str) -> None:
        async with self.db.writer() as conn:
            missing = exception.NetworkNotFound(net_id=network_id)
            row = await _visible(conn, ctxt, "networks", network_id, missing)
            _owned_or_404(ctxt, row, missing)
            if await net_db.port_count(conn, network_id=network_id):
                raise exception.NetworkInUse(net_id=network_id)
            for subnet in await net_db.subnets_of(conn, network_id):
                await net_db.delete_row(conn, "subnets", subnet["id"])
            await net_db.delete_row(conn, "networks", network_id)

    # --- subnets -----------------------------------------------------------------------------

    async def create_subnet(self, ctxt: RequestContext, item: Mapping[str, Any]) -> Row:
        _member(ctxt, "create_subnet")
        network_id = _uuid(item.get("network_id"), "network_id")
        ip_version = _int(item, "ip_version", 4, 6) or 4
        if ip_version not in (4, 6):
            raise _invalid("ip_version", ip_version, "is not in [4, 6]")
        if item.get("cidr") is None:
            # Subnet pools are not built: a CIDR is required.
            raise exception.NetworkInvalid(
                reason="Bad subnets request: a cidr must be specified in the absence of "
                "a subnet pool."
            )
        net = ipam.parse_cidr(_string(item, "cidr"), ip_version)
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
        raw_pools = _list(item, "allocation_pools")
        pools = (
            ipam.check_pools(net, raw_pools, gateway)
            if raw_pools
            else ipam.default_pools(net, gateway)
        )
        dns = []
        for server in _list(item, "dns_nameservers"):
            dns.append(str(ipam.parse_address(server, "dns_nameservers")))
        if len(set(dns)) != len(dns):
            raise exception.NetworkInvalid(reason="Duplicate nameserver in dns_nameservers.")
        routes = []
        for route in _list(item, "host_routes"):
            if not isinstance(route, dict) or set(route) != {"destination", "nexthop"}:
                raise _invalid("host_routes", route, "is not a destination/nexthop pair")
            destination = ipam.parse_cidr(str(route["destination"]))
            nexthop = ipam.parse_address(route["nexthop"], "host_routes")
            routes.append({"destination": str(destination), "nexthop": str(nexthop)})
        ra_mode = item.get("ipv6_ra_mode")
        address_mode = item.get("ipv6_address_mode")
        for field, mode in (("ipv6_ra_mode", ra_mode), ("ipv6_address_mode", address_mode)):
            if mode is not None and (
                ip_version != 6 or mode not in ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")
            ):
                raise _invalid(field, mode)
        async with self.db.writer() as conn:
            network = await net_db.get(conn, "networks", network_id)
            if not can_see(ctxt, network):
                raise exception.NetworkNotFound(net_id=network_id)
            _owned_or_404(ctxt, network, exception.NetworkNotFound(net_id=network_id))
            project_id = _owner(ctxt, item)
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
                "name": _string(item, "name"),
                "description": _string(item, "description"),
                "ip_version": ip_version,
                "cidr": str(net),
                "gateway_ip": None if gateway is None else str(gateway),
                "enable_dhcp": _bool(item, "enable_dhcp", True),
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
        if not (is_admin(ctxt) or row["project_id"] == ctxt.project_id or network["shared"]):
            raise exception.SubnetNotFound(subnet_id=sid)
        return row

    async def get_subnet(self, ctxt: RequestContext, subnet_id: str) -> Row:
        async with self.db.reader() as conn:
            return await self._visible_subnet(conn, ctxt, subnet_id)

    async def list_subnets(self, ctxt: RequestContext, page: Page) -> list[Row]:
        async with self.db.reader(allow_stale=True) as conn:
            visible = None
            if not is_admin(ctxt):
                # The project's subnets and those of shared networks.
                shared = await net_db.list_rows(
                    conn, "networks", visible=None, filters={"shared": [True]}
                )
                visible = net_db.Visible(
                    ctxt.project_id or "", network_ids=[n["id"] for n in shared]
                )
            return await _page(conn, "subnets", visible, page)

    async def update_subnet(
        self, ctxt: RequestContext, subnet_id: str, item: Mapping[str, Any]
    ) -> Row:
        async with self.db.writer() as conn:
            row = await self._visible_subnet(conn, ctxt, subnet_id)
            _owned_or_404(ctxt, row, exception.SubnetNotFound(subnet_id=subnet_id))
            values = _strings(item, ("name", "description"))
            if "enable_dhcp" in item:
                values["enable_dhcp"] = _bool(item, "enable_dhcp", True)
            if "dns_nameservers" in item:
                values["dns_nameservers"] = [
                    str(ipam.parse_address(s, "dns_nameservers"))
                    for s in _list(item, "dns_nameservers")
                ]
            if "host_routes" in item:
                values["host_routes"] = [
                    {
                        "destination": str(ipam.parse_cidr(str(r.get("destination")))),
                        "nexthop": str(ipam.parse_address(r.get("nexthop"), "host_routes")),
                    }
                    for r in _list(item, "host_routes")
                    if isinstance(r, dict)
                ]
            if values:
                await net_db.update_row(conn, "subnets", subnet_id, values)
            return await net_db.get(conn, "subnets", subnet_id)

    async def delete_subnet(self, ctxt: RequestContext, subnet_id: str) -> None:
        async with self.db.writer() as conn:
            row = await self._visible_subnet(conn, ctxt, subnet_id)
            _owned_or_404(ctxt, row, exception.SubnetNotFound(subnet_id=subnet_id))
            if await net_db.allocation_count(conn, subnet_id=subnet_id):
                raise exception.SubnetInUse(subnet_id=subnet_id)
            await net_db.delete_row(conn, "subnets", subnet_id)

    # --- security groups ---------------------------------------------------------------------

    async def ensure_default_group(self, conn: Connection, project_id: str) -> str:
        """The project's ``default`` group, created as Neutron creates it on first use.

        Runs in the caller's write transaction under the project's quota
        lock, so concurrent first uses create one group. Its rules: ingress
        from members of the group, egress anywhere, for IPv4 and IPv6.
        """
        found = await net_db.default_group_id(conn, project_id)
        if found is not None:
            return found
        from nubes.db.api import quotas as quotas_db

        await quotas_db.lock_project(conn, project_id)
        found = await net_db.default_group_id(conn, project_id)
        if found is not None:
            return found
        group_id = str(uuid.uuid4())
        await net_db.create(
            conn,
            "security_groups",
            {
                "id": group_id,
                "project_id": project_id,
                "name": DEFAULT_GROUP,
                "description": "Default security group",
                "stateful": True,
                "revision_number": 0,
            },
        )
        await net_db.claim_default_group(conn, project_id, group_id)
        await net_db.create_many(
            conn,
            "security_group_rules",
            [
                _new_rule(group_id, project_id, direction, ethertype, remote_self=True)
                for direction in DIRECTIONS
                for ethertype in ETHERTYPES
            ],
        )
        return group_id

    async def _default_for(self, ctxt: RequestContext) -> None:
        if ctxt.project_id is None:
            return
        async with self.db.reader() as conn:
            if await net_db.default_group_id(conn, ctxt.project_id) is not None:
                return
        async with self.db.writer() as conn:
            await self.ensure_default_group(conn, ctxt.project_id)

    async def _group_with_rules(self, conn: Connection, group_id: str) -> Row:
        row = await net_db.get(conn, "security_groups", group_id)
        row["security_group_rules"] = (await net_db.rules_by_group(conn, [group_id]))[group_id]
        return row

    async def create_security_group(self, ctxt: RequestContext, item: Mapping[str, Any]) -> Row:
        _member(ctxt, "create_security_group")
        project_id = _owner(ctxt, item)
        name = _string(item, "name")
        if name == DEFAULT_GROUP:
            raise exception.NetworkInvalid(
                reason="Default security group already exists."  # Neutron's 409 is 400-ish
            )
        async with self.db.writer() as conn:
            await self.ensure_default_group(conn, project_id)
            await self._check_quota(conn, project_id, "security_groups")
            group_id = str(uuid.uuid4())
            await net_db.create(
                conn,
                "security_groups",
                {
                    "id": group_id,
                    "project_id": project_id,
                    "name": name,
                    "description": _string(item, "description"),
                    "stateful": _bool(item, "stateful", True),
                    "revision_number": 0,
                },
            )
            # Neutron gives a new group the default egress rules.
            await net_db.create_many(
                conn,
                "security_group_rules",
                [_new_rule(group_id, project_id, "egress", ethertype) for ethertype in ETHERTYPES],
            )
            return await self._group_with_rules(conn, group_id)

    async def _visible_group(self, conn: Connection, ctxt: RequestContext, gid: str) -> Row:
        return await _visible(
            conn, ctxt, "security_groups", gid, exception.SecurityGroupNotFound(id=gid)
        )

    async def get_security_group(self, ctxt: RequestContext, group_id: str) -> Row:
        async with self.db.reader() as conn:
            await self._visible_group(conn, ctxt, group_id)
            return await self._group_with_rules(conn, group_id)

    async def list_security_groups(self, ctxt: RequestContext, page: Page) -> list[Row]:
        await self._default_for(ctxt)
        visible = _listable(ctxt)
        async with self.db.reader(allow_stale=True) as conn:
            rows = await _page(conn, "security_groups", visible, page)
            rules = await net_db.rules_by_group(conn, [r["id"] for r in rows])
        for row in rows:
            row["security_group_rules"] = rules[row["id"]]
        return rows

    async def update_security_group(
        self, ctxt: RequestContext, group_id: str, item: Mapping[str, Any]
    ) -> Row:
        async with self.db.writer() as conn:
            row = await self._visible_group(conn, ctxt, group_id)
            _owned_or_404(ctxt, row, exception.SecurityGroupNotFound(id=group_id))
            values: dict[str, Any] = {}
            if "name" in item:
                values["name"] = _string(item, "name")
                if await net_db.is_default_group(conn, group_id) and values["name"] != (
                    DEFAULT_GROUP
                ):
                    raise exception.NetworkInvalid(
                        reason="Updating default security group not allowed."
                    )
            if "description" in item:
                values["description"] = _string(item, "description")
            if values:
                await net_db.update_row(conn, "security_groups", group_id, values)
            return await self._group_with_rules(conn, group_id)

    async def delete_security_group(self, ctxt: RequestContext, group_id: str) -> None:
        async with self.db.writer() as conn:
            row = await self._visible_group(conn, ctxt, group_id)
            _owned_or_404(ctxt, row, exception.SecurityGroupNotFound(id=group_id))
            if await net_db.is_default_group(conn, group_id) and not is_admin(ctxt):
                raise exception.NetworkInvalid(
                    reason="Removing default security group not allowed."
                )
            if await net_db.group_in_use(conn, group_id):
                raise exception.SecurityGroupInUse(id=group_id)
            await net_db.delete_rules_of_group(conn, group_id)
            await net_db.delete_row(conn, "security_groups", group_id)

    # --- rules -------------------------------------------------------------------------------

    async def create_rule(self, ctxt: RequestContext, item: Mapping[str, Any]) -> Row:
        _member(ctxt, "create_security_group_rule")
        group_id = _uuid(item.get("security_group_id"), "security_group_id")
        direction = item.get("direction")
        if direction not in DIRECTIONS:
            raise _invalid("direction", direction, "is not in ['ingress', 'egress']")
        ethertype = item.get("ethertype", "IPv4")
        if ethertype not in ETHERTYPES:
            raise _invalid("ethertype", ethertype, "is not in ['IPv4', 'IPv6']")
        protocol = _protocol(item.get("protocol"))
        low = _int(item, "port_range_min", 0, 65535)
        high = _int(item, "port_range_max", 0, 65535)
        if protocol in PORT_PROTOCOLS:
            if (low is None) != (high is None) and low is not None:
                high = low if high is None else high
            if low is not None and high is not None and low > high:
                raise exception.NetworkInvalid(
                    reason="For TCP/UDP protocols, port_range_min must be <= port_range_max"
                )
        elif protocol in ICMP_PROTOCOLS:
            # ICMP type and code ride in the port fields (Neutron's convention).
            if low is not None and low > 255:
                raise _invalid("port_range_min", low, "is not a valid ICMP type")
            if high is not None and high > 255:
                raise _invalid("port_range_max", high, "is not a valid ICMP code")
        elif low is not None or high is not None:
            raise exception.NetworkInvalid(
                reason=f"Invalid protocol {protocol} for port range; only TCP, UDP, DCCP, "
                "SCTP and UDP-Lite take ports."
            )
        prefix = item.get("remote_ip_prefix")
        if prefix is not None:
            net = _rule_prefix(prefix)
            if f"IPv{net.version}" != ethertype:
                raise exception.NetworkInvalid(
                    reason=f"Conflicting value ethertype {ethertype} for CIDR {prefix}"
                )
            prefix = str(net)
        remote_group = item.get("remote_group_id")
        if remote_group is not None:
            remote_group = _uuid(remote_group, "remote_group_id")
            if prefix is not None:
                raise exception.NetworkInvalid(
                    reason="Only remote_ip_prefix or remote_group_id may be provided."
                )
        async with self.db.writer() as conn:
            group = await self._visible_group(conn, ctxt, group_id)
            _owned_or_404(ctxt, group, exception.SecurityGroupNotFound(id=group_id))
            if remote_group is not None:
                await self._visible_group(conn, ctxt, remote_group)
            values = {
                "security_group_id": group_id,
                "project_id": group["project_id"],
                "direction": direction,
                "ethertype": ethertype,
                "protocol": protocol,
                "port_range_min": low,
                "port_range_max": high,
                "remote_ip_prefix": prefix,
                "remote_group_id": remote_group,
            }
            for rule in (await net_db.rules_by_group(conn, [group_id]))[group_id]:
                if all(rule[k] == v for k, v in values.items()):
                    raise exception.SecurityGroupRuleExists(rule_id=rule["id"])
            project_id = group["project_id"]
            await self._check_quota(conn, project_id, "security_group_rules")
            rule_id = str(uuid.uuid4())
            await net_db.create(
                conn,
                "security_group_rules",
                {
                    **values,
                    "id": rule_id,
                    "description": _string(item, "description"),
                    "revision_number": 0,
                },
            )
            return await net_db.get(conn, "security_group_rules", rule_id)

    async def get_rule(self, ctxt: RequestContext, rule_id: str) -> Row:
        async with self.db.reader() as conn:
            return await _visible(
                conn,
                ctxt,
                "security_group_rules",
                rule_id,
                exception.SecurityGroupRuleNotFound(id=rule_id),
            )

    async def list_rules(self, ctxt: RequestContext, page: Page) -> list[Row]:
        await self._default_for(ctxt)
        visible = _listable(ctxt)
        async with self.db.reader(allow_stale=True) as conn:
            return await _page(conn, "security_group_rules", visible, page)

    async def delete_rule(self, ctxt: RequestContext, rule_id: str) -> None:
        async with self.db.writer() as conn:
            missing = exception.SecurityGroupRuleNotFound(id=rule_id)
            row = await _visible(conn, ctxt, "security_group_rules", rule_id, missing)
            _owned_or_404(ctxt, row, missing)
            await net_db.delete_row(conn, "security_group_rules", rule_id)

    # --- ports -------------------------------------------------------------------------------

    async def _groups_for_port(
        self,
        conn: Connection,
        ctxt: RequestContext,
        project_id: str,
        ids: Any,
        known: dict[tuple[str, str], Row] | None = None,
    ) -> list[str]:
        if not isinstance(ids, list):
            raise _invalid("security_groups", ids, "is not a list")
        out = []
        for group_id in ids:
            gid = _uuid(group_id, "security_groups")
            missing = exception.SecurityGroupNotFound(id=gid)
            group = await _visible(conn, ctxt, "security_groups", gid, missing, known)
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
            network_id = _uuid(item.get("network_id"), "network_id")
            project_id = _owner(ctxt, item)
            network = await _visible(
                conn,
                ctxt,
                "networks",
                network_id,
                exception.NetworkNotFound(net_id=network_id),
                known,
            )
            if network["project_id"] != project_id and not network["shared"] and not is_admin(ctxt):
                raise exception.NetworkNotFound(net_id=network_id)
            device_owner = _string(item, "device_owner")
            security = _bool(item, "port_security_enabled", network["port_security_enabled"])
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
                    raise _invalid("fixed_ips", fixed_ips, "is not a list of objects")
                for entry in fixed_ips:
                    unknown = set(entry) - {"subnet_id", "ip_address"}
                    if unknown or not entry:
                        raise _invalid("fixed_ips", entry, "is not a subnet_id/ip_address pair")
                    if "subnet_id" in entry:
                        entry["subnet_id"] = _uuid(entry["subnet_id"], "fixed_ips")
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
            host = _string(item, "binding:host_id")
            if host and not is_admin(ctxt):
                raise exception.PolicyNotAuthorized(action="create_port:binding:host_id")
            port_id = str(uuid.uuid4())
            per_project[project_id] = per_project.get(project_id, 0) + 1
            rows.append(
                {
                    "id": port_id,
                    "network_id": network_id,
                    "project_id": project_id,
                    "name": _string(item, "name"),
                    "description": _string(item, "description"),
                    "mac_address": mac,
                    "admin_state_up": _bool(item, "admin_state_up", True),
                    "status": "DOWN",
                    "device_id": _string(item, "device_id"),
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
        _member(ctxt, "create_port")
        return await self.port_creates.run(_PortAsk(ctxt, item))

    async def _create_ports(
        self, conn: Connection, asks: Sequence[_PortAsk]
    ) -> dict[_PortAsk, Row]:
        made = await self.create_ports_in(conn, [(a.ctxt, a.item) for a in asks])
        return dict(zip(asks, await port_details(conn, made), strict=True))

    async def _visible_port(self, conn: Connection, ctxt: RequestContext, pid: str) -> Row:
        return await _visible(conn, ctxt, "ports", pid, exception.PortNotFound(port_id=pid))

    async def get_port(self, ctxt: RequestContext, port_id: str) -> Row:
        async with self.db.reader() as conn:
            await self._visible_port(conn, ctxt, port_id)
            return (await port_details(conn, [port_id]))[0]

    async def list_ports(
        self, ctxt: RequestContext, page: Page, fixed_ips: Sequence[str] = ()
    ) -> list[Row]:
        visible = _listable(ctxt)
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
            rows = await _page(conn, "ports", visible, dataclasses.replace(page, filters=wanted))
            return await port_details(conn, [r["id"] for r in rows])

    async def update_port(self, ctxt: RequestContext, port_id: str, item: Mapping[str, Any]) -> Row:
        async with self.db.writer() as conn:
            row = await self._visible_port(conn, ctxt, port_id)
            _owned_or_404(ctxt, row, exception.PortNotFound(port_id=port_id))
            await self.update_port_in(conn, ctxt, row, item)
            return (await port_details(conn, [port_id]))[0]

    async def update_port_in(
        self, conn: Connection, ctxt: RequestContext, row: Row, item: Mapping[str, Any]
    ) -> None:
        port_id = row["id"]
        values = _strings(item, ("name", "description", "device_id", "device_owner"))
        if "admin_state_up" in item:
            values["admin_state_up"] = _bool(item, "admin_state_up", True)
        if "binding:host_id" in item:
            if not is_admin(ctxt):
                raise exception.PolicyNotAuthorized(action="update_port:binding:host_id")
            values["binding_host_id"] = _string(item, "binding:host_id")
        security = row["port_security_enabled"]
        if "port_security_enabled" in item:
            security = values["port_security_enabled"] = _bool(item, "port_security_enabled", True)
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
                raise _invalid("fixed_ips", requests, "is not a list of objects")
            await net_db.release_addresses(conn, port_id)
            await net_db.allocate_addresses(
                conn, [net_db.AddressRequest(port_id, row["network_id"], requests)]
            )
        await net_db.update_row(conn, "ports", port_id, values)

    async def delete_port(self, ctxt: RequestContext, port_id: str) -> None:
        async with self.db.writer() as conn:
            row = await self._visible_port(conn, ctxt, port_id)
            _owned_or_404(ctxt, row, exception.PortNotFound(port_id=port_id))
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


def _new_rule(
    group_id: str, project_id: str, direction: str, ethertype: str, *, remote_self: bool = False
) -> Row:
    """A rule Neutron gives a new group; ``remote_self``: ingress only from its members."""
    return {
        "id": str(uuid.uuid4()),
        "security_group_id": group_id,
        "project_id": project_id,
        "direction": direction,
        "ethertype": ethertype,
        "remote_group_id": group_id if remote_self and direction == "ingress" else None,
        "description": "",
        "revision_number": 0,
    }


def random_mac() -> str:
    tail = random.SystemRandom().getrandbits(24)
    return f"{MAC_PREFIX}:{tail >> 16:02x}:{(tail >> 8) & 0xFF:02x}:{tail & 0xFF:02x}"


def _mac(value: Any) -> str:
    text = str(value).lower().replace("-", ":")
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise _invalid("mac_address", value, "is not a valid MAC address")
    try:
        first = int(parts[0], 16)
        for part in parts[1:]:
            int(part, 16)
    except ValueError:
        raise _invalid("mac_address", value, "is not a valid MAC address") from None
    if first & 1:
        raise _invalid("mac_address", value, "is a multicast address")
    return text


def _protocol(value: Any) -> str | None:
    if value is None or value == "any":
        return None
    text = str(value).lower()
    if text in PROTOCOLS:
        return text
    if text.isdigit() and 0 <= int(text) <= 255:
        return text
    raise exception.NetworkInvalid(
        reason=f"Security group rule protocol {value} not supported. Only protocol values "
        f"{sorted(PROTOCOLS)} and integer representations [0 to 255] are supported."
    )


def _rule_prefix(value: Any) -> ipam.Net:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise _invalid("remote_ip_prefix", value, "is not a valid IP prefix") from None
