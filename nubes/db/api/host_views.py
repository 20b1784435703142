"""The scheduler's reads: compute nodes changed since a time, service liveness,
and where instances are (server group members: :mod:`nubes.db.api.group_claims`).

These feed an in-memory view of the hosts that a scheduler refreshes
incrementally, so every statement here is shaped to return little when
little changed: nodes by ``updated_at``/``created_at``/``deleted_at``, only
the services that are *not* usable. Whether services or aggregates changed
at all is the host facts' generation (:mod:`nubes.db.api.generations`). The
claim itself never reads from here (see :func:`nubes.db.api.compute_nodes.claim`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Row as SARow
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.api._common import live
from nubes.db.models import (
    allocations,
    compute_nodes,
    instances,
    service_heartbeats,
    services,
)

#: The binary whose services make hosts schedulable.
COMPUTE_BINARY = "compute"

_cn = compute_nodes.c

#: Columns of a node the scheduler keeps, in the order :func:`nodes_changed_since` returns.
NODE_COLUMNS = (
    "id",
    "uuid",
    "host",
    "hypervisor_hostname",
    "hypervisor_type",
    "hypervisor_version",
    "vcpus",
    "memory_mb",
    "local_gb",
    "vcpus_used",
    "memory_mb_used",
    "local_gb_used",
    "cpu_allocation_ratio",
    "ram_allocation_ratio",
    "disk_allocation_ratio",
    "metrics",
    "generation",
    "deleted",
)


def _node_select() -> Any:
    held = (
        select(func.count(allocations.c.id))
        .where(allocations.c.compute_node_id == _cn.id)
        .scalar_subquery()
    )
    return select(*[_cn[c] for c in NODE_COLUMNS], held.label("num_instances"))


async def nodes_changed_since(conn: AsyncConnection, since: dt.datetime | None) -> list[SARow[Any]]:
    """Nodes (with ``num_instances``: allocations held) changed at or after ``since``.

    ``since=None`` returns every live node. Otherwise deleted nodes are
    included (``deleted != 0``) so the caller can drop them. Rows are
    SQLAlchemy rows (tuples with attribute access): thousands of them are
    read on a full load and a dict each would cost more than the query.
    """
    stmt = _node_select()
    if since is None:
        stmt = stmt.where(live(compute_nodes))
    else:
        stmt = stmt.where(
            or_(_cn.updated_at >= since, _cn.created_at >= since, _cn.deleted_at >= since)
        )
    return list((await conn.execute(stmt.order_by(_cn.id))).all())


async def node_usage(conn: AsyncConnection, node_ids: Sequence[int]) -> list[SARow[Any]]:
    """Fresh rows for a few nodes, shaped like :func:`nodes_changed_since`'s."""
    if not node_ids:
        return []
    stmt = _node_select().where(_cn.id.in_(list(node_ids)))
    return list((await conn.execute(stmt)).all())


async def compute_service_hosts(conn: AsyncConnection) -> dict[str, tuple[bool, bool]]:
    """Hosts with a live compute service: host -> (disabled, forced_down)."""
    s = services.c
    stmt = select(s.host, s.disabled, s.forced_down).where(
        s.binary == COMPUTE_BINARY, live(services)
    )
    return {r.host: (bool(r.disabled), bool(r.forced_down)) for r in await conn.execute(stmt)}


async def down_compute_hosts(
    conn: AsyncConnection, window: tuple[dt.datetime, dt.datetime]
) -> set[str]:
    """Hosts whose compute service is down (:mod:`nubes.liveness`): forced down, or
    last seen (never seen: created) outside ``window`` = ``liveness.window(...)``."""
    s = services.c
    hb = service_heartbeats
    oldest, newest = window
    seen = func.coalesce(hb.c.last_seen_at, s.created_at)
    stmt = (
        select(s.host)
        .select_from(services.outerjoin(hb, hb.c.service_id == s.id))
        .where(
            s.binary == COMPUTE_BINARY,
            live(services),
            or_(s.forced_down.is_(True), seen.is_(None), seen < oldest, seen > newest),
        )
    )
    return {r.host for r in await conn.execute(stmt)}


async def newest_compute_heartbeat(conn: AsyncConnection) -> dt.datetime | None:
    """The newest heartbeat (never seen: creation) of a compute service not
    forced down, or None when there is none."""
    s = services.c
    hb = service_heartbeats
    # Typed as the column: SQLite would otherwise hand back the stored text.
    seen = func.max(func.coalesce(hb.c.last_seen_at, s.created_at), type_=hb.c.last_seen_at.type)
    stmt = (
        select(seen)
        .select_from(services.outerjoin(hb, hb.c.service_id == s.id))
        .where(s.binary == COMPUTE_BINARY, live(services), s.forced_down.is_(False))
    )
    value = (await conn.execute(stmt)).scalar()
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


async def compute_host_is_up(
    conn: AsyncConnection, host: str, window: tuple[dt.datetime, dt.datetime]
) -> bool:
    """Whether ``host``'s compute service is up now (not in :func:`down_compute_hosts`)."""
    s = services.c
    hb = service_heartbeats
    oldest, newest = window
    seen = func.coalesce(hb.c.last_seen_at, s.created_at)
    stmt = (
        select(s.id)
        .select_from(services.outerjoin(hb, hb.c.service_id == s.id))
        .where(
            s.binary == COMPUTE_BINARY,
            s.host == host,
            live(services),
            s.forced_down.is_(False),
            seen >= oldest,
            seen <= newest,
        )
        .limit(1)
    )
    return (await conn.execute(stmt)).first() is not None


async def instance_hosts(conn: AsyncConnection, instance_uuids: Sequence[str]) -> set[str]:
    """Hosts the instances are on: where they hold resources, or their ``host``."""
    uuids = list(instance_uuids)
    if not uuids:
        return set()
    a = allocations.c
    by_claim = (
        select(_cn.host)
        .select_from(allocations.join(compute_nodes, _cn.id == a.compute_node_id))
        .where(a.consumer_uuid.in_(uuids))
    )
    by_row = select(instances.c.host).where(
        instances.c.uuid.in_(uuids), live(instances), instances.c.host.is_not(None)
    )
    hosts = {r[0] for r in await conn.execute(by_claim)}
    hosts.update(r[0] for r in await conn.execute(by_row))
    return hosts


async def consumer_nodes(conn: AsyncConnection, consumer_uuid: str) -> list[int]:
    """Ids of the nodes where ``consumer_uuid`` holds resources."""
    stmt = select(allocations.c.compute_node_id).where(allocations.c.consumer_uuid == consumer_uuid)
    return [int(r[0]) for r in await conn.execute(stmt)]
