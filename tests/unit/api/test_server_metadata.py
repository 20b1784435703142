"""Server metadata (``/servers/{id}/metadata``) over HTTP: Nova's shapes, states, lock, quota."""

from __future__ import annotations

from nubes.db.api import quotas as quotas_db
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_servers import URL, create, login, make_active

__all__ = ["cloud"]

from tests.unit.api.test_servers import cloud


async def test_server_metadata_merge_replace_item_and_delete(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo", "2.37") as c:
        server = await create(c, cloud, name="vm", metadata={"a": "1"}, networks="none")
        url = f"{URL}/{server['id']}/metadata"
        # Building: Nova's 409.
        r = await c.post(url, json={"metadata": {"b": "2"}})
        assert r.status_code == 409, r.text
        await make_active(cloud, server["id"])
        r = await c.post(url, json={"metadata": {"b": "2"}})
        assert r.status_code == 200 and r.json() == {"metadata": {"a": "1", "b": "2"}}
        r = await c.put(f"{url}/c", json={"meta": {"c": "3"}})
        assert r.status_code == 200 and r.json() == {"meta": {"c": "3"}}
        assert (await c.get(f"{url}/c")).json() == {"meta": {"c": "3"}}
        r = await c.put(f"{url}/c", json={"meta": {"d": "4"}})
        assert r.status_code == 400  # body and URI disagree
        r = await c.put(url, json={"metadata": {"x": "y"}})
        assert r.json() == {"metadata": {"x": "y"}}
        assert (await c.get(url)).json() == {"metadata": {"x": "y"}}
        assert (await c.delete(f"{url}/x")).status_code == 204
        assert (await c.delete(f"{url}/x")).status_code == 404
        assert (await c.get(f"{url}/x")).status_code == 404
        bad = await c.post(url, json={"metadata": {"k": 5}})
        assert bad.status_code == 400
        shown = (await c.get(f"{URL}/{server['id']}")).json()["server"]
        assert shown["metadata"] == {}
    async with await login(cloud, "other", "2.37") as c:
        assert (await c.get(f"{URL}/{server['id']}/metadata")).status_code == 404


async def test_server_metadata_quota_and_lock(cloud: ApiHarness) -> None:
    async with cloud.state.db.writer() as conn:
        await quotas_db.limits_set(conn, cloud.projects["demo"], {"metadata_items": 2})
    async with await login(cloud, "demo", "2.37") as c:
        server = await create(c, cloud, name="vm", networks="none")
        await make_active(cloud, server["id"])
        url = f"{URL}/{server['id']}/metadata"
        assert (await c.post(url, json={"metadata": {"a": "1", "b": "2"}})).status_code == 200
        r = await c.post(url, json={"metadata": {"c": "3"}})
        assert r.status_code == 403, r.text
        assert (await c.get(url)).json() == {"metadata": {"a": "1", "b": "2"}}
        assert (
            await c.post(f"{URL}/{server['id']}/action", json={"lock": None})
        ).status_code == 202
        assert (await c.put(f"{url}/a", json={"meta": {"a": "9"}})).status_code == 409
