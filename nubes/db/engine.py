"""Engines, connections and where each read or write goes.

A :class:`Database` holds the engines of one deployment and hands out
connections through two context managers:

``writer()``
    A transaction on the primary, committed when the block ends without an
    error and rolled back otherwise. Every write goes here.
``reader(allow_stale=False)``
    A read-only unit of work. It goes to the primary unless the caller says
    the data may be slightly stale (listings, periodic scans) *and* a
    ``[database] replica_connection`` is configured *and* the current task
    has not written within ``read_after_write_window`` seconds; then it goes
    to the replica. When the replica cannot be reached, such a read goes to
    the primary instead, and so do the following ones for
    :data:`REPLICA_RETRY_AFTER` seconds (no connect attempt to a dead server
    on every read); then the replica is tried again. A replica lost in the
    middle of a read fails that read (its caller retries, as for any
    connection error) and sends the next ones to the primary.

Nesting in one asyncio task joins the outer block instead of opening a
second connection: a reader inside a writer sees the writer's uncommitted
rows (a read-after-write never goes to the replica), and a writer inside a
writer joins its transaction, which commits once, at the outermost block.
A block never joins across tasks, because one connection cannot run two
statements at once.

SQLite gets its own arrangement. A file database has one writer connection
(SQLite allows one writer anyway; queueing in the asyncio pool is cheaper
than its sleep-and-retry busy handler) that starts transactions with
``BEGIN IMMEDIATE`` so a read-then-write transaction cannot fail half way on
a lock upgrade, plus a pool of ``query_only`` reader connections that WAL lets
run alongside the writer. An in-memory database lives in one connection, so
everything shares it. SQLite statements go through
:mod:`nubes.db.sqlite_driver`, which gives each connection a thread of its
own and makes one trip to it per statement instead of four.

Writes that need no transaction of their own caller (the conductor's
``Instance.save()`` of a field or two) can instead go through
:attr:`Database.group_commit`, which runs concurrent callers' single-row
conditional writes together in one transaction on the primary (see
:mod:`nubes.db.group_commit` and :func:`nubes.db.api.instances.save`); the
caller then calls :meth:`Database.note_write`, so the read-after-write rule
holds as for ``writer()``.

Driver errors are translated at the statement level into the nubes error
tree (:class:`~nubes.exception.DBDuplicateEntry`,
:class:`~nubes.exception.DBDeadlock`, ...), so callers never catch
SQLAlchemy or driver exceptions.

Compute hosts call :func:`disable_db_access` at start; every later attempt
to open or use a database in that process raises
:class:`~nubes.exception.DatabaseAccessForbidden`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Concatenate, Literal, ParamSpec, TypeAlias, TypeVar

import sqlalchemy.exc as sa_exc
from oslo_config import cfg
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from nubes import exception, metrics
from nubes.db import errors, group_commit, sqlite_driver

LOG = logging.getLogger(__name__)

#: Seconds stale-tolerant reads stay on the primary after the replica failed.
REPLICA_RETRY_AFTER = 5.0

#: An open connection, as every :mod:`nubes.db.api` function takes it. Code above the
#: database layer names it by this alias so that only ``nubes/db`` imports SQLAlchemy
#: (an import-linter contract in pyproject.toml).
Connection: TypeAlias = AsyncConnection

P = ParamSpec("P")
T = TypeVar("T")

#: Async driver used for each backend, whatever driver a nova-style URL names.
ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg", "mysql": "asyncmy"}
#: Backend aliases accepted in URLs.
BACKEND_ALIASES = {"postgres": "postgresql", "mariadb": "mysql"}

DEFAULT_MAX_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 20
DEFAULT_POOL_TIMEOUT = 30
DEFAULT_RECYCLE_TIME = 3600
DEFAULT_READ_AFTER_WRITE_WINDOW = 5.0
DEFAULT_SQLITE_BUSY_TIMEOUT_MS = 5000
DEFAULT_SQLITE_SYNCHRONOUS = "NORMAL"

#: Times :meth:`Database.run_in_writer` retries a transaction that deadlocked.
DEADLOCK_RETRIES = 5
#: First back-off (seconds) after a deadlock; doubles, with jitter.
DEADLOCK_BACKOFF = 0.01

Role = Literal["writer", "primary", "replica"]


# --- switching the DB layer off ---------------------------------------------

_forbidden_service: str | None = None


def disable_db_access(service_name: str) -> None:
    """Make every later use of the DB layer in this process raise.

    Compute calls this at start: it must never reach the database, and a
    slip should fail loudly instead of quietly working on a laptop where the
    database happens to be reachable.
    """
    global _forbidden_service
    _forbidden_service = service_name


def enable_db_access() -> None:
    """Undo :func:`disable_db_access` (for tests that run several services)."""
    global _forbidden_service
    _forbidden_service = None


def check_db_access() -> None:
    if _forbidden_service is not None:
        raise exception.DatabaseAccessForbidden(service=_forbidden_service)


# --- URLs and options --------------------------------------------------------


def normalize_url(url: str | URL) -> URL:
    """The URL with the async driver of its backend (nova-style URLs accepted).

    ``sqlite:///x`` -> ``sqlite+aiosqlite:///x``, ``postgresql://`` and
    ``postgresql+psycopg2://`` -> ``postgresql+asyncpg://``, ``mysql://``,
    ``mysql+pymysql://`` and ``mariadb://`` -> ``mysql+asyncmy://``.
    ``aiomysql`` is kept when asked for by name.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except sa_exc.ArgumentError as exc:
        raise exception.ConfigError(reason=f"bad database URL: {exc}") from exc
    # Parsed by hand: URL.get_driver_name() loads the dialect, which fails
    # for aliases such as postgres://.
    backend, _, driver = parsed.drivername.partition("+")
    backend = BACKEND_ALIASES.get(backend, backend)
    if backend not in ASYNC_DRIVERS:
        raise exception.ConfigError(
            reason=f"unsupported database backend {backend!r}; use sqlite, postgresql or mysql"
        )
    if not (backend == "mysql" and driver == "aiomysql"):
        driver = ASYNC_DRIVERS[backend]
    parsed = parsed.set(drivername=f"{backend}+{driver}")
    if backend == "mysql" and "charset" not in parsed.query:
        # utf8 on MariaDB is 3-byte utf8mb3; names with emoji would fail.
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


