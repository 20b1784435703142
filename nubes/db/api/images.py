"""The image registry's records (the image data lives in files, see nubes.api.image)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import Row, SortDir, fetch_all, fetch_one, insert_row, paginate
from nubes.db.models import images
from nubes.db.types import utcnow

SORT_KEYS = frozenset(
    {"name", "status", "created_at", "updated_at", "size", "min_disk", "min_ram", "id"}
)


def _normalise(row: Row) -> Row:
    row["properties"] = row.get("properties") or {}
    row["tags"] = row.get("tags") or []
    return row


async def create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    data = dict(values)
    data.setdefault("updated_at", utcnow())
    return _normalise(await insert_row(conn, images, data))


async def get(conn: AsyncConnection, image_id: str) -> Row:
    row = await fetch_one(conn, select(images).where(images.c.id == image_id))
    if row is None:
        raise exception.ImageNotFound(image_id=image_id)
    return _normalise(row)


def visible_to(project_id: str | None) -> ColumnElement[bool]:
    """Images a project sees in a listing: public ones and its own."""
    return or_(images.c.visibility == "public", images.c.owner == project_id)


async def get_all(
    conn: AsyncConnection,
    *,
    project_id: str | None = None,
    all_visible: bool = False,
    filters: Mapping[str, Any] | None = None,
    ids: Sequence[str] | None = None,
    sort_key: str = "created_at",
    sort_dir: str = "desc",
    limit: int | None = None,
    marker: str | None = None,
) -> list[Row]:
    """A page of images. ``all_visible`` (admins): every image; otherwise the
    public ones and those owned by ``project_id``."""
    if sort_key not in SORT_KEYS:
        raise exception.Invalid(reason=f"cannot sort by {sort_key!r}")
    stmt = select(images)
    if not all_visible:
        stmt = stmt.where(visible_to(project_id))
    for key, value in (filters or {}).items():
        stmt = stmt.where(images.c[key] == value)
    if ids is not None:
        stmt = stmt.where(images.c.id.in_(list(ids)))
    marker_row = None
    if marker is not None:
        marker_row = await fetch_one(conn, select(images).where(images.c.id == marker))
        if marker_row is None:
            raise exception.MarkerNotFound(marker=marker)
    direction: SortDir = "desc" if sort_dir == "desc" else "asc"
    stmt = paginate(stmt, images, [sort_key], [direction], marker=marker_row, limit=limit)
    return [_normalise(r) for r in await fetch_all(conn, stmt)]


async def update_fields(
    conn: AsyncConnection,
    image_id: str,
    values: Mapping[str, Any],
    *,
    expected_status: str | Sequence[str] | None = None,
) -> Row:
    """Change an image; with ``expected_status``, only while it is in that status
    (Conflict otherwise)."""
    stmt = update(images).where(images.c.id == image_id)
    if expected_status is not None:
        allowed = [expected_status] if isinstance(expected_status, str) else list(expected_status)
        stmt = stmt.where(images.c.status.in_(allowed))
    result = await conn.execute(stmt.values({**values, "updated_at": utcnow()}))
    if not result.rowcount:
        current = await get(conn, image_id)
        raise exception.Conflict(
            reason=f"image {image_id} is {current['status']}, not {expected_status}"
        )
    return await get(conn, image_id)


async def destroy(conn: AsyncConnection, image_id: str) -> None:
    result = await conn.execute(delete(images).where(images.c.id == image_id))
    if not result.rowcount:
        raise exception.ImageNotFound(image_id=image_id)
