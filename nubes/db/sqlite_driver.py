"""A leaner aiosqlite adapter for SQLAlchemy: one thread hop per statement.

aiosqlite runs each SQLite call on the connection's own thread, and every
call is a round trip through a queue and the event loop. SQLAlchemy's stock
adapter makes four of them per statement (open a cursor, execute, fetch,
close) and issues BEGIN, COMMIT and the pool's reset-rollback as separate
trips: nine per ``Instance.save()``. On a busy host each trip costs a
thread wake-up, and they dominate the cost of a save.

This adapter runs execute + fetch + close as one function on the aiosqlite
thread, defers the ``BEGIN`` SQLAlchemy emits until the first statement and
sends it in the same trip, and skips COMMIT/ROLLBACK when no transaction is
open (the pool's reset after a commit). A writer save becomes two trips.

:func:`run_batch` goes further for group commit
(:mod:`nubes.db.group_commit`): BEGIN, many statements and COMMIT in one
trip.

It plugs in as the ``module=`` (DBAPI) of the stock aiosqlite dialect, so
SQL, types and error handling stay SQLAlchemy's. It relies on two private
attributes of aiosqlite's Connection (``_execute`` and ``_conn``);
:func:`dbapi` returns None when they are missing and the engine then uses
the stock adapter.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    AsyncAdapt_aiosqlite_ss_cursor,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

LOG = logging.getLogger(__name__)

_Outcome = tuple[Any, list[Any] | None, int, int | None]


def _run(
    raw: sqlite3.Connection,
    begin: str | None,
    operation: str,
    parameters: Any,
    many: bool,
) -> _Outcome:
    """On the aiosqlite thread: [BEGIN;] execute, fetch everything, close."""
    if begin is not None:
        raw.execute(begin)
    cursor = raw.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: OneHopConnection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    async def _async_soft_close(self) -> None:
        # Nothing stays open on the thread: rows were fetched in the same trip.
        return None

    def _submit(self, operation: str, parameters: Any, many: bool) -> None:
        conn: OneHopConnection = self._adapt_connection  # type: ignore[assignment]
        begin = conn.take_pending_begin(operation)
        if begin is _BEGIN_ONLY:
            return
        try:
            outcome: _Outcome = await_(
                self._connection._execute(
                    _run, self._connection._conn, begin, operation, parameters, many
                )
            )
        except Exception as error:
            conn.statement_failed(begin)
            self._adapt_connection._handle_exception(error)
        conn.statement_ran(begin, operation)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows) if rows is not None else collections.deque()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._submit(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._submit(operation, seq_of_parameters, many=True)


class BeginFirstSSCursor(AsyncAdapt_aiosqlite_ss_cursor):
    """The stock streaming cursor, after sending any deferred BEGIN on its own."""

    __slots__ = ()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        conn: OneHopConnection = self._adapt_connection  # type: ignore[assignment]
        conn.flush_begin()
        return super().execute(operation, parameters)


#: Marker: the statement was a BEGIN and has been deferred, nothing to run.
_BEGIN_ONLY = "BEGIN-deferred"


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_in_transaction", "_pending_begin")

    _cursor_cls = OneHopCursor  # type: ignore[assignment]
    _ss_cursor_cls = BeginFirstSSCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._pending_begin: str | None = None
        self._in_transaction = False

    def take_pending_begin(self, operation: str) -> str | None:
        """Defer a BEGIN; hand a deferred one to the next real statement."""
        if operation.lstrip()[:5].upper() == "BEGIN":
            self._pending_begin = operation
            return _BEGIN_ONLY
        begin, self._pending_begin = self._pending_begin, None
        return begin

    def flush_begin(self) -> None:
        begin, self._pending_begin = self._pending_begin, None
        if begin is None:
            return
        raw = self._connection._conn
        try:
            await_(self._connection._execute(raw.execute, begin))
        except Exception as error:
            self._handle_exception(error)
        self._in_transaction = True

    def statement_ran(self, begin: str | None, operation: str) -> None:
        if begin is not None:
            self._in_transaction = True
        word = operation.lstrip()[:8].upper()
        if word.startswith(("COMMIT", "ROLLBACK", "END")):
            self._in_transaction = False

    def statement_failed(self, begin: str | None) -> None:
        # Whether a failed statement left a transaction open is unknowable
        # from here; assume it did. A ROLLBACK with none open is a no-op.
        self._in_transaction = self._in_transaction or begin is not None

    def _finish(self, method: str) -> None:
        self._pending_begin = None
        if not self._in_transaction:
            return
        raw = self._connection._conn
        try:
            await_(self._connection._execute(getattr(raw, method)))
        except Exception as error:
            # A failed COMMIT leaves the transaction open for the ROLLBACK
            # that follows; a failed ROLLBACK leaves nothing worth retrying.
            if method == "rollback":
                self._in_transaction = False
            self._handle_exception(error)
        self._in_transaction = False

    def commit(self) -> None:
        self._finish("commit")

    def rollback(self) -> None:
        self._finish("rollback")


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        if kw.pop("async_creator_fn", None) is not None:
            raise TypeError("async_creator is not supported by the nubes SQLite adapter")
        connection = self.aiosqlite.connect(*arg, **kw)
        thread = getattr(connection, "_thread", None)
        if thread is not None:
            # The thread must not keep the process alive after a missed close.
            thread.daemon = True
        return OneHopConnection(self, await_(connection))


def dbapi() -> OneHopDBAPI | None:
    """The lean DBAPI, or None if this aiosqlite lacks what it relies on."""
    if not all(hasattr(aiosqlite.Connection, name) for name in ("_execute", "_conn")):
        LOG.warning("aiosqlite internals changed; using SQLAlchemy's stock SQLite adapter")
        return None
    return OneHopDBAPI(aiosqlite, sqlite3)


# --- grouped writes ------------------------------------------------------------

#: (sql, args, diagnosis sql or None, diagnosis args) for :func:`run_batch`.
BatchStatement = tuple[str, Any, str | None, Any]
#: (sql, args, required, returning): one statement of a :class:`BatchUnit`.
UnitStatement = tuple[str, Any, bool, bool]


class BatchUnit(list[UnitStatement]):
    """Statements that :func:`run_batch` commits all or none of (a savepoint).

    A *required* statement that matches no row rolls the unit back to its
    savepoint and ends it: its outcome is False. Otherwise the outcome is
    (rowcount, rows returned or None) per statement; a *returning*
    statement's rows are all fetched, and its count is their number.
    """


_SAVEPOINT = "nubes_unit"

#: What :func:`run_batch` gives each statement or unit.
BatchOutcome = tuple[int, Any] | list[tuple[int, Any]] | bool


def _run_unit(raw: sqlite3.Connection, unit: BatchUnit) -> list[tuple[int, Any]] | bool:
    raw.execute(f"SAVEPOINT {_SAVEPOINT}")
    out: list[tuple[int, Any]] = []
    for sql, args, required, returning in unit:
        cursor = raw.execute(sql, args)
        if returning:
            rows: Any = cursor.fetchall()
            count = len(rows)
        else:
            rows, count = None, cursor.rowcount
        if required and count == 0:
            raw.execute(f"ROLLBACK TO {_SAVEPOINT}")
            raw.execute(f"RELEASE {_SAVEPOINT}")
            return False
        out.append((count, rows))
    raw.execute(f"RELEASE {_SAVEPOINT}")
    return out


def _run_batch(
    raw: sqlite3.Connection, begin: str, statements: list[BatchStatement | BatchUnit]
) -> list[BatchOutcome]:
    """On the aiosqlite thread: one transaction, every statement, COMMIT."""
    raw.execute(begin)
    try:
        out: list[BatchOutcome] = []
        for item in statements:
            if isinstance(item, BatchUnit):
                out.append(_run_unit(raw, item))
                continue
            sql, args, diagnose_sql, diagnose_args = item
            count = raw.execute(sql, args).rowcount
            row = None
            if count == 0 and diagnose_sql is not None:
                row = raw.execute(diagnose_sql, diagnose_args).fetchone()
            out.append((count, row))
        raw.execute("COMMIT")
        return out
    except BaseException:
        # A failed COMMIT (busy, I/O) leaves the transaction open too.
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise


async def run_batch(
    connection: aiosqlite.Connection,
    begin: str,
    statements: list[BatchStatement | BatchUnit],
) -> list[BatchOutcome]:
    """Run ``statements`` in one transaction in one trip to the connection's thread.

    Each statement gets (rowcount, diagnosis row): when it matched no row and
    has a diagnosis query, that query's first row, read in the same
    transaction right after it. Each :class:`BatchUnit` gets its own outcome
    (see there). On any error everything is rolled back and the error raised
    (untranslated: callers run the statements again through SQLAlchemy to
    get nubes errors).

    ``connection`` must be checked out of a pool with no transaction open.
    """
    return await connection._execute(_run_batch, connection._conn, begin, statements)
