"""On PostgreSQL a read block runs each statement on its own (no BEGIN/ROLLBACK).

In READ COMMITTED a transaction gives its statements no common snapshot,
so the read blocks drop the two round trips a transaction costs. Seen from
the server (``pg_stat_activity``, asked on another connection): between two
statements a read block's session is ``idle``, a write block's is
``idle in transaction``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.engine import Database

pytestmark = pytest.mark.postgres

PID = text("SELECT pg_backend_pid()")
STATE = text("SELECT state FROM pg_stat_activity WHERE pid = :pid")


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def observer(db: Database) -> AsyncIterator[Database]:
    """The same database through a pool of its own, to look at ``db``'s sessions."""
    other = Database(db.url)
    try:
        yield other
    finally:
        await other.dispose()


async def state_of(observer: Database, conn: AsyncConnection) -> str:
    pid = (await conn.execute(PID)).scalar_one()
    async with observer.reader() as other:
        return str((await other.execute(STATE, {"pid": pid})).scalar_one())


async def test_a_read_block_opens_no_transaction(db: Database, observer: Database) -> None:
    async with db.reader() as conn:
        assert await state_of(observer, conn) == "idle"


async def test_a_write_block_keeps_its_transaction(db: Database, observer: Database) -> None:
    async with db.writer() as conn:
        assert await state_of(observer, conn) == "idle in transaction"


async def test_a_pooled_connection_read_from_goes_back_transactional(
    db: Database, observer: Database
) -> None:
    # The reads' setting is per checkout: the pool's next writer gets a transaction.
    for _ in range(3):
        async with db.reader() as conn:
            assert await state_of(observer, conn) == "idle"
        async with db.writer() as conn:
            assert await state_of(observer, conn) == "idle in transaction"


async def test_a_read_inside_a_write_block_shares_its_transaction(
    db: Database, observer: Database
) -> None:
    async with db.writer() as conn, db.reader() as inner:
        assert inner is conn
        assert await state_of(observer, inner) == "idle in transaction"
