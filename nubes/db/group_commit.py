"""Group commit: concurrent single-row writes run together in one transaction.

The conductor's hottest path is a compute host saving one field of an
instance (power_state, progress) through ``Instance.save()``. Run one at a
time, each save pays for a whole unit of work: a pool checkout, BEGIN, the
statement through SQLAlchemy's execution machinery, COMMIT, and on SQLite a
thread hop for each of those. That is ~1 ms of CPU per save; the statement
itself is a few tens of microseconds.

Here callers hand in a prepared statement and its arguments and wait; one
writer task takes everything queued, runs it on the primary in *one*
transaction through the driver directly (one thread hop for the whole batch
on SQLite; asyncpg's or asyncmy's cached prepared statements on the servers)
and gives each caller its own outcome: the statement's rowcount and, when
that is 0, a diagnosis row read right after it in the same transaction.

The statements must be *conditional writes that cannot fail* on valid
input (``UPDATE ... WHERE <conditions>``): whether one caller's conditions
hold never affects another's, so per-caller semantics are those of running
them one after the other, which is what the transaction does. If a statement
fails all the same (a value too long, a lock timeout), the batch is rolled
back and every caller is told to run its write alone (a None outcome),
through the ordinary path that translates errors and
retries deadlocks. A write whose commit fails on a server is reported as a
:class:`~nubes.exception.DBConnectionError` (its outcome is unknown), as the
ordinary path would.

**Units** (:meth:`GroupCommitter.execute_unit`, SQLite and PostgreSQL) carry
several statements that must commit together or not at all: a task's step
with what the step wrote (the instance placed, an event), a scheduler claim
(the node's usage and the allocation row), a compute host's event. A
*required* statement that matches nothing undoes the unit's earlier
statements and ends it (its outcome is False) without touching the rest of
the batch: on SQLite the unit runs in a savepoint (no round trip there); on
PostgreSQL it runs without one (SAVEPOINT and RELEASE would be two round
trips per unit, for the rare miss), and a miss after the unit changed rows
rolls the batch's transaction back and runs the batch again without that
unit. A statement may also return rows
(RETURNING, or a plain SELECT: a read inside the batch's transaction). The
units in use only take the common outcome this way; a caller told False or
None runs its writes again the ordinary way, which both finds out why and
says so with the ordinary errors. Elsewhere units are not run (None at
once) and callers take their ordinary path directly.

A caller that is inside a ``Database.writer()`` or ``reader()`` block must
not come here: its block holds a connection (on SQLite, possibly the only
one) and its writes belong to its own transaction.

Batches form by themselves: while one runs, the next callers queue, so a lone
caller waits for nobody and 32 concurrent callers share a transaction.
Items are sorted by row key within a batch (stably, so two writes to the
same row keep their order) so that concurrent batches on a server lock rows
in one order and cannot deadlock each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from sqlalchemy.engine import Dialect as SQLDialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from nubes import exception, metrics
from nubes.db import sqlite_driver

#: What a grouped unit's statements are compiled for; callers above the database layer
#: name it by this alias so that only ``nubes/db`` imports SQLAlchemy.
Dialect: TypeAlias = SQLDialect

if TYPE_CHECKING:
    from nubes.db.engine import Database

LOG = logging.getLogger(__name__)

#: Most writes run in one transaction; more wait for the next batch.
DEFAULT_MAX_BATCH = 128
#: Writer tasks per server database (SQLite has one writer anyway).
DEFAULT_SERVER_WRITERS = 2


#: (rowcount, diagnosis row or None); None tells the caller that its batch
#: failed and was rolled back: run the write again alone, the ordinary way.
Outcome = tuple[int, tuple[Any, ...] | None] | None


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled once for one dialect: SQL text and how to bind it.

    Every bind parameter must be supplied by the caller by name (constants
    belong in the SQL as literals), and none may be an expanding IN list.
    A statement that returns rows (RETURNING, SELECT) also knows its
    columns and how to convert their values (:meth:`row`).
    """

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    columns: tuple[str, ...] = ()
    result_processors: tuple[Callable[[Any], Any] | None, ...] = ()
    # (name, processor) pairs, zipped once: args() and row() run for every
    # statement of every grouped write, the pairing never changes.
    _binds: tuple[tuple[str, Callable[[Any], Any] | None], ...] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    _results: tuple[tuple[str, Callable[[Any], Any] | None], ...] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        binds = tuple(zip(self.names, self.processors, strict=True))
        results = tuple(zip(self.columns, self.result_processors, strict=True))
        object.__setattr__(self, "_binds", binds)
        object.__setattr__(self, "_results", results)

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            [params[name] if proc is None else proc(params[name]) for name, proc in self._binds]
        )

    def row(self, raw: Sequence[Any]) -> dict[str, Any]:
        """A row this statement returned, as the query API hands rows out."""
        return {
            name: value if proc is None else proc(value)
            for (name, proc), value in zip(self._results, raw, strict=True)
        }


