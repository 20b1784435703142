"""Server tags (Nova's ``tags`` table): one row per (server, tag).

A server has at most :data:`MAX_TAGS` tags; each write checks the count in
its own transaction, after writing, so a request that would pass the limit
changes nothing. Listing by tag is in :mod:`nubes.db.api.instance_listing`
(:func:`filter_clause`); a deleted server's tags go with it
(:func:`nubes.db.api.instances.destroy`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, and_, delete, exists, func, insert, not_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import live
from nubes.db.models import instances, tags

#: Most tags one server may have (Nova's limit).
MAX_TAGS = 50

#: The listing filters, by the query parameter Nova names them with.
FILTERS = ("tags", "tags-any", "not-tags", "not-tags-any")


async def get_by_instances(conn: AsyncConnection, uuids: Sequence[str]) -> dict[str, list[str]]:
    """Each server's tags, sorted (a server without tags is left out)."""
    found: dict[str, list[str]] = {}
    if not uuids:
        return found
    stmt = (
        select(tags.c.resource_id, tags.c.tag)
        .where(tags.c.resource_id.in_(list(set(uuids))))
        .order_by(tags.c.resource_id, tags.c.tag)
    )
    for uuid, tag in await conn.execute(stmt):
        found.setdefault(uuid, []).append(tag)
    return found


async def get(conn: AsyncConnection, uuid: str) -> list[str]:
    """The server's tags, sorted."""
    return (await get_by_instances(conn, [uuid])).get(uuid, [])


async def exists_on(conn: AsyncConnection, uuid: str, tag: str) -> bool:
    stmt = select(tags.c.tag).where(tags.c.resource_id == uuid, tags.c.tag == tag)
    return (await conn.execute(stmt)).first() is not None


async def _check_live(conn: AsyncConnection, uuid: str) -> None:
    stmt = select(instances.c.id).where(instances.c.uuid == uuid, live(instances))
    if (await conn.execute(stmt)).first() is None:
        raise exception.InstanceNotFound(instance_id=uuid)


async def _check_count(conn: AsyncConnection, uuid: str) -> None:
    stmt = select(func.count()).select_from(tags).where(tags.c.resource_id == uuid)
    if int((await conn.execute(stmt)).scalar_one()) > MAX_TAGS:
        raise exception.TooManyInstanceTags(limit=MAX_TAGS)


async def add(conn: AsyncConnection, uuid: str, tag: str) -> bool:
    """Tag a live server; False if it had the tag already."""
    await _check_live(conn, uuid)
    if await exists_on(conn, uuid, tag):
        return False
    await conn.execute(insert(tags).values(resource_id=uuid, tag=tag))
    await _check_count(conn, uuid)
    return True


async def add_to_new(conn: AsyncConnection, uuids: Iterable[str], names: Iterable[str]) -> None:
    """Give servers being created the same tags (in the transaction creating them)."""
    unique = sorted(set(names))
    if len(unique) > MAX_TAGS:
        raise exception.TooManyInstanceTags(limit=MAX_TAGS)
    rows = [{"resource_id": uuid, "tag": tag} for uuid in uuids for tag in unique]
    if rows:
        await conn.execute(insert(tags), rows)


async def replace(conn: AsyncConnection, uuid: str, names: Iterable[str]) -> list[str]:
    """Make ``names`` the live server's only tags; its tags, sorted."""
    unique = sorted(set(names))
    if len(unique) > MAX_TAGS:
        raise exception.TooManyInstanceTags(limit=MAX_TAGS)
    await _check_live(conn, uuid)
    await conn.execute(delete(tags).where(tags.c.resource_id == uuid))
    await add_to_new(conn, [uuid], unique)
    return unique


async def remove(conn: AsyncConnection, uuid: str, tag: str) -> None:
    """Take a tag off a live server; InstanceTagNotFound if it has not got it."""
    await _check_live(conn, uuid)
    result = await conn.execute(delete(tags).where(tags.c.resource_id == uuid, tags.c.tag == tag))
    if result.rowcount == 0:
        raise exception.InstanceTagNotFound(instance_id=uuid, tag=tag)


async def remove_all(conn: AsyncConnection, uuid: str) -> None:
    """Take every tag off a server (a live one; also when it is deleted)."""
    await conn.execute(delete(tags).where(tags.c.resource_id == uuid))


def _has(tag: str) -> ColumnElement[bool]:
    return exists().where(tags.c.resource_id == instances.c.uuid, tags.c.tag == tag)


def _has_any(names: Sequence[str]) -> ColumnElement[bool]:
    return exists().where(tags.c.resource_id == instances.c.uuid, tags.c.tag.in_(list(names)))


def filter_clause(name: str, names: Sequence[str]) -> ColumnElement[bool]:
    """The instances matching listing filter ``name`` (one of :data:`FILTERS`), as Nova:
    ``tags`` all of ``names``, ``tags-any`` any of them, ``not-tags`` not all
    of them, ``not-tags-any`` none of them."""
    if name == "tags":
        return and_(*(_has(t) for t in names))
    if name == "tags-any":
        return _has_any(names)
    if name == "not-tags":
        return not_(and_(*(_has(t) for t in names)))
    if name == "not-tags-any":
        return not_(_has_any(names))
    raise exception.ValidationError(field=name, reason="not a tag filter")
