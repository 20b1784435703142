"""Two scheduler processes, 200 concurrent requests, room for exactly 150.

Each process has its own engine and in-memory view and fires its 100
requests at once; the database's conditional UPDATE is all that keeps them
from over-committing. Runs on SQLite (always), PostgreSQL and MariaDB (when
the servers are there; under CI they must be).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from nubes.db.engine import Database
from nubes.db.models import allocations, compute_nodes
from tests.unit.db.dbfixtures import run_sync

SCHEDULERS = 2
REQUESTS_PER_SCHEDULER = 100
#: 15 hosts with 5 vCPUs at ratio 1.0 and 15 with 1 vCPU at ratio 5.0: 150 slots.
CAPACITY = 150


async def _fleet(url: str) -> None:
    from nubes.testing.fleet import HostSpec, create_hosts

    db = Database(url)
    try:
        hosts = [HostSpec(f"five-{i}", vcpus=5, cpu_allocation_ratio=1.0) for i in range(15)]
        hosts += [HostSpec(f"ratio-{i}", vcpus=1, cpu_allocation_ratio=5.0) for i in range(15)]
        await create_hosts(db, hosts)
    finally:
        await db.dispose()


async def _schedule(url: str, barrier: Any) -> dict[str, int]:
    from nubes import config, exception
    from nubes.context import RequestContext
    from nubes.objects.flavor import Flavor
    from nubes.objects.request_spec import RequestSpec
    from nubes.scheduler.manager import SchedulerManager

    conf = config.new_config()
    conf([])
    db = Database(url)
    manager = SchedulerManager(db, conf)
    await manager.view.refresh()
    flavor = Flavor(id=1, flavorid="1", name="tiny", vcpus=1, memory_mb=512, root_gb=1)
    await asyncio.get_running_loop().run_in_executor(None, barrier.wait)

    async def one() -> str:
        spec = RequestSpec(flavor=flavor, project_id="p1")
        try:
            await manager.select_destinations(RequestContext(), spec, [str(uuid.uuid4())])
        except exception.NoValidHost:
            return "no_valid_host"
        return "placed"

    outcomes = await asyncio.gather(
        *(one() for _ in range(REQUESTS_PER_SCHEDULER)), return_exceptions=True
    )
    await manager.close()
    await db.dispose()
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = outcome if isinstance(outcome, str) else f"error: {outcome!r}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _worker(url: str, barrier: Any, out: Any) -> None:
    try:
        out.put(asyncio.run(_schedule(url, barrier)))
    except BaseException as exc:  # the parent must hear of it, not hang
        out.put({f"crashed: {exc!r}": 1})


@pytest.mark.timeout(180)  # two process starts and 200 requests on a loaded CI box
def test_two_schedulers_never_overcommit(db_url: str) -> None:
    run_sync(_fleet(db_url))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(SCHEDULERS)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(db_url, barrier, out)) for _ in range(SCHEDULERS)]
    for p in procs:
        p.start()
    totals: dict[str, int] = {}
    for _ in procs:
        for key, n in out.get(timeout=120).items():
            totals[key] = totals.get(key, 0) + n
    for p in procs:
        p.join(timeout=30)
    assert totals == {"placed": CAPACITY, "no_valid_host": 50}

    async def check() -> None:
        db = Database(db_url)
        try:
            async with db.reader() as conn:
                nodes = (await conn.execute(select(compute_nodes))).mappings().all()
                held = dict(
                    (
                        await conn.execute(
                            select(
                                allocations.c.compute_node_id, func.sum(allocations.c.vcpus)
                            ).group_by(allocations.c.compute_node_id)
                        )
                    ).all()
                )
                consumers = (
                    await conn.execute(
                        select(func.count(func.distinct(allocations.c.consumer_uuid)))
                    )
                ).scalar()
        finally:
            await db.dispose()
        for node in nodes:
            assert node["vcpus_used"] <= node["vcpus"] * node["cpu_allocation_ratio"]
            assert node["vcpus_used"] == held.get(node["id"], 0)
        assert sum(n["vcpus_used"] for n in nodes) == CAPACITY
        assert consumers == CAPACITY

    run_sync(check())
