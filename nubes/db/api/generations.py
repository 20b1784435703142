"""Generation counters: one row per set of cached facts, bumped with each write to them.

A cache elsewhere (the schedulers' host view, the API's flavors) reads the counter once per
use, which is one primary-key lookup, and reloads only when it moved. The
bump runs in the caller's transaction, so the counter moves exactly when the
write commits: a reader that sees the new value finds the new facts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db import group_commit
from nubes.db.engine import Database
from nubes.db.models import generations

#: Services disabled or forced down, aggregates with their hosts and metadata
#: (availability zones among them): what schedulers cache about hosts.
HOST_FACTS = "host_facts"
#: Flavors with their extra specs and access lists: what API processes cache
#: for the boots that name them (:mod:`nubes.api.flavor_cache`).
FLAVORS = "flavors"

_g = generations


def _get_statement() -> Any:
    return select(_g.c.value).where(_g.c.name == _name())


def _get_read(name: str) -> group_commit.Read:
    return group_commit.Read((__name__, "get"), _get_statement, {"_name": name})


def _value(row: dict[str, Any] | None) -> int:
    return int(row["value"] or 0) if row is not None else 0


async def get(conn: AsyncConnection, name: str) -> int:
    """The counter's value (0 before its first bump), in ``conn``'s transaction."""
    return _value(await _get_read(name).run(conn))


async def current(db: Database, name: str) -> int:
    """The counter's value on the primary now, in a transaction of its own.

    A cache asks this once per use, so it is a grouped read where the
    backend groups them (:func:`nubes.db.group_commit.fetch`): the
    concurrent asks of a burst share one transaction (and, on SQLite, one
    thread hop) that starts after each of them was asked, so each still
    sees every bump committed before it asked.
    """
    return _value(await group_commit.fetch(db, f"generation-{name}", _get_read(name)))


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
