"""Server tags (os-server-tags, 2.26) and listing servers by tag, over HTTP."""

from __future__ import annotations

from nubes.db.api import instances as instances_db
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_servers import URL, create, login, make_active

__all__ = ["cloud"]

from tests.unit.api.test_servers import cloud


async def _servers(cloud: ApiHarness, c, tags: dict[str, list[str]]) -> dict[str, str]:
    ids = {}
    for name, names in tags.items():
        server = await create(c, cloud, name=name, tags=names, networks="none")
        await make_active(cloud, server["id"])
        ids[name] = server["id"]
    return ids


async def _names(c, query: str) -> set[str]:
    r = await c.get(f"{URL}?{query}")
    assert r.status_code == 200, r.text
    return {s["name"] for s in r.json()["servers"]}


async def test_listing_servers_by_tags_returns_only_the_matching_servers(
    cloud: ApiHarness,
) -> None:
    async with await login(cloud, "demo", "2.52") as c:
        await _servers(
            cloud, c, {"a": ["t1"], "ab": ["t1", "t2"], "b": ["t2"], "c": ["t3"], "none": []}
        )
        assert await _names(c, "tags=t1") == {"a", "ab"}
        assert await _names(c, "tags=t1,t2") == {"ab"}
        assert await _names(c, "tags-any=t1,t2") == {"a", "ab", "b"}
        assert await _names(c, "not-tags=t1,t2") == {"a", "b", "c", "none"}
        assert await _names(c, "not-tags-any=t1,t2") == {"c", "none"}
        assert await _names(c, "tags=t1&not-tags-any=t2") == {"a"}
        assert await _names(c, "tags=nope") == set()
        detail = (await c.get(f"{URL}/detail?tags=t1,t2")).json()["servers"]
        assert [(s["name"], s["tags"]) for s in detail] == [("ab", ["t1", "t2"])]
    # Before 2.26 the filters are not Nova's: ignored.
    async with await login(cloud, "demo", "2.25") as c:
        assert len(await _names(c, "tags=t1")) == 5


async def test_server_tags_api_adds_replaces_and_removes_tags(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo", "2.26") as c:
        server = await create(c, cloud, name="vm")
        uuid = server["id"]
        tags = f"{URL}/{uuid}/tags"
        # Building: tags cannot change yet (Nova's 409).
        r = await c.put(f"{tags}/t1")
        assert r.status_code == 409, r.text
        assert "while it is in vm_state building" in r.json()["conflictingRequest"]["message"]
        await make_active(cloud, uuid)

        r = await c.put(f"{tags}/t1")
        assert r.status_code == 201 and r.headers["location"].endswith(f"/servers/{uuid}/tags/t1")
        assert (await c.put(f"{tags}/t1")).status_code == 204
        assert (await c.get(f"{tags}/t1")).status_code == 204
        assert (await c.get(f"{tags}/t2")).status_code == 404
        assert (await c.get(tags)).json() == {"tags": ["t1"]}
        assert (await c.get(f"{URL}/{uuid}")).json()["server"]["tags"] == ["t1"]

        r = await c.put(tags, json={"tags": ["b", "a", "b"]})
        assert r.status_code == 200 and r.json() == {"tags": ["a", "b"]}
        assert (await c.delete(f"{tags}/a")).status_code == 204
        r = await c.delete(f"{tags}/a")
        assert r.status_code == 404 and "has no tag 'a'" in r.json()["itemNotFound"]["message"]
        assert (await c.delete(tags)).status_code == 204
        assert (await c.get(tags)).json() == {"tags": []}

        # Nova's validation: 1-60 characters, no ',' (nor '/'), at most 50 tags.
        r = await c.put(f"{tags}/a,b")
        assert r.status_code == 400 and "is invalid" in r.json()["badRequest"]["message"]
        assert (await c.put(f"{tags}/{'x' * 61}")).status_code == 400
        assert (await c.put(tags, json={"tags": [""]})).status_code == 400
        assert (await c.put(tags, json={"tags": "t1"})).status_code == 400
        assert (await c.put(tags, json={"tags": ["a"], "x": 1})).status_code == 400
        r = await c.put(tags, json={"tags": [f"t{i}" for i in range(51)]})
        assert r.status_code == 400
        assert r.json()["badRequest"]["message"] == (
            "The number of tags exceeded the per-server limit 50"
        )
        fifty = [f"t{i:02d}" for i in range(50)]
        assert (await c.put(tags, json={"tags": fifty})).json() == {"tags": fifty}
        r = await c.put(f"{tags}/one-more")
        assert r.status_code == 400, r.text
        assert (await c.get(tags)).json() == {"tags": fifty}  # nothing half-written

    # Before 2.26 there is no such resource.
    async with await login(cloud, "demo", "2.25") as c:
        assert (await c.get(f"{URL}/{uuid}/tags")).status_code == 404
        assert "tags" not in (await c.get(f"{URL}/{uuid}")).json()["server"]
    # Another project's server is not found; a reader may look but not tag.
    async with await login(cloud, "other", "2.26") as c:
        assert (await c.get(f"{URL}/{uuid}/tags")).status_code == 404
    async with await login(cloud, "viewer", "2.26") as c:
        assert (await c.get(f"{URL}/{uuid}/tags")).status_code == 200
        assert (await c.put(f"{URL}/{uuid}/tags/x")).status_code == 403


async def test_a_deleted_servers_tags_go_with_it(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo", "2.52") as c:
        ids = await _servers(cloud, c, {"gone": ["t9"]})
    async with cloud.state.db.writer() as conn:
        await instances_db.destroy(conn, ids["gone"])
    async with await login(cloud, "demo", "2.52") as c:
        assert await _names(c, "tags=t9") == set()
        assert await _names(c, "tags-any=t9") == set()
