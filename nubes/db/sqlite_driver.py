"""The SQLite driver: one thread per connection, one thread hop per statement.

Each connection is a :class:`ThreadConnection`: a sqlite3 connection owned by
a thread of its own that runs the functions it is sent and hands results back
to the event loop through futures. Every trip costs a thread wake-up, and
trips dominate the cost of a save on a busy host, so the adapter makes as few
as it can. SQLAlchemy's stock aiosqlite adapter makes four per statement
(open a cursor, execute, fetch, close) and issues BEGIN, COMMIT and the pool's
reset-rollback as separate trips: nine per ``Instance.save()``.

This adapter runs execute + fetch + close as one function on the thread,
defers the ``BEGIN`` SQLAlchemy emits until the first statement and sends it
in the same trip, and skips COMMIT/ROLLBACK when no transaction is open (the
pool's reset after a commit). A writer save becomes two trips.

:func:`run_batch` goes further for group commit
(:mod:`nubes.db.group_commit`): BEGIN, many statements and COMMIT in one
trip.

It plugs in as the ``module=`` (DBAPI) of the stock aiosqlite dialect, so
SQL, types and error handling stay SQLAlchemy's; of aiosqlite itself it uses
only the public error names and version the dialect reads.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[Any, list[Any] | None, int, int | None]

#: One call for the thread: (future or None, function, its arguments after
#: the raw connection). None as the function ends the thread.
_Call = tuple["asyncio.Future[Any] | None", Callable[..., Any] | None, tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    # The awaiting task may have been cancelled meanwhile.
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _reply(future: asyncio.Future[Any] | None, result: Any, error: BaseException | None) -> None:
    if future is None:
        return
    try:
        future.get_loop().call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:
        # The loop is closed: nobody is waiting any more.
        pass


class ThreadConnection:
    """A sqlite3 connection used only from a dedicated thread.

    :meth:`run` sends ``fn(raw_connection, *args)`` to the thread and awaits
    its result; calls run one at a time in the order sent, so a sequence of
    sends is a sequence of statements on the one connection. The sqlite3
    connection never leaves its thread except through :meth:`run`.
    """

    def __init__(self) -> None:
        self._calls: SimpleQueue[_Call] = SimpleQueue()
        self._raw: sqlite3.Connection | None = None
        self._open = False
        # Daemon: a connection missed by close() must not keep the process alive.
        self._thread = threading.Thread(target=self._work, name="nubes-sqlite", daemon=True)

    @classmethod
    async def connect(cls, *args: Any, **kwargs: Any) -> ThreadConnection:
        """Open ``sqlite3.connect(*args, **kwargs)`` on a new thread."""
        conn = cls()
        conn._thread.start()
        future = asyncio.get_running_loop().create_future()
        conn._calls.put((future, conn._open_raw, (args, kwargs)))
        try:
            await future
        except BaseException:
            conn.stop()
            raise
        conn._open = True
        return conn

    def _open_raw(self, _: None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._raw = sqlite3.connect(*args, **kwargs)

    def _work(self) -> None:
        calls = self._calls
        while True:
            future, fn, args = calls.get()
            if fn is None:
                return
            try:
                result = fn(self._raw, *args)
            except BaseException as error:  # handed to the awaiting task
                _reply(future, None, error)
            else:
                _reply(future, result, None)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(raw, *args)`` on the connection's thread; its result or error."""
        if not self._open:
            # The dialect reads this message as a disconnect.
            raise ValueError("Connection closed")
        future = asyncio.get_running_loop().create_future()
        self._calls.put((future, fn, args))
        return await future

    @property
    def isolation_level(self) -> str | None:
        # An attribute read, which sqlite3 allows from any thread.
        return self._raw.isolation_level if self._raw is not None else None

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        await self.run(lambda raw: raw.create_function(*args, **kwargs))

    @staticmethod
    def _close_raw(raw: sqlite3.Connection | None) -> None:
        if raw is not None:
            raw.close()

    async def close(self) -> None:
        """Close the sqlite3 connection on its thread, then end the thread."""
        if not self._open:
            return
        self._open = False
        future = asyncio.get_running_loop().create_future()
        self._calls.put((future, self._close_raw, ()))
        self._calls.put((None, None, ()))
        await future

    def stop(self) -> None:
        """Close without waiting (garbage collection, a forced terminate)."""
        self._open = False
        self._calls.put((None, self._close_raw, ()))
        self._calls.put((None, None, ()))


def _run(
    raw: sqlite3.Connection,
    begin: str | None,
    operation: str,
    parameters: Any,
    many: bool,
) -> _Outcome:
    """On the connection's thread: [BEGIN;] execute, fetch everything, close."""
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
    """Every statement is one trip that fetches all its rows.

    Also the server-side cursor: SQLite rows come from a local file, so
    streaming them saves no round trip and would cost one per fetch.
    """

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
            outcome: _Outcome = await_(conn.thread.run(_run, begin, operation, parameters, many))
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


#: Marker: the statement was a BEGIN and has been deferred, nothing to run.
_BEGIN_ONLY = "BEGIN-deferred"


def _set_isolation_level(raw: sqlite3.Connection, value: Any) -> None:
    raw.isolation_level = value


def _commit(raw: sqlite3.Connection) -> None:
    raw.commit()


def _rollback(raw: sqlite3.Connection) -> None:
    raw.rollback()


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_in_transaction", "_pending_begin")

    _cursor_cls = OneHopCursor  # type: ignore[assignment]
    _ss_cursor_cls = OneHopCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: ThreadConnection) -> None:
        super().__init__(dbapi, connection)  # type: ignore[arg-type]
        self._pending_begin: str | None = None
        self._in_transaction = False

    @property
    def thread(self) -> ThreadConnection:
        return self._connection  # type: ignore[return-value]

    @property
    def isolation_level(self) -> str | None:
        return self.thread.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        try:
            await_(self.thread.run(_set_isolation_level, value))
        except Exception as error:
            self._handle_exception(error)

    def take_pending_begin(self, operation: str) -> str | None:
        """Defer a BEGIN; hand a deferred one to the next real statement."""
        if operation.lstrip()[:5].upper() == "BEGIN":
            self._pending_begin = operation
            return _BEGIN_ONLY
        begin, self._pending_begin = self._pending_begin, None
        return begin

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

    def _finish(self, method: Callable[[sqlite3.Connection], None]) -> None:
        self._pending_begin = None
        if not self._in_transaction:
            return
        try:
            await_(self.thread.run(method))
        except Exception as error:
            # A failed COMMIT leaves the transaction open for the ROLLBACK
            # that follows; a failed ROLLBACK leaves nothing worth retrying.
            if method is _rollback:
                self._in_transaction = False
            self._handle_exception(error)
        self._in_transaction = False

    def commit(self) -> None:
        self._finish(_commit)

    def rollback(self) -> None:
        self._finish(_rollback)


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def __init__(self) -> None:
        # aiosqlite lends the dialect its public error names and version.
        super().__init__(aiosqlite, sqlite3)
        self.has_stop = True

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        if kw.pop("async_creator_fn", None) is not None:
            raise TypeError("async_creator is not supported by the nubes SQLite adapter")
        return OneHopConnection(self, await_(ThreadConnection.connect(*arg, **kw)))


def dbapi() -> OneHopDBAPI:
    """The DBAPI module to give the aiosqlite dialect (``module=``)."""
    return OneHopDBAPI()


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
    """On the connection's thread: one transaction, every statement, COMMIT."""
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
    connection: ThreadConnection,
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
    return await connection.run(_run_batch, begin, statements)