def prepare(stmt: ClauseElement, dialect: Dialect) -> Prepared:
    """Compile ``stmt`` for ``dialect`` into positional SQL and bind processors."""
    compiled = stmt.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    names = tuple(compiled.positiontup or ())
    if not names and compiled.binds:
        raise ValueError(f"{dialect.paramstyle} is not a positional paramstyle")
    if "POSTCOMPILE" in compiled.string:
        raise ValueError("expanding parameters cannot be prepared; bind each value")
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    results = compiled._result_columns
    columns = tuple(entry.keyname for entry in results)
    result_processors = tuple(
        entry.type.dialect_impl(dialect).result_processor(dialect, None) for entry in results
    )
    return Prepared(compiled.string, names, processors, columns, result_processors)


@dataclasses.dataclass(frozen=True, slots=True)
class UnitStatement:
    """One statement of a unit (:meth:`GroupCommitter.execute_unit`)."""

    write: Prepared
    args: tuple[Any, ...]
    #: The unit is rolled back unless this statement matches (or returns) a row.
    required: bool = True
    #: Fetch the rows it returns (RETURNING).
    returning: bool = False


#: A unit's outcome: (rowcount, rows returned or None) per statement when it
#: committed; False when a required statement matched nothing and the unit was
#: rolled back (nothing of it happened); None when its batch failed: run the
#: writes again alone, the ordinary way, either way to learn what happened.
UnitOutcome = list[tuple[int, list[tuple[Any, ...]] | None]] | Literal[False] | None


#: What a :class:`Write` does when its statement matched nothing, on the
#: ordinary path: raise what that means (the lease lost, the instance's
#: conflict ...) or accept it (then the rest of the commit goes on).
Missed = Callable[[AsyncConnection], Awaitable[None]]

#: Prepared forms of :class:`Write` statements, by (shape, dialect, driver).
_PREPARED: dict[tuple[Hashable, str, str], Prepared] = {}
_PREPARED_LIMIT = 1024


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Write:
    """One conditional write, described once by ``db/api``; the database layer runs it.

    ``build()`` gives the statement (an UPDATE, an INSERT ... SELECT, or a
    SELECT that must find a row), every parameter bound by name from
    ``params``; ``shape`` names what ``build`` builds, for the caches. The
    same statement runs either on a connection (:meth:`run`) or as part of
    a grouped unit (:meth:`statement`): there is no second copy of the SQL
    to drift. ``missed`` says what matching nothing means (None: nothing,
    the write is optional); in a unit a write with ``missed`` is required,
    and a miss rolls the unit back so that the ordinary path, which calls
    ``missed``, finds out why.
    """

    shape: Hashable
    build: Callable[[], Any]
    params: Mapping[str, Any]
    missed: Missed | None = None
    #: The statement is a read (SELECT): it matches when it returns a row.
    read: bool = False

    async def run(self, conn: AsyncConnection) -> bool:
        """Run it in ``conn``'s transaction; whether it matched (after ``missed``)."""
        matched = await self.execute(conn)
        if not matched and self.missed is not None:
            await self.missed(conn)
        return matched

    async def execute(self, conn: AsyncConnection) -> bool:
        """Run it in ``conn``'s transaction; whether it matched (``missed`` not called)."""
        return await self.count(conn) > 0

    async def count(self, conn: AsyncConnection) -> int:
        """Run it in ``conn``'s transaction: the rows it matched (a read: whether
        it found one) (``missed`` not called)."""
        stmt = _statement(self.shape, self.build)
        result = await conn.execute(stmt, dict(self.params))
        if self.read:
            return int(result.first() is not None)
        return int(result.rowcount)

    def statement(self, dialect: Dialect) -> UnitStatement:
        """The same write as a statement of a grouped unit."""
        prepared = _prepared(self.shape, self.build, dialect)
        return UnitStatement(
            prepared,
            prepared.args(self.params),
            required=self.missed is not None,
            returning=self.read,
        )


