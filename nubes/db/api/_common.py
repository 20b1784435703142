"""Helpers shared by the query modules: rows, soft delete, RETURNING, pagination.

Query functions take an open ``AsyncConnection`` (from
``Database.writer()`` or ``Database.reader()``) as their first argument and
return plain dicts, so nothing above the DB layer holds a session or a lazy
ORM object. They are Core statements: the hot paths run one statement each
and SQLAlchemy's compiled cache makes repeating them cheap.

``RETURNING`` is used where the backend has it (PostgreSQL, SQLite, and
MariaDB for INSERT only); elsewhere the row is read back in the same
transaction, which sees its own write.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid as uuid_lib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

from sqlalchemy import ColumnElement, Select, Table, and_, case, false, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.models import NOT_DELETED
from nubes.db.types import utcnow

#: A row as handed out by the query API: column name -> value.
Row: TypeAlias = dict[str, Any]
#: Nova's read_deleted: live rows only, all rows, or deleted rows only.
ReadDeleted: TypeAlias = Literal["no", "yes", "only"]

SortDir: TypeAlias = Literal["asc", "desc"]

#: Columns a caller may never set through an update.
PROTECTED_COLUMNS = frozenset({"id", "created_at", "deleted", "deleted_at"})


class _Unset(enum.Enum):
    UNSET = "UNSET"


#: "Do not check this field" for compare-and-set arguments (None means "must be NULL").
UNSET = _Unset.UNSET
Unset: TypeAlias = Literal[_Unset.UNSET]


def new_uuid() -> str:
    return str(uuid_lib.uuid4())


def now_or(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else utcnow()


def to_row(mapping: RowMapping) -> Row:
    return dict(mapping)


def live(table: Table) -> ColumnElement[bool]:
    return table.c.deleted == NOT_DELETED


def deleted_clause(table: Table, read_deleted: ReadDeleted) -> ColumnElement[bool] | None:
    if read_deleted == "no":
        return live(table)
    if read_deleted == "only":
        return table.c.deleted != NOT_DELETED
    if read_deleted == "yes":
        return None
    raise exception.Invalid(reason=f"read_deleted must be no, yes or only, not {read_deleted!r}")


def where_deleted(stmt: Select[Any], table: Table, read_deleted: ReadDeleted) -> Select[Any]:
    clause = deleted_clause(table, read_deleted)
    return stmt if clause is None else stmt.where(clause)


def check_columns(
    table: Table, values: Mapping[str, Any], *, extra_protected: Iterable[str] = ()
) -> None:
    """Refuse unknown or protected column names before they reach SQL."""
    protected = PROTECTED_COLUMNS.union(extra_protected)
    for key in values:
        if key not in table.c:
            raise exception.ValidationError(field=key, reason=f"{table.name} has no such column")
        if key in protected:
            raise exception.ValidationError(field=key, reason="cannot be set directly")


def match_clause(column: ColumnElement[Any], expected: Any) -> ColumnElement[bool]:
    """``column`` equals ``expected``; a list means any of; None means IS NULL."""
    if isinstance(expected, (list, tuple, set, frozenset)):
        values = list(expected)
        clauses: list[ColumnElement[bool]] = []
        non_null = [v for v in values if v is not None]
        if non_null:
            clauses.append(column.in_(non_null))
        if len(non_null) != len(values):
            clauses.append(column.is_(None))
        if not clauses:
            return false()
        return or_(*clauses) if len(clauses) > 1 else clauses[0]
    if expected is None:
        return column.is_(None)
    return column == expected


def soft_delete_values(table: Table, now: dt.datetime) -> dict[str, Any]:
    # deleted = id keeps unique constraints (which include deleted) free for
    # a new live row with the same name; updated_at is left alone like Nova.
    return {"deleted": table.c.id, "deleted_at": now, "updated_at": table.c.updated_at}


async def soft_delete_where(
    conn: AsyncConnection, table: Table, where: ColumnElement[bool], now: dt.datetime | None = None
) -> int:
    stmt = update(table).where(where, live(table)).values(soft_delete_values(table, now_or(now)))
    result = await conn.execute(stmt)
    return int(result.rowcount)


async def insert_row(conn: AsyncConnection, table: Table, values: Mapping[str, Any]) -> Row:
    """Insert and return the stored row (defaults and generated id included)."""
    stmt = insert(table).values(dict(values))
    if conn.dialect.insert_returning:
        result = await conn.execute(stmt.returning(*table.c))
        return to_row(result.mappings().one())
    result = await conn.execute(stmt)
    key = result.inserted_primary_key
    assert key is not None
    pk_col = next(iter(table.primary_key.columns))
    row = (await conn.execute(select(table).where(pk_col == key[0]))).mappings().one()
    return to_row(row)


async def update_row(
    conn: AsyncConnection,
    table: Table,
    key: ColumnElement[bool],
    values: Mapping[str, Any],
    *,
    conditions: Sequence[ColumnElement[bool]] = (),
) -> Row | None:
    """Update the live row matching ``key`` and ``conditions``; the new row, or None.

    ``key`` alone must identify the row: without UPDATE ... RETURNING the row
    is read back by it, and the conditions may no longer hold after the update.
    """
    stmt = update(table).where(key, live(table), *conditions).values(dict(values))
    if conn.dialect.update_returning:
        result = await conn.execute(stmt.returning(*table.c))
        row = result.mappings().first()
        return to_row(row) if row is not None else None
    result = await conn.execute(stmt)
    if result.rowcount == 0:
        return None
    row = (await conn.execute(select(table).where(key, live(table)))).mappings().first()
    return to_row(row) if row is not None else None


async def fetch_one(conn: AsyncConnection, stmt: Select[Any]) -> Row | None:
    row = (await conn.execute(stmt)).mappings().first()
    return to_row(row) if row is not None else None


async def fetch_all(conn: AsyncConnection, stmt: Select[Any]) -> list[Row]:
    return [to_row(r) for r in (await conn.execute(stmt)).mappings().all()]


class StatementCache:
    """Prebuilt statements by key, for hot paths that run the same shape often.

    Bounded so that a caller varying the key without limit (every column
    combination) cannot grow it forever; when full it simply starts over.
    """

    LIMIT = 512

    def __init__(self) -> None:
        self._statements: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        stmt = self._statements.get(key)
        if stmt is None:
            if len(self._statements) >= self.LIMIT:
                self._statements.clear()
            stmt = self._statements[key] = build()
        return stmt


# --- pagination --------------------------------------------------------------


def _null_rank(column: ColumnElement[Any]) -> ColumnElement[int]:
    # Backends disagree on where NULLs sort and MariaDB has no NULLS FIRST,
    # so rank them explicitly: NULL first ascending, last descending.
    return case((column.is_(None), 0), else_=1)


def _after_marker(
    table: Table, keys: Sequence[str], dirs: Sequence[SortDir], marker: Row
) -> ColumnElement[bool]:
    """Rows strictly after ``marker`` in the (keys, dirs) order, NULL-safe."""
    alternatives: list[ColumnElement[bool]] = []
    for i, key in enumerate(keys):
        equal_prefix: list[ColumnElement[bool]] = []
        for prev in keys[:i]:
            col, value = table.c[prev], marker[prev]
            equal_prefix.append(col.is_(None) if value is None else col == value)
        col, value, asc = table.c[key], marker[key], dirs[i] == "asc"
        if value is None:
            after: ColumnElement[bool] = col.is_not(None) if asc else false()
        elif asc:
            after = col > value
        else:
            after = or_(col < value, col.is_(None)) if col.nullable else col < value
        alternatives.append(and_(*equal_prefix, after))
    return or_(*alternatives)


def paginate(
    stmt: Select[Any],
    table: Table,
    sort_keys: Sequence[str],
    sort_dirs: Sequence[SortDir],
    *,
    marker: Row | None = None,
    limit: int | None = None,
) -> Select[Any]:
    """Order ``stmt`` by the keys (id appended as tie-breaker) and page it (keyset).

    Keyset rather than OFFSET: a page costs the same at the end of a long
    listing as at the start, and rows created meanwhile do not shift pages.
    """
    keys = list(sort_keys)
    dirs = list(sort_dirs)
    if len(dirs) < len(keys):
        dirs += [dirs[-1] if dirs else "asc"] * (len(keys) - len(dirs))
    if "id" not in keys:
        keys.append("id")
        dirs.append(dirs[0] if dirs else "asc")
    for key, direction in zip(keys, dirs, strict=True):
        if direction not in ("asc", "desc"):
            raise exception.Invalid(reason=f"sort direction must be asc or desc, not {direction!r}")
        col = table.c[key]
        ordering = [_null_rank(col), col] if col.nullable else [col]
        stmt = stmt.order_by(*[o.asc() if direction == "asc" else o.desc() for o in ordering])
    if marker is not None:
        stmt = stmt.where(_after_marker(table, keys, dirs, marker))
    if limit is not None:
        if limit < 0:
            raise exception.Invalid(reason="limit must not be negative")
        stmt = stmt.limit(limit)
    return stmt


def check_sort_keys(sort_keys: Sequence[str], allowed: Iterable[str]) -> None:
    allowed_set = set(allowed)
    for key in sort_keys:
        if key not in allowed_set:
            raise exception.Invalid(reason=f"cannot sort by {key!r}")
