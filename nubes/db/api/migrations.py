"""Migration records (cold and live migrations, resizes, evacuations).

Not to be confused with :mod:`nubes.db.migration`, which migrates the schema.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db import group_commit
from nubes.db.api._common import (
    Row,
    check_columns,
    fetch_all,
    fetch_one,
    insert_row,
    live,
    new_uuid,
    update_row,
)
from nubes.db.engine import Database
from nubes.db.models import NOT_DELETED, migrations
from nubes.db.types import utcnow

_m = migrations

#: Statuses of a migration that no longer holds resources anywhere.
FINISHED_STATUSES = ("confirmed", "reverted", "error", "failed", "completed", "done", "cancelled")


async def create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    data = dict(values)
    check_columns(_m, data)
    data.setdefault("uuid", new_uuid())
    return await insert_row(conn, _m, data)


async def _get(conn: AsyncConnection, where: ColumnElement[bool], name: Any) -> Row:
    row = await fetch_one(conn, select(_m).where(where, live(_m)))
    if row is None:
        raise exception.MigrationNotFound(migration_id=name)
    return row


def _get_by_id_statement() -> Any:
    # Every parameter bound by name (a prepared statement's rule): "live" as a literal.
    return select(_m).where(_m.c.id == bindparam("_id"), _m.c.deleted == _LIVE)


def get_read(migration_id: int) -> group_commit.Read:
    """:func:`get_by_id` as a description (None if none), for
    :func:`nubes.db.group_commit.fetch_together` or a commit's transaction."""
    return group_commit.Read((__name__, "get"), _get_by_id_statement, {"_id": migration_id})


def found(row: Row | None, migration_id: int) -> Row:
    """What :func:`get_read` found: the row, or MigrationNotFound."""
    if row is None:
        raise exception.MigrationNotFound(migration_id=migration_id)
    return row


async def get_by_id(conn: AsyncConnection, migration_id: int) -> Row:
    return found(await get_read(migration_id).run(conn), migration_id)


async def current(db: Database, migration_id: int) -> Row:
    """:func:`get_by_id` on the primary now, in a transaction of its own: a
    grouped read where the backend groups them (a compute host's reads of
    its migration, and the authoriser's look at it first)."""
    return found(
        await group_commit.fetch(db, f"migration-{migration_id}", get_read(migration_id)),
        migration_id,
    )


async def get_by_uuid(conn: AsyncConnection, uuid: str) -> Row:
    return await _get(conn, _m.c.uuid == uuid, uuid)


async def get_by_instance_and_status(conn: AsyncConnection, instance_uuid: str, status: str) -> Row:
    """The newest migration of an instance in ``status``."""
    stmt = (
        select(_m)
        .where(_m.c.instance_uuid == instance_uuid, _m.c.status == status, live(_m))
        .order_by(_m.c.id.desc())
        .limit(1)
    )
    row = await fetch_one(conn, stmt)
    if row is None:
        raise exception.MigrationNotFound(migration_id=f"{status} of {instance_uuid}")
    return row


async def update(conn: AsyncConnection, migration_id: int, values: Mapping[str, Any]) -> Row:
    check_columns(_m, values, extra_protected=("uuid",))
    row = await update_row(conn, _m, _m.c.id == migration_id, values)
    if row is None:
        raise exception.MigrationNotFound(migration_id=migration_id)
    return row


async def update_status(
    conn: AsyncConnection, migration_id: int, expected: str, status: str
) -> Row | None:
    """Set ``status`` if the migration is still in ``expected`` (compare-and-set).

    The new row, or None when someone else moved the migration on first.
    """
    return await update_row(
        conn, _m, _m.c.id == migration_id, {"status": status}, conditions=[_m.c.status == expected]
    )


def _status_filter(
    statuses: Sequence[str] | None, exclude_statuses: Sequence[str] | None
) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if statuses is not None:
        clauses.append(_m.c.status.in_(list(statuses)))
    if exclude_statuses is not None:
        clauses.append(_m.c.status.not_in(list(exclude_statuses)))
    return clauses


