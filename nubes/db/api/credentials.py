"""Stored credentials (Keystone's ``/v3/credentials``): rows whose blob is
already encrypted by the caller (:mod:`nubes.api.identity.credential_keys`);
no clear blob reaches this module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import Row, fetch_all, fetch_one, insert_row
from nubes.db.models import credentials


async def credential_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    """409 if a credential with that id exists (an ec2 id is its access key's hash)."""
    if await credential_get(conn, values["id"]) is not None:
        raise exception.Conflict(reason=f"Duplicate entry found with id {values['id']}.")
    return await insert_row(conn, credentials, dict(values))


async def credential_get(conn: AsyncConnection, credential_id: str) -> Row | None:
    return await fetch_one(conn, select(credentials).where(credentials.c.id == credential_id))


async def credential_get_all(
    conn: AsyncConnection, *, user_id: str | None = None, type_: str | None = None
) -> list[Row]:
    stmt = select(credentials)
    if user_id is not None:
        stmt = stmt.where(credentials.c.user_id == user_id)
    if type_ is not None:
        stmt = stmt.where(credentials.c.type == type_)
    return await fetch_all(conn, stmt.order_by(credentials.c.created_at, credentials.c.id))


async def credential_update(
    conn: AsyncConnection, credential_id: str, encrypted_blob: str, key_hash: str
) -> None:
    await conn.execute(
        update(credentials)
        .where(credentials.c.id == credential_id)
        .values(encrypted_blob=encrypted_blob, key_hash=key_hash)
    )


async def credential_delete(conn: AsyncConnection, credential_id: str) -> bool:
    result = await conn.execute(delete(credentials).where(credentials.c.id == credential_id))
    return bool(result.rowcount)
