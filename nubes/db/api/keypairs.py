"""Key pairs (Nova's ``key_pairs``): per user, the name unique among the user's own.

Hard-deleted: a server keeps its ``key_name`` after its key pair is gone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.models import key_pairs
from nubes.db.types import utcnow

Row = dict[str, Any]


async def create(conn: AsyncConnection, values: dict[str, Any]) -> Row:
    """Insert a key pair; KeyPairExists when the user has one of that name."""
    if await get_or_none(conn, values["user_id"], values["name"]) is not None:
        raise exception.KeyPairExists(key_name=values["name"])
    try:
        await conn.execute(insert(key_pairs).values(**values, created_at=utcnow()))
    except exception.DBDuplicateEntry:
        raise exception.KeyPairExists(key_name=values["name"]) from None
    return await get(conn, values["user_id"], values["name"])


async def get_or_none(conn: AsyncConnection, user_id: str, name: str) -> Row | None:
    stmt = select(key_pairs).where(key_pairs.c.user_id == user_id, key_pairs.c.name == name)
    found = (await conn.execute(stmt)).mappings().first()
    return None if found is None else dict(found)


async def get(conn: AsyncConnection, user_id: str, name: str) -> Row:
    found = await get_or_none(conn, user_id, name)
    if found is None:
        raise exception.KeypairNotFound(name=name, user_id=user_id)
    return found


async def get_all(
    conn: AsyncConnection, user_id: str, *, limit: int | None = None, marker: str | None = None
) -> list[Row]:
    """The user's key pairs by name; ``marker`` is the name of the last one seen."""
    stmt = select(key_pairs).where(key_pairs.c.user_id == user_id)
    if marker is not None:
        if await get_or_none(conn, user_id, marker) is None:
            raise exception.MarkerNotFound(marker=marker)
        stmt = stmt.where(key_pairs.c.name > marker)
    stmt = stmt.order_by(key_pairs.c.name)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def count(conn: AsyncConnection, user_id: str) -> int:
    stmt = select(func.count()).select_from(key_pairs).where(key_pairs.c.user_id == user_id)
    return int((await conn.execute(stmt)).scalar_one())


async def destroy(conn: AsyncConnection, user_id: str, name: str) -> None:
    stmt = delete(key_pairs).where(key_pairs.c.user_id == user_id, key_pairs.c.name == name)
    if (await conn.execute(stmt)).rowcount != 1:
        raise exception.KeypairNotFound(name=name, user_id=user_id)
