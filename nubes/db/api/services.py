"""Services and their heartbeats.

A heartbeat is one upsert of a two-column row keyed by the service id
(INSERT ... ON CONFLICT DO UPDATE on PostgreSQL and SQLite, ON DUPLICATE KEY
UPDATE on MariaDB): no read first, no race between a first report and a
second one, and the service row itself is never rewritten by it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api import compute_nodes, generations
from nubes.db.api._common import (
    ReadDeleted,
    Row,
    check_columns,
    fetch_all,
    fetch_one,
    insert_row,
    live,
    new_uuid,
    now_or,
    soft_delete_where,
    update_row,
    where_deleted,
)
from nubes.db.models import service_heartbeats, services

#: Columns that identify a service and never change through :func:`update`.
IDENTITY_COLUMNS = ("uuid", "host", "binary")
#: Columns the schedulers cache (a change bumps the host facts' generation).
SCHEDULING_COLUMNS = frozenset({"disabled", "forced_down"})


async def create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    """Register a service; DBDuplicateEntry if host+binary already has a live one.

    A compute service takes over its host's nodes that have no live service
    (registered before it, or bound to a deleted one).
    """
    data = dict(values)
    check_columns(services, data)
    data.setdefault("uuid", new_uuid())
    row = await insert_row(conn, services, data)
    if row["binary"] == compute_nodes.COMPUTE_BINARY:
        await compute_nodes.bind_to_service(conn, row["host"], row["id"])
    await generations.bump(conn, generations.HOST_FACTS)
    return row


async def _get(conn: AsyncConnection, where: ColumnElement[bool], name: Any) -> Row:
    row = await fetch_one(conn, select(services).where(where, live(services)))
    if row is None:
        raise exception.ServiceNotFound(service=name)
    return row


async def get_by_id(conn: AsyncConnection, service_id: int) -> Row:
    return await _get(conn, services.c.id == service_id, service_id)


async def get_by_uuid(conn: AsyncConnection, uuid: str) -> Row:
    return await _get(conn, services.c.uuid == uuid, uuid)


async def get_by_host_and_binary(
    conn: AsyncConnection, host: str, binary: str, *, with_heartbeat: bool = False
) -> Row:
    """The live service; ``with_heartbeat`` adds ``last_seen_at`` and
    ``report_count`` (None if it never reported) in the same statement."""
    where = (services.c.host == host) & (services.c.binary == binary)
    if not with_heartbeat:
        return await _get(conn, where, f"{binary} on {host}")
    hb = service_heartbeats
    stmt = (
        select(services, hb.c.last_seen_at, hb.c.report_count)
        .select_from(services.outerjoin(hb, hb.c.service_id == services.c.id))
        .where(where, live(services))
    )
    row = await fetch_one(conn, stmt)
    if row is None:
        raise exception.ServiceNotFound(service=f"{binary} on {host}")
    return row


async def get_all(
    conn: AsyncConnection,
    *,
    binary: str | None = None,
    host: str | None = None,
    include_disabled: bool = True,
    read_deleted: ReadDeleted = "no",
) -> list[Row]:
    stmt = where_deleted(select(services), services, read_deleted)
    if binary is not None:
        stmt = stmt.where(services.c.binary == binary)
    if host is not None:
        stmt = stmt.where(services.c.host == host)
    if not include_disabled:
        stmt = stmt.where(services.c.disabled.is_(False))
    return await fetch_all(conn, stmt.order_by(services.c.id))


async def update(conn: AsyncConnection, service_id: int, values: Mapping[str, Any]) -> Row:
    """Change a service's own fields (version, disabled and reason, forced_down, topic)."""
    check_columns(services, values, extra_protected=IDENTITY_COLUMNS)
    row = await update_row(conn, services, services.c.id == service_id, values)
    if row is None:
        raise exception.ServiceNotFound(service=service_id)
    if SCHEDULING_COLUMNS.intersection(values):
        await generations.bump(conn, generations.HOST_FACTS)
    return row


async def destroy(
    conn: AsyncConnection, service_id: int, *, now: dt.datetime | None = None
) -> None:
    """Soft-delete a service; its heartbeat goes for good."""
    if not await soft_delete_where(conn, services, services.c.id == service_id, now):
        raise exception.ServiceNotFound(service=service_id)
    await generations.bump(conn, generations.HOST_FACTS)
    await conn.execute(
        delete(service_heartbeats).where(service_heartbeats.c.service_id == service_id)
    )


# --- heartbeats --------------------------------------------------------------


async def heartbeat(
    conn: AsyncConnection, service_id: int, *, now: dt.datetime | None = None
) -> None:
    """Record that ``service_id`` reported at ``now``."""
    now = now_or(now)
    hb = service_heartbeats
    values = {"service_id": service_id, "last_seen_at": now, "report_count": 1}
    dialect = conn.dialect.name
    try:
        if dialect == "postgresql":
            pg = postgresql.insert(hb).values(values)
            await conn.execute(
                pg.on_conflict_do_update(
                    index_elements=[hb.c.service_id],
                    set_={
                        "last_seen_at": pg.excluded.last_seen_at,
                        "report_count": hb.c.report_count + 1,
                    },
                )
            )
        elif dialect == "sqlite":
            lite = sqlite.insert(hb).values(values)
            await conn.execute(
                lite.on_conflict_do_update(
                    index_elements=[hb.c.service_id],
                    set_={
                        "last_seen_at": lite.excluded.last_seen_at,
                        "report_count": hb.c.report_count + 1,
                    },
                )
            )
        else:
            my = mysql.insert(hb).values(values)
            await conn.execute(
                my.on_duplicate_key_update(
                    last_seen_at=my.inserted.last_seen_at,
                    report_count=hb.c.report_count + 1,
                )
            )
    except exception.DBReferenceError as exc:
        raise exception.ServiceNotFound(service=service_id) from exc


async def last_seen(
    conn: AsyncConnection, service_ids: Sequence[int] | None = None
) -> dict[int, dt.datetime]:
    """When each service last reported (services that never did are absent)."""
    stmt = select(service_heartbeats.c.service_id, service_heartbeats.c.last_seen_at)
    if service_ids is not None:
        stmt = stmt.where(service_heartbeats.c.service_id.in_(list(service_ids)))
    rows = (await conn.execute(stmt)).all()
    return {int(r.service_id): r.last_seen_at for r in rows}


async def get_all_with_last_seen(conn: AsyncConnection, *, binary: str | None = None) -> list[Row]:
    """Live services, each with ``last_seen_at`` and ``report_count`` (None if never seen)."""
    hb = service_heartbeats
    stmt = (
        select(services, hb.c.last_seen_at, hb.c.report_count)
        .select_from(services.outerjoin(hb, hb.c.service_id == services.c.id))
        .where(live(services))
    )
    if binary is not None:
        stmt = stmt.where(services.c.binary == binary)
    return await fetch_all(conn, stmt.order_by(services.c.id))


async def minimum_version(conn: AsyncConnection, binary: str) -> int | None:
    """The lowest code version among the (not deleted) services of ``binary``."""
    stmt = select(func.min(services.c.version)).where(
        services.c.binary == binary, services.c.deleted == 0
    )
    value = (await conn.execute(stmt)).scalar()
    return None if value is None else int(value)
