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
import shutil
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from nubes.db.api import instances
from nubes.db.engine import Database, EngineOptions
from nubes.testing.infra import free_port
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


def _unreachable(url: str, gone: Path) -> str:
    """``url``'s database where nothing answers: a closed port, or a SQLite file
    in ``gone``, a directory the caller removes once the engine is made."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        gone.mkdir()
        return parsed.set(database=str(gone / "replica.db")).render_as_string(False)
    return parsed.set(host="127.0.0.1", port=free_port()).render_as_string(False)


async def test_stale_reads_fall_back_to_the_primary_while_the_replica_is_away(
    replica_pair: tuple[str, str], tmp_path: Path
) -> None:
    primary_url, replica_url = replica_pair
    gone = tmp_path / "gone"
    db = Database(primary_url, _unreachable(replica_url, gone))
    shutil.rmtree(gone, ignore_errors=True)
    try:
        async with db.writer() as conn:
            await make_instance(conn, display_name="on-primary")
        # Not an error: the primary has the data (fresher, even).
        assert await _fresh_context(db, allow_stale=True) == {"on-primary"}
        assert await _fresh_context(db, allow_stale=True) == {"on-primary"}
        assert db.route_counts["replica"] == 0
        assert db.route_counts["primary"] == 2
    finally:
        await db.dispose()


async def test_replica_is_tried_again_after_the_retry_window(
    replica_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary_url, replica_url = replica_pair
    await _plant_marker(replica_url)
    db = Database(primary_url, replica_url)
    try:
        db._replica_lost(RuntimeError("it was away"))
        assert await _fresh_context(db, allow_stale=True) == set()
        monkeypatch.setattr(db, "_replica_down_until", float("-inf"))
        assert await _fresh_context(db, allow_stale=True) == {MARKER}
    finally:
        await db.dispose()
