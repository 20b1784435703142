"""Fixtures that give each DB contract test a clean, migrated database.

The suite is written once (tests/unit/db/test_*.py) against a ``backend``
fixture; tests/unit/db/conftest.py parametrises it with sqlite,
tests/integration/db/conftest.py with postgres and mariadb and re-collects
the same test functions.

Isolation between concurrent test runs: every session creates its own
databases named ``nubes_test_<random>`` on PostgreSQL and MariaDB and drops
them at the end; SQLite files live in pytest's tmp dirs. Within a session,
one migrated database per backend is shared and emptied before each test
(SQLite tests get a copy of a migrated template file instead).

Database administration (CREATE/DROP DATABASE, emptying tables) runs in a
helper thread with its own event loop, so these fixtures work the same for
sync and async tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from nubes.db import engine as db_engine
from nubes.db import migration, models
from nubes.db.engine import Database

T = TypeVar("T")

TEST_DB_PREFIX = "nubes_test_"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a private loop in a helper thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(base_url: str, statements: list[str]) -> None:
    engine = create_async_engine(db_engine.normalize_url(base_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _empty_tables(url: str) -> None:
    engine = db_engine.create_engine(url)
    try:
        async with engine.begin() as conn:
            for table in reversed(models.metadata.sorted_tables):
                await conn.execute(delete(table))
    finally:
        await engine.dispose()


class DatabaseFactory:
    """Creates per-session databases and drops them at the end."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self._created: list[tuple[str, str, str]] = []  # (backend, base_url, name)
        self._migrated: dict[str, str] = {}

    def new_database(self, backend: str, base_url: str | None) -> str:
        """The URL of a new, empty database."""
        name = f"{TEST_DB_PREFIX}{uuid.uuid4().hex[:12]}"
        if backend == "sqlite":
            return f"sqlite:///{self.tmp_dir / (name + '.sqlite')}"
        assert base_url is not None
        if backend == "postgres":
            run_sync(_admin(base_url, [f'CREATE DATABASE "{name}"']))
        else:
            run_sync(_admin(base_url, [f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"]))
        self._created.append((backend, base_url, name))
        return make_url(base_url).set(database=name).render_as_string(hide_password=False)

    def migrated_database(self, backend: str, base_url: str | None) -> str:
        """The URL of this session's migrated database for ``backend`` (made once)."""
        if backend not in self._migrated:
            url = self.new_database(backend, base_url)
            run_sync(migration.db_sync(url))
            self._migrated[backend] = url
        return self._migrated[backend]

    def drop_all(self) -> None:
        for backend, base_url, name in self._created:
            if backend == "postgres":
                statement = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            else:
                statement = f"DROP DATABASE IF EXISTS `{name}`"
            run_sync(_admin(base_url, [statement]))


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("nubes-db"))
    yield factory
    factory.drop_all()


@pytest.fixture
def server_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The test server's URL (None for SQLite); skips when the server is down."""
    if backend == "sqlite":
        return None
    return str(request.getfixturevalue(f"{backend}_url"))


@pytest.fixture
def empty_db_url(backend: str, server_url: str | None, database_factory: DatabaseFactory) -> str:
    """A brand-new database without any schema."""
    return database_factory.new_database(backend, server_url)


@pytest.fixture
def db_url(
    backend: str, server_url: str | None, database_factory: DatabaseFactory, tmp_path: Path
) -> str:
    """A migrated database with no rows in it."""
    template = database_factory.migrated_database(backend, server_url)
    if backend == "sqlite":
        source = Path(make_url(template).database or "")
        target = tmp_path / "nubes.sqlite"
        shutil.copyfile(source, target)
        return f"sqlite:///{target}"
    run_sync(_empty_tables(template))
    return template


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def replica_pair(
    backend: str, server_url: str | None, database_factory: DatabaseFactory
) -> tuple[str, str]:
    """Two migrated databases: a primary and one standing in for its read replica.

    They are deliberately *not* replicated, so a row written to only one of
    them shows which one a read went to.
    """
    primary = database_factory.new_database(backend, server_url)
    replica = database_factory.new_database(backend, server_url)
    run_sync(migration.db_sync(primary))
    run_sync(migration.db_sync(replica))
    return primary, replica
