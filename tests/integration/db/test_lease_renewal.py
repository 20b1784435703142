"""A conductor's lease renewal never waits for a row another transaction holds.

Regression: the task engine renewed its leases in one statement that locked
every held row, so a grouped commit holding one of its task rows and writing
another (a batch's step commits go in instance order) deadlocked with it.
PostgreSQL breaks a deadlock only after ``deadlock_timeout`` (1 s), and every
step of the batch waited that long: bench/scale.py saw three in one run, and a
400-server boot went at 75 servers/s instead of 200. First the renewal was
made to retry as the victim (it had waited a third of the lease for its next
try, and leases lapsed); now it skips a locked row and waits for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from nubes.conductor.tasks import engine
from nubes.db.api import tasks
from nubes.db.engine import Database
from tests.unit.db.dbfixtures import DatabaseFactory
from tests.unit.db.factories import make_instance

LEASE = 30.0


async def _claimed(db: Database, owner: str) -> int:
    async with db.writer() as conn:
        inst = await make_instance(conn)
        task = await tasks.create(conn, kind="build", instance_uuid=inst["uuid"], payload={})
        assert await tasks.claim(conn, task["id"], owner, lease_seconds=LEASE) is not None
        return int(task["id"])


async def _lease(db: Database, task_id: int) -> object:
    async with db.reader() as conn:
        query = text("SELECT lease_expires_at FROM conductor_tasks WHERE id = :id")
        return (await conn.execute(query, {"id": task_id})).scalar_one()


@pytest.fixture
async def db(postgres_url: str, database_factory: DatabaseFactory) -> AsyncIterator[Database]:
    """PostgreSQL's: the server the deadlock was seen on."""
    # The suite's migrated database; the rows made here are this test's own.
    database = Database(database_factory.migrated_database("postgres", postgres_url))
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_renewal_skips_a_row_held_elsewhere_and_waits_for_nothing(db: Database) -> None:
    first, second, lost = [await _claimed(db, "c1") for _ in range(3)]
    async with db.writer() as conn:
        # Another conductor took this one over.
        await conn.execute(
            text("UPDATE conductor_tasks SET owner = 'c2' WHERE id = :id"), {"id": lost}
        )
    before = await _lease(db, first)
    other = Database(db.url)
    holding, go_on = asyncio.Event(), asyncio.Event()

    async def writer_in_the_other_order() -> None:
        # A transaction of the same owner's that writes the second row, then the first.
        async with other.writer() as conn:
            await tasks.renew_lease(conn, second, "c1", lease_seconds=LEASE)
            holding.set()
            await go_on.wait()
            await tasks.renew_lease(conn, first, "c1", lease_seconds=LEASE)

    try:
        writer = asyncio.create_task(writer_in_the_other_order())
        await holding.wait()
        # It returns while the writer still holds the second row: it waited
        # for no lock, so it holds none the writer will wait for.
        renewed = await asyncio.wait_for(
            engine.renew_leases(db, "c1", [(first, 1), (second, 1), (lost, 1)], LEASE), 10
        )
        # The held row is still this owner's: not lost. The taken one is.
        assert renewed == {first, second}
        assert await _lease(db, first) != before
        go_on.set()
        await asyncio.wait_for(writer, 10)
    finally:
        go_on.set()
        await other.dispose()
