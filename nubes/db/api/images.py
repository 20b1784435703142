"""The image registry's records (the image data lives in files, see nubes.api.image)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import (
    Row,
    SortDir,
    StatementCache,
    fetch_all,
    fetch_one,
    insert_row,
    paginate,
)
from nubes.db.models import image_members, images
from nubes.db.types import utcnow

_STATEMENTS = StatementCache()

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
    # Prebuilt: every boot reads its image.
    stmt = _STATEMENTS.get(("get",), lambda: select(images).where(images.c.id == bindparam("_id")))
    found = (await conn.execute(stmt, {"_id": image_id})).mappings().first()
    row = dict(found) if found is not None else None
    if row is None:
        raise exception.ImageNotFound(image_id=image_id)
    return _normalise(row)


def visible_to(project_id: str | None, member_status: str = "accepted") -> ColumnElement[bool]:
    """Images a project sees in a listing: public ones, its own, and shared
    ones whose membership has ``member_status`` (``all``: any)."""
    memberships = select(image_members.c.image_id).where(image_members.c.member == project_id)
    if member_status != "all":
        memberships = memberships.where(image_members.c.status == member_status)
    return or_(
        images.c.visibility == "public",
        images.c.owner == project_id,
        and_(images.c.visibility == "shared", images.c.id.in_(memberships)),
    )


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
    member_status: str = "accepted",
    properties: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
) -> list[Row]:
    """A page of images. ``all_visible`` (admins): every image; otherwise
    what :func:`visible_to` lets ``project_id`` see. ``properties``: only
    images with each of these properties set to exactly that value (Glance's
    filter by an additional property); ``tags``: only images with each tag.

    Properties and tags are JSON documents in their columns, which the three
    databases query differently; so with either filter the rows after the
    marker are read in order and filtered here, and the page is cut after
    filtering (a page is never short because of the filter)."""
    if sort_key not in SORT_KEYS:
        raise exception.Invalid(reason=f"cannot sort by {sort_key!r}")
    stmt = select(images)
    if not all_visible:
        stmt = stmt.where(visible_to(project_id, member_status))
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
    if not properties and not tags:
        stmt = paginate(stmt, images, [sort_key], [direction], marker=marker_row, limit=limit)
        return [_normalise(r) for r in await fetch_all(conn, stmt)]
    stmt = paginate(stmt, images, [sort_key], [direction], marker=marker_row, limit=None)
    wanted = dict(properties or {})
    rows = [
        row
        for row in map(_normalise, await fetch_all(conn, stmt))
        if all(row["properties"].get(k) == v for k, v in wanted.items())
        and all(t in row["tags"] for t in tags)
    ]
    return rows if limit is None else rows[:limit]


#: Statuses of an image whose data is on its way in: being uploaded
#: (``saving``), staged or being staged (``uploading``), being imported.
UPLOADING_STATUSES = ("saving", "uploading", "importing")
#: A staged image's status (its size is that of its staged data).
STAGED_STATUS = "uploading"


async def usage(conn: AsyncConnection, owner: str) -> dict[str, int]:
    """What a project's images use, as Glance counts it for its quotas:
    ``image_count_total`` every image, ``image_count_uploading`` those in
    :data:`UPLOADING_STATUSES`, and in bytes ``image_size_total`` the data
    stored (staged data aside) and ``image_stage_total`` the data staged."""
    i = images
    staged = i.c.status == STAGED_STATUS
    size = func.coalesce(i.c.size, 0)
    count, uploading, stored, staging = (
        await conn.execute(
            select(
                func.count(i.c.id),
                func.coalesce(func.sum(case((i.c.status.in_(UPLOADING_STATUSES), 1), else_=0)), 0),
                func.coalesce(func.sum(case((staged, 0), else_=size)), 0),
                func.coalesce(func.sum(case((staged, size), else_=0)), 0),
            ).where(i.c.owner == owner)
        )
    ).one()
    return {
        "image_count_total": int(count),
        "image_count_uploading": int(uploading),
        "image_size_total": int(stored),
        "image_stage_total": int(staging),
    }


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
    await conn.execute(delete(image_members).where(image_members.c.image_id == image_id))


# --- members -----------------------------------------------------------------


async def member_get(conn: AsyncConnection, image_id: str, member: str) -> Row | None:
    stmt = select(image_members).where(
        image_members.c.image_id == image_id, image_members.c.member == member
    )
    return await fetch_one(conn, stmt)


async def member_get_all(conn: AsyncConnection, image_id: str) -> list[Row]:
    stmt = select(image_members).where(image_members.c.image_id == image_id)
    return await fetch_all(conn, stmt.order_by(image_members.c.created_at))


async def member_create(conn: AsyncConnection, image_id: str, member: str) -> Row:
    """A pending membership; DBDuplicateEntry if the project is one already."""
    now = utcnow()
    values = {
        "image_id": image_id,
        "member": member,
        "status": "pending",
        "created_at": now,
        "updated_at": now,
    }
    await conn.execute(insert(image_members).values(values))
    return values


async def member_update(conn: AsyncConnection, image_id: str, member: str, status: str) -> None:
    await conn.execute(
        update(image_members)
        .where(image_members.c.image_id == image_id, image_members.c.member == member)
        .values(status=status, updated_at=utcnow())
    )


async def member_delete(conn: AsyncConnection, image_id: str, member: str) -> bool:
    result = await conn.execute(
        delete(image_members).where(
            image_members.c.image_id == image_id, image_members.c.member == member
        )
    )
    return bool(result.rowcount)


async def member_count(conn: AsyncConnection, image_id: str) -> int:
    return len(await member_get_all(conn, image_id))
