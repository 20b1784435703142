"""Moving soft-deleted rows to the shadow tables, and purging those.

A pass walks the soft-deletable tables, children before parents, and in
each picks up to the remaining ``max_rows`` deleted rows (optionally only
those deleted before a date). Each batch moves in one transaction: first the
rows that hang off the batch (an instance's faults, actions and their
events, migrations and finished tasks; a flavor's extra specs and access
list; an aggregate's hosts and metadata; a group's members), then the batch
itself, each as ``INSERT INTO shadow_x SELECT ... WHERE id IN (...)`` then
``DELETE ... WHERE id IN (...)`` over ids read first. Working on ids read
once, never re-evaluating the condition, means a row that appeared between
the copy and the delete is neither lost nor duplicated; if such a row
blocks the parent's delete through a foreign key, the batch rolls back and
the next run picks it up. ``max_rows`` counts the batch rows only, like
Nova: the rows moved along with them come on top.

An instance that still has an active conductor task is not archived: the
task engine would lose track of the operation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.engine import Database
from nubes.db.models import NOT_DELETED, SHADOW_TABLES, conductor_tasks, metadata

#: Nova's default for ``--max-rows``.
DEFAULT_MAX_ROWS = 1000
#: Largest id list bound into one statement (SQLite allows 32766 variables;
#: smaller chunks keep each statement's lock short on MariaDB).
ID_CHUNK = 500

#: parent table -> (child table, child column, parent column): children moved with a batch.
CHILDREN: dict[str, tuple[tuple[str, str, str], ...]] = {
    "instances": (
        ("instance_faults", "instance_uuid", "uuid"),
        ("instance_actions", "instance_uuid", "uuid"),
        ("migrations", "instance_uuid", "uuid"),
        ("conductor_tasks", "instance_uuid", "uuid"),
    ),
    "instance_actions": (("instance_actions_events", "action_id", "id"),),
    "flavors": (("flavor_extra_specs", "flavor_id", "id"), ("flavor_projects", "flavor_id", "id")),
    "aggregates": (
        ("aggregate_hosts", "aggregate_id", "id"),
        ("aggregate_metadata", "aggregate_id", "id"),
    ),
    "instance_groups": (("instance_group_members", "group_id", "id"),),
}
#: Children without history, keyed by the parent's id: deleted outright, not archived.
DROPPED_CHILDREN: dict[str, tuple[tuple[str, str], ...]] = {
    "services": (("service_heartbeats", "service_id"),),
}


@dataclasses.dataclass
class ArchiveResult:
    #: Rows moved per table, batch rows and rows moved along with them.
    archived: Counter[str] = dataclasses.field(default_factory=Counter)
    #: Shadow rows deleted per shadow table (with purge).
    purged: Counter[str] = dataclasses.field(default_factory=Counter)

    @property
    def total_archived(self) -> int:
        return sum(self.archived.values())


def archive_order() -> list[Table]:
    """Soft-deletable tables, children before parents."""
    return [t for t in reversed(metadata.sorted_tables) if t.name in SHADOW_TABLES]


def _chunks(ids: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(ids), ID_CHUNK):
        yield list(ids[start : start + ID_CHUNK])


async def _scalars_in(
    conn: AsyncConnection, column: Any, where_column: Any, values: Sequence[Any]
) -> list[Any]:
    found: list[Any] = []
    for chunk in _chunks(values):
        found.extend((await conn.execute(select(column).where(where_column.in_(chunk)))).scalars())
    return found


async def _move(
    conn: AsyncConnection, table: Table, ids: Sequence[int], moved: Counter[str]
) -> None:
    """Move rows ``ids`` of ``table``, and everything hanging off them, to the shadows."""
    for child_name, child_col, parent_col in CHILDREN.get(table.name, ()):
        child = metadata.tables[child_name]
        keys = (
            ids
            if parent_col == "id"
            else await _scalars_in(conn, table.c[parent_col], table.c.id, ids)
        )
        child_ids = await _scalars_in(conn, child.c.id, child.c[child_col], keys)
        if child_ids:
            await _move(conn, child, child_ids, moved)
    for child_name, child_col in DROPPED_CHILDREN.get(table.name, ()):
        child = metadata.tables[child_name]
        for chunk in _chunks(ids):
            await conn.execute(delete(child).where(child.c[child_col].in_(chunk)))
    shadow = SHADOW_TABLES[table.name]
    names = [c.name for c in table.columns]
    for chunk in _chunks(ids):
        await conn.execute(
            insert(shadow).from_select(names, select(*table.c).where(table.c.id.in_(chunk)))
        )
        result = await conn.execute(delete(table).where(table.c.id.in_(chunk)))
        moved[table.name] += int(result.rowcount)


def _deleted_rows(table: Table, before: dt.datetime | None) -> list[ColumnElement[bool]]:
    conditions = [table.c.deleted != NOT_DELETED]
    if before is not None:
        conditions.append(table.c.deleted_at < before)
    if table.name == "instances":
        busy = select(conductor_tasks.c.active_instance_uuid).where(
            conductor_tasks.c.active_instance_uuid.is_not(None)
        )
        conditions.append(table.c.uuid.not_in(busy))
    return conditions


async def _archive_batch(
    conn: AsyncConnection, table: Table, limit: int, before: dt.datetime | None
) -> tuple[int, Counter[str]]:
    stmt = select(table.c.id).where(*_deleted_rows(table, before)).order_by(table.c.id).limit(limit)
    ids = list((await conn.execute(stmt)).scalars())
    moved: Counter[str] = Counter()
    if ids:
        await _move(conn, table, ids, moved)
    return len(ids), moved


async def archive_pass(
    db: Database, *, max_rows: int = DEFAULT_MAX_ROWS, before: dt.datetime | None = None
) -> Counter[str]:
    """One pass: archive up to ``max_rows`` deleted rows; rows moved per table."""
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    remaining = max_rows
    moved: Counter[str] = Counter()
    for table in archive_order():
        while remaining > 0:
            limit = remaining
            async with db.writer() as conn:
                count, batch_moved = await _archive_batch(conn, table, limit, before)
            moved.update(batch_moved)
            remaining -= count
            if count < limit:
                break
        if remaining <= 0:
            break
    return moved


async def archive_deleted_rows(
    db: Database,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    before: dt.datetime | None = None,
    until_complete: bool = False,
    purge: bool = False,
) -> ArchiveResult:
    """Archive a pass (or passes until nothing is left), then optionally purge."""
    result = ArchiveResult()
    while True:
        moved = await archive_pass(db, max_rows=max_rows, before=before)
        result.archived.update(moved)
        if not until_complete or not moved:
            break
    if purge:
        result.purged.update(await purge_shadow_tables(db, before=before))
    return result


async def purge_shadow_tables(db: Database, *, before: dt.datetime | None = None) -> Counter[str]:
    """Delete archived rows for good (only those deleted before ``before``, when given).

    Rows archived along with a parent may never have been deleted
    themselves (a fault of a deleted instance); for them the newest of
    their own timestamps stands in for the deletion time.
    """
    purged: Counter[str] = Counter()
    for shadow in SHADOW_TABLES.values():
        stmt = delete(shadow)
        if before is not None:
            stamp = func.coalesce(shadow.c.deleted_at, shadow.c.updated_at, shadow.c.created_at)
            stmt = stmt.where(stamp < before)
        async with db.writer() as conn:
            result = await conn.execute(stmt)
        if result.rowcount:
            purged[shadow.name] += int(result.rowcount)
    return purged
