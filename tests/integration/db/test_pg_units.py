"""On PostgreSQL a grouped unit runs without a savepoint and is still all or nothing.

SAVEPOINT and RELEASE would be two round trips per unit (a third of a
build's statements); a unit that misses after it changed rows is undone by
running its batch again without it. What the server was sent is read with
asyncpg's query logger on every connection the pools hand out meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.pool import Pool

from nubes import exception
from nubes.db.api import instances
from nubes.db.api.compute_nodes import ClaimOutcome, claim_writes
from nubes.db.engine import Database
from nubes.scheduler.claims import Amounts, claim
from tests.unit.db.factories import make_instance, make_node

pytestmark = pytest.mark.postgres


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sent() -> Iterator[list[str]]:
    """Every statement sent on a pooled connection while the test runs."""
    queries: list[str] = []
    logged: set[int] = set()

    def log(record: Any) -> None:
        queries.append(record.query)

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in logged:
            logged.add(id(driver))
            driver.add_query_logger(log)

    event.listen(Pool, "checkout", checkout)
    try:
        yield queries
    finally:
        event.remove(Pool, "checkout", checkout)


async def _refuse(conn: Any) -> None:
    raise exception.InstanceUpdateConflict(instance_uuid="x", expected={}, actual={})


async def test_units_run_without_savepoints_and_a_late_miss_undoes_only_its_unit(
    db: Database, sent: list[str]
) -> None:
    committer = db.group_commit
    assert committer is not None and committer.units
    async with db.writer() as conn:
        insts = [await make_instance(conn, task_state=None) for _ in range(8)]

    async def one(i: int) -> Any:
        uuid = insts[i]["uuid"]
        unit = [
            instances.update_write(uuid, {"progress": i}, missed=_refuse),
            # Every third misses after its first write changed the row; the
            # one after it misses at once, before changing anything.
            instances.update_write(
                uuid,
                {"power_state": i},
                missed=_refuse,
                expected_task_state="spawning" if i % 3 == 1 else None,
            ),
        ]
        if i % 3 == 2:
            unit.reverse()
            unit[0] = instances.update_write(
                uuid, {"power_state": i}, missed=_refuse, expected_task_state="spawning"
            )
        statements = [w.statement(committer.dialect) for w in unit]
        return await committer.execute_unit(uuid, statements)

    outcomes = await asyncio.gather(*(one(i) for i in range(len(insts))))

    assert not [q for q in sent if "SAVEPOINT" in q.upper()]
    for i, outcome in enumerate(outcomes):
        async with db.reader() as conn:
            row = await instances.get_by_uuid(conn, insts[i]["uuid"])
        if i % 3:
            assert outcome is False
            assert (row["progress"], row["power_state"]) == (None, None)
        else:
            assert outcome == [(1, None), (1, None)]
            assert (row["progress"], row["power_state"]) == (i, i)


async def test_grouped_claims_lock_their_nodes_in_one_order(db: Database) -> None:
    """Regression: a batch ordered its claims by consumer, so two batches
    claiming on the same two nodes could lock them in opposite orders and
    deadlock; PostgreSQL breaks that only after ``deadlock_timeout`` (1 s),
    and every claim behind them stalled (bench/scale.py, two conductors:
    60-70 servers/s against 170-200 with one). A batch now locks the nodes
    in the order of the claims' keys, which name the node."""
    async with db.writer() as conn:
        nodes = [await make_node(conn), await make_node(conn)]
    amounts = Amounts(vcpus=1, memory_mb=512, disk_gb=1)
    # The node a batch locks first, and the one it locks second; the
    # consumers' names sort the other way round.
    first, second = sorted(nodes, key=lambda n: claim_writes(n["id"], "x").key)
    holder, probe = Database(db.url), Database(db.url)
    lock = text("SELECT id FROM compute_nodes WHERE id = :id FOR UPDATE NOWAIT")
    try:
        async with holder.writer() as conn:
            await conn.execute(lock, {"id": second["id"]})
            claims = asyncio.ensure_future(
                asyncio.gather(
                    claim(db, second["id"], "a-consumer", amounts),
                    claim(db, first["id"], "z-consumer", amounts),
                )
            )
            for _ in range(1200):
                if await _waiting_on_a_lock(probe):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the claims never waited for the held node")
            # The batch waits for the second node holding the first one.
            with pytest.raises(Exception, match="could not obtain lock"):
                async with probe.writer() as other:
                    await other.execute(lock, {"id": first["id"]})
        results = await claims
    finally:
        await holder.dispose()
        await probe.dispose()
    assert [r.result.outcome for r in results] == [ClaimOutcome.CLAIMED] * 2


async def _waiting_on_a_lock(db: Database) -> int:
    async with db.reader() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int((await conn.execute(query)).scalar_one())
