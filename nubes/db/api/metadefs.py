"""Glance's metadata definitions catalog: namespaces, their resource type
associations, and their objects, properties and tags.

Objects, properties and tags are alike to store (a row named within its
namespace), so one set of functions serves the three, picked by
:data:`CHILDREN`. The visibility and policy rules live in
:mod:`nubes.api.metadefs`; this module only reads and writes rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.api._common import Row, fetch_all, fetch_one, insert_row
from nubes.db.models import (
    metadef_namespace_resource_types,
    metadef_namespaces,
    metadef_objects,
    metadef_properties,
    metadef_resource_types,
    metadef_tags,
)
from nubes.db.types import utcnow

Child = Literal["object", "property", "tag"]
CHILDREN: dict[Child, Table] = {
    "object": metadef_objects,
    "property": metadef_properties,
    "tag": metadef_tags,
}


# --- namespaces ----------------------------------------------------------------------------


async def namespace_get(conn: AsyncConnection, name: str) -> Row | None:
    ns = metadef_namespaces
    return await fetch_one(conn, select(ns).where(ns.c.namespace == name))


async def namespace_get_all(
    conn: AsyncConnection,
    *,
    project_id: str | None,
    all_visible: bool,
    visibility: str | None = None,
    resource_types: Sequence[str] = (),
    sort_key: str = "created_at",
    sort_dir: str = "desc",
) -> list[Row]:
    """Namespaces the caller sees (public ones and its project's; all for
    ``all_visible``), optionally of one visibility or associated with any
    of ``resource_types``."""
    ns, assoc = metadef_namespaces, metadef_namespace_resource_types
    stmt = select(ns)
    if not all_visible:
        stmt = stmt.where(or_(ns.c.visibility == "public", ns.c.owner == project_id))
    if visibility is not None:
        stmt = stmt.where(ns.c.visibility == visibility)
    if resource_types:
        associated = select(assoc.c.namespace_id).where(
            assoc.c.resource_type_name.in_(list(resource_types))
        )
        stmt = stmt.where(ns.c.id.in_(associated))
    column = ns.c[sort_key]
    order = column.desc() if sort_dir == "desc" else column.asc()
    return await fetch_all(conn, stmt.order_by(order, ns.c.namespace))


async def namespace_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    now = utcnow()
    return await insert_row(
        conn, metadef_namespaces, {"created_at": now, "updated_at": now, **values}
    )


async def namespace_update(
    conn: AsyncConnection, namespace_id: str, values: Mapping[str, Any]
) -> None:
    ns = metadef_namespaces
    await conn.execute(
        update(ns).where(ns.c.id == namespace_id).values({**values, "updated_at": utcnow()})
    )


async def namespace_destroy(conn: AsyncConnection, namespace_id: str) -> None:
    """The namespace with everything in it and its associations."""
    for table in CHILDREN.values():
        await conn.execute(delete(table).where(table.c.namespace_id == namespace_id))
    assoc = metadef_namespace_resource_types
    await conn.execute(delete(assoc).where(assoc.c.namespace_id == namespace_id))
    ns = metadef_namespaces
    await conn.execute(delete(ns).where(ns.c.id == namespace_id))


# --- resource types ------------------------------------------------------------------------


async def resource_type_get_all(conn: AsyncConnection) -> list[Row]:
    rt = metadef_resource_types
    return await fetch_all(conn, select(rt).order_by(rt.c.name))


async def resource_type_ensure(conn: AsyncConnection, name: str, protected: bool) -> None:
    """Write the resource type's row if it has none yet."""
    rt = metadef_resource_types
    if await fetch_one(conn, select(rt).where(rt.c.name == name)) is None:
        now = utcnow()
        await insert_row(
            conn, rt, {"name": name, "protected": protected, "created_at": now, "updated_at": now}
        )


async def associations_get(conn: AsyncConnection, namespace_ids: Sequence[str]) -> list[Row]:
    assoc = metadef_namespace_resource_types
    stmt = select(assoc).where(assoc.c.namespace_id.in_(list(namespace_ids)))
    return await fetch_all(conn, stmt.order_by(assoc.c.created_at, assoc.c.resource_type_name))


async def association_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    now = utcnow()
    return await insert_row(
        conn, metadef_namespace_resource_types, {"created_at": now, "updated_at": now, **values}
    )


async def association_delete(conn: AsyncConnection, namespace_id: str, name: str) -> bool:
    assoc = metadef_namespace_resource_types
    result = await conn.execute(
        delete(assoc).where(
            assoc.c.namespace_id == namespace_id, assoc.c.resource_type_name == name
        )
    )
    return bool(result.rowcount)


# --- objects, properties, tags ---------------------------------------------------------------


async def child_get_all(conn: AsyncConnection, kind: Child, namespace_id: str) -> list[Row]:
    table = CHILDREN[kind]
    stmt = select(table).where(table.c.namespace_id == namespace_id)
    return await fetch_all(conn, stmt.order_by(table.c.created_at, table.c.name))


async def child_get(conn: AsyncConnection, kind: Child, namespace_id: str, name: str) -> Row | None:
    table = CHILDREN[kind]
    stmt = select(table).where(table.c.namespace_id == namespace_id, table.c.name == name)
    return await fetch_one(conn, stmt)


async def child_create(conn: AsyncConnection, kind: Child, values: Mapping[str, Any]) -> Row:
    now = utcnow()
    return await insert_row(conn, CHILDREN[kind], {"created_at": now, "updated_at": now, **values})


async def child_update(
    conn: AsyncConnection, kind: Child, child_id: str, values: Mapping[str, Any]
) -> Row:
    table = CHILDREN[kind]
    await conn.execute(
        update(table).where(table.c.id == child_id).values({**values, "updated_at": utcnow()})
    )
    row = await fetch_one(conn, select(table).where(table.c.id == child_id))
    assert row is not None, "updated in this transaction"
    return row


async def child_delete(conn: AsyncConnection, kind: Child, namespace_id: str, name: str) -> bool:
    table = CHILDREN[kind]
    result = await conn.execute(
        delete(table).where(table.c.namespace_id == namespace_id, table.c.name == name)
    )
    return bool(result.rowcount)


async def child_delete_all(conn: AsyncConnection, kind: Child, namespace_id: str) -> None:
    table = CHILDREN[kind]
    await conn.execute(delete(table).where(table.c.namespace_id == namespace_id))
