"""Read replica routing, proved with a marker row that exists only in the replica.

On PostgreSQL and MariaDB (tests/integration/db) the "replica" is a second
database on the same server reached through its own connection pool; here
it is a second SQLite file. Nothing replicates between them, so finding the
marker means the read went to the replica and not finding it means it went
to the primary.
"""

from __future__ import annotations

import asyncio
import contextvars

from nubes.db.api import instances
from nubes.db.engine import Database, EngineOptions
from tests.unit.db.factories import make_instance

MARKER = "only-in-the-replica"


async def _names(db: Database, *, allow_stale: bool) -> set[str]:
    async with db.reader(allow_stale=allow_stale) as conn:
        return {row["display_name"] for row in await instances.get_all(conn)}


async def _plant_marker(replica_url: str) -> None:
    replica = Database(replica_url)
    try:
        async with replica.writer() as conn:
            await make_instance(conn, display_name=MARKER)
    finally:
        await replica.dispose()


async def _fresh_context(db: Database, *, allow_stale: bool) -> set[str]:
    """Read in a new, empty context: a new request that has not written anything."""
    task = asyncio.create_task(_names(db, allow_stale=allow_stale), context=contextvars.Context())
    return await task


async def test_stale_reads_go_to_replica_and_the_rest_to_primary(
    replica_pair: tuple[str, str],
) -> None:
    primary_url, replica_url = replica_pair
    await _plant_marker(replica_url)
    db = Database(primary_url, replica_url)
    try:
        async with db.writer() as conn:
            await make_instance(conn, display_name="on-primary")
        stale = await _fresh_context(db, allow_stale=True)
        assert stale == {MARKER}
        assert await _fresh_context(db, allow_stale=False) == {"on-primary"}
        async with db.writer() as conn:
            assert {r["display_name"] for r in await instances.get_all(conn)} == {"on-primary"}
        assert db.route_counts["replica"] == 1
        assert db.route_counts["writer"] == 2
    finally:
        await db.dispose()


async def test_read_after_write_in_same_task_stays_on_primary(
    replica_pair: tuple[str, str],
) -> None:
    primary_url, replica_url = replica_pair
    await _plant_marker(replica_url)
    db = Database(primary_url, replica_url, EngineOptions(read_after_write_window=60.0))
    try:
        async with db.writer() as conn:
            await make_instance(conn, display_name="just-written")
        # This task wrote a moment ago: its stale-allowed read must see the write.
        assert await _names(db, allow_stale=True) == {"just-written"}
        assert db.route_counts["replica"] == 0
        # Another request that did not write may use the replica.
        assert await _fresh_context(db, allow_stale=True) == {MARKER}
    finally:
        await db.dispose()


async def test_without_window_stale_read_after_write_goes_to_replica(
    replica_pair: tuple[str, str],
) -> None:
    primary_url, replica_url = replica_pair
    await _plant_marker(replica_url)
    db = Database(primary_url, replica_url, EngineOptions(read_after_write_window=0.0))
    try:
        async with db.writer() as conn:
            await make_instance(conn, display_name="just-written")
        assert await _names(db, allow_stale=True) == {MARKER}
    finally:
        await db.dispose()


async def test_reader_inside_writer_uses_the_writers_transaction(
    replica_pair: tuple[str, str],
) -> None:
    primary_url, replica_url = replica_pair
    await _plant_marker(replica_url)
    db = Database(primary_url, replica_url)
    try:
        async with db.writer() as conn:
            created = await make_instance(conn, display_name="uncommitted")
            async with db.reader(allow_stale=True) as inner:
                assert inner is conn
                got = await instances.get_by_uuid(inner, created["uuid"])
                assert got["display_name"] == "uncommitted"
        assert db.route_counts["replica"] == 0
    finally:
        await db.dispose()


async def test_no_replica_configured_means_primary(db: Database) -> None:
    async with db.writer() as conn:
        await make_instance(conn, display_name="x")
    assert await _fresh_context(db, allow_stale=True) == {"x"}
    assert not db.has_replica and db.route_counts["replica"] == 0
