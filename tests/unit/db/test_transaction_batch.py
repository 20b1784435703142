"""TransactionBatcher: concurrent callers share a transaction, each gets its own outcome.

Runs on SQLite here and on PostgreSQL and MariaDB from tests/integration/db.
The work writes a security group row per key (any table would do), so what each
caller's outcome left behind is checked in the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from nubes import exception
from nubes.db.api import network as net_db
from nubes.db.engine import Connection, Database
from nubes.db.transaction_batch import TransactionBatcher


async def _write(conn: Connection, keys: Sequence[str]) -> dict[str, str | Exception]:
    """A row per key; "refused-*" refused before writing, "broken-*" raises after writing."""
    out: dict[str, str | Exception] = {}
    for key in keys:
        if key.startswith("refused"):
            out[key] = exception.NetworkNotFound(net_id=key)
            continue
        await net_db.create(
            conn,
            "security_groups",
            {"id": key, "project_id": "p", "name": key, "stateful": True, "revision_number": 0},
        )
        if key.startswith("broken"):
            raise exception.IpAddressGenerationFailure(net_id=key)
        out[key] = f"made {key}"
    return out


async def _exists(db: Database, key: str) -> bool:
    async with db.reader() as conn:
        try:
            await net_db.get(conn, "security_groups", key)
        except exception.SecurityGroupNotFound:
            return False
    return True


async def test_concurrent_callers_share_transactions(db: Database) -> None:
    batcher: TransactionBatcher[str, str] = TransactionBatcher(db, _write)
    keys = [f"k-{n:02d}" for n in range(20)]
    results = await asyncio.gather(*(batcher.run(k) for k in keys))
    assert results == [f"made {k}" for k in keys]
    assert batcher.keys == 20 and batcher.batches == 1
    assert all([await _exists(db, k) for k in keys])


async def test_a_refused_key_does_not_hold_back_the_others(db: Database) -> None:
    batcher: TransactionBatcher[str, str] = TransactionBatcher(db, _write)
    keys = ["a", "refused-b", "c"]
    results = await asyncio.gather(*(batcher.run(k) for k in keys), return_exceptions=True)
    assert results[0] == "made a" and results[2] == "made c"
    assert isinstance(results[1], exception.NetworkNotFound)
    assert batcher.batches == 1  # refused without writing: the batch still committed


async def test_a_failing_key_rolls_back_its_batch_and_each_runs_alone(db: Database) -> None:
    batcher: TransactionBatcher[str, str] = TransactionBatcher(db, _write)
    keys = ["x", "broken-y", "z"]
    results = await asyncio.gather(*(batcher.run(k) for k in keys), return_exceptions=True)
    assert results[0] == "made x" and results[2] == "made z"
    assert isinstance(results[1], exception.IpAddressGenerationFailure)
    # Nothing of the failed key is kept, everything of the others is.
    assert [await _exists(db, k) for k in keys] == [True, False, True]
    assert batcher.batches == 3  # the shared one failed: three alone


async def test_a_lone_caller_is_a_batch_of_one(db: Database) -> None:
    batcher: TransactionBatcher[str, str] = TransactionBatcher(db, _write)
    assert await batcher.run("solo") == "made solo"
    with pytest.raises(exception.IpAddressGenerationFailure):
        await batcher.run("broken-solo")
    assert not await _exists(db, "broken-solo")
    assert (batcher.batches, batcher.keys) == (2, 2)


async def _read(conn: Connection, keys: Sequence[str]) -> dict[str, bool | Exception]:
    out: dict[str, bool | Exception] = {}
    for key in keys:
        try:
            await net_db.get(conn, "security_groups", key)
        except exception.SecurityGroupNotFound:
            out[key] = False
        else:
            out[key] = True
    return out


async def test_read_only_batches_share_one_read_block(db: Database) -> None:
    writer: TransactionBatcher[str, str] = TransactionBatcher(db, _write)
    await writer.run("there")
    reader: TransactionBatcher[str, bool] = TransactionBatcher(db, _read, read_only=True)
    routed = db.route_counts["writer"]
    keys = ["there", "missing", "there", "also-missing"]
    assert await asyncio.gather(*(reader.run(k) for k in keys)) == [True, False, True, False]
    assert (reader.batches, reader.keys) == (1, 4)
    # Read in a reader() block: no writer transaction was opened for it.
    assert db.route_counts["writer"] == routed