async def list_by_instance(
    conn: AsyncConnection,
    instance_uuid: str,
    *,
    statuses: Sequence[str] | None = None,
    exclude_statuses: Sequence[str] | None = None,
) -> list[Row]:
    stmt = select(_m).where(
        _m.c.instance_uuid == instance_uuid, live(_m), *_status_filter(statuses, exclude_statuses)
    )
    return await fetch_all(conn, stmt.order_by(_m.c.id))


async def list_by_host(
    conn: AsyncConnection,
    host: str,
    *,
    node: str | None = None,
    statuses: Sequence[str] | None = None,
    exclude_statuses: Sequence[str] | None = None,
) -> list[Row]:
    """Migrations from or to ``host`` (and ``node`` on that side, when given)."""
    if node is None:
        side = or_(_m.c.source_compute == host, _m.c.dest_compute == host)
    else:
        side = or_(
            and_(_m.c.source_compute == host, _m.c.source_node == node),
            and_(_m.c.dest_compute == host, _m.c.dest_node == node),
        )
    stmt = select(_m).where(side, live(_m), *_status_filter(statuses, exclude_statuses))
    return await fetch_all(conn, stmt.order_by(_m.c.id))


async def list_in_progress_by_host(
    conn: AsyncConnection, host: str, *, node: str | None = None
) -> list[Row]:
    """Migrations that still hold or expect resources on ``host``."""
    return await list_by_host(conn, host, node=node, exclude_statuses=FINISHED_STATUSES)


