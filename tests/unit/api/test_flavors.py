"""Flavors: views at each microversion boundary, create/delete, extra specs, access, policy."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.api.conftest import ApiHarness

BASE = "/compute/v2.1"
DETAIL_2_1 = {
    "id",
    "name",
    "ram",
    "disk",
    "swap",
    "OS-FLV-EXT-DATA:ephemeral",
    "OS-FLV-DISABLED:disabled",
    "vcpus",
    "os-flavor-access:is_public",
    "rxtx_factor",
    "links",
}


async def _create(c: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    body = {"flavor": {"name": "small", "ram": 512, "vcpus": 1, "disk": 1, **extra}}
    r = await c.post(f"{BASE}/flavors", json=body)
    assert r.status_code == 200, r.text
    flavor: dict[str, Any] = r.json()["flavor"]
    return flavor


async def test_views_per_microversion(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        await _create(c, id="f1")
        for version, basic_keys, detail_keys in (
            ("2.1", {"id", "name", "links"}, DETAIL_2_1),
            ("2.54", {"id", "name", "links"}, DETAIL_2_1),
            ("2.55", {"id", "name", "links", "description"}, DETAIL_2_1 | {"description"}),
            ("2.60", {"id", "name", "links", "description"}, DETAIL_2_1 | {"description"}),
            (
                "2.61",
                {"id", "name", "links", "description"},
                DETAIL_2_1 | {"description", "extra_specs"},
            ),
        ):
            headers = {"OpenStack-API-Version": f"compute {version}"}
            (basic,) = (await c.get(f"{BASE}/flavors", headers=headers)).json()["flavors"]
            assert set(basic) == basic_keys, version
            (detail,) = (await c.get(f"{BASE}/flavors/detail", headers=headers)).json()["flavors"]
            assert set(detail) == detail_keys, version
            shown = (await c.get(f"{BASE}/flavors/f1", headers=headers)).json()["flavor"]
            assert set(shown) == detail_keys, version
        assert detail["swap"] == ""
        assert detail["links"][0]["href"] == "http://nubes.test/compute/v2.1/flavors/f1"
        assert detail["links"][1]["rel"] == "bookmark"


async def test_create_with_generated_id_and_conflicts(api: ApiHarness) -> None:
    async with await api.login("admin", "2.55") as c:
        flavor = await _create(c, description="d", swap=128, rxtx_factor="2.0")
        assert len(flavor["id"]) == 36 and flavor["description"] == "d"
        assert flavor["swap"] == 128 and flavor["rxtx_factor"] == 2.0
        r = await c.post(
            f"{BASE}/flavors", json={"flavor": {"name": "small", "ram": 1, "vcpus": 1, "disk": 1}}
        )
        assert r.status_code == 409 and "conflictingRequest" in r.json()
        r = await c.post(
            f"{BASE}/flavors",
            json={"flavor": {"name": "x", "id": flavor["id"], "ram": 1, "vcpus": 1, "disk": 1}},
        )
        assert r.status_code == 409


async def test_description_refused_before_2_55(api: ApiHarness) -> None:
    async with await api.login("admin", "2.54") as c:
        r = await c.post(
            f"{BASE}/flavors",
            json={"flavor": {"name": "a", "ram": 1, "vcpus": 1, "disk": 1, "description": "x"}},
        )
        assert r.status_code == 400
        assert "description" in r.json()["badRequest"]["message"]


async def test_bad_input_names_the_field(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        for field, value in (
            ("ram", "abc"),
            ("ram", 0),
            ("vcpus", -1),
            ("disk", 2**40),
            ("name", " x"),
            ("rxtx_factor", 0),
        ):
            body = {"flavor": {"name": "n", "ram": 1, "vcpus": 1, "disk": 1, field: value}}
            r = await c.post(f"{BASE}/flavors", json=body)
            assert r.status_code == 400, (field, value, r.text)
            assert field in r.json()["badRequest"]["message"]
        r = await c.post(f"{BASE}/flavors", json={"flavor": {"name": "n", "ram": 1, "vcpus": 1}})
        assert r.status_code == 400 and "disk" in r.json()["badRequest"]["message"]


async def test_update_description_from_2_55(api: ApiHarness) -> None:
    async with await api.login("admin", "2.55") as c:
        await _create(c, id="f1")
        r = await c.put(f"{BASE}/flavors/f1", json={"flavor": {"description": "new"}})
        assert r.status_code == 200 and r.json()["flavor"]["description"] == "new"
    async with await api.login("admin", "2.54") as c:
        r = await c.put(f"{BASE}/flavors/f1", json={"flavor": {"description": "new"}})
        assert r.status_code == 404


async def test_delete_and_policy(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        await _create(c, id="f1")
    async with await api.login("demo") as c:
        assert (await c.get(f"{BASE}/flavors/f1")).status_code == 200
        r = await c.delete(f"{BASE}/flavors/f1")
        assert r.status_code == 403 and "forbidden" in r.json()
        r = await c.post(
            f"{BASE}/flavors", json={"flavor": {"name": "n", "ram": 1, "vcpus": 1, "disk": 1}}
        )
        assert r.status_code == 403
    async with await api.login("admin") as c:
        assert (await c.delete(f"{BASE}/flavors/f1")).status_code == 202
        r = await c.get(f"{BASE}/flavors/f1")
        assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404


async def test_private_flavor_and_access_list(api: ApiHarness) -> None:
    demo = api.projects["demo"]
    async with await api.login("admin") as c:
        await _create(c, id="priv", **{"os-flavor-access:is_public": False})
        await _create(c, id="pub", name="pub")
        r = await c.get(f"{BASE}/flavors/pub/os-flavor-access")
        assert r.status_code == 404
        assert (await c.get(f"{BASE}/flavors/priv/os-flavor-access")).json() == {
            "flavor_access": []
        }
        all_ids = {
            f["id"] for f in (await c.get(f"{BASE}/flavors?is_public=none")).json()["flavors"]
        }
        assert all_ids == {"priv", "pub"}
        public_ids = {f["id"] for f in (await c.get(f"{BASE}/flavors")).json()["flavors"]}
        assert public_ids == {"pub"}
    async with await api.login("demo") as c:
        assert {f["id"] for f in (await c.get(f"{BASE}/flavors")).json()["flavors"]} == {"pub"}
        assert (await c.get(f"{BASE}/flavors/priv")).status_code == 404
    async with await api.login("admin") as c:
        r = await c.post(f"{BASE}/flavors/priv/action", json={"addTenantAccess": {"tenant": demo}})
        assert r.json() == {"flavor_access": [{"flavor_id": "priv", "tenant_id": demo}]}
        r = await c.post(f"{BASE}/flavors/priv/action", json={"addTenantAccess": {"tenant": demo}})
        assert r.status_code == 409
        r = await c.post(f"{BASE}/flavors/pub/action", json={"addTenantAccess": {"tenant": demo}})
        assert r.status_code == 409
    async with await api.login("demo") as c:
        assert {f["id"] for f in (await c.get(f"{BASE}/flavors")).json()["flavors"]} == {
            "priv",
            "pub",
        }
        assert (await c.get(f"{BASE}/flavors/priv/os-flavor-access")).status_code == 403
    async with await api.login("admin") as c:
        r = await c.post(
            f"{BASE}/flavors/priv/action", json={"removeTenantAccess": {"tenant": demo}}
        )
        assert r.json() == {"flavor_access": []}
        r = await c.post(
            f"{BASE}/flavors/priv/action", json={"removeTenantAccess": {"tenant": demo}}
        )
        assert r.status_code == 404


async def test_extra_specs(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        await _create(c, id="f1")
        url = f"{BASE}/flavors/f1/os-extra_specs"
        r = await c.post(url, json={"extra_specs": {"hw:cpu_policy": "dedicated", "n": 2}})
        assert r.json() == {"extra_specs": {"hw:cpu_policy": "dedicated", "n": "2"}}
        assert (await c.get(f"{url}/n")).json() == {"n": "2"}
        assert (await c.put(f"{url}/n", json={"n": "3"})).json() == {"n": "3"}
        assert (await c.put(f"{url}/n", json={"m": "3"})).status_code == 400
        assert (await c.put(f"{url}/n", json={"n": "3", "m": "4"})).status_code == 400
        assert (await c.delete(f"{url}/n")).status_code == 200
        assert (await c.get(f"{url}/n")).status_code == 404
        assert (await c.delete(f"{url}/n")).status_code == 404
        r = await c.get(f"{BASE}/flavors/f1", headers={"OpenStack-API-Version": "compute 2.61"})
        assert r.json()["flavor"]["extra_specs"] == {"hw:cpu_policy": "dedicated"}
        r = await c.post(url, json={"extra_specs": {"bad/key": "x"}})
        assert r.status_code == 400
    async with await api.login("demo") as c:
        assert (await c.get(url)).json() == {"extra_specs": {"hw:cpu_policy": "dedicated"}}
        assert (await c.post(url, json={"extra_specs": {"a": "b"}})).status_code == 403


async def test_paging(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        for i in range(3):
            await _create(c, id=f"f{i}", name=f"n{i}")
        r = (await c.get(f"{BASE}/flavors?limit=2")).json()
        assert [f["id"] for f in r["flavors"]] == ["f0", "f1"]
        assert "marker=f1" in r["flavors_links"][0]["href"]
        r = (await c.get(f"{BASE}/flavors?limit=2&marker=f1")).json()
        assert [f["id"] for f in r["flavors"]] == ["f2"]
        assert (await c.get(f"{BASE}/flavors?marker=nope")).status_code == 400
        assert (await c.get(f"{BASE}/flavors?limit=x")).status_code == 400
        assert (await c.get(f"{BASE}/flavors?sort_key=bogus")).status_code == 400
        r = (await c.get(f"{BASE}/flavors/detail?minRam=600")).json()
        assert r["flavors"] == []
