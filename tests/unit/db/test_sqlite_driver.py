"""The one-hop aiosqlite adapter: fewer thread trips, same transactions."""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite
import pytest

from nubes import exception
from nubes.db import sqlite_driver
from nubes.db.api import instances
from nubes.db.engine import Database, EngineOptions
from tests.unit.db.factories import make_instance


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every function sent to an aiosqlite thread."""
    sent: list[Any] = []
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kw: Any) -> Any:
        sent.append(fn)
        return await original(self, fn, *args, **kw)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
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


async def test_stock_adapter_fallback(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_driver, "dbapi", lambda: None)
    db = Database(db_url, options=EngineOptions())
    try:
        async with db.writer() as conn:
            inst = await make_instance(conn)
        async with db.reader() as conn:
            assert (await instances.get_by_uuid(conn, inst["uuid"]))["id"] == inst["id"]
    finally:
        await db.dispose()


def test_lean_adapter_is_available() -> None:
    assert sqlite_driver.dbapi() is not None
