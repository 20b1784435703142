"""Project hierarchies over HTTP (Keystone's ``parent_id``, parents and
subtree on show, the rules on delete, disable and depth)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.api.conftest import ApiHarness

V3 = "/identity/v3"


async def _project(c: httpx.AsyncClient, name: str, **extra: Any) -> dict[str, Any]:
    r = await c.post(f"{V3}/projects", json={"project": {"name": name, **extra}})
    assert r.status_code == 201, r.text
    return dict(r.json()["project"])


async def test_tree_of_projects(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        domain = (await c.post(f"{V3}/domains", json={"domain": {"name": "tree"}})).json()["domain"]
        root = await _project(c, "root", domain_id=domain["id"])
        assert root["parent_id"] == domain["id"] and root["is_domain"] is False
        # The parent's domain is the child's when none is given.
        mid = await _project(c, "mid", parent_id=root["id"])
        assert mid["parent_id"] == root["id"] and mid["domain_id"] == domain["id"]
        leaf = await _project(c, "leaf", parent_id=mid["id"], domain_id=domain["id"])
        side = await _project(c, "side", parent_id=root["id"])
        # A parent naming the domain puts the project at its top.
        top2 = await _project(c, "top2", parent_id=domain["id"])
        assert top2["parent_id"] == domain["id"]

        r = await c.get(f"{V3}/projects", params={"parent_id": root["id"]})
        assert {p["id"] for p in r.json()["projects"]} == {mid["id"], side["id"]}
        r = await c.get(f"{V3}/projects", params={"parent_id": domain["id"]})
        assert {p["id"] for p in r.json()["projects"]} == {root["id"], top2["id"]}

        r = await c.get(f"{V3}/projects/{leaf['id']}", params={"parents_as_list": ""})
        parents = [p["project"]["id"] for p in r.json()["project"]["parents_as_list"]]
        assert parents == [mid["id"], root["id"]]
        r = await c.get(f"{V3}/projects/{leaf['id']}", params={"parents_as_ids": ""})
        assert r.json()["project"]["parents_as_ids"] == {mid["id"]: {root["id"]: None}}
        r = await c.get(f"{V3}/projects/{root['id']}", params={"subtree_as_list": "true"})
        subtree = {p["project"]["id"] for p in r.json()["project"]["subtree_as_list"]}
        assert subtree == {mid["id"], side["id"], leaf["id"]}
        r = await c.get(f"{V3}/projects/{root['id']}", params={"subtree_as_ids": ""})
        assert r.json()["project"]["subtree_as_ids"] == {
            mid["id"]: {leaf["id"]: None},
            side["id"]: None,
        }
        r = await c.get(
            f"{V3}/projects/{root['id']}", params={"subtree_as_ids": "", "subtree_as_list": ""}
        )
        assert r.status_code == 400

        # Not a leaf: not deleted; not disabled while a child is enabled.
        assert (await c.delete(f"{V3}/projects/{mid['id']}")).status_code == 403
        r = await c.patch(f"{V3}/projects/{mid['id']}", json={"project": {"enabled": False}})
        assert r.status_code == 403
        r = await c.patch(f"{V3}/projects/{leaf['id']}", json={"project": {"enabled": False}})
        assert r.status_code == 200
        r = await c.patch(f"{V3}/projects/{mid['id']}", json={"project": {"enabled": False}})
        assert r.status_code == 200
        r = await c.patch(f"{V3}/projects/{leaf['id']}", json={"project": {"enabled": True}})
        assert r.status_code == 403
        # No child under a disabled parent; no moving in the tree.
        r = await c.post(f"{V3}/projects", json={"project": {"name": "x", "parent_id": mid["id"]}})
        assert r.status_code == 400
        r = await c.patch(f"{V3}/projects/{side['id']}", json={"project": {"parent_id": mid["id"]}})
        assert r.status_code == 400
        assert (await c.delete(f"{V3}/projects/{leaf['id']}")).status_code == 204
        assert (await c.delete(f"{V3}/projects/{mid['id']}")).status_code == 204

        # A disabled domain is deleted with its whole tree, leaves first.
        r = await c.patch(f"{V3}/domains/{domain['id']}", json={"domain": {"enabled": False}})
        assert r.status_code == 200
        assert (await c.delete(f"{V3}/domains/{domain['id']}")).status_code == 204
        assert (await c.get(f"{V3}/projects/{side['id']}")).status_code == 404


async def test_bad_parents_are_refused(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        other = (await c.post(f"{V3}/domains", json={"domain": {"name": "o"}})).json()["domain"]
        root = await _project(c, "r")
        url = f"{V3}/projects"
        r = await c.post(url, json={"project": {"name": "a", "parent_id": "nope"}})
        assert r.status_code == 404
        # The parent is in another domain than the one asked for.
        r = await c.post(
            url, json={"project": {"name": "a", "parent_id": root["id"], "domain_id": other["id"]}}
        )
        assert r.status_code == 400
        r = await c.post(url, json={"project": {"name": "a", "is_domain": True}})
        assert r.status_code == 400
        # Keystone's default depth limit: 5 levels.
        parent = root
        for depth in range(2, 6):
            parent = await _project(c, f"d{depth}", parent_id=parent["id"])
        r = await c.post(url, json={"project": {"name": "d6", "parent_id": parent["id"]}})
        assert r.status_code == 403
        count = len((await c.get(url, params={"name": "d6"})).json()["projects"])
        assert count == 0
