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
import functools
import uuid as uuid_lib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    case,
    false,
    insert,
    or_,
    select,
    update,
)
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


#: The escape character of :func:`like_pattern`'s patterns (pass as ``escape=``).
LIKE_ESCAPE = "\\"


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own ``%`` and ``_`` literal:
    a name filter without a regular expression's characters is a substring."""
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


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
    # Every instance save and task write passes here: plain set arithmetic
    # on the names (a table's are read once), the loop only to name a culprit.
    names = values.keys()
    columns = _column_names(table)
    if (
        names <= columns
        and names.isdisjoint(PROTECTED_COLUMNS)
        and names.isdisjoint(extra_protected)
    ):
        return
    protected = PROTECTED_COLUMNS.union(extra_protected)
    for key in values:
        if key not in columns:
            raise exception.ValidationError(field=key, reason=f"{table.name} has no such column")
        if key in protected:
            raise exception.ValidationError(field=key, reason="cannot be set directly")


@functools.cache
def _column_names(table: Table) -> frozenset[str]:
    return frozenset(table.c.keys())


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


async def insert_rows(
    conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> list[Row]:
    """Insert several rows (all with the same keys) and return them as stored.

    One statement per page of rows where the backend has INSERT ...
    RETURNING (SQLAlchemy's "insertmanyvalues"); the rows come back in no
    particular order: match them by a key of your own (a uuid).
    """
    if not rows:
        return []
    if not conn.dialect.insert_returning:
        return [await insert_row(conn, table, values) for values in rows]
    # Prebuilt per table: a boot inserts its instances and tasks here, and
    # building and cache-keying a RETURNING of every column cost more than
    # the insert.
    stmt = _INSERTS.get((table.name,), lambda: insert(table).returning(*table.c))
    result = await conn.execute(stmt, [dict(r) for r in rows])
    return [to_row(r) for r in result.mappings().all()]


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


#: :func:`insert_rows`' statements, by table.
_INSERTS = StatementCache()


def prebuilt_update(
    cache: StatementCache,
    table: Table,
    name: str,
    keys: tuple[str, ...],
    where: Callable[[], Sequence[ColumnElement[bool]]],
    *,
    returning: bool,
    exprs: Mapping[str, ColumnElement[Any]] | None = None,
) -> Any:
    """``UPDATE table SET <key> = :_v_<key> ..., <exprs> WHERE live AND <where()>``, built once.

    Cached by ``(name, keys, returning)``: ``where`` and ``exprs`` must depend
    on nothing else (values go in bind parameters). With ``returning`` the
    statement returns every column. Hot paths run the same few shapes
    thousands of times; building and cache-keying them each time costs more
    than running them.
    """

    def build() -> Any:
        values: dict[str, Any] = {key: bindparam(f"_v_{key}") for key in keys}
        values.update(exprs or {})
        stmt = table.update().where(live(table), *where()).values(values)
        return stmt.returning(*table.c) if returning else stmt

    return cache.get((name, keys, returning), build)


def prebuilt_params(values: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """Bind parameters for a :func:`prebuilt_update` statement."""
    params = {f"_v_{key}": value for key, value in values.items()}
    params.update(extra)
    return params


async def run_prebuilt_update(
    conn: AsyncConnection,
    cache: StatementCache,
    table: Table,
    name: str,
    values: Mapping[str, Any],
    where: Callable[[], Sequence[ColumnElement[bool]]],
    params: Mapping[str, Any],
    *,
    key: Callable[[], ColumnElement[bool]],
    exprs: Mapping[str, ColumnElement[Any]] | None = None,
) -> Row | None:
    """:func:`update_row` on a prebuilt statement: the new row, or None if nothing matched.

    ``key()`` alone identifies the row (with the bind parameters in
    ``params``): without UPDATE ... RETURNING the row is read back by it.
    """
    keys = tuple(sorted(values))
    bound = prebuilt_params(values, **params)
    if conn.dialect.update_returning:
        stmt = prebuilt_update(cache, table, name, keys, where, returning=True, exprs=exprs)
        row = (await conn.execute(stmt, bound)).mappings().first()
        return to_row(row) if row is not None else None
    stmt = prebuilt_update(cache, table, name, keys, where, returning=False, exprs=exprs)
    result = await conn.execute(stmt, bound)
    if result.rowcount == 0:
        return None
    readback = cache.get((name, "readback"), lambda: select(table).where(key(), live(table)))
    found = (await conn.execute(readback, dict(params))).mappings().first()
    return to_row(found) if found is not None else None


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
