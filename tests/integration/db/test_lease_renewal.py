"""A conductor's lease renewal that a deadlock picks as its victim is tried again.

Regression: the task engine renewed its leases in one statement outside the
deadlock-retrying seam, so when a grouped commit held one of its task rows and
waited for another the renewal held, PostgreSQL aborted the renewal and the
engine waited a third of the lease for the next try; under load leases lapsed
and steps were sent again (bench/scale.py: "could not renew its leases:
deadlock detected").
"""

from __future__ import annotations

import asyncio
import logging
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


async def _waiting_on_a_lock(db: Database) -> int:
    async with db.reader() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int((await conn.execute(query)).scalar_one())


@pytest.fixture
async def db(postgres_url: str, database_factory: DatabaseFactory) -> AsyncIterator[Database]:
    """PostgreSQL's: the lock waits are read from its pg_stat_activity, and it
    picks the transaction that waited first as the victim (InnoDB may pick either)."""
    # The suite's migrated database; the rows made here are this test's own.
    database = Database(database_factory.migrated_database("postgres", postgres_url))
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_renewal_chosen_as_a_deadlocks_victim_is_tried_again(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = await _claimed(db, "c1"), await _claimed(db, "c1")
    other = Database(db.url)
    holding, go_on = asyncio.Event(), asyncio.Event()

    async def writer_in_the_other_order() -> None:
        # A transaction of the same owner's that writes the second row, then the first.
        async with other.writer() as conn:
            await tasks.renew_lease(conn, second, "c1", lease_seconds=LEASE)
            holding.set()
            await go_on.wait()
            await tasks.renew_lease(conn, first, "c1", lease_seconds=LEASE)

    caplog.set_level(logging.DEBUG, logger="nubes.db.engine")
    try:
        writer = asyncio.create_task(writer_in_the_other_order())
        await holding.wait()
        renewal = asyncio.create_task(
            engine.renew_leases(db, "c1", [(first, 1), (second, 1)], LEASE)
        )
        # The renewal holds the first row and waits for the second.
        for _ in range(1200):
            if await _waiting_on_a_lock(db):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the renewal never waited for the writer's row")
        go_on.set()
        await writer
        assert await renewal == {first, second}
    finally:
        await other.dispose()
    assert any("deadlock in renew_leases, retry 1" in r.getMessage() for r in caplog.records)
