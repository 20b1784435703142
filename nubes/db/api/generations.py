"""Generation counters: one row per set of cached facts, bumped with each write to them.

A cache elsewhere (the schedulers' host view) reads the counter once per
use, which is one primary-key lookup, and reloads only when it moved. The
bump runs in the caller's transaction, so the counter moves exactly when the
write commits: a reader that sees the new value finds the new facts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.models import generations

#: Services disabled or forced down, aggregates with their hosts and metadata
#: (availability zones among them): what schedulers cache about hosts.
HOST_FACTS = "host_facts"

_g = generations


async def get(conn: AsyncConnection, name: str) -> int:
    """The counter's value (0 before its first bump)."""
    value = (await conn.execute(select(_g.c.value).where(_g.c.name == name))).scalar()
    return int(value or 0)


def _upsert(dialect: str) -> Any:
    # One statement that creates the row or increments it, so concurrent
    # first bumps cannot collide on the key.
    bumped = {"value": _g.c.value + 1}
    if dialect == "postgresql":
        pg = postgresql.insert(_g).values(name=_name(), value=1)
        return pg.on_conflict_do_update(index_elements=[_g.c.name], set_=bumped)
    if dialect == "mysql":
        my = mysql.insert(_g).values(name=_name(), value=1)
        return my.on_duplicate_key_update(bumped)
    lite = sqlite.insert(_g).values(name=_name(), value=1)
    return lite.on_conflict_do_update(index_elements=[_g.c.name], set_=bumped)


def _name() -> Any:
    return bindparam("_name")


async def bump(conn: AsyncConnection, name: str) -> None:
    """Move the counter on, in the caller's transaction (with the write it marks)."""
    await conn.execute(_upsert(conn.dialect.name), {"_name": name})