#: SQLAlchemy forms of :class:`Write` and :class:`Read` statements, by shape.
_STATEMENTS: dict[Hashable, Any] = {}


def _statement(shape: Hashable, build: Callable[[], Any]) -> Any:
    stmt = _STATEMENTS.get(shape)
    if stmt is None:
        if len(_STATEMENTS) >= _PREPARED_LIMIT:
            _STATEMENTS.clear()
        stmt = _STATEMENTS[shape] = build()
    return stmt


def _prepared(shape: Hashable, build: Callable[[], Any], dialect: Dialect) -> Prepared:
    key = (shape, dialect.name, dialect.driver)
    prepared = _PREPARED.get(key)
    if prepared is None:
        if len(_PREPARED) >= _PREPARED_LIMIT:
            _PREPARED.clear()
        prepared = _PREPARED[key] = prepare(build(), dialect)
    return prepared


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Read:
    """One single-row read on the primary, described once by ``db/api`` (see :func:`fetch`).

    ``build()`` gives the SELECT, every parameter bound by name from
    ``params``; ``shape`` names it for the caches, as for :class:`Write`.
    """

    shape: Hashable
    build: Callable[[], Any]
    params: Mapping[str, Any]

    async def run(self, conn: AsyncConnection) -> dict[str, Any] | None:
        """Run it in ``conn``'s transaction: the first row, or None."""
        stmt = _statement(self.shape, self.build)
        found = (await conn.execute(stmt, dict(self.params))).mappings().first()
        return dict(found) if found is not None else None

    def statement(self, dialect: Dialect) -> UnitStatement:
        """The same read as a statement of a grouped unit (never required)."""
        prepared = _prepared(self.shape, self.build, dialect)
        return UnitStatement(prepared, prepared.args(self.params), required=False, returning=True)


async def fetch(db: Database, key: str, read: Read) -> dict[str, Any] | None:
    """The row ``read`` finds on the primary (None if none): :func:`fetch_together` of one."""
    return (await fetch_together(db, key, [read]))[0]


async def fetch_together(
    db: Database, key: str, reads: Sequence[Read]
) -> list[dict[str, Any] | None]:
    """The row each of ``reads`` finds on the primary (None if none), read in
    one transaction: the one place that decides how.

    As a unit of the next grouped batch where the backend runs units (the
    reads then share that batch's transaction and, on SQLite, its one
    thread hop; a caller reading to decide a conditional write pays no
    transaction of its own); else in a read of the primary of its own
    (joining the caller's block, if it is in one). ``key`` orders the
    batch, as for :func:`commit`.
    """
    committer = db.group_commit if not db.in_block() else None
    if committer is not None and committer.units:
        statements = [read.statement(committer.dialect) for read in reads]
        outcome = await committer.execute_unit(key, statements)
        if outcome:
            return [
                statement.write.row(rows[0]) if rows else None
                for statement, (_, rows) in zip(statements, outcome, strict=True)
            ]
    async with db.reader() as conn:
        return [await read.run(conn) for read in reads]


#: What a commit writes: descriptions (:class:`Write`, groupable), reads whose
#: rows it returns (:class:`Read`, groupable) and, for what has no
#: single-statement form, functions of the transaction's connection.
CommitPart = Write | Read | Callable[[AsyncConnection], Awaitable[Any]]


