"""Security groups and their rules: Neutron's ``/v2.0/security-groups`` and
``/v2.0/security-group-rules`` rules."""

from __future__ import annotations

import ipaddress
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
    field_bool,
    field_int,
    field_str,
    invalid,
    is_admin,
    list_page,
    listable,
    owned_or_404,
    owner_of,
    valid_uuid,
    visible_row,
)

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
DEFAULT_GROUP = "default"


class SecurityGroups(ServiceBase):
    """Security groups (a ``default`` one per project, as Neutron makes it) and their rules."""

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
        authorize_member(ctxt, "create_security_group")
        project_id = owner_of(ctxt, item)
        name = field_str(item, "name")
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
                    "description": field_str(item, "description"),
                    "stateful": field_bool(item, "stateful", True),
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
        return await visible_row(
            conn, ctxt, "security_groups", gid, exception.SecurityGroupNotFound(id=gid)
        )

    async def get_security_group(self, ctxt: RequestContext, group_id: str) -> Row:
        async with self.db.reader() as conn:
            await self._visible_group(conn, ctxt, group_id)
            return await self._group_with_rules(conn, group_id)

    async def list_security_groups(self, ctxt: RequestContext, page: Page) -> list[Row]:
        await self._default_for(ctxt)
        visible = listable(ctxt)
        async with self.db.reader(allow_stale=True) as conn:
            rows = await list_page(conn, "security_groups", visible, page)
            rules = await net_db.rules_by_group(conn, [r["id"] for r in rows])
        for row in rows:
            row["security_group_rules"] = rules[row["id"]]
        return rows

    async def update_security_group(
        self, ctxt: RequestContext, group_id: str, item: Mapping[str, Any]
    ) -> Row:
        async with self.db.writer() as conn:
            row = await self._visible_group(conn, ctxt, group_id)
            owned_or_404(ctxt, row, exception.SecurityGroupNotFound(id=group_id))
            values: dict[str, Any] = {}
            if "name" in item:
                values["name"] = field_str(item, "name")
                if await net_db.is_default_group(conn, group_id) and values["name"] != (
                    DEFAULT_GROUP
                ):
                    raise exception.NetworkInvalid(
                        reason="Updating default security group not allowed."
                    )
            if "description" in item:
                values["description"] = field_str(item, "description")
            if values:
                await net_db.update_row(conn, "security_groups", group_id, values)
            return await self._group_with_rules(conn, group_id)

    async def delete_security_group(self, ctxt: RequestContext, group_id: str) -> None:
        async with self.db.writer() as conn:
            row = await self._visible_group(conn, ctxt, group_id)
            owned_or_404(ctxt, row, exception.SecurityGroupNotFound(id=group_id))
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
        authorize_member(ctxt, "create_security_group_rule")
        group_id = valid_uuid(item.get("security_group_id"), "security_group_id")
        direction = item.get("direction")
        if direction not in DIRECTIONS:
            raise invalid("direction", direction, "is not in ['ingress', 'egress']")
        ethertype = item.get("ethertype", "IPv4")
        if ethertype not in ETHERTYPES:
            raise invalid("ethertype", ethertype, "is not in ['IPv4', 'IPv6']")
        protocol = _protocol(item.get("protocol"))
        low = field_int(item, "port_range_min", 0, 65535)
        high = field_int(item, "port_range_max", 0, 65535)
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
                raise invalid("port_range_min", low, "is not a valid ICMP type")
            if high is not None and high > 255:
                raise invalid("port_range_max", high, "is not a valid ICMP code")
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
            # As Neutron: the prefix is kept as given, host bits and all, with
            # its mask made explicit (10.0.0.1 -> 10.0.0.1/32); what it matches
            # is its network (normalized_cidr), which duplicates compare on.
            prefix = rule_prefix_text(prefix)
        remote_group = item.get("remote_group_id")
        if remote_group is not None:
            remote_group = valid_uuid(remote_group, "remote_group_id")
            if prefix is not None:
                raise exception.NetworkInvalid(
                    reason="Only remote_ip_prefix or remote_group_id may be provided."
                )
        async with self.db.writer() as conn:
            group = await self._visible_group(conn, ctxt, group_id)
            owned_or_404(ctxt, group, exception.SecurityGroupNotFound(id=group_id))
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
                if all(_same(k, rule[k], v) for k, v in values.items()):
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
                    "description": field_str(item, "description"),
                    "revision_number": 0,
                },
            )
            return await net_db.get(conn, "security_group_rules", rule_id)

    async def get_rule(self, ctxt: RequestContext, rule_id: str) -> Row:
        async with self.db.reader() as conn:
            return await visible_row(
                conn,
                ctxt,
                "security_group_rules",
                rule_id,
                exception.SecurityGroupRuleNotFound(id=rule_id),
            )

    async def list_rules(self, ctxt: RequestContext, page: Page) -> list[Row]:
        await self._default_for(ctxt)
        visible = listable(ctxt)
        async with self.db.reader(allow_stale=True) as conn:
            return await list_page(conn, "security_group_rules", visible, page)

    async def delete_rule(self, ctxt: RequestContext, rule_id: str) -> None:
        async with self.db.writer() as conn:
            missing = exception.SecurityGroupRuleNotFound(id=rule_id)
            row = await visible_row(conn, ctxt, "security_group_rules", rule_id, missing)
            owned_or_404(ctxt, row, missing)
            await net_db.delete_row(conn, "security_group_rules", rule_id)


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


def _protocol(value: Any) -> str | None:
    if value is None or value == "any":
        return None
    text = str(value).lower()
    if text in PROTOCOLS:
        return text
    if text.isascii() and text.isdigit() and 0 <= int(text) <= 255:
        return text
    raise exception.NetworkInvalid(
        reason=f"Security group rule protocol {value} not supported. Only protocol values "
        f"{sorted(PROTOCOLS)} and integer representations [0 to 255] are supported."
    )


def rule_prefix_text(value: Any) -> str:
    """A rule's remote prefix as Neutron stores it: the address as given, mask explicit."""
    _rule_prefix(value)  # Neutron's 400 for what is no prefix
    iface = ipaddress.ip_interface(str(value))
    return f"{iface.ip}/{iface.network.prefixlen}"


def normalized_cidr(prefix: str | None) -> str | None:
    """The network a rule's remote prefix matches (Neutron's ``normalized_cidr``)."""
    return None if prefix is None else str(ipaddress.ip_network(prefix, strict=False))


def _same(key: str, stored: Any, wanted: Any) -> bool:
    if key == "remote_ip_prefix":
        return normalized_cidr(stored) == normalized_cidr(wanted)
    return bool(stored == wanted)


def _rule_prefix(value: Any) -> ipam.Net:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise invalid("remote_ip_prefix", value, "is not a valid IP prefix") from None
