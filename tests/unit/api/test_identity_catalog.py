"""``/v3/regions``, ``/v3/services`` and ``/v3/endpoints``: nubes' own
entries built in and read-only, registered ones in the database, and a
token's catalog made of exactly what these list."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.api.conftest import PASSWORD, ApiHarness, auth_body

V3 = "/identity/v3"


async def _ok(r: httpx.Response, code: int = 200) -> Any:
    assert r.status_code == code, r.text
    return r.json()


async def test_builtin_catalog_is_listed_and_read_only(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        services = (await _ok(await c.get(f"{V3}/services")))["services"]
        assert {s["type"] for s in services} >= {"compute", "image", "identity", "network"}
        compute = next(s for s in services if s["type"] == "compute")
        endpoints = (
            await _ok(await c.get(f"{V3}/endpoints", params={"service_id": compute["id"]}))
        )["endpoints"]
        assert {e["interface"] for e in endpoints} == {"public", "internal", "admin"}
        # The token's catalog and the listings are one thing.
        token = (
            await _ok(
                await c.post(f"{V3}/auth/tokens", json=auth_body("admin", PASSWORD, "admin")), 201
            )
        )["token"]
        in_token = next(s for s in token["catalog"] if s["type"] == "compute")
        assert in_token["id"] == compute["id"]
        assert {e["id"] for e in in_token["endpoints"]} == {e["id"] for e in endpoints}
        region = endpoints[0]["region_id"]
        regions = (await _ok(await c.get(f"{V3}/regions")))["regions"]
        assert region in {r["id"] for r in regions}
        # nubes' own entries follow its configuration, not the API.
        r = await c.patch(f"{V3}/services/{compute['id']}", json={"service": {"enabled": False}})
        assert r.status_code == 403
        assert (await c.delete(f"{V3}/endpoints/{endpoints[0]['id']}")).status_code == 403
        assert (await c.delete(f"{V3}/regions/{region}")).status_code == 403


async def test_registered_service_endpoint_and_region(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        region = (
            await _ok(
                await c.post(f"{V3}/regions", json={"region": {"id": "r2", "description": "two"}}),
                201,
            )
        )["region"]
        assert region == {**region, "id": "r2", "description": "two", "parent_region_id": None}
        child = (
            await _ok(
                await c.put(f"{V3}/regions/r2a", json={"region": {"parent_region_id": "r2"}}), 201
            )
        )["region"]
        assert child["parent_region_id"] == "r2"
        listed = (await _ok(await c.get(f"{V3}/regions", params={"parent_region_id": "r2"})))[
            "regions"
        ]
        assert [r["id"] for r in listed] == ["r2a"]
        # A loop, an unknown parent, a duplicate id.
        r = await c.patch(f"{V3}/regions/r2", json={"region": {"parent_region_id": "r2a"}})
        assert r.status_code == 400
        r = await c.post(f"{V3}/regions", json={"region": {"parent_region_id": "nope"}})
        assert r.status_code == 404
        assert (await c.post(f"{V3}/regions", json={"region": {"id": "r2"}})).status_code == 409

        service = (
            await _ok(
                await c.post(
                    f"{V3}/services",
                    json={"service": {"type": "volume", "name": "cinder", "description": "d"}},
                ),
                201,
            )
        )["service"]
        assert service["enabled"] is True and service["name"] == "cinder"
        assert (
            await c.post(f"{V3}/services", json={"service": {"name": "no type"}})
        ).status_code == 400
        body = {
            "endpoint": {
                "service_id": service["id"],
                "interface": "public",
                "url": "http://volume.test/v3",
                "region_id": "r2",
            }
        }
        endpoint = (await _ok(await c.post(f"{V3}/endpoints", json=body), 201))["endpoint"]
        assert endpoint["region"] == endpoint["region_id"] == "r2" and endpoint["enabled"] is True
        bad = {"endpoint": {**body["endpoint"], "enabled": "yes"}}
        assert (await c.post(f"{V3}/endpoints", json=bad)).status_code == 400
        bad = {"endpoint": {**body["endpoint"], "interface": "private"}}
        assert (await c.post(f"{V3}/endpoints", json=bad)).status_code == 400
        bad = {"endpoint": {**body["endpoint"], "service_id": "nope"}}
        assert (await c.post(f"{V3}/endpoints", json=bad)).status_code == 400
        bad = {"endpoint": {**body["endpoint"], "region_id": "nope"}}
        assert (await c.post(f"{V3}/endpoints", json=bad)).status_code == 400
        # Keystone's legacy "region" makes the region it names.
        legacy = {k: v for k, v in body["endpoint"].items() if k != "region_id"}
        r = await c.post(f"{V3}/endpoints", json={"endpoint": {**legacy, "region": "r-legacy"}})
        made = (await _ok(r, 201))["endpoint"]
        assert made["region_id"] == "r-legacy"
        assert (await c.get(f"{V3}/regions/r-legacy")).status_code == 200
        assert (await c.delete(f"{V3}/endpoints/{made['id']}")).status_code == 204
        # A region in use stays.
        assert (await c.delete(f"{V3}/regions/r2")).status_code == 403

        async def in_catalog() -> list[Any]:
            r = await c.get(f"{V3}/auth/catalog")
            return [s for s in (await _ok(r))["catalog"] if s["id"] == service["id"]]

        (entry,) = await in_catalog()
        assert entry["type"] == "volume" and [e["url"] for e in entry["endpoints"]] == [
            "http://volume.test/v3"
        ]
        r = await c.patch(f"{V3}/endpoints/{endpoint['id']}", json={"endpoint": {"enabled": False}})
        assert (await _ok(r))["endpoint"]["enabled"] is False
        assert (await in_catalog())[0]["endpoints"] == []
        r = await c.patch(f"{V3}/services/{service['id']}", json={"service": {"enabled": False}})
        assert (await _ok(r))["service"]["enabled"] is False
        assert await in_catalog() == []
        assert (await c.delete(f"{V3}/services/{service['id']}")).status_code == 204
        # Its endpoints went with it.
        assert (await c.get(f"{V3}/endpoints/{endpoint['id']}")).status_code == 404
        assert (await c.delete(f"{V3}/regions/r2")).status_code == 403  # still a parent
        assert (await c.delete(f"{V3}/regions/r2a")).status_code == 204
        assert (await c.delete(f"{V3}/regions/r2")).status_code == 204
        assert (await c.get(f"{V3}/regions/r2")).status_code == 404


async def test_members_may_not_change_the_catalog(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        assert (await c.post(f"{V3}/services", json={"service": {"type": "x"}})).status_code == 403
        assert (await c.post(f"{V3}/regions", json={"region": {}})).status_code == 403
        assert (await c.get(f"{V3}/endpoints")).status_code == 403
        # Regions are for everyone to read.
        assert (await c.get(f"{V3}/regions")).status_code == 200