async def commit(
    db: Database, key: str, writes: Sequence[CommitPart]
) -> list[dict[str, Any] | None]:
    """Commit ``writes`` together, in order: all of them or none.

    The one place that decides how: as one unit of a grouped batch where
    the backend runs units and every part is a description (a miss or a
    failed batch there writes nothing, and the ordinary path runs next);
    else in a writer transaction of their own (joining the caller's block,
    if it is in one; run again after a deadlock when every part is a
    description), where each write's ``missed`` raises or accepts.
    ``key`` names the row most written (orders the batch). Returns the row
    each :class:`Read` among ``writes`` found (None if none), in order: read
    in the same transaction, after the writes before it.
    """
    grouped = await commit_grouped(db, key, writes)
    if grouped is not None:
        return grouped

    async def ordinary(conn: AsyncConnection) -> list[dict[str, Any] | None]:
        found: list[dict[str, Any] | None] = []
        for w in writes:
            if isinstance(w, Read):
                found.append(await w.run(conn))
            elif isinstance(w, Write):
                await w.run(conn)
            else:
                await w(conn)
        return found

    if all(isinstance(w, Write | Read) for w in writes):
        # Descriptions hold their values: the whole transaction can run
        # again after a deadlock (Galera's write conflict at commit).
        return await db.run_in_writer(ordinary)
    async with db.writer() as conn:
        return await ordinary(conn)


async def commit_grouped(
    db: Database, key: str, writes: Sequence[CommitPart]
) -> list[dict[str, Any] | None] | None:
    """:func:`commit` grouped only: the rows of its reads once it committed,
    or None when it did not run that way (not grouped here, a write missed,
    the batch failed: nothing of it was written). A lone write joins a batch
    as a plain statement (every backend the committer serves); several, or
    reads, as a unit (where the backend runs units). A caller that must
    learn why runs the same descriptions its ordinary way next."""
    if db.in_block() or not all(isinstance(w, Write | Read) for w in writes):
        return None
    committer = db.group_commit
    if committer is None:
        return None
    dialect = committer.dialect
    if len(writes) == 1 and isinstance(writes[0], Write) and not writes[0].read:
        # One conditional statement needs no savepoint: it joins a batch as
        # a plain statement, on every backend the committer serves.
        statement = writes[0].statement(dialect)
        single = await committer.execute(key, statement.write, statement.args)
        if single is None or single[0] == 0:
            return None
        db.note_write()
        return []
    if not committer.units:
        return None
    unit = [w.statement(dialect) for w in writes if isinstance(w, Write | Read)]
    outcome = await committer.execute_unit(key, unit)
    if not outcome:
        return None
    db.note_write()
    found: list[dict[str, Any] | None] = []
    for w, statement, (_, rows) in zip(writes, unit, outcome, strict=True):
        if isinstance(w, Read):
            found.append(statement.write.row(rows[0]) if rows else None)
    return found


@dataclasses.dataclass(slots=True)
class _Item:
    key: str
    write: Prepared | None
    args: tuple[Any, ...]
    diagnose: Prepared | None
    diagnose_args: tuple[Any, ...]
    future: asyncio.Future[Any]
    #: Set for a unit (then ``write`` is None).
    unit: tuple[UnitStatement, ...] | None = None


class _CommitFailed(Exception):
    pass


# --- per-backend batch runners -----------------------------------------------
# Each gets a driver connection checked out of the writer pool and runs the
# items in one transaction, returning one (rowcount, diagnosis) per item. A
# failing statement raises after rolling back; a failing COMMIT raises
# _CommitFailed.


def _sqlite_item(item: _Item) -> sqlite_driver.BatchStatement | sqlite_driver.BatchUnit:
    if item.unit is not None:
        return sqlite_driver.BatchUnit(
            (s.write.sql, s.args, s.required, s.returning) for s in item.unit
        )
    assert item.write is not None
    return (
        item.write.sql,
        item.args,
        item.diagnose.sql if item.diagnose else None,
        item.diagnose_args,
    )


async def _run_sqlite(driver_conn: Any, items: Sequence[_Item]) -> list[Any]:
    # Any failure, COMMIT's included, is rolled back on the thread: running
    # the writes again alone is then safe.
    batch = [_sqlite_item(i) for i in items]
    return await sqlite_driver.run_batch(driver_conn, "BEGIN IMMEDIATE", batch)


def _pg_rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 1".
    return int(status.rpartition(" ")[2] or 0)


