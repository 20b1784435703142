"""Two scheduler processes placing members of one server group at once.

Each process has its own engine and in-memory view, reads where the group's
members are before its claims, and fires its requests together: only the
policy check inside the claim (under the group's row lock) keeps two
anti-affinity members off one host, or affinity members on one. Runs on
SQLite (always), PostgreSQL and MariaDB (when the servers are there; under
CI they must be).
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
HOSTS = 6
MEMBERS_PER_SCHEDULER = 8


async def _setup(url: str, policy: str) -> dict[str, list[str]]:
    """A fleet of roomy hosts and a group with every member recorded."""
    from nubes.db.api import groups
    from nubes.testing.fleet import HostSpec, create_hosts

    db = Database(url)
    try:
        await create_hosts(db, [HostSpec(f"h{i}", vcpus=64, memory_mb=65536) for i in range(HOSTS)])
        members = [
            [str(uuid.uuid4()) for _ in range(MEMBERS_PER_SCHEDULER)] for _ in range(SCHEDULERS)
        ]
        async with db.writer() as conn:
            group = await groups.group_create(conn, {"policy": policy, "project_id": "p1"})
            await groups.group_members_add(conn, group["uuid"], [m for ms in members for m in ms])
        return {"group": [group["uuid"]], **{str(i): ms for i, ms in enumerate(members)}}
    finally:
        await db.dispose()


async def _schedule(url: str, group: str, members: list[str], barrier: Any) -> dict[str, str]:
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

    async def one(member: str) -> str:
        spec = RequestSpec(flavor=flavor, project_id="p1", scheduler_hints={"group": group})
        try:
            (chosen,) = await manager.select_destinations(RequestContext(), spec, [member])
        except exception.NoValidHost:
            return "no_valid_host"
        return chosen[0].host

    outcomes = await asyncio.gather(*(one(m) for m in members), return_exceptions=True)
    await manager.close()
    await db.dispose()
    return {
        m: (o if isinstance(o, str) else f"error: {o!r}")
        for m, o in zip(members, outcomes, strict=True)
    }


def _worker(url: str, group: str, members: list[str], barrier: Any, out: Any) -> None:
    try:
        out.put(asyncio.run(_schedule(url, group, members, barrier)))
    except BaseException as exc:  # the parent must hear of it, not hang
        out.put({"crashed": repr(exc)})


def _race(url: str, policy: str) -> tuple[dict[str, str], dict[str, int]]:
    """Member -> host (or no_valid_host), and host -> members holding resources there."""
    made = run_sync(_setup(url, policy))
    group = made["group"][0]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(SCHEDULERS)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, group, made[str(i)], barrier, out))
        for i in range(SCHEDULERS)
    ]
    for p in procs:
        p.start()
    placed: dict[str, str] = {}
    for _ in procs:
        placed.update(out.get(timeout=120))
    for p in procs:
        p.join(timeout=30)

    async def held() -> dict[str, int]:
        db = Database(url)
        try:
            async with db.reader() as conn:
                stmt = (
                    select(compute_nodes.c.host, func.count())
                    .select_from(
                        allocations.join(
                            compute_nodes, compute_nodes.c.id == allocations.c.compute_node_id
                        )
                    )
                    .group_by(compute_nodes.c.host)
                )
                return {r[0]: int(r[1]) for r in (await conn.execute(stmt)).all()}
        finally:
            await db.dispose()

    return placed, run_sync(held())


@pytest.mark.timeout(180)
def test_racing_anti_affinity_members_never_share_a_host(db_url: str) -> None:
    placed, held = _race(db_url, "anti-affinity")
    outcomes = list(placed.values())
    assert not [o for o in outcomes if o.startswith(("error", "crashed"))], placed
    hosts = [o for o in outcomes if o != "no_valid_host"]
    assert sorted(hosts) == sorted(f"h{i}" for i in range(HOSTS))
    assert outcomes.count("no_valid_host") == SCHEDULERS * MEMBERS_PER_SCHEDULER - HOSTS
    assert held == dict.fromkeys((f"h{i}" for i in range(HOSTS)), 1)


@pytest.mark.timeout(180)
def test_racing_affinity_members_all_land_on_one_host(db_url: str) -> None:
    placed, held = _race(db_url, "affinity")
    assert set(placed.values()) == {next(iter(held))}, placed
    assert held == {next(iter(held)): SCHEDULERS * MEMBERS_PER_SCHEDULER}
