"""Turning driver errors into the nubes error tree.

:func:`translate` is installed as each engine's ``handle_error`` hook, so the
translation happens where the statement failed and callers only ever catch
:mod:`nubes.exception` classes. Each backend reports the same condition
differently (PostgreSQL by SQLSTATE, MariaDB by error number, SQLite by
message), and the constraint or column names come out of the message.

Unique constraints are named ``uniq_<table>0<col>0<col>`` (Nova's
convention), which lets a duplicate name its table and columns on every
backend; the ``deleted`` column of soft-delete constraints is left out of
the message because it is an implementation detail.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import ExceptionContext

from nubes import exception

#: PostgreSQL SQLSTATEs.
PG_UNIQUE_VIOLATION = "23505"
PG_FOREIGN_KEY_VIOLATION = "23503"
PG_DEADLOCK = "40P01"
PG_SERIALIZATION_FAILURE = "40001"
PG_LOCK_NOT_AVAILABLE = "55P03"
PG_CONNECTION_CLASS = "08"
PG_ADMIN_SHUTDOWN_CLASS = "57P"

#: MariaDB / MySQL error numbers.
MYSQL_DUP_ENTRY = 1062
MYSQL_ROW_IS_REFERENCED = (1451, 1217)
MYSQL_NO_REFERENCED_ROW = (1452, 1216)
MYSQL_LOCK_WAIT_TIMEOUT = 1205
MYSQL_DEADLOCK = 1213
MYSQL_CONNECTION_ERRORS = (1040, 1045, 1049, 2002, 2003, 2005, 2006, 2013, 2055)

_PG_UNIQUE_RE = re.compile(r'unique constraint "([^"]+)"')
_PG_FK_TABLE_RE = re.compile(r'table "([^"]+)"')
_MYSQL_KEY_RE = re.compile(r"for key '(?:[^'.]*\.)?([^']+)'")
_SQLITE_UNIQUE_RE = re.compile(r"UNIQUE constraint failed: (.+)$")


def _columns_from_constraint(name: str) -> tuple[str, list[str]]:
    parts = name.split("0")
    table = parts[0].removeprefix("uniq_") if parts[0].startswith("uniq_") else parts[0]
    return table, [c for c in parts[1:] if c and c != "deleted"]


def _duplicate(
    table: str, columns: list[str], constraint: str | None
) -> exception.DBDuplicateEntry:
    columns = [c for c in columns if c != "deleted"]
    return exception.DBDuplicateEntry(
        table=table, columns=", ".join(columns) or "key", constraint=constraint
    )


def _duplicate_from_constraint(constraint: str) -> exception.DBDuplicateEntry:
    table, columns = _columns_from_constraint(constraint)
    return _duplicate(table, columns, constraint)


def _pg_code(orig: Any) -> str | None:
    for attr in ("sqlstate", "pgcode"):
        code = getattr(orig, attr, None)
        if isinstance(code, str) and code:
            return code
    return None


def _mysql_code(orig: Any) -> int | None:
    # MySQL drivers also carry a SQLSTATE, but it is too coarse (23000 for
    # every integrity error); the error number is what tells them apart.
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _translate_postgres(code: str, message: str) -> Exception | None:
    if code == PG_UNIQUE_VIOLATION:
        match = _PG_UNIQUE_RE.search(message)
        if match:
            return _duplicate_from_constraint(match.group(1))
        return _duplicate("unknown", [], None)
    if code == PG_FOREIGN_KEY_VIOLATION:
        match = _PG_FK_TABLE_RE.search(message)
        return exception.DBReferenceError(
            table=match.group(1) if match else "row", reason=message.splitlines()[0]
        )
    if code in (PG_DEADLOCK, PG_SERIALIZATION_FAILURE, PG_LOCK_NOT_AVAILABLE):
        return exception.DBDeadlock(reason=message.splitlines()[0])
    if code.startswith((PG_CONNECTION_CLASS, PG_ADMIN_SHUTDOWN_CLASS)):
        return exception.DBConnectionError(reason=message.splitlines()[0])
    return None


def _translate_mysql(code: int, message: str) -> Exception | None:
    if code == MYSQL_DUP_ENTRY:
        match = _MYSQL_KEY_RE.search(message)
        if match:
            return _duplicate_from_constraint(match.group(1))
        return _duplicate("unknown", [], None)
    if code in MYSQL_ROW_IS_REFERENCED or code in MYSQL_NO_REFERENCED_ROW:
        return exception.DBReferenceError(table="row", reason=message)
    if code in (MYSQL_DEADLOCK, MYSQL_LOCK_WAIT_TIMEOUT):
        return exception.DBDeadlock(reason=message)
    if code in MYSQL_CONNECTION_ERRORS:
        return exception.DBConnectionError(reason=message)
    return None


def _translate_sqlite(message: str) -> Exception | None:
    match = _SQLITE_UNIQUE_RE.search(message)
    if match:
        qualified = [c.strip() for c in match.group(1).split(",")]
        table = qualified[0].split(".")[0]
        return _duplicate(table, [c.split(".")[-1] for c in qualified], None)
    if "FOREIGN KEY constraint failed" in message:
        return exception.DBReferenceError(table="row", reason=message)
    if "database is locked" in message or "database table is locked" in message:
        return exception.DBDeadlock(reason=message)
    if "readonly database" in message:
        # Only reader connections are query_only: a write went through reader().
        return exception.DBError(reason=f"write through a read-only connection: {message}")
    if "unable to open database file" in message:
        return exception.DBConnectionError(reason=message)
    return None


#: Key in a connection's ``info`` set when a statement failed in its transaction.
FAILED_STATEMENT = "nubes_failed_statement"


def translate(ctx: ExceptionContext) -> Exception | None:
    """``handle_error`` hook: the nubes error for ``ctx``, or None to keep the original."""
    orig = ctx.original_exception
    if not isinstance(orig, Exception):
        # A cancelled task (or Ctrl-C) must stay a cancellation: turned into
        # DBConnectionError it would be caught and retried as an outage, and
        # the task would never stop.
        return None
    if ctx.connection is not None:
        # PostgreSQL aborts the transaction on any failed statement and turns
        # a later COMMIT into a silent ROLLBACK, while SQLite and MariaDB
        # would commit the rest. Remember the failure so Database.writer()
        # refuses to commit on every backend alike.
        ctx.connection.info[FAILED_STATEMENT] = True
    message = str(orig)
    if ctx.is_disconnect:
        return exception.DBConnectionError(reason=message)
    backend = ctx.dialect.name
    translated: Exception | None = None
    if backend == "postgresql":
        pg_code = _pg_code(orig)
        if pg_code is not None:
            translated = _translate_postgres(pg_code, message)
    elif backend in ("mysql", "mariadb"):
        mysql_code = _mysql_code(orig)
        if mysql_code is not None:
            translated = _translate_mysql(mysql_code, message)
    elif backend == "sqlite":
        translated = _translate_sqlite(message)
    if translated is None and ctx.connection is None and not ctx.is_pre_ping:
        # Failed while connecting: whatever the driver said, the DB is unreachable.
        translated = exception.DBConnectionError(reason=message)
    return translated