async def list_all(
    conn: AsyncConnection,
    *,
    statuses: Sequence[str] | None = None,
    migration_type: str | None = None,
    limit: int | None = None,
) -> list[Row]:
    stmt = select(_m).where(live(_m), *_status_filter(statuses, None))
    if migration_type is not None:
        stmt = stmt.where(_m.c.migration_type == migration_type)
    stmt = stmt.order_by(_m.c.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return await fetch_all(conn, stmt)


#: Filters of :func:`list_filtered` matched for equality.
_EXACT_FILTERS = ("instance_uuid", "migration_type", "source_compute", "user_id", "project_id")


async def list_filtered(
    conn: AsyncConnection,
    *,
    filters: Mapping[str, Any],
    newest_first: bool = False,
    limit: int | None = None,
    marker: Row | None = None,
) -> list[Row]:
    """Migrations matching Nova's os-migrations filters.

    ``filters`` may hold ``status`` (one or a list), ``host`` (source or
    destination; it wins over ``source_compute``), ``instance_uuid``,
    ``user_id``, ``project_id``,
    ``migration_type``, ``source_compute``, ``changes_since`` (changed,
    or created and never changed, at or after it) and ``changes_before``
    (at or before it). Hidden migrations are
    never listed. ``newest_first`` orders by (created_at, id) descending and
    pages after ``marker``; otherwise the order is by id.
    """
    stmt = select(_m).where(live(_m), _m.c.hidden.is_(False))
    status = filters.get("status")
    if status is not None:
        stmt = stmt.where(_m.c.status.in_([status] if isinstance(status, str) else list(status)))
    host = filters.get("host")
    if host is not None:
        stmt = stmt.where(or_(_m.c.source_compute == host, _m.c.dest_compute == host))
    for name in _EXACT_FILTERS:
        if name == "source_compute" and host is not None:
            continue
        if filters.get(name) is not None:
            stmt = stmt.where(_m.c[name] == filters[name])
    changed = func.coalesce(_m.c.updated_at, _m.c.created_at)
    since: dt.datetime | None = filters.get("changes_since")
    if since is not None:
        stmt = stmt.where(changed >= since)
    before: dt.datetime | None = filters.get("changes_before")
    if before is not None:
        stmt = stmt.where(changed <= before)
    if not newest_first:
        return await fetch_all(conn, stmt.order_by(_m.c.id))
    if marker is not None:
        stmt = stmt.where(
            or_(
                _m.c.created_at < marker["created_at"],
                and_(_m.c.created_at == marker["created_at"], _m.c.id < marker["id"]),
            )
        )
    stmt = stmt.order_by(_m.c.created_at.desc(), _m.c.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return await fetch_all(conn, stmt)


async def list_from_host(
    conn: AsyncConnection, host: str, migration_type: str, statuses: Sequence[str]
) -> list[Row]:
    """Live migrations of ``migration_type`` from ``host`` in one of ``statuses``, by id."""
    stmt = (
        select(_m)
        .where(
            _m.c.source_compute == host,
            live(_m),
            _m.c.status.in_(list(statuses)),
            _m.c.migration_type == migration_type,
        )
        .order_by(_m.c.id)
    )
    return await fetch_all(conn, stmt)


async def update_if(
    conn: AsyncConnection,
    migration_id: int,
    values: Mapping[str, Any],
    *,
    migration_type: str,
    status: str,
) -> Row | None:
    """``values`` on the migration if it is of ``migration_type`` and in ``status``,
    decided in the UPDATE itself (nothing read before can change under it);
    the new row, or None when it is not."""
    return await update_row(
        conn,
        _m,
        _m.c.id == migration_id,
        values,
        conditions=[_m.c.migration_type == migration_type, _m.c.status == status],
    )


async def ids_finished_before(
    conn: AsyncConnection, before: dt.datetime, migration_types: Sequence[str], limit: int
) -> list[int]:
    """Live migrations of ``migration_types`` in status ``finished`` (waiting for
    their user's confirm) since before ``before``, oldest first, at most ``limit``."""
    stmt = (
        select(_m.c.id)
        .where(
            _m.c.status == "finished",
            _m.c.migration_type.in_(list(migration_types)),
            _m.c.updated_at < before,
            live(_m),
        )
        .order_by(_m.c.updated_at)
        .limit(limit)
    )
    return [int(r[0]) for r in await conn.execute(stmt)]


# --- descriptions for a task's commit (:func:`nubes.db.group_commit.commit`) ---

_LIVE: Any = literal_column(str(NOT_DELETED))


def _plain(value: Any) -> Any:
    # A status enum binds as its value: the statement is compiled without our column types.
    return value.value if isinstance(value, enum.Enum) else value


def update_write(
    migration_id: int,
    migration_type: str,
    values: Mapping[str, Any],
    *,
    expected: Sequence[str] | None,
    missed: group_commit.Missed,
) -> group_commit.Write:
    """``values`` (and ``updated_at``) on the live migration of ``migration_type``,
    if its status is one of ``expected`` (any if None); ``missed`` otherwise."""
    data = {k: _plain(v) for k, v in values.items()}
    data.setdefault("updated_at", utcnow())
    keys = tuple(sorted(data))
    count = None if expected is None else len(expected)
    m = _m.c

    def build() -> Any:
        where = [
            m.id == bindparam("_id"),
            m.deleted == _LIVE,
            m.migration_type == bindparam("_type"),
        ]
        if count is not None:
            where.append(m.status.in_([bindparam(f"_from{n}") for n in range(count)]))
        return _m.update().where(*where).values({k: bindparam(f"_v_{k}") for k in keys})

    params: dict[str, Any] = {"_id": migration_id, "_type": migration_type}
    params.update({f"_v_{k}": v for k, v in data.items()})
    params.update({f"_from{n}": s for n, s in enumerate(expected or ())})
    return group_commit.Write((__name__, "update", keys, count), build, params, missed)


def not_in_write(
    migration_id: int, status: str, *, missed: group_commit.Missed
) -> group_commit.Write:
    """A read for a commit: the live migration is not in ``status`` (``missed`` if it is)."""
    m = _m.c

    def build() -> Any:
        return select(m.id).where(
            m.id == bindparam("_id"), m.deleted == _LIVE, m.status != bindparam("_status")
        )

    params = {"_id": migration_id, "_status": _plain(status)}
    return group_commit.Write((__name__, "not_in"), build, params, missed, read=True)
