"""Flavors, their extra specs and their access lists.

Every write here bumps the flavors' generation counter
(:data:`nubes.db.api.generations.FLAVORS`) in its transaction: API
processes cache flavors while it stays put (:mod:`nubes.api.flavor_cache`),
so a write to these tables anywhere else would leave them stale.

A flavor row handed out carries ``extra_specs`` (dict) and ``projects``
(list of project ids allowed to use it when it is not public), loaded with
one extra query each for a whole listing, not one per flavor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, literal, null, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api import generations
from nubes.db.api._common import (
    LIKE_ESCAPE,
    ReadDeleted,
    Row,
    SortDir,
    StatementCache,
    check_columns,
    check_sort_keys,
    fetch_all,
    fetch_one,
    insert_row,
    like_pattern,
    live,
    now_or,
    paginate,
    soft_delete_where,
    where_deleted,
)
from nubes.db.models import flavor_extra_specs, flavor_projects, flavors

SORT_KEYS = frozenset(
    {
        "id",
        "flavorid",
        "name",
        "memory_mb",
        "vcpus",
        "root_gb",
        "ephemeral_gb",
        "swap",
        "created_at",
    }
)
DEFAULT_SORT_KEY = "flavorid"

_f = flavors
_x = flavor_extra_specs
_p = flavor_projects

_STATEMENTS = StatementCache()


async def _attach(conn: AsyncConnection, rows: list[Row]) -> list[Row]:
    if not rows:
        return rows
    ids = [r["id"] for r in rows]
    specs: dict[int, dict[str, Any]] = {i: {} for i in ids}
    projects: dict[int, list[str]] = {i: [] for i in ids}
    found = await conn.execute(_attach_statement(), {"_ids": ids})
    for flavor_id, is_project, _id, key, value in found.all():
        if is_project:
            projects[flavor_id].append(key)
        else:
            specs[flavor_id][key] = value
    for row in rows:
        row["extra_specs"] = specs[row["id"]]
        row["projects"] = projects[row["id"]]
    return rows


def _attach_statement() -> Any:
    # Extra specs and access in one statement (every flavor read, a boot's
    # among them): a project row has no value, and comes in id order.
    # Prebuilt (a boot reads a flavor each time, and building and
    # cache-keying this union cost more than running it).
    def build() -> Any:
        ids: Any = bindparam("_ids", expanding=True)
        spec_rows = select(
            _x.c.flavor_id, literal(0).label("is_project"), _x.c.id, _x.c.key, _x.c.value
        ).where(_x.c.flavor_id.in_(ids), live(_x))
        project_rows = select(
            _p.c.flavor_id, literal(1).label("is_project"), _p.c.id, _p.c.project_id, null()
        ).where(_p.c.flavor_id.in_(ids), live(_p))
        both = union_all(spec_rows, project_rows).subquery()
        return select(both).order_by(both.c.is_project, both.c.id)

    return _STATEMENTS.get(("attach",), build)


async def create(
    conn: AsyncConnection,
    values: Mapping[str, Any],
    *,
    extra_specs: Mapping[str, str] | None = None,
    projects: Sequence[str] = (),
) -> Row:
    """Add a flavor; DBDuplicateEntry if a live one has the same name or flavorid."""
    data = dict(values)
    check_columns(_f, data)
    row = await insert_row(conn, _f, data)
    await generations.bump(conn, generations.FLAVORS)
    if extra_specs:
        await extra_specs_update_or_create(conn, row["id"], extra_specs)
    for project_id in projects:
        await access_add(conn, row["id"], project_id)
    return (await _attach(conn, [row]))[0]


async def _get(conn: AsyncConnection, column: str, name: Any, read_deleted: ReadDeleted) -> Row:
    """The flavor whose ``column`` is ``name``; prebuilt per (column, read_deleted)."""
    stmt = _STATEMENTS.get(
        ("get", column, read_deleted),
        lambda: where_deleted(
            select(_f).where(_f.c[column] == bindparam("_key", type_=_f.c[column].type)),
            _f,
            read_deleted,
        ),
    )
    found = (await conn.execute(stmt, {"_key": name})).mappings().first()
    row = dict(found) if found is not None else None
    if row is None:
        raise exception.FlavorNotFound(flavor_id=name)
    return (await _attach(conn, [row]))[0]


async def get_by_id(conn: AsyncConnection, id: int, *, read_deleted: ReadDeleted = "no") -> Row:
    return await _get(conn, "id", id, read_deleted)


async def get_by_flavor_id(
    conn: AsyncConnection, flavorid: str, *, read_deleted: ReadDeleted = "no"
) -> Row:
    return await _get(conn, "flavorid", flavorid, read_deleted)


async def get_by_name(conn: AsyncConnection, name: str) -> Row:
    return await _get(conn, "name", name, "no")


async def get_all(
    conn: AsyncConnection,
    *,
    is_public: bool | None = None,
    project_id: str | None = None,
    min_memory_mb: int | None = None,
    min_root_gb: int | None = None,
    disabled: bool | None = None,
    name_like: str | None = None,
    sort_key: str = DEFAULT_SORT_KEY,
    sort_dir: SortDir = "asc",
    limit: int | None = None,
    marker: str | None = None,
) -> list[Row]:
    """A page of flavors. ``project_id`` with ``is_public=None``: the public
    ones plus the private ones that project has access to (Nova's listing).
    ``marker`` is the flavorid of the last flavor of the previous page;
    ``name_like``: only names holding that text.
    """
    check_sort_keys([sort_key], SORT_KEYS)
    stmt = select(_f).where(live(_f))
    if project_id is not None:
        access = select(_p.c.flavor_id).where(_p.c.project_id == project_id, live(_p))
        if is_public is None:
            stmt = stmt.where(or_(_f.c.is_public.is_(True), _f.c.id.in_(access)))
        elif is_public:
            stmt = stmt.where(_f.c.is_public.is_(True))
        else:
            stmt = stmt.where(_f.c.is_public.is_(False), _f.c.id.in_(access))
    elif is_public is not None:
        stmt = stmt.where(_f.c.is_public.is_(is_public))
    if min_memory_mb is not None:
        stmt = stmt.where(_f.c.memory_mb >= min_memory_mb)
    if min_root_gb is not None:
        stmt = stmt.where(_f.c.root_gb >= min_root_gb)
    if disabled is not None:
        stmt = stmt.where(_f.c.disabled.is_(disabled))
    if name_like is not None:
        stmt = stmt.where(_f.c.name.like(like_pattern(name_like), escape=LIKE_ESCAPE))
    marker_row = None
    if marker is not None:
        marker_row = await fetch_one(conn, select(_f).where(_f.c.flavorid == marker, live(_f)))
        if marker_row is None:
            raise exception.MarkerNotFound(marker=marker)
    stmt = paginate(stmt, _f, [sort_key], [sort_dir], marker=marker_row, limit=limit)
    return await _attach(conn, await fetch_all(conn, stmt))


async def update_description(conn: AsyncConnection, flavorid: str, description: str | None) -> Row:
    """The one field of a flavor that may change after creation (API 2.55)."""
    result = await conn.execute(
        update(_f).where(_f.c.flavorid == flavorid, live(_f)).values(description=description)
    )
    if not result.rowcount:
        raise exception.FlavorNotFound(flavor_id=flavorid)
    await generations.bump(conn, generations.FLAVORS)
    return await get_by_flavor_id(conn, flavorid)


async def destroy(conn: AsyncConnection, flavorid: str, *, now: dt.datetime | None = None) -> None:
    """Soft-delete a flavor with its extra specs and access list (the name is free again)."""
    now = now_or(now)
    row = await fetch_one(conn, select(_f.c.id).where(_f.c.flavorid == flavorid, live(_f)))
    if row is None:
        raise exception.FlavorNotFound(flavor_id=flavorid)
    await soft_delete_where(conn, _x, _x.c.flavor_id == row["id"], now)
    await soft_delete_where(conn, _p, _p.c.flavor_id == row["id"], now)
    await soft_delete_where(conn, _f, _f.c.id == row["id"], now)
    await generations.bump(conn, generations.FLAVORS)


# --- extra specs -------------------------------------------------------------


async def extra_specs_get(conn: AsyncConnection, flavor_id: int) -> dict[str, Any]:
    rows = await fetch_all(conn, select(_x).where(_x.c.flavor_id == flavor_id, live(_x)))
    return {r["key"]: r["value"] for r in rows}


async def extra_specs_update_or_create(
    conn: AsyncConnection, flavor_id: int, specs: Mapping[str, str]
) -> None:
    existing = await extra_specs_get(conn, flavor_id)
    for key, value in specs.items():
        if key in existing:
            await conn.execute(
                update(_x)
                .where(_x.c.flavor_id == flavor_id, _x.c.key == key, live(_x))
                .values(value=value)
            )
        else:
            await insert_row(conn, _x, {"flavor_id": flavor_id, "key": key, "value": value})
    await generations.bump(conn, generations.FLAVORS)


async def extra_specs_delete(
    conn: AsyncConnection, flavor_id: int, key: str, *, now: dt.datetime | None = None
) -> None:
    where = (_x.c.flavor_id == flavor_id) & (_x.c.key == key)
    if not await soft_delete_where(conn, _x, where, now):
        raise exception.NotFound(reason=f"flavor {flavor_id} has no extra spec {key}")
    await generations.bump(conn, generations.FLAVORS)


# --- access ------------------------------------------------------------------


async def access_get(conn: AsyncConnection, flavor_id: int) -> list[str]:
    stmt = select(_p.c.project_id).where(_p.c.flavor_id == flavor_id, live(_p)).order_by(_p.c.id)
    return list((await conn.execute(stmt)).scalars())


async def access_add(conn: AsyncConnection, flavor_id: int, project_id: str) -> None:
    """Let a project use a private flavor; DBDuplicateEntry if it already may."""
    await insert_row(conn, _p, {"flavor_id": flavor_id, "project_id": project_id})
    await generations.bump(conn, generations.FLAVORS)


async def access_remove(
    conn: AsyncConnection, flavor_id: int, project_id: str, *, now: dt.datetime | None = None
) -> None:
    where = (_p.c.flavor_id == flavor_id) & (_p.c.project_id == project_id)
    if not await soft_delete_where(conn, _p, where, now):
        raise exception.NotFound(reason=f"project {project_id} has no access to flavor {flavor_id}")
    await generations.bump(conn, generations.FLAVORS)
