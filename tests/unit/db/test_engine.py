"""Engine plumbing: URLs, nesting, error translation, disabled access, unreachable DBs.

SQLite only (plus closed ports that need no server), so not part of the
contract suite re-run on the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from pathlib import Path

import pytest
from oslo_config import cfg
from sqlalchemy import text

from nubes import config, exception
from nubes.db import engine as db_engine
from nubes.db import manage, migration, models
from nubes.db.api import instances
from nubes.db.engine import Database, EngineOptions, normalize_url
from tests.unit.db.factories import make_instance

#: Nothing listens here, so connecting fails at once with "refused".
CLOSED_PORT = 1


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///nubes.sqlite", "sqlite+aiosqlite:///nubes.sqlite"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://u:p@db/nova", "postgresql+asyncpg://u:p@db/nova"),
        ("postgres://u@db/nova", "postgresql+asyncpg://u@db/nova"),
        ("postgresql+psycopg2://u@db/nova", "postgresql+asyncpg://u@db/nova"),
        ("mysql+pymysql://u:p@db/nova", "mysql+asyncmy://u:p@db/nova?charset=utf8mb4"),
        ("mysql://u@db/nova?charset=utf8", "mysql+asyncmy://u@db/nova?charset=utf8"),
        ("mariadb://u@db/nova", "mysql+asyncmy://u@db/nova?charset=utf8mb4"),
        ("mysql+aiomysql://u@db/nova", "mysql+aiomysql://u@db/nova?charset=utf8mb4"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize("url", ["oracle://u@db/x", "not a url"])
def test_unsupported_url_is_a_config_error(url: str) -> None:
    with pytest.raises(exception.ConfigError):
        normalize_url(url)


async def test_sqlite_pragmas(db: Database) -> None:
    async with db.writer() as conn:
        pragmas = {
            name: (await conn.execute(text(f"PRAGMA {name}"))).scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        }
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["foreign_keys"] == 1
    assert pragmas["busy_timeout"] == db_engine.DEFAULT_SQLITE_BUSY_TIMEOUT_MS
    assert pragmas["synchronous"] == 1  # NORMAL


async def test_write_through_reader_is_refused_on_sqlite(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn)
    with pytest.raises(exception.DBError):
        async with db.reader() as conn:
            await instances.update(conn, inst["uuid"], {"host": "h"})


async def test_nested_writer_joins_and_rolls_back_as_one(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.writer() as outer:
            await make_instance(outer, display_name="outer")
            async with db.writer() as inner:
                assert inner is outer
                await make_instance(inner, display_name="inner")
            raise RuntimeError("boom")
    async with db.reader() as conn:
        assert await instances.get_all(conn) == []


async def test_other_tasks_never_share_a_connection(db: Database) -> None:
    async with db.writer() as conn:
        await make_instance(conn)
    async with db.reader() as outer:

        async def read() -> object:
            async with db.reader() as inner:
                assert inner is not outer
                return inner

        await asyncio.gather(read(), read())


async def test_memory_database_shares_one_connection() -> None:
    db = Database("sqlite://")
    try:
        async with db.writer() as conn:
            await conn.run_sync(models.metadata.create_all)

        async def create(n: int) -> None:
            async with db.writer() as conn:
                await make_instance(conn, display_name=f"m{n}")

        await asyncio.gather(*(create(n) for n in range(5)))
        async with db.reader(allow_stale=True) as conn:
            assert len(await instances.get_all(conn)) == 5
            async with db.writer() as inner:  # writer inside reader: same connection
                assert inner is conn
    finally:
        await db.dispose()


async def test_locked_sqlite_becomes_deadlock_and_run_in_writer_retries(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    path = db_url.removeprefix("sqlite:///")
    quick = Database(db_url, options=EngineOptions(sqlite_busy_timeout=10))
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(exception.DBDeadlock):
            async with quick.writer() as conn:
                await make_instance(conn)

        async def release_soon() -> None:
            await asyncio.sleep(0.05)
            holder.execute("ROLLBACK")

        releaser = asyncio.create_task(release_soon())
        created = await quick.run_in_writer(make_instance, display_name="retried")
        await releaser
        assert created["display_name"] == "retried"
    finally:
        holder.close()
        await quick.dispose()


async def test_run_in_writer_gives_up_after_retries(db: Database) -> None:
    calls = 0

    async def always_deadlocks(conn: object) -> None:
        nonlocal calls
        calls += 1
        raise exception.DBDeadlock(reason="test")

    with pytest.raises(exception.DBDeadlock):
        await db.run_in_writer(always_deadlocks)
    assert calls == db_engine.DEADLOCK_RETRIES + 1


async def test_disable_db_access_makes_every_entry_point_raise(db: Database, db_url: str) -> None:
    db_engine.disable_db_access("nubes-compute")
    try:
        with pytest.raises(exception.DatabaseAccessForbidden) as err:
            async with db.reader() as conn:
                await instances.get_all(conn)
        assert "nubes-compute" in str(err.value)
        with pytest.raises(exception.DatabaseAccessForbidden):
            async with db.writer():
                pass
        with pytest.raises(exception.DatabaseAccessForbidden):
            Database(db_url)
        with pytest.raises(exception.DatabaseAccessForbidden):
            db_engine.get_database()
        with pytest.raises(exception.DatabaseAccessForbidden):
            await migration.db_sync(db_url)
    finally:
        db_engine.enable_db_access()
    async with db.reader() as conn:
        assert await instances.get_all(conn) == []


async def test_configure_from_config(tmp_path: Path) -> None:
    conf = config.load([], conf=config.new_config())
    conf.set_override("connection", f"sqlite:///{tmp_path}/c.sqlite", group="database")
    conf.set_override("max_pool_size", 3, group="database")
    db = db_engine.configure(conf)
    try:
        assert db_engine.get_database() is db
        assert db.options.max_pool_size == 3 and not db.has_replica
    finally:
        await db_engine.dispose_database()


def _manage(url: str, *argv: str) -> int:
    conf: cfg.ConfigOpts = config.load([], conf=config.new_config())
    conf.set_override("connection", url, group="database")
    parser = argparse.ArgumentParser()
    manage.add_db_commands(parser.add_subparsers())
    args = parser.parse_args(["db", *argv])
    return int(args.handler(conf, args))


def test_manage_sync_and_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/m.sqlite"
    assert _manage(url, "version") == manage.EXIT_OK
    assert "None" in capsys.readouterr().out
    assert _manage(url, "sync") == manage.EXIT_OK
    assert _manage(url, "version") == manage.EXIT_OK
    assert capsys.readouterr().out.strip().endswith(str(migration.head_revision()))


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-dir/for/nubes.sqlite",
        f"postgresql://postgres@127.0.0.1:{CLOSED_PORT}/test",
        f"mysql+pymysql://root@127.0.0.1:{CLOSED_PORT}/test",
    ],
)
@pytest.mark.parametrize("command", ["archive-deleted-rows", "sync", "version"])
def test_unreachable_database_exits_three(
    url: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _manage(url, command) == manage.EXIT_DB_UNREACHABLE
    assert "unreachable" in capsys.readouterr().err


def test_missing_schema_is_a_database_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.sqlite"
    assert _manage(url, "archive-deleted-rows") == manage.EXIT_DB_ERROR


async def test_unreachable_database_raises_connection_error() -> None:
    db = Database(f"postgresql://postgres@127.0.0.1:{CLOSED_PORT}/test")
    try:
        with pytest.raises(exception.DBConnectionError) as err:
            async with db.reader() as conn:
                await instances.get_all(conn)
        assert err.value.code == 503
    finally:
        await db.dispose()


async def test_cancelling_a_db_call_stays_a_cancellation(tmp_path):
    """Regression: SQLAlchemy reports a cancelled statement through the error
    hook, which turned it into DBConnectionError; callers then retried it as
    an outage and a stopping service hung until its stop timeout."""
    import asyncio

    from nubes.db import migration
    from nubes.db.engine import Database

    url = f"sqlite:///{tmp_path / 'cancel.sqlite'}"
    await migration.db_sync(url)
    db = Database(url)

    async def slow_reads() -> None:
        while True:
            async with db.reader() as conn:
                await conn.exec_driver_sql("SELECT count(*) FROM instances")

    task = asyncio.create_task(slow_reads())
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the task did not end")
    assert task.cancelled()
    await db.dispose()
