"""Host aggregates (hosts + metadata) and server groups (policy + members).

Every aggregate write bumps the host facts' generation in its transaction
(:mod:`nubes.db.api.generations`): schedulers cache aggregates and must see
a change on their very next request.

Rows handed out carry their children: an aggregate has ``hosts`` (list) and
``metadata`` (dict); a server group has ``members`` (list of instance uuids).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db import group_commit
from nubes.db.api import generations
from nubes.db.api._common import (
    Row,
    fetch_all,
    fetch_one,
    insert_row,
    insert_rows,
    live,
    new_uuid,
    now_or,
    soft_delete_where,
)
from nubes.db.models import (
    NOT_DELETED,
    aggregate_hosts,
    aggregate_metadata,
    aggregates,
    instance_group_members,
    instance_groups,
)

#: Aggregate metadata key that makes an aggregate an availability zone.
AVAILABILITY_ZONE_KEY = "availability_zone"

_ag = aggregates
_ah = aggregate_hosts
_am = aggregate_metadata
_g = instance_groups
_gm = instance_group_members


# --- aggregates --------------------------------------------------------------


async def _attach_aggregate(conn: AsyncConnection, rows: list[Row]) -> list[Row]:
    ids = [r["id"] for r in rows]
    if not ids:
        return rows
    hosts: dict[int, list[str]] = {i: [] for i in ids}
    stmt = select(_ah).where(_ah.c.aggregate_id.in_(ids), live(_ah)).order_by(_ah.c.id)
    for h in await fetch_all(conn, stmt):
        hosts[h["aggregate_id"]].append(h["host"])
    meta: dict[int, dict[str, str]] = {i: {} for i in ids}
    for m in await fetch_all(conn, select(_am).where(_am.c.aggregate_id.in_(ids), live(_am))):
        meta[m["aggregate_id"]][m["key"]] = m["value"]
    for row in rows:
        row["hosts"] = hosts[row["id"]]
        row["metadata"] = meta[row["id"]]
    return rows


async def aggregate_create(
    conn: AsyncConnection,
    name: str,
    *,
    metadata: Mapping[str, str] | None = None,
    uuid: str | None = None,
) -> Row:
    """Add an aggregate; DBDuplicateEntry if a live one has the name."""
    row = await insert_row(conn, _ag, {"name": name, "uuid": uuid or new_uuid()})
    await generations.bump(conn, generations.HOST_FACTS)
    if metadata:
        await aggregate_metadata_update(conn, row["id"], metadata)
    return await aggregate_get(conn, row["id"])


async def _aggregate(conn: AsyncConnection, where: ColumnElement[bool], name: Any) -> Row:
    row = await fetch_one(conn, select(_ag).where(where, live(_ag)))
    if row is None:
        raise exception.AggregateNotFound(aggregate_id=name)
    return (await _attach_aggregate(conn, [row]))[0]


async def aggregate_get(conn: AsyncConnection, aggregate_id: int) -> Row:
    return await _aggregate(conn, _ag.c.id == aggregate_id, aggregate_id)


async def aggregate_get_by_uuid(conn: AsyncConnection, uuid: str) -> Row:
    return await _aggregate(conn, _ag.c.uuid == uuid, uuid)


async def aggregate_get_all(conn: AsyncConnection) -> list[Row]:
    rows = await fetch_all(conn, select(_ag).where(live(_ag)).order_by(_ag.c.id))
    return await _attach_aggregate(conn, rows)


async def aggregate_get_by_host(
    conn: AsyncConnection, host: str, *, key: str | None = None
) -> list[Row]:
    """Aggregates ``host`` belongs to (only those with metadata ``key``, when given)."""
    member = select(_ah.c.aggregate_id).where(_ah.c.host == host, live(_ah))
    stmt = select(_ag).where(_ag.c.id.in_(member), live(_ag))
    if key is not None:
        with_key = select(_am.c.aggregate_id).where(_am.c.key == key, live(_am))
        stmt = stmt.where(_ag.c.id.in_(with_key))
    rows = await fetch_all(conn, stmt.order_by(_ag.c.id))
    return await _attach_aggregate(conn, rows)


async def aggregate_metadata_get_by_host(
    conn: AsyncConnection, host: str, *, key: str | None = None
) -> dict[str, set[str]]:
    """Metadata of all aggregates of ``host``, merged: key -> set of values."""
    merged: dict[str, set[str]] = {}
    for agg in await aggregate_get_by_host(conn, host, key=key):
        for k, v in agg["metadata"].items():
            if key is None or k == key:
                merged.setdefault(k, set()).add(v)
    return merged


async def aggregate_update_name(conn: AsyncConnection, aggregate_id: int, name: str) -> Row:
    result = await conn.execute(
        update(_ag).where(_ag.c.id == aggregate_id, live(_ag)).values(name=name)
    )
    if not result.rowcount:
        raise exception.AggregateNotFound(aggregate_id=aggregate_id)
    await generations.bump(conn, generations.HOST_FACTS)
    return await aggregate_get(conn, aggregate_id)


async def aggregate_destroy(
    conn: AsyncConnection, aggregate_id: int, *, now: dt.datetime | None = None
) -> None:
    now = now_or(now)
    if not await soft_delete_where(conn, _ag, _ag.c.id == aggregate_id, now):
        raise exception.AggregateNotFound(aggregate_id=aggregate_id)
    await soft_delete_where(conn, _ah, _ah.c.aggregate_id == aggregate_id, now)
    await soft_delete_where(conn, _am, _am.c.aggregate_id == aggregate_id, now)
    await generations.bump(conn, generations.HOST_FACTS)


async def aggregate_host_add(conn: AsyncConnection, aggregate_id: int, host: str) -> None:
    """DBDuplicateEntry if the host is already a member."""
    await aggregate_get(conn, aggregate_id)
    await insert_row(conn, _ah, {"aggregate_id": aggregate_id, "host": host})
    await generations.bump(conn, generations.HOST_FACTS)


async def aggregate_host_delete(
    conn: AsyncConnection, aggregate_id: int, host: str, *, now: dt.datetime | None = None
) -> None:
    where = (_ah.c.aggregate_id == aggregate_id) & (_ah.c.host == host)
    if not await soft_delete_where(conn, _ah, where, now):
        raise exception.NotFound(reason=f"host {host} is not in aggregate {aggregate_id}")
    await generations.bump(conn, generations.HOST_FACTS)


async def aggregate_metadata_update(
    conn: AsyncConnection,
    aggregate_id: int,
    metadata: Mapping[str, str | None],
    *,
    now: dt.datetime | None = None,
) -> None:
    """Set keys; a None value deletes the key."""
    now = now_or(now)
    current = {
        m["key"]
        for m in await fetch_all(
            conn, select(_am.c.key).where(_am.c.aggregate_id == aggregate_id, live(_am))
        )
    }
    for key, value in metadata.items():
        where = (_am.c.aggregate_id == aggregate_id) & (_am.c.key == key)
        if value is None:
            await soft_delete_where(conn, _am, where, now)
        elif key in current:
            await conn.execute(update(_am).where(where, live(_am)).values(value=value))
        else:
            await insert_row(conn, _am, {"aggregate_id": aggregate_id, "key": key, "value": value})
    if metadata:
        await generations.bump(conn, generations.HOST_FACTS)


# --- server groups -----------------------------------------------------------


async def _attach_members(conn: AsyncConnection, rows: list[Row]) -> list[Row]:
    ids = [r["id"] for r in rows]
    if not ids:
        return rows
    members: dict[int, list[str]] = {i: [] for i in ids}
    stmt = select(_gm).where(_gm.c.group_id.in_(ids), live(_gm)).order_by(_gm.c.id)
    for m in await fetch_all(conn, stmt):
        members[m["group_id"]].append(m["instance_uuid"])
    for row in rows:
        row["members"] = members[row["id"]]
    return rows


async def group_create(
    conn: AsyncConnection,
    values: Mapping[str, Any],
    *,
    members: Sequence[str] = (),
) -> Row:
    data = dict(values)
    data.setdefault("uuid", new_uuid())
    row = await insert_row(conn, _g, data)
    await group_members_add(conn, row["uuid"], members)
    return await group_get_by_uuid(conn, row["uuid"])


async def _group(conn: AsyncConnection, where: ColumnElement[bool], name: Any) -> Row:
    row = await fetch_one(conn, select(_g).where(where, live(_g)))
    if row is None:
        raise exception.InstanceGroupNotFound(group_uuid=name)
    return (await _attach_members(conn, [row]))[0]


async def group_get_by_uuid(conn: AsyncConnection, uuid: str) -> Row:
    return await _group(conn, _g.c.uuid == uuid, uuid)


async def group_get_by_instance(conn: AsyncConnection, instance_uuid: str) -> Row:
    member_of = select(_gm.c.group_id).where(_gm.c.instance_uuid == instance_uuid, live(_gm))
    return await _group(conn, _g.c.id.in_(member_of), f"of instance {instance_uuid}")


def _uuid_of_instance_statement() -> Any:
    # Every parameter bound by name (a prepared statement's rule): "live" as a literal.
    alive: ColumnElement[int] = literal_column(str(NOT_DELETED))
    member_of = select(_gm.c.group_id).where(
        _gm.c.instance_uuid == bindparam("_uuid"), _gm.c.deleted == alive
    )
    return select(_g.c.uuid).where(_g.c.id.in_(member_of), _g.c.deleted == alive)


def uuid_of_instance_read(instance_uuid: str) -> group_commit.Read:
    """The uuid of the live server group ``instance_uuid`` is a member of
    (``{"uuid": ...}``, None if none): :func:`group_get_by_instance` without
    the members, as a description for
    :func:`nubes.db.group_commit.fetch_together` (or ``.run(conn)``)."""
    return group_commit.Read(
        (__name__, "uuid_of_instance"), _uuid_of_instance_statement, {"_uuid": instance_uuid}
    )


async def group_get_all(conn: AsyncConnection, *, project_id: str | None = None) -> list[Row]:
    stmt = select(_g).where(live(_g))
    if project_id is not None:
        stmt = stmt.where(_g.c.project_id == project_id)
    return await _attach_members(conn, await fetch_all(conn, stmt.order_by(_g.c.id)))


async def group_members_add(
    conn: AsyncConnection, group_uuid: str, instance_uuids: Iterable[str]
) -> list[str]:
    """Add members not yet in the group; returns the ones added.

    The one write that makes instances members (server create records its
    instances here, in its own transaction): a limit on members per group
    belongs here. InstanceGroupNotFound if the group is gone.
    """
    group = await group_get_by_uuid(conn, group_uuid)
    present = set(group["members"])
    added = []
    for instance_uuid in instance_uuids:
        if instance_uuid not in present:
            present.add(instance_uuid)
            added.append(instance_uuid)
    if added:
        await insert_rows(conn, _gm, [{"group_id": group["id"], "instance_uuid": u} for u in added])
    return added


async def group_member_delete(
    conn: AsyncConnection, group_uuid: str, instance_uuid: str, *, now: dt.datetime | None = None
) -> None:
    group = await group_get_by_uuid(conn, group_uuid)
    where = (_gm.c.group_id == group["id"]) & (_gm.c.instance_uuid == instance_uuid)
    if not await soft_delete_where(conn, _gm, where, now):
        raise exception.NotFound(reason=f"{instance_uuid} is not in server group {group_uuid}")


async def group_destroy(
    conn: AsyncConnection, group_uuid: str, *, now: dt.datetime | None = None
) -> None:
    now = now_or(now)
    group = await group_get_by_uuid(conn, group_uuid)
    await soft_delete_where(conn, _gm, _gm.c.group_id == group["id"], now)
    await soft_delete_where(conn, _g, _g.c.id == group["id"], now)
