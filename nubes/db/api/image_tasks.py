"""Image tasks (Glance's ``/v2/tasks``): rows only; the state machine and
the import they run are in :mod:`nubes.api.image_tasks`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import Row, SortDir, fetch_all, fetch_one, insert_row, paginate
from nubes.db.models import image_tasks
from nubes.db.types import utcnow

SORT_KEYS = frozenset({"created_at", "updated_at", "status", "type", "id"})


async def create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    now = utcnow()
    return await insert_row(conn, image_tasks, {"created_at": now, "updated_at": now, **values})


async def get(conn: AsyncConnection, task_id: str) -> Row | None:
    return await fetch_one(conn, select(image_tasks).where(image_tasks.c.id == task_id))


async def get_all(
    conn: AsyncConnection,
    *,
    owner: str | None = None,
    image_id: str | None = None,
    filters: Mapping[str, str] | None = None,
    sort_key: str = "created_at",
    sort_dir: str = "desc",
    limit: int | None = None,
    marker: str | None = None,
) -> list[Row]:
    """A page of tasks (of one owner, or of one image, when given)."""
    if sort_key not in SORT_KEYS:
        raise exception.Invalid(reason=f"cannot sort by {sort_key!r}")
    t = image_tasks
    stmt = select(t)
    if owner is not None:
        stmt = stmt.where(t.c.owner == owner)
    if image_id is not None:
        stmt = stmt.where(t.c.image_id == image_id)
    for key, value in (filters or {}).items():
        stmt = stmt.where(t.c[key] == value)
    marker_row = None
    if marker is not None:
        marker_row = await get(conn, marker)
        if marker_row is None:
            raise exception.MarkerNotFound(marker=marker)
    direction: SortDir = "desc" if sort_dir == "desc" else "asc"
    stmt = paginate(stmt, t, [sort_key], [direction], marker=marker_row, limit=limit)
    return await fetch_all(conn, stmt)


async def update_status(
    conn: AsyncConnection, task_id: str, expected: str, values: Mapping[str, Any]
) -> None:
    """Move a task on from ``expected`` (TaskChanged if it is no longer there)."""
    t = image_tasks
    result = await conn.execute(
        update(t)
        .where(t.c.id == task_id, t.c.status == expected)
        .values({**values, "updated_at": utcnow()})
    )
    if not result.rowcount:
        raise exception.TaskChanged(task_id=task_id)