#: What :func:`_pg_unit` returns when a required statement missed after the
#: unit had changed rows: only rolling the batch's transaction back undoes them.
_UNDO = object()


async def _pg_unit(pg: Any, unit: Sequence[UnitStatement]) -> Any:
    """One unit, run in the batch's transaction (see :data:`UnitOutcome`), or
    :data:`_UNDO`.

    No savepoint: SAVEPOINT and RELEASE are two round trips per unit (on a
    build, a third of the conductor's statements), spent only for a miss,
    which is rare. A miss before the unit changed anything leaves nothing to
    undo (False); a later one returns _UNDO and the batch runs again without
    the unit (:func:`_run_postgresql`).
    """
    out: list[tuple[int, list[tuple[Any, ...]] | None]] = []
    touched = False
    for statement in unit:
        rows: list[tuple[Any, ...]] | None = None
        if statement.returning:
            rows = [tuple(r) for r in await pg.fetch(statement.write.sql, *statement.args)]
            count = len(rows)
        else:
            count = _pg_rowcount(await pg.execute(statement.write.sql, *statement.args))
        if statement.required and count == 0:
            return _UNDO if touched else False
        # Rows returned may come from an UPDATE ... RETURNING: counted as changed.
        touched = touched or count > 0
        out.append((count, rows))
    return out


async def _run_postgresql(pg: Any, items: Sequence[_Item]) -> list[Any]:
    if len(items) == 1 and items[0].unit is None:
        # A single statement commits by itself: no BEGIN/COMMIT round trips.
        # Its diagnosis then reads a later snapshot, as any READ COMMITTED
        # read after a failed UPDATE does.
        item = items[0]
        assert item.write is not None
        count = _pg_rowcount(await pg.execute(item.write.sql, *item.args))
        row = None
        if count == 0 and item.diagnose is not None:
            record = await pg.fetchrow(item.diagnose.sql, *item.diagnose_args)
            row = tuple(record) if record is not None else None
        return [(count, row)]
    # Units that missed after changing rows: each costs one more run of the
    # batch, which leaves it out (its outcome False), so this ends.
    undone: set[int] = set()
    while True:
        out = await _pg_batch(pg, items, undone)
        if out is not None:
            return out


async def _pg_batch(pg: Any, items: Sequence[_Item], undone: set[int]) -> list[Any] | None:
    """Run ``items`` in one transaction; None when a unit had to be undone
    (added to ``undone``, the transaction rolled back)."""
    transaction = pg.transaction()
    await transaction.start()
    try:
        out: list[Any] = []
        for index, item in enumerate(items):
            if item.unit is not None:
                if index in undone:
                    out.append(False)
                    continue
                outcome = await _pg_unit(pg, item.unit)
                if outcome is _UNDO:
                    undone.add(index)
                    await transaction.rollback()
                    return None
                out.append(outcome)
                continue
            assert item.write is not None
            count = _pg_rowcount(await pg.execute(item.write.sql, *item.args))
            row = None
            if count == 0 and item.diagnose is not None:
                record = await pg.fetchrow(item.diagnose.sql, *item.diagnose_args)
                row = tuple(record) if record is not None else None
            out.append((count, row))
    except BaseException:
        with contextlib.suppress(Exception):
            await transaction.rollback()
        raise
    try:
        await transaction.commit()
    except Exception as exc:
        raise _CommitFailed(str(exc)) from exc
    return out


async def _run_mysql(my: Any, items: Sequence[_Item]) -> list[Any]:
    # The pool's connections run with autocommit off: the first statement
    # opens the transaction. SQLAlchemy's MySQL dialects connect with
    # CLIENT.FOUND_ROWS, so rowcount counts matched rows, not changed ones.
    out: list[Any] = []
    try:
        async with my.cursor() as cursor:
            for item in items:
                assert item.write is not None
                count = await cursor.execute(item.write.sql, item.args)
                row = None
                if count == 0 and item.diagnose is not None:
                    await cursor.execute(item.diagnose.sql, item.diagnose_args)
                    fetched = await cursor.fetchone()
                    row = tuple(fetched) if fetched is not None else None
                out.append((count, row))
    except BaseException:
        with contextlib.suppress(Exception):
            await my.rollback()
        raise
    try:
        await my.commit()
    except Exception as exc:
        raise _CommitFailed(str(exc)) from exc
    return out


