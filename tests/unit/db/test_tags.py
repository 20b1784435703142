"""Server tags: the per-server limit, and listing instances by tag (Nova's four filters)."""

from __future__ import annotations

import pytest

from nubes import exception
from nubes.db.api import instances, tags
from nubes.db.engine import Database
from tests.unit.db.factories import make_instance


async def _tagged(db: Database, project: str, table: dict[str, list[str]]) -> dict[str, str]:
    uuids = {}
    async with db.writer() as conn:
        for name, names in table.items():
            row = await make_instance(conn, project_id=project, display_name=name)
            await tags.add_to_new(conn, [row["uuid"]], names)
            uuids[name] = row["uuid"]
    return uuids


async def test_tag_filters_match_nova(db: Database) -> None:
    project = "tag-filters"
    await _tagged(db, project, {"a": ["t1"], "ab": ["t1", "t2"], "b": ["t2"], "none": []})

    async def names(**filters: list[str]) -> set[str]:
        async with db.reader() as conn:
            rows = await instances.get_all(conn, filters={"project_id": project, **filters})
        return {r["display_name"] for r in rows}

    assert await names(tags=["t1"]) == {"a", "ab"}
    assert await names(tags=["t1", "t2"]) == {"ab"}
    assert await names(**{"tags-any": ["t1", "t2"]}) == {"a", "ab", "b"}
    assert await names(**{"not-tags": ["t1", "t2"]}) == {"a", "b", "none"}
    assert await names(**{"not-tags-any": ["t1", "t2"]}) == {"none"}


async def test_a_server_never_has_more_than_fifty_tags(db: Database) -> None:
    uuid = (await _tagged(db, "tag-limit", {"vm": [f"t{i}" for i in range(49)]}))["vm"]
    async with db.writer() as conn:
        assert await tags.add(conn, uuid, "fiftieth") is True
        assert await tags.add(conn, uuid, "fiftieth") is False
    with pytest.raises(exception.TooManyInstanceTags):
        async with db.writer() as conn:
            await tags.add(conn, uuid, "one-too-many")
    async with db.reader() as conn:
        found = await tags.get(conn, uuid)
    assert len(found) == 50 and "one-too-many" not in found
    async with db.writer() as conn:
        assert await tags.replace(conn, uuid, ["x", "x", "y"]) == ["x", "y"]
        await instances.destroy(conn, uuid)
    async with db.reader() as conn:
        assert await tags.get(conn, uuid) == []
    with pytest.raises(exception.InstanceNotFound):
        async with db.writer() as conn:
            await tags.add(conn, uuid, "late")
