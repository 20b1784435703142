"""The catalog entries operators register: regions, services and their
endpoints (Keystone v3's catalog API).

nubes' own services and region are not rows: their URLs follow the running
configuration (:mod:`nubes.api.identity.catalog` joins the two). A
service's endpoints go with it; a region with child regions or endpoints
cannot be deleted (Keystone's rule), so no endpoint names a region that is
gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import Row, fetch_all, fetch_one, insert_row
from nubes.db.models import catalog_services, endpoints, regions


def _filtered(table: Any, order: Any, **filters: Any) -> Any:
    stmt = select(table)
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(table.c[column] == value)
    return stmt.order_by(order)


# --- regions -----------------------------------------------------------------


async def region_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    """DBDuplicateEntry if the id is taken."""
    return await insert_row(conn, regions, {"id": uuid.uuid4().hex, **values})


async def region_get(conn: AsyncConnection, region_id: str) -> Row | None:
    return await fetch_one(conn, select(regions).where(regions.c.id == region_id))


async def region_get_all(
    conn: AsyncConnection, *, parent_region_id: str | None = None
) -> list[Row]:
    return await fetch_all(
        conn, _filtered(regions, regions.c.id, parent_region_id=parent_region_id)
    )


async def region_update(conn: AsyncConnection, region_id: str, values: Mapping[str, Any]) -> None:
    result = await conn.execute(
        update(regions).where(regions.c.id == region_id).values(dict(values))
    )
    if not result.rowcount:
        raise exception.NotFound(reason=f"Could not find region: {region_id}.")


async def region_delete(conn: AsyncConnection, region_id: str) -> None:
    """Forbidden while child regions or endpoints use it."""
    children = select(func.count()).where(regions.c.parent_region_id == region_id)
    used = select(func.count()).where(endpoints.c.region_id == region_id)
    if (await conn.execute(children)).scalar_one() or (await conn.execute(used)).scalar_one():
        raise exception.Forbidden(
            reason=f"Unable to delete region {region_id} because it or its child regions "
            "have associated endpoints."
        )
    result = await conn.execute(delete(regions).where(regions.c.id == region_id))
    if not result.rowcount:
        raise exception.NotFound(reason=f"Could not find region: {region_id}.")


# --- services ----------------------------------------------------------------


async def service_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    return await insert_row(conn, catalog_services, {"id": uuid.uuid4().hex, **values})


async def service_get(conn: AsyncConnection, service_id: str) -> Row | None:
    stmt = select(catalog_services).where(catalog_services.c.id == service_id)
    return await fetch_one(conn, stmt)


async def service_get_all(
    conn: AsyncConnection, *, type: str | None = None, name: str | None = None
) -> list[Row]:
    order = catalog_services.c.type
    return await fetch_all(conn, _filtered(catalog_services, order, type=type, name=name))


async def service_update(conn: AsyncConnection, service_id: str, values: Mapping[str, Any]) -> None:
    result = await conn.execute(
        update(catalog_services).where(catalog_services.c.id == service_id).values(dict(values))
    )
    if not result.rowcount:
        raise exception.NotFound(reason=f"Could not find service: {service_id}.")


async def service_delete(conn: AsyncConnection, service_id: str) -> None:
    """Delete the service with its endpoints."""
    result = await conn.execute(delete(catalog_services).where(catalog_services.c.id == service_id))
    if not result.rowcount:
        raise exception.NotFound(reason=f"Could not find service: {service_id}.")
    await conn.execute(delete(endpoints).where(endpoints.c.service_id == service_id))


# --- endpoints ---------------------------------------------------------------


async def endpoint_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    return await insert_row(conn, endpoints, {"id": uuid.uuid4().hex, **values})


async def endpoint_get(conn: AsyncConnection, endpoint_id: str) -> Row | None:
    return await fetch_one(conn, select(endpoints).where(endpoints.c.id == endpoint_id))


async def endpoint_get_all(
    conn: AsyncConnection,
    *,
    service_id: str | None = None,
    interface: str | None = None,
    region_id: str | None = None,
) -> list[Row]:
    stmt = _filtered(
        endpoints, endpoints.c.id, service_id=service_id, interface=interface, region_id=region_id
    )
    return await fetch_all(conn, stmt)


async def endpoint_update(
    conn: AsyncConnection, endpoint_id: str, values: Mapping[str, Any]
) -> None:
    result = await conn.execute(
        update(endpoints).where(endpoints.c.id == endpoint_id).values(dict(values))
    )
    if not result.rowcount:
        raise exception.NotFound(reason=f"Could not find endpoint: {endpoint_id}.")


async def endpoint_delete(conn: AsyncConnection, endpoint_id: str) -> None:
    result = await conn.execute(delete(endpoints).where(endpoints.c.id == endpoint_id))
    if not result.rowcount:
        raise exception.NotFound(reason=f"Could not find endpoint: {endpoint_id}.")
