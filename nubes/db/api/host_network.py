"""What the conductor reads for a compute host's network data plane.

Every query is scoped by the asking host's name (the caller's verified
identity, passed in by the conductor), so a host's view is built from the
ports bound to it and nothing else; see ``nubes/conductor/hostnet.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.api._common import Row
from nubes.db.models import (
    compute_nodes,
    floatingips,
    ip_allocations,
    migrations,
    port_security_groups,
    ports,
    subnets,
)

#: A live migration (``MigrationType.LIVE_MIGRATION``) to a host in these
#: statuses (``MigrationStatus``; the DB layer sits below nubes.objects): the
#: host is about to run the guest, so it must have its network before the copy.
_LIVE_MIGRATION = "live-migration"
_INCOMING = ("preparing", "running")


def _on_host(host: str) -> Any:
    """Ports a host's data plane must serve: those bound to it, and those of
    an instance live-migrating to it (Neutron's inactive binding: the copy
    needs the bridge, tap rules and tunnel on the destination before the
    binding moves there at the end)."""
    incoming = select(migrations.c.instance_uuid).where(
        migrations.c.dest_compute == host,
        migrations.c.migration_type == _LIVE_MIGRATION,
        migrations.c.status.in_(_INCOMING),
        migrations.c.deleted == 0,
    )
    return or_(ports.c.binding_host_id == host, ports.c.device_id.in_(incoming))


async def ports_bound_to(conn: AsyncConnection, host: str) -> list[Row]:
    stmt = select(ports).where(_on_host(host)).order_by(ports.c.id)
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def subnets_of_networks(conn: AsyncConnection, network_ids: Sequence[str]) -> list[Row]:
    if not network_ids:
        return []
    stmt = (
        select(subnets)
        .where(subnets.c.network_id.in_(sorted(set(network_ids))))
        .order_by(subnets.c.created_at, subnets.c.id)
    )
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def addresses_of_groups(
    conn: AsyncConnection, group_ids: Sequence[str]
) -> dict[str, list[str]]:
    """The addresses of every port in each group (a remote group's members)."""
    found: dict[str, list[str]] = {g: [] for g in group_ids}
    if not group_ids:
        return found
    stmt = (
        select(port_security_groups.c.security_group_id, ip_allocations.c.ip_address)
        .join(ip_allocations, ip_allocations.c.port_id == port_security_groups.c.port_id)
        .where(port_security_groups.c.security_group_id.in_(sorted(set(group_ids))))
        .order_by(ip_allocations.c.ip_address)
    )
    for group_id, address in await conn.execute(stmt):
        found.setdefault(group_id, []).append(address)
    return found


async def networks_with_ports_on(
    conn: AsyncConnection, host: str, network_ids: Sequence[str]
) -> set[str]:
    """Which of ``network_ids`` have a port on ``host`` (bound, or arriving)."""
    if not network_ids:
        return set()
    stmt = (
        select(ports.c.network_id)
        .where(_on_host(host), ports.c.network_id.in_(sorted(set(network_ids))))
        .distinct()
    )
    return {r[0] for r in await conn.execute(stmt)}


async def tunnel_peers(
    conn: AsyncConnection, host: str, network_ids: Sequence[str]
) -> dict[str, list[str]]:
    """Per network, the tunnel addresses (``compute_nodes.host_ip``) of the
    other hosts with ports bound on it; hosts that reported none are left out."""
    found: dict[str, list[str]] = {n: [] for n in network_ids}
    if not network_ids:
        return found
    stmt = (
        select(ports.c.network_id, compute_nodes.c.host_ip)
        .join(compute_nodes, compute_nodes.c.host == ports.c.binding_host_id)
        .where(
            ports.c.network_id.in_(sorted(set(network_ids))),
            ports.c.binding_host_id != host,
            ports.c.binding_host_id != "",
            compute_nodes.c.deleted == 0,
            compute_nodes.c.host_ip.is_not(None),
        )
        .distinct()
        .order_by(ports.c.network_id, compute_nodes.c.host_ip)
    )
    for network_id, address in await conn.execute(stmt):
        found.setdefault(network_id, []).append(address)
    return found


async def floating_ips_bound_to(conn: AsyncConnection, host: str) -> list[Row]:
    """The floating IPs mapped to ports bound to ``host`` (not those of an
    instance live-migrating in: its source serves the address until the
    binding moves, so two hosts never answer for it at once)."""
    stmt = (
        select(floatingips)
        .join(ports, ports.c.id == floatingips.c.fixed_port_id)
        .where(ports.c.binding_host_id == host)
        .order_by(floatingips.c.floating_ip_address)
    )
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]
