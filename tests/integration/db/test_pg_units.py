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
from sqlalchemy import event
from sqlalchemy.pool import Pool

from nubes import exception
from nubes.db.api import instances
from nubes.db.engine import Database
from tests.unit.db.factories import make_instance

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