@dataclasses.dataclass(frozen=True, slots=True)
class EngineOptions:
    max_pool_size: int = DEFAULT_MAX_POOL_SIZE
    max_overflow: int = DEFAULT_MAX_OVERFLOW
    pool_timeout: int = DEFAULT_POOL_TIMEOUT
    connection_recycle_time: int = DEFAULT_RECYCLE_TIME
    read_after_write_window: float = DEFAULT_READ_AFTER_WRITE_WINDOW
    sqlite_busy_timeout: int = DEFAULT_SQLITE_BUSY_TIMEOUT_MS
    sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS

    @classmethod
    def from_config(cls, conf: cfg.ConfigOpts) -> EngineOptions:
        group = conf.database
        return cls(
            max_pool_size=group.max_pool_size,
            max_overflow=group.max_overflow,
            pool_timeout=group.pool_timeout,
            connection_recycle_time=group.connection_recycle_time,
            read_after_write_window=group.read_after_write_window,
            sqlite_busy_timeout=group.sqlite_busy_timeout,
            sqlite_synchronous=group.sqlite_synchronous,
        )


# --- engines -----------------------------------------------------------------


def _install_sqlite_hooks(
    engine: AsyncEngine, options: EngineOptions, *, immediate: bool, query_only: bool
) -> None:
    begin_sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module, which would
        # otherwise BEGIN lazily (deferred) before the first write only.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(options.sqlite_busy_timeout)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {options.sqlite_synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if query_only:
                cursor.execute("PRAGMA query_only = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin_sql)


def _install_mysql_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            # Refuse silent truncation and invalid dates instead of storing garbage.
            cursor.execute("SET SESSION sql_mode = 'TRADITIONAL'")
        finally:
            cursor.close()


def _check_sqlite_directory(url: URL) -> None:
    # Fail here with a clear message rather than in the connection's thread, which
    # reports a failed open late and races the event loop's shutdown.
    database = url.database or ""
    if database.startswith("file:"):
        return
    directory = os.path.dirname(os.path.abspath(database))
    if not os.path.isdir(directory):
        raise exception.DBConnectionError(
            reason=f"directory {directory} of SQLite database {database} does not exist"
        )


def create_engine(
    url: str | URL,
    options: EngineOptions | None = None,
    *,
    role: Literal["writer", "reader"] = "writer",
    pre_ping: bool = False,
) -> AsyncEngine:
    """An async engine for ``url`` with nubes' pool, pragmas and error translation.

    ``pre_ping`` checks a pooled connection before handing it out (one round
    trip), so a server that went away shows at connect time, where the
    caller can still go elsewhere (the replica's reads go to the primary).
    """
    check_db_access()
    options = options or EngineOptions()
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        memory = is_sqlite_memory(parsed)
        single = memory or role == "writer"
        kwargs.update(
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1 if single else options.max_pool_size,
            max_overflow=0 if single else options.max_overflow,
            pool_timeout=options.pool_timeout,
            # A memory database dies with its connection; never recycle it.
            pool_recycle=-1,
        )
    else:
        kwargs.update(
            pool_size=options.max_pool_size,
            max_overflow=options.max_overflow,
            pool_timeout=options.pool_timeout,
            pool_recycle=options.connection_recycle_time,
        )
        if backend == "mysql":
            # REPEATABLE READ's gap locks make concurrent inserts deadlock
            # (and Galera does not honour them anyway).
            kwargs["isolation_level"] = "READ COMMITTED"
    if backend == "sqlite" and not is_sqlite_memory(parsed):
        _check_sqlite_directory(parsed)
    if backend == "sqlite" and parsed.get_driver_name() == "aiosqlite":
        kwargs["module"] = sqlite_driver.dbapi()
    engine = create_async_engine(parsed, pool_pre_ping=pre_ping, **kwargs)
    if backend == "sqlite":
        memory = is_sqlite_memory(parsed)
        _install_sqlite_hooks(
            engine,
            options,
            immediate=role == "writer" or memory,
            query_only=role == "reader" and not memory,
        )
    elif backend == "mysql":
        _install_mysql_hooks(engine)
    event.listen(engine.sync_engine, "handle_error", errors.translate, retval=True)
    _install_metrics(engine, role)
    return engine


def _install_metrics(engine: AsyncEngine, role: str) -> None:
    """Statement latency and pool use (nubes/metrics.py) through SQLAlchemy's events."""
    seconds = metrics.db_statement_seconds.labels(role)
    key = "nubes_statement_started"

    def before(conn: Any, *_: Any) -> None:
        conn.info[key] = time.perf_counter()

    def after(conn: Any, *_: Any) -> None:
        started = conn.info.pop(key, None)
        if started is not None:
            seconds.observe(time.perf_counter() - started)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    in_use = metrics.db_pool_in_use
    event.listen(engine.sync_engine.pool, "checkout", lambda *_: in_use.add(role, 1))
    event.listen(engine.sync_engine.pool, "checkin", lambda *_: in_use.add(role, -1))


# --- routing -----------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Active:
    """The connection an enclosing block of the current task holds."""

    db: Database
    conn: AsyncConnection
    role: Role
    task: asyncio.Task[Any] | None


_active: contextvars.ContextVar[_Active | None] = contextvars.ContextVar(
    "nubes_db_active", default=None
)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _connection_error(exc: BaseException) -> exception.DBConnectionError:
    return exception.DBConnectionError(reason=f"{type(exc).__name__}: {exc}")


async def _connect(engine: AsyncEngine) -> AsyncConnection:
    try:
        return await engine.connect()
    except exception.NubesError:
        raise
    except (OSError, TimeoutError, sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
        raise _connection_error(exc) from exc


class Database:
    """The engines of one deployment: the primary, and optionally a replica."""

    def __init__(
        self,
        connection: str | URL,
        replica_connection: str | URL | None = None,
        options: EngineOptions | None = None,
    ) -> None:
        check_db_access()
        self.options = options or EngineOptions()
        self.url = normalize_url(connection)
        self.replica_url = normalize_url(replica_connection) if replica_connection else None
        self._writer = create_engine(self.url, self.options, role="writer")
        if self.url.get_backend_name() == "sqlite" and not is_sqlite_memory(self.url):
            self._primary_reader = create_engine(self.url, self.options, role="reader")
        else:
            self._primary_reader = self._writer
        self._replica: AsyncEngine | None = None
        if self.replica_url is not None:
            self._replica = create_engine(
                self.replica_url, self.options, role="reader", pre_ping=True
            )
        #: Blocks opened per role; cheap, and lets tests and operators see routing.
        self.route_counts: dict[Role, int] = {"writer": 0, "primary": 0, "replica": 0}
        # time.monotonic() of this context's last committed write to *this*
        # database; a context variable so each request or task has its own.
        self._last_write: contextvars.ContextVar[float] = contextvars.ContextVar(
            f"nubes_db_last_write_{id(self)}", default=float("-inf")
        )
        #: time.monotonic() until which reads skip the replica (it failed).
        self._replica_down_until = float("-inf")
        self._group_commit: group_commit.GroupCommitter | None = None
        self._group_commit_supported = group_commit.supported(self._writer)

    @classmethod
    def from_config(cls, conf: cfg.ConfigOpts) -> Database:
        return cls(
            conf.database.connection,
            conf.database.replica_connection or None,
            EngineOptions.from_config(conf),
        )

    @property
    def dialect_name(self) -> str:
        return self._writer.dialect.name

    @property
    def has_replica(self) -> bool:
        return self._replica is not None

    @property
    def _single_connection(self) -> bool:
        return is_sqlite_memory(self.url)

    @property
    def group_commit(self) -> group_commit.GroupCommitter | None:
        """The primary's :class:`~nubes.db.group_commit.GroupCommitter` (None if unsupported).

        For writes made outside any block of this database (see
        :meth:`in_block`); the caller then calls :meth:`note_write`.
        """
        check_db_access()
        if self._group_commit is None and self._group_commit_supported:
            self._group_commit = group_commit.GroupCommitter(self, self._writer)
        return self._group_commit

    def in_block(self) -> bool:
        """Whether the current task is inside a writer() or reader() block of this database."""
        return self._joinable() is not None

    def note_write(self) -> None:
        """Record that the current context just committed a write outside writer().

        Keeps the read-after-write rule: its stale-tolerant reads stay on the
        primary for ``read_after_write_window`` seconds.
        """
        self._last_write.set(time.monotonic())

    def _joinable(self) -> _Active | None:
        active = _active.get()
        if active is None or active.db is not self or active.task is not _current_task():
            return None
        return active

    @contextlib.asynccontextmanager
    async def writer(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the primary; commits at the end of the outermost block."""
        check_db_access()
        active = self._joinable()
        if active is not None and (active.role == "writer" or self._single_connection):
            yield active.conn
            return
        async with self._open(self._writer, "writer") as conn:
            yield conn
        self._last_write.set(time.monotonic())

    @contextlib.asynccontextmanager
    async def reader(self, allow_stale: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-only unit of work; ``allow_stale`` lets it go to the replica."""
        check_db_access()
        role: Role = "primary"
        if (
            allow_stale
            and self._replica is not None
            and time.monotonic() - self._last_write.get() >= self.options.read_after_write_window
            and time.monotonic() >= self._replica_down_until
        ):
            role = "replica"
        active = self._joinable()
        if active is not None and (
            active.role in ("writer", "primary") or active.role == role or self._single_connection
        ):
            yield active.conn
            return
        connected: AsyncConnection | None = None
        if role == "replica":
            assert self._replica is not None
            try:
                connected = await _connect(self._replica)
            except exception.DBConnectionError as exc:
                # The data may be stale, not missing: the primary has it too.
                self._replica_lost(exc)
                role = "primary"
        engine = self._replica if role == "replica" else self._primary_reader
        assert engine is not None
        async with self._open(engine, role, connected) as conn:
            yield conn

    def _replica_lost(self, exc: BaseException) -> None:
        if time.monotonic() >= self._replica_down_until:
            LOG.warning(
                "Database replica %s unreachable (%s); reads go to the primary for %.0f s",
                self.replica_url.render_as_string() if self.replica_url else "?",
                exc,
                REPLICA_RETRY_AFTER,
            )
        self._replica_down_until = time.monotonic() + REPLICA_RETRY_AFTER

    @contextlib.asynccontextmanager
    async def _open(
        self, engine: AsyncEngine, role: Role, connected: AsyncConnection | None = None
    ) -> AsyncIterator[AsyncConnection]:
        conn = connected if connected is not None else await _connect(engine)
        if role != "writer" and engine.dialect.name == "postgresql":
            # A read block in READ COMMITTED gets no snapshot across its
            # statements anyway, so BEGIN and ROLLBACK buy it nothing but two
            # round trips; without them a one-statement read (authorising a
            # host's call, listing claimable tasks) is one round trip. asyncpg
            # sets this on the connection without a round trip, and the pool
            # puts the default back when the connection is returned.
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        self.route_counts[role] += 1
        token = _active.set(_Active(self, conn, role, _current_task()))
        try:
            try:
                await conn.begin()
                conn.info.pop(errors.FAILED_STATEMENT, None)
                yield conn
            except BaseException as exc:
                if role == "replica" and isinstance(exc, exception.DBConnectionError):
                    self._replica_lost(exc)
                metrics.db_transactions.labels(role, "rollback").inc()
                await _quiet_rollback(conn)
                raise
            if conn.info.pop(errors.FAILED_STATEMENT, False) and role == "writer":
                metrics.db_transactions.labels(role, "rollback").inc()
                await _quiet_rollback(conn)
                raise exception.DBError(
                    reason="a statement failed in this transaction and its error was "
                    "caught inside the block; the transaction was rolled back"
                )
            try:
                metrics.db_transactions.labels(role, "commit" if role == "writer" else "read").inc()
                if role == "writer":
                    await conn.commit()
                else:
                    # Nothing to keep; rollback ends a read snapshot cheapest.
                    await conn.rollback()
            except (OSError, TimeoutError) as exc:
                raise _connection_error(exc) from exc
        finally:
            _active.reset(token)
            # A close failing on a dead link must not mask the error in flight.
            with contextlib.suppress(Exception):
                await conn.close()

    async def run_in_writer(
        self,
        fn: Callable[Concatenate[AsyncConnection, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``fn(conn, ...)`` in a writer transaction, retried on deadlock.

        Galera reports a write conflict between nodes as a deadlock at
        commit; the whole transaction is then safe to run again. Inside an
        enclosing writer no retry is possible (its transaction is lost), so
        the error propagates to whoever opened it.
        """
        if self._joinable() is not None:
            async with self.writer() as conn:
                return await fn(conn, *args, **kwargs)
        delay = DEADLOCK_BACKOFF
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                async with self.writer() as conn:
                    return await fn(conn, *args, **kwargs)
            except exception.DBDeadlock:
                if attempt == DEADLOCK_RETRIES:
                    raise
                LOG.debug("deadlock in %s, retry %d", getattr(fn, "__name__", fn), attempt + 1)
                await asyncio.sleep(delay * (1 + random.random()))
                delay *= 2
        raise AssertionError("unreachable")

    async def dispose(self) -> None:
        if self._group_commit is not None:
            await self._group_commit.close()
        await self._writer.dispose()
        if self._primary_reader is not self._writer:
            await self._primary_reader.dispose()
        if self._replica is not None:
            await self._replica.dispose()


async def _quiet_rollback(conn: AsyncConnection) -> None:
    # The original error matters more than a failed rollback on a dead link.
    with contextlib.suppress(Exception):
        await conn.rollback()


# --- the process-wide database -----------------------------------------------

_default: Database | None = None


def configure(conf: cfg.ConfigOpts) -> Database:
    """Create the process-wide :class:`Database` from ``[database]`` options."""
    global _default
    check_db_access()
    _default = Database.from_config(conf)
    return _default


def get_database() -> Database:
    """The process-wide database, created from the global config on first use."""
    check_db_access()
    if _default is None:
        from nubes import config

        return configure(config.CONF)
    return _default


async def dispose_database() -> None:
    global _default
    if _default is not None:
        db, _default = _default, None
        await db.dispose()
