"""Quota limits, the per-project quota lock, and counting what a project uses.

The rules (which limit applies, what a request may add) live in
:mod:`nubes.api.quotas`; this module only reads and writes rows.

Race safety: a write that adds usage first calls :func:`lock_project`, which
write-locks the project's row of ``quota_locks`` (an upsert on PostgreSQL
and MariaDB, as ``SELECT ... FOR UPDATE`` would), then counts and inserts in
the same transaction. Concurrent requests of the project queue on that row, and each counts what
the ones before it committed (both servers run READ COMMITTED, so every
statement sees the latest commits). SQLite has a single writer connection
whose transactions start with ``BEGIN IMMEDIATE``: writers already run one
at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, literal, or_, select, union_all, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.api._common import StatementCache, live
from nubes.db.models import (
    instance_group_members,
    instance_groups,
    instances,
    quota_classes,
    quota_locks,
    quotas,
)

#: ``quotas.user_id`` of a project's own limit.
PROJECT_LEVEL = ""

_STATEMENTS = StatementCache()


# --- the lock ----------------------------------------------------------------


async def lock_project(conn: AsyncConnection, project_id: str) -> None:
    """Hold the project's quota lock until the caller's transaction ends.

    One upsert creates the row if it is missing and write-locks it: an
    insert that loses the race waits for the winner's commit and then locks
    the row. (A plain INSERT IGNORE + SELECT FOR UPDATE would deadlock on
    InnoDB, whose duplicate-key check takes a shared lock the waiters then
    all try to upgrade.)
    """
    dialect = conn.dialect.name
    stmt = _STATEMENTS.get(("lock_project", dialect), lambda: _lock_statement(dialect))
    await conn.execute(stmt, {"project_id": project_id})


def _lock_statement(dialect: str) -> Any:
    # Prebuilt (every boot takes the lock): the row's value comes as the
    # ``project_id`` parameter of the execution.
    if dialect == "postgresql":
        pg = postgresql.insert(quota_locks)
        return pg.on_conflict_do_update(
            index_elements=[quota_locks.c.project_id],
            set_={"project_id": pg.excluded.project_id},
        )
    if dialect == "sqlite":
        # The single writer already runs write transactions one at a time.
        return sqlite.insert(quota_locks).on_conflict_do_nothing()
    my = mysql.insert(quota_locks)
    return my.on_duplicate_key_update(project_id=my.inserted.project_id)


# --- limits ------------------------------------------------------------------


async def class_get(conn: AsyncConnection, class_name: str) -> dict[str, int]:
    """The limits a quota class sets (resources it does not set are absent)."""
    q = quota_classes
    rows = await conn.execute(
        select(q.c.resource, q.c.hard_limit).where(q.c.class_name == class_name)
    )
    return {resource: int(limit) for resource, limit in rows.all()}


async def class_set(conn: AsyncConnection, class_name: str, limits: Mapping[str, int]) -> None:
    q = quota_classes
    for resource, limit in limits.items():
        where = (q.c.class_name == class_name) & (q.c.resource == resource)
        result = await conn.execute(update(q).where(where).values(hard_limit=limit))
        if not result.rowcount:
            await conn.execute(
                q.insert().values(class_name=class_name, resource=resource, hard_limit=limit)
            )


async def limits_get(
    conn: AsyncConnection, project_id: str, user_id: str | None = None
) -> dict[str, int]:
    """The limits set for the project (or for one user in it); absent means inherited."""
    q = quotas
    rows = await conn.execute(
        select(q.c.resource, q.c.hard_limit).where(
            q.c.project_id == project_id, q.c.user_id == (user_id or PROJECT_LEVEL)
        )
    )
    return {resource: int(limit) for resource, limit in rows.all()}


async def limit_levels(
    conn: AsyncConnection, class_name: str, project_id: str, user_id: str | None = None
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """The limits the quota class, the project and (given) the user set, in one statement.

    What :func:`class_get` and :func:`limits_get` read, for a check that
    needs every level (a boot's quota check): one round trip instead of
    three. The user's limits are ``{}`` when ``user_id`` is None.
    """
    found: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})
    params = {"_class": class_name, "_project": project_id, "_user": user_id or PROJECT_LEVEL}
    rows = await conn.execute(_limit_levels_statement(bool(user_id)), params)
    for level, resource, limit in rows.all():
        found[int(level)][resource] = int(limit)
    return found


def _limit_levels_statement(with_user: bool) -> Any:
    # Prebuilt: every boot runs it, and building and cache-keying the union
    # cost more than running it.
    def build() -> Any:
        c, q = quota_classes, quotas
        project = bindparam("_project", type_=q.c.project_id.type)
        parts = [
            select(literal(0).label("level"), c.c.resource, c.c.hard_limit).where(
                c.c.class_name == bindparam("_class", type_=c.c.class_name.type)
            ),
            select(literal(1).label("level"), q.c.resource, q.c.hard_limit).where(
                q.c.project_id == project, q.c.user_id == PROJECT_LEVEL
            ),
        ]
        if with_user:
            parts.append(
                select(literal(2).label("level"), q.c.resource, q.c.hard_limit).where(
                    q.c.project_id == project,
                    q.c.user_id == bindparam("_user", type_=q.c.user_id.type),
                )
            )
        return union_all(*parts)

    return _STATEMENTS.get(("limit_levels", with_user), build)


async def limits_set(
    conn: AsyncConnection,
    project_id: str,
    limits: Mapping[str, int],
    user_id: str | None = None,
) -> None:
    q = quotas
    user = user_id or PROJECT_LEVEL
    for resource, limit in limits.items():
        where = (q.c.project_id == project_id) & (q.c.user_id == user) & (q.c.resource == resource)
        result = await conn.execute(update(q).where(where).values(hard_limit=limit))
        if not result.rowcount:
            await conn.execute(
                q.insert().values(
                    project_id=project_id, user_id=user, resource=resource, hard_limit=limit
                )
            )


async def project_limit_rows(
    conn: AsyncConnection, resources: Sequence[str], project_id: str | None = None
) -> list[dict[str, Any]]:
    """The project-level limits set of ``resources`` (of one project, or of
    all): ``project_id``, ``resource``, ``hard_limit``."""
    q = quotas
    stmt = select(q.c.project_id, q.c.resource, q.c.hard_limit).where(
        q.c.user_id == PROJECT_LEVEL, q.c.resource.in_(list(resources))
    )
    if project_id is not None:
        stmt = stmt.where(q.c.project_id == project_id)
    rows = await conn.execute(stmt.order_by(q.c.project_id, q.c.resource))
    return [dict(row) for row in rows.mappings().all()]


async def limit_delete(conn: AsyncConnection, project_id: str, resource: str) -> bool:
    """Forget one project-level limit; whether there was one."""
    q = quotas
    result = await conn.execute(
        delete(q).where(
            q.c.project_id == project_id, q.c.user_id == PROJECT_LEVEL, q.c.resource == resource
        )
    )
    return bool(result.rowcount)


async def user_limit_sums(conn: AsyncConnection, project_id: str) -> dict[str, int]:
    """Per resource, the sum of the (not unlimited) limits set for users of the project."""
    q = quotas
    rows = await conn.execute(
        select(q.c.resource, func.sum(q.c.hard_limit))
        .where(q.c.project_id == project_id, q.c.user_id != PROJECT_LEVEL, q.c.hard_limit >= 0)
        .group_by(q.c.resource)
    )
    return {resource: int(total or 0) for resource, total in rows.all()}


async def limits_delete(conn: AsyncConnection, project_id: str, user_id: str | None = None) -> int:
    """Forget a user's limits, or a project's and all of its users' (as Nova); rows gone."""
    where = quotas.c.project_id == project_id
    if user_id:
        where = where & (quotas.c.user_id == user_id)
    result = await conn.execute(delete(quotas).where(where))
    return int(result.rowcount)


# --- usage -------------------------------------------------------------------


def _resize_extra(row: Mapping[str, Any]) -> tuple[int, int]:
    """What a resize in progress adds to the instance's own size: (vCPUs, MiB).

    ``old_flavor`` and ``new_flavor`` are set when a resize is asked for and
    cleared when it is confirmed, reverted or fails; the instance's own
    columns switch to the new size when it finishes. Until then both flavors
    may be in use (a revert goes back to the old one), so the larger of the
    two counts, as Nova counts both allocations: a create cannot take what a
    resize was granted, and a revert never goes over quota.
    """
    sizes = [row["old_flavor"] or {}, row["new_flavor"] or {}]
    vcpus = max(int(size.get("vcpus") or 0) for size in sizes)
    ram = max(int(size.get("memory_mb") or 0) for size in sizes)
    return max(0, vcpus - int(row["vcpus"] or 0)), max(0, ram - int(row["memory_mb"] or 0))


async def usage(
    conn: AsyncConnection, project_id: str, user_id: str | None = None
) -> dict[str, int]:
    """Live instances, their vCPUs and RAM, and server groups of a project (or one user)."""
    i, g = instances, instance_groups
    where = [i.c.project_id == project_id, live(i)]
    group_where = [g.c.project_id == project_id, live(g)]
    if user_id:
        where.append(i.c.user_id == user_id)
        group_where.append(g.c.user_id == user_id)
    count, vcpus, ram = (
        await conn.execute(
            select(
                func.count(i.c.id),
                func.coalesce(func.sum(i.c.vcpus), 0),
                func.coalesce(func.sum(i.c.memory_mb), 0),
            ).where(*where)
        )
    ).one()
    resizing = await conn.execute(
        select(i.c.vcpus, i.c.memory_mb, i.c.old_flavor, i.c.new_flavor).where(
            *where, or_(i.c.new_flavor.is_not(None), i.c.old_flavor.is_not(None))
        )
    )
    cores, memory = int(vcpus), int(ram)
    for row in resizing.mappings().all():
        extra_cores, extra_ram = _resize_extra(dict(row))
        cores += extra_cores
        memory += extra_ram
    group_count = await conn.scalar(select(func.count(g.c.id)).where(*group_where))
    return {
        "instances": int(count),
        "cores": cores,
        "ram": memory,
        "server_groups": int(group_count or 0),
    }


async def group_member_count(
    conn: AsyncConnection, group_uuid: str, user_id: str | None = None
) -> int:
    """Live members of a server group (only ``user_id``'s servers, when given)."""
    g, m, i = instance_groups, instance_group_members, instances
    stmt = (
        select(func.count(m.c.id))
        .select_from(g.join(m, m.c.group_id == g.c.id))
        .where(g.c.uuid == group_uuid, live(g), live(m))
    )
    if user_id:
        owned = select(i.c.uuid).where(i.c.user_id == user_id, live(i))
        stmt = stmt.where(m.c.instance_uuid.in_(owned))
    return int(await conn.scalar(stmt) or 0)