_RUNNERS = {"sqlite": _run_sqlite, "postgresql": _run_postgresql, "mysql": _run_mysql}
#: Backends whose runner takes units (all or nothing inside the batch's transaction).
#: Not MySQL/MariaDB: some units return rows from an UPDATE (RETURNING), which
#: MariaDB has only for INSERT and DELETE.
_UNIT_BACKENDS = frozenset({"sqlite", "postgresql"})


def supported(engine: AsyncEngine) -> bool:
    """Whether writes on ``engine`` can be grouped (known backend and driver)."""
    dialect = engine.dialect
    if dialect.name == "sqlite":
        return dialect.driver == "aiosqlite"
    return (dialect.name, dialect.driver) in (("postgresql", "asyncpg"), ("mysql", "asyncmy"))


class GroupCommitter:
    """Queues conditional single-row writes and commits them in batches."""

    def __init__(
        self,
        db: Database,
        engine: AsyncEngine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        writers: int | None = None,
    ) -> None:
        self._db = db
        self._engine = engine
        self.dialect = engine.dialect
        self._runner = _RUNNERS[self.dialect.name]
        self.max_batch = max_batch
        if writers is None:
            writers = 1 if self.dialect.name == "sqlite" else DEFAULT_SERVER_WRITERS
        self.writers = writers
        #: Whether :meth:`execute_unit` runs units here (SQLite, PostgreSQL;
        #: elsewhere callers take their ordinary path). A benchmark may turn
        #: it off to compare.
        self.units = self.dialect.name in _UNIT_BACKENDS
        self._pending: list[_Item] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._closing = False
        #: Batches and writes committed; for tests and operators.
        self.batches = 0
        self.writes = 0

    async def execute(
        self,
        key: str,
        write: Prepared,
        args: tuple[Any, ...],
        diagnose: Prepared | None = None,
        diagnose_args: tuple[Any, ...] = (),
    ) -> Outcome:
        """Run ``write`` in the next batch: (rowcount, diagnosis row) or None.

        ``key`` names the row written (its uuid): it orders the batch.
        ``diagnose`` runs right after ``write`` in the same transaction if
        that matched no row; its first row (or None) is returned.
        """
        outcome: Outcome = await self._queue(
            _Item(key, write, args, diagnose, diagnose_args, self._future())
        )
        return outcome

    async def execute_unit(self, key: str, statements: Sequence[UnitStatement]) -> UnitOutcome:
        """Run ``statements`` in the next batch, all or none of them (see :data:`UnitOutcome`).

        For writes that belong together (a task's step and what it does to
        its instance): a required statement that matches nothing undoes
        the unit's earlier statements and nothing else (see the module's
        docstring for how, per backend). Returns None at
        once on a backend that cannot run units (:attr:`units`).
        """
        if not self.units or not statements:
            return None
        item = _Item(key, None, (), None, (), self._future(), tuple(statements))
        outcome: UnitOutcome = await self._queue(item)
        return outcome

    def _future(self) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._start(loop)
        elif not self._closing and any(task.done() for task in self._tasks):
            # A writer that ended (cancelled under us, or a bug) is replaced
            # now, not once every writer is gone: a caller must never queue
            # behind fewer writers than the backend was given.
            self._replace_dead(loop)
        return loop.create_future()

    async def _queue(self, item: _Item) -> Any:
        self._pending.append(item)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        return await item.future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        # A new event loop (the old one closed, e.g. between tests): what was
        # queued on the old one can never run.
        self._loop = loop
        self._pending = []
        self._spawn(loop)

    def _spawn(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wakeup = None
        self._tasks = [self._writer_task(loop, n) for n in range(self.writers)]

    def _writer_task(self, loop: asyncio.AbstractEventLoop, n: int) -> asyncio.Task[None]:
        # A context of its own: a writer serves every caller, so it must not
        # run in (and outlive inside) the context of the caller that woke it.
        return loop.create_task(
            self._write_loop(), name=f"nubes-group-commit-{n}", context=contextvars.Context()
        )

    def _replace_dead(self, loop: asyncio.AbstractEventLoop) -> None:
        alive: list[asyncio.Task[None]] = []
        for n, task in enumerate(self._tasks):
            if not task.done():
                alive.append(task)
                continue
            if not task.cancelled() and task.exception() is not None:
                LOG.error(
                    "group commit writer %s died; replaced",
                    task.get_name(),
                    exc_info=task.exception(),
                )
            alive.append(self._writer_task(loop, n))
        self._tasks = alive

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    if self._wakeup is None or self._wakeup.done():
                        self._wakeup = loop.create_future()
                    await self._wakeup
                    continue
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                batch = [item for item in batch if not item.future.done()]
                if batch:
                    try:
                        await self._run(batch)
                    except Exception:
                        # A bug here must cost one batch, not the writer: a
                        # dead writer leaves every later caller waiting.
                        LOG.exception("group commit writer failed on a batch of %d", len(batch))
        except asyncio.CancelledError:
            # The loop is shutting down under us: whoever still waits runs alone.
            self._settle(self._pending, None)
            self._pending = []
            raise

    @staticmethod
    def _settle(items: Sequence[_Item], outcome: Outcome) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_result(outcome)

    async def _run(self, batch: list[_Item]) -> None:
        """Run one batch and settle every one of its callers, whatever happens.

        Rolled back or never started: each caller is told to run its write
        alone (None). Committed, or not known whether: a caller that got no
        outcome is told its write's fate is unknown (DBConnectionError),
        never to run it again.
        """
        batch.sort(key=lambda item: item.key)
        committed = False
        try:
            try:
                outcomes = await self._run_batch(batch)
            except _CommitFailed as exc:
                committed = True  # not known: the commit may have reached the server
                raise exception.DBConnectionError(
                    reason=f"commit of grouped writes failed: {exc}"
                ) from exc
            except Exception as exc:
                LOG.debug(
                    "grouped writes failed (%s: %s); running them one by one",
                    type(exc).__name__,
                    exc,
                )
                return
            committed = True
            self.batches += 1
            self.writes += len(batch)
            metrics.db_grouped_commits.inc()
            metrics.db_grouped_writes.inc(len(batch))
            if len(outcomes) != len(batch):
                raise exception.DBError(
                    reason=f"{len(outcomes)} outcomes for a batch of {len(batch)} grouped writes"
                )
            for item, outcome in zip(batch, outcomes, strict=True):
                if not item.future.done():
                    item.future.set_result(outcome)
        except exception.DBConnectionError as exc:
            self._fail(batch, exc)
        finally:
            if committed:
                # Built only when a caller is still waiting: every committed
                # batch passes here, and almost always all were answered.
                if not all(item.future.done() for item in batch):
                    self._fail(
                        batch,
                        exception.DBConnectionError(reason="grouped writes: outcome not delivered"),
                    )
            else:
                self._settle(batch, None)

    @staticmethod
    def _fail(items: Sequence[_Item], error: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)

    async def _run_batch(self, batch: list[_Item]) -> list[Any]:
        conn = await self._engine.connect()
        try:
            self._db.route_counts["writer"] += 1
            raw = await conn.get_raw_connection()
            try:
                return await self._runner(raw.driver_connection, batch)
            except BaseException:
                if self.dialect.name != "sqlite":
                    # The link may be in any state; a new one is cheap. (An
                    # SQLite memory database would die with its connection.)
                    with contextlib.suppress(Exception):
                        await conn.invalidate()
                raise
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        """Let the writer tasks finish what is queued, then stop them.

        Draining instead of cancelling: a batch cancelled half way could not
        tell its callers whether it committed. The committer starts again on
        the next write.
        """
        tasks, self._tasks = self._tasks, []
        loop = self._loop
        if not tasks or loop is None or loop is not asyncio.get_running_loop():
            self._loop = None
            return
        self._closing = True
        try:
            wakeup = self._wakeup
            if wakeup is not None and not wakeup.done():
                wakeup.set_result(None)
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._closing = False
            self._loop = None
            # Queued after the last writer left: those callers run alone.
            self._settle(self._pending, None)
            self._pending = []
