"""The SQLite driver: a thread per connection, fewer trips, same transactions."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from nubes import exception
from nubes.db import sqlite_driver
from nubes.db.api import instances
from nubes.db.engine import Database
from tests.unit.db.factories import make_instance


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every function sent to a connection's thread."""
    sent: list[Any] = []
    original = sqlite_driver.ThreadConnection.run

    async def counting(self: sqlite_driver.ThreadConnection, fn: Any, *args: Any) -> Any:
        sent.append(fn)
        return await original(self, fn, *args)

    monkeypatch.setattr(sqlite_driver.ThreadConnection, "run", counting)
    return sent


async def test_a_save_is_two_trips(db: Database, trips: list[Any]) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn)
    trips.clear()
    async with db.writer() as conn:
        await instances.update(conn, inst["uuid"], {"progress": 5}, expected_vm_state="building")
    # [BEGIN IMMEDIATE +] UPDATE ... RETURNING, then COMMIT; no reset-rollback.
    assert len(trips) == 2


async def test_empty_transaction_costs_no_trip(db: Database, trips: list[Any]) -> None:
    async with db.writer() as conn:
        await make_instance(conn)
    async with db.reader() as conn:  # open the reader pool's connection first
        await instances.get_all(conn)
    trips.clear()
    async with db.writer():
        pass
    async with db.reader():
        pass
    assert trips == []


async def test_deferred_begin_still_takes_the_write_lock(db: Database, db_url: str) -> None:
    path = db_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        async with db.writer() as conn:
            await make_instance(conn)
            # Our transaction holds the write lock: another writer cannot start.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_error_mid_transaction_rolls_everything_back(db: Database) -> None:
    with pytest.raises(exception.DBReferenceError):
        async with db.writer() as conn:
            await make_instance(conn, display_name="lost")
            await instances.fault_create(conn, {"instance_uuid": "missing", "code": 1})
    async with db.reader() as conn:
        assert await instances.get_all(conn) == []


async def test_thread_connection_runs_in_order_and_returns_errors(tmp_path: Any) -> None:
    conn = await sqlite_driver.ThreadConnection.connect(str(tmp_path / "t.sqlite"))
    try:
        await conn.run(lambda raw: raw.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        for n in range(3):
            await conn.run(lambda raw, n: raw.execute("INSERT INTO t VALUES (?)", (n,)), n)
        rows = await conn.run(lambda raw: raw.execute("SELECT n FROM t").fetchall())
        assert rows == [(0,), (1,), (2,)]
        with pytest.raises(sqlite3.IntegrityError):
            await conn.run(lambda raw: raw.execute("INSERT INTO t VALUES (1)"))
        # The thread survives an error and keeps serving the connection.
        assert await conn.run(lambda raw: raw.execute("SELECT count(*) FROM t").fetchone()) == (3,)
    finally:
        await conn.close()
    with pytest.raises(ValueError, match="Connection closed"):
        await conn.run(lambda raw: None)
    await conn.close()  # a second close is a no-op, as DBAPI expects


async def test_open_failure_is_raised_and_ends_the_thread(tmp_path: Any) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await sqlite_driver.ThreadConnection.connect(str(tmp_path / "missing" / "t.sqlite"))


async def test_engine_on_a_closed_connection_reconnects(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn)
    with pytest.raises(exception.DBConnectionError, match="Connection closed"):
        async with db.writer() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.close()  # type: ignore[union-attr]
            await instances.get_by_uuid(conn, inst["uuid"])
    # The pool took "Connection closed" for a disconnect and dropped the connection.
    async with db.writer() as conn:
        assert (await instances.get_by_uuid(conn, inst["uuid"]))["id"] == inst["id"]
