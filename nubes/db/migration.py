"""Running the Alembic migrations from code (``nubes-manage db sync``).

Alembic is synchronous; the async engine lends it a sync connection through
``run_sync``, so the same nubes engine (with its SQLite pragmas and error
translation) runs the DDL and nothing blocks the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection

from nubes import exception
from nubes.db import engine as db_engine

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
HEAD = "head"


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config for the nubes migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS_DIR)
    if url is not None:
        rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        # ConfigParser interpolation would choke on a '%' in a password.
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database behind ``connection`` is at (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


def _defer_sqlite_foreign_keys(engine: Any) -> None:
    """SQLite alters a table by rebuilding it (copy, drop, rename); dropping a
    table that others refer to (``instances``) fails the foreign-key check
    though every row comes back under the same name. As SQLite documents for
    such changes, enforcement is off while migrating (it can only be switched
    outside a transaction, so at connect) and :func:`_check_sqlite_foreign_keys`
    checks every reference before the commit instead."""

    @event.listens_for(engine.sync_engine, "connect")
    def _off(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = OFF")
        finally:
            cursor.close()


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise exception.DBReferenceError(
            table=parent,
            reason=f"after migrating, {len(broken)} row(s) do (first: {table} row {rowid})",
        )


async def _run(url: str | URL, fn: Callable[[Connection, str], None], revision: str) -> str | None:
    engine = db_engine.create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        _defer_sqlite_foreign_keys(engine)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(fn, revision)
            if sqlite:
                await conn.run_sync(_check_sqlite_foreign_keys)
        async with engine.connect() as conn:
            return await conn.run_sync(current_revision)
    except (OSError, TimeoutError) as exc:
        # Raised by the driver while connecting, before SQLAlchemy sees a DBAPI error.
        raise exception.DBConnectionError(reason=f"{type(exc).__name__}: {exc}") from exc
    finally:
        await engine.dispose()


async def db_sync(url: str | URL, revision: str = HEAD) -> str | None:
    """Create or upgrade the schema at ``url`` to ``revision``; returns the new revision."""
    return await _run(url, _upgrade, revision)


async def db_downgrade(url: str | URL, revision: str) -> str | None:
    """Downgrade the schema at ``url`` to ``revision`` ("base": nothing left).

    Not exposed by nubes-manage (Nova has no downgrades either); for tests
    and for recovering from a failed upgrade by hand.
    """
    return await _run(url, _downgrade, revision)


async def db_version(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at."""
    engine = db_engine.create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(current_revision)
    except (OSError, TimeoutError) as exc:
        raise exception.DBConnectionError(reason=f"{type(exc).__name__}: {exc}") from exc
    finally:
        await engine.dispose()
