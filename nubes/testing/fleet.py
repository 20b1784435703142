"""Fake fleets of compute hosts, written straight into a database.

For the scheduler's tests and benchmark: thousands of hosts, each with a
compute service, a fresh heartbeat and one compute node, plus aggregates
(availability zones, tenant isolation), inserted in a few bulk statements.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select

from nubes.db.api import generations
from nubes.db.engine import Database
from nubes.db.models import (
    aggregate_hosts,
    aggregate_metadata,
    aggregates,
    compute_nodes,
    service_heartbeats,
    services,
)
from nubes.db.types import utcnow

#: Rows per INSERT: under SQLite's and MariaDB's bound-parameter limits.
_BATCH = 500


@dataclasses.dataclass(slots=True)
class HostSpec:
    """One fake host (and its single node, named like it)."""

    host: str
    vcpus: int = 16
    memory_mb: int = 65536
    local_gb: int = 1000
    vcpus_used: int = 0
    memory_mb_used: int = 0
    local_gb_used: int = 0
    cpu_allocation_ratio: float = 1.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    hypervisor_type: str = "fake"
    hypervisor_version: int = 1000
    metrics: dict[str, Any] | None = None
    disabled: bool = False
    #: Seconds since the last heartbeat (None: the service never reported).
    silent_for: float | None = 0.0


async def _bulk(db: Database, table: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    for start in range(0, len(rows), _BATCH):
        async with db.writer() as conn:
            await conn.execute(insert(table), list(rows[start : start + _BATCH]))


async def create_hosts(db: Database, hosts: Sequence[HostSpec]) -> dict[str, int]:
    """Insert services, heartbeats and nodes; returns host -> node id."""
    import datetime as dt

    now = utcnow()
    await _bulk(
        db,
        services,
        [
            {
                "uuid": str(uuid.uuid4()),
                "host": h.host,
                "binary": "compute",
                "topic": "compute",
                "disabled": h.disabled,
                "created_at": now,
            }
            for h in hosts
        ],
    )
    async with db.reader() as conn:
        rows = (await conn.execute(select(services.c.id, services.c.host))).all()
    service_ids = {r.host: r.id for r in rows}
    await _bulk(
        db,
        service_heartbeats,
        [
            {
                "service_id": service_ids[h.host],
                "last_seen_at": now - dt.timedelta(seconds=h.silent_for),
                "report_count": 1,
            }
            for h in hosts
            if h.silent_for is not None
        ],
    )
    await _bulk(
        db,
        compute_nodes,
        [
            {
                "uuid": str(uuid.uuid4()),
                "service_id": service_ids[h.host],
                "host": h.host,
                "hypervisor_hostname": h.host,
                "hypervisor_type": h.hypervisor_type,
                "hypervisor_version": h.hypervisor_version,
                "vcpus": h.vcpus,
                "memory_mb": h.memory_mb,
                "local_gb": h.local_gb,
                "vcpus_used": h.vcpus_used,
                "memory_mb_used": h.memory_mb_used,
                "local_gb_used": h.local_gb_used,
                "cpu_allocation_ratio": h.cpu_allocation_ratio,
                "ram_allocation_ratio": h.ram_allocation_ratio,
                "disk_allocation_ratio": h.disk_allocation_ratio,
                "metrics": h.metrics,
                "created_at": now,
            }
            for h in hosts
        ],
    )
    async with db.writer() as conn:
        # Written around nubes.db.api for speed: the schedulers must still hear of it.
        await generations.bump(conn, generations.HOST_FACTS)
        nodes = (await conn.execute(select(compute_nodes.c.id, compute_nodes.c.host))).all()
    return {r.host: r.id for r in nodes}


async def create_aggregate(
    db: Database, name: str, hosts: Sequence[str], metadata: Mapping[str, str] | None = None
) -> int:
    """An aggregate with ``hosts`` and ``metadata``; returns its id."""
    now = utcnow()
    async with db.writer() as conn:
        result = await conn.execute(
            insert(aggregates).values(uuid=str(uuid.uuid4()), name=name, created_at=now)
        )
        key = result.inserted_primary_key
        assert key is not None
        agg_id = int(key[0])
        if metadata:
            await conn.execute(
                insert(aggregate_metadata),
                [
                    {"aggregate_id": agg_id, "key": k, "value": v, "created_at": now}
                    for k, v in metadata.items()
                ],
            )
    await _bulk(
        db,
        aggregate_hosts,
        [{"aggregate_id": agg_id, "host": h, "created_at": now} for h in hosts],
    )
    async with db.writer() as conn:
        await generations.bump(conn, generations.HOST_FACTS)
    return agg_id
