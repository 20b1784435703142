"""Console authorisation tokens (Nova's ``console_auth_tokens``).

A token is shown to its user once and stored only as its SHA-256
(:func:`token_hash`), so a read of the database opens no console. It is valid
until ``expires`` and spent by its first use (:func:`consume`, an atomic
delete: two uses racing find one row between them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.models import console_auth_tokens as t
from nubes.db.types import utcnow

Row = dict[str, Any]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).hexdigest()


async def create(conn: AsyncConnection, token: str, ttl: float, values: dict[str, Any]) -> Row:
    """Store ``token`` (hashed) with ``values`` (console_type, instance_uuid,
    compute_host, host, port, internal_access_path, access_url_base), valid
    for ``ttl`` seconds from now."""
    now = utcnow()
    row = {
        **values,
        "token_hash": token_hash(token),
        "created_at": now,
        "expires": now + dt.timedelta(seconds=ttl),
    }
    await conn.execute(insert(t).values(**row))
    return row


async def get_valid(conn: AsyncConnection, token: str) -> Row | None:
    """The unexpired token's row (not spent by reading), or None."""
    stmt = select(t).where(t.c.token_hash == token_hash(token), t.c.expires > utcnow())
    found = (await conn.execute(stmt)).mappings().first()
    return None if found is None else dict(found)


async def consume(conn: AsyncConnection, row: Row) -> bool:
    """Spend the token of ``row`` (from :func:`get_valid`): True for the one
    caller whose delete removed it."""
    result = await conn.execute(delete(t).where(t.c.id == row["id"], t.c.expires > utcnow()))
    return result.rowcount == 1


async def delete_token(conn: AsyncConnection, token: str) -> bool:
    """Revoke one token; False when there was none (or it had expired)."""
    row = await get_valid(conn, token)
    if row is None:
        return False
    return await consume(conn, row)


async def delete_for_instance(conn: AsyncConnection, instance_uuid: str) -> int:
    """Revoke every console of an instance (it was deleted or moved)."""
    result = await conn.execute(delete(t).where(t.c.instance_uuid == instance_uuid))
    return int(result.rowcount)


async def delete_expired(conn: AsyncConnection) -> int:
    result = await conn.execute(delete(t).where(t.c.expires <= utcnow()))
    return int(result.rowcount)
