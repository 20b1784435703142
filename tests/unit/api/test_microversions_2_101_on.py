"""Microversions 2.101 to 2.104 at their boundaries (N-1 without, N with).

Their shapes are those of nova 34.0.0 (its api_version_request history,
rest_api_version_history.rst and the schemas its controllers apply).
"""

from __future__ import annotations

from typing import Any

from nubes.api import microversion
from nubes.db.api import actions
from nubes.db.api import instances as instances_db
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.moves_cloud import fault
from tests.unit.api.test_servers import (  # noqa: F401
    URL,
    cloud,
    create,
    login,
    make_active,
)

BASE = "/compute/v2.1"
GONE_FROM_FLAVORS = {"rxtx_factor", "OS-FLV-DISABLED:disabled"}


def _refused(r: Any, name: str, value: str) -> None:
    assert fault(r, 400) == (
        f"Invalid input for query parameters {name}. Value: {value}. "
        f"Additional properties are not allowed ('{name}' was unexpected)"
    )


def test_maximum_is_2_104() -> None:
    assert microversion.MAX_VERSION == "2.104"


async def test_flavor_bodies_and_create_from_2_102(cloud: ApiHarness) -> None:  # noqa: F811
    new = {"flavor": {"name": "f1", "ram": 64, "vcpus": 1, "disk": 1, "rxtx_factor": 2.0}}
    async with await login(cloud, "admin", "2.101") as c:
        made = (await c.post(f"{BASE}/flavors", json=new)).json()["flavor"]
        assert made["rxtx_factor"] == 2.0 and made["OS-FLV-DISABLED:disabled"] is False
        for path in (f"{BASE}/flavors/1", f"{BASE}/flavors/detail"):
            body = (await c.get(path)).json()
            for flavor in body.get("flavors") or [body["flavor"]]:
                assert GONE_FROM_FLAVORS <= set(flavor), path
    async with await login(cloud, "admin", "2.102") as c:
        new["flavor"]["name"] = "f2"
        message = fault(await c.post(f"{BASE}/flavors", json=new), 400)
        assert "'rxtx_factor' was unexpected" in message
        del new["flavor"]["rxtx_factor"]
        r = await c.post(f"{BASE}/flavors", json=new)
        assert r.status_code == 200, r.text
        made = r.json()["flavor"]
        shown = (await c.get(f"{BASE}/flavors/{made['id']}")).json()["flavor"]
        updated = (
            await c.put(f"{BASE}/flavors/{made['id']}", json={"flavor": {"description": "d"}})
        ).json()["flavor"]
        listed = (await c.get(f"{BASE}/flavors/detail")).json()["flavors"]
        for flavor in (made, shown, updated, *listed):
            assert not GONE_FROM_FLAVORS & set(flavor), flavor
        # Everything else is as at 2.101.
        assert {"id", "name", "ram", "disk", "swap", "vcpus", "description"} <= set(shown)
        assert shown["swap"] == 0 and updated["description"] == "d"


async def test_flavor_name_filter_from_2_102(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "admin", "2.102") as c:
        for name in ("alpha.small", "alpha-large", "beta_small", "gamma"):
            new = {"flavor": {"name": name, "ram": 64, "vcpus": 1, "disk": 1}}
            assert (await c.post(f"{BASE}/flavors", json=new)).status_code == 200
    names = {"alpha.small", "alpha-large", "beta_small", "gamma", "m1.tiny"}

    async def listed(version: str, **params: str) -> Any:
        async with await login(cloud, "admin", version) as c:
            return await c.get(f"{BASE}/flavors", params=params)

    # Before 2.75 an unknown parameter is ignored; from 2.75 to 2.101 it is refused.
    r = await listed("2.74", name="alpha")
    assert {f["name"] for f in r.json()["flavors"]} == names
    _refused(await listed("2.101", name="alpha"), "name", "alpha")
    # From 2.102: a substring ("_" and "%" are no wildcards)...
    r = await listed("2.102", name="alpha")
    assert {f["name"] for f in r.json()["flavors"]} == {"alpha.small", "alpha-large"}
    r = await listed("2.102", name="_")
    assert {f["name"] for f in r.json()["flavors"]} == {"beta_small"}
    # ... or a regular expression, as Nova's database matches it.
    r = await listed("2.102", name="^(gamma|m1)")
    assert {f["name"] for f in r.json()["flavors"]} == {"gamma", "m1.tiny"}
    r = await listed("2.102", name="small$", limit="1")
    (first,) = r.json()["flavors"]
    assert first["name"] in {"alpha.small", "beta_small"} and "flavors_links" in r.json()
    r = await listed("2.102", name="small$", limit="1", marker=first["id"])
    (second,) = r.json()["flavors"]
    assert {first["name"], second["name"]} == {"alpha.small", "beta_small"}
    assert "Invalid filter field: name" in fault(await listed("2.102", name="("), 400)
    # Sorting by the dropped field, and anything unknown, is refused.
    assert (await listed("2.101", sort_key="rxtx_factor")).status_code == 200
    assert fault(await listed("2.102", sort_key="rxtx_factor"), 400)
    _refused(await listed("2.102", bogus="1"), "bogus", "1")


async def test_gets_without_query_refuse_one_from_2_102(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "admin", "2.37") as c:
        uuid = (await create(c, cloud, networks="none", metadata={"k": "v"}))["id"]
        group = (
            await c.post(
                f"{BASE}/os-server-groups",
                json={"server_group": {"name": "g", "policies": ["affinity"]}},
            )
        ).json()["server_group"]["id"]
    await make_active(cloud, uuid)
    async with cloud.state.db.reader() as conn:
        (action,) = await actions.actions_get(conn, uuid)
    server = f"{URL}/{uuid}"
    paths = (
        server,
        f"{server}/ips",
        f"{server}/ips/private",
        f"{server}/metadata",
        f"{server}/metadata/k",
        f"{server}/os-interface",
        f"{server}/os-security-groups",
        f"{server}/diagnostics",
        f"{server}/migrations",
        f"{server}/os-server-password",
        f"{server}/topology",
        f"{server}/os-instance-actions/{action['request_id']}",
        f"{BASE}/os-aggregates",
        f"{BASE}/os-availability-zone",
        f"{BASE}/os-availability-zone/detail",
        f"{BASE}/extensions",
        f"{BASE}/extensions/os-flavor-rxtx",
        f"{BASE}/flavors/1",
        f"{BASE}/flavors/1/os-extra_specs",
        f"{BASE}/flavors/1/os-extra_specs/hw:cpu_policy",
        f"{BASE}/flavors/p/os-flavor-access",
        f"{BASE}/os-instance_usage_audit_log",
        f"{BASE}/os-quota-class-sets/default",
        f"{BASE}/os-server-groups/{group}",
    )
    async with await login(cloud, "admin", "2.101") as c:
        before = {p: (await c.get(p)).status_code for p in paths}
        for path in paths:
            # Ignored before 2.102: the same answer as without it.
            assert (await c.get(path, params={"bogus": "1"})).status_code == before[path], path
    async with await login(cloud, "admin", "2.102") as c:
        for path in paths:
            _refused(await c.get(path, params={"bogus": "1"}), "bogus", "1")
            assert (await c.get(path)).status_code == before[path], path
        # Refused before anything is looked up: an unknown server is still a 400.
        _refused(await c.get(f"{URL}/nope", params={"x": "y"}), "x", "y")
        # The lists that take parameters keep their own rules.
        assert (await c.get(URL, params={"name": "vm"})).status_code == 200
        assert (await c.get(f"{server}/os-instance-actions", params={"limit": "1"})).is_success


async def test_volumes_boot_alias_until_2_102(cloud: ApiHarness) -> None:  # noqa: F811
    alias = f"{BASE}/os-volumes_boot"
    async with await login(cloud, "demo", "2.102") as c:
        r = await c.post(
            alias,
            json={
                "server": {
                    "name": "vb",
                    "flavorRef": "1",
                    "imageRef": cloud.image,  # type: ignore[attr-defined]
                    "networks": "none",
                }
            },
        )
        assert r.status_code == 202, r.text
        uuid = r.json()["server"]["id"]
        assert [s["id"] for s in (await c.get(alias)).json()["servers"]] == [uuid]
        assert (await c.get(f"{alias}/detail")).json()["servers"][0]["id"] == uuid
        shown = (await c.get(f"{alias}/{uuid}")).json()["server"]
        assert shown == (await c.get(f"{URL}/{uuid}")).json()["server"]
        renamed = await c.put(f"{alias}/{uuid}", json={"server": {"name": "vb2"}})
        assert renamed.json()["server"]["name"] == "vb2"
    async with await login(cloud, "other", "2.102") as c:
        assert (await c.get(f"{alias}/{uuid}")).status_code == 404  # not theirs
    for version in ("2.103", "2.104"):
        async with await login(cloud, "demo", version) as c:
            for r in (
                await c.get(alias),
                await c.get(f"{alias}/detail"),
                await c.get(f"{alias}/{uuid}"),
                await c.put(f"{alias}/{uuid}", json={"server": {"name": "x"}}),
                await c.delete(f"{alias}/{uuid}"),
                await c.post(f"{alias}/{uuid}/action", json={"os-stop": None}),
            ):
                assert r.status_code == 404, (version, r.request.url, r.text)
            assert (await c.get(f"{URL}/{uuid}")).json()["server"]["name"] == "vb2"
    async with await login(cloud, "demo", "2.102") as c:
        assert (await c.delete(f"{alias}/{uuid}")).status_code == 204


async def test_pin_and_unpin_the_zone_from_2_104(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo", "2.104") as c:
        uuid = (await create(c, cloud, networks="none", availability_zone="nova"))["id"]
    await make_active(cloud, uuid)  # on fake-0, a host of no aggregate: zone "nova"
    path = f"{URL}/{uuid}"

    async def put(version: str, **server: Any) -> Any:
        async with await login(cloud, "demo", version) as c:
            return await c.put(path, json={"server": server})

    async def pin() -> str | None:
        async with cloud.state.db.reader() as conn:
            row = await instances_db.get_by_uuid(conn, uuid)
        return row["availability_zone"]  # type: ignore[no-any-return]

    assert "pinned_availability_zone" in fault(
        await put("2.103", pinned_availability_zone=None), 400
    )
    assert await pin() == "nova"
    # Pinned: to another zone only by way of unpinning.
    assert fault(await put("2.104", pinned_availability_zone="az2"), 409) == (
        "Cannot change pinned availability zone directly. Unpin first by "
        "setting pinned_availability_zone to null."
    )
    r = await put("2.104", pinned_availability_zone="nova", name="same")
    assert r.status_code == 200 and r.json()["server"]["pinned_availability_zone"] == "nova"
    assert r.json()["server"]["name"] == "same"
    for _ in range(2):  # unpinning an unpinned server changes nothing either
        r = await put("2.104", pinned_availability_zone=None)
        assert r.status_code == 200 and r.json()["server"]["pinned_availability_zone"] is None
        assert await pin() is None
    async with await login(cloud, "demo", "2.104") as c:
        shown = (await c.get(path)).json()["server"]
    assert shown["pinned_availability_zone"] is None
    assert shown["OS-EXT-AZ:availability_zone"] == "nova"
    # Unpinned: only to the zone it is in.
    assert fault(await put("2.104", pinned_availability_zone="az2"), 409) == (
        "Server can only be pinned to its current availability zone 'nova', "
        "but 'az2' was requested."
    )
    assert await pin() is None
    r = await put("2.104", pinned_availability_zone="nova")
    assert r.json()["server"]["pinned_availability_zone"] == "nova" and await pin() == "nova"
    for bad in ("", 7, "x" * 256):
        assert fault(await put("2.104", pinned_availability_zone=bad), 400)
    async with await login(cloud, "other", "2.104") as c:
        r = await c.put(path, json={"server": {"pinned_availability_zone": None}})
        assert r.status_code == 404
    assert await pin() == "nova"


async def test_list_queries_strict_from_their_versions(cloud: ApiHarness) -> None:  # noqa: F811
    """What 2.102 builds on: the queries Nova made strict earlier (2.53, 2.58,
    2.75) refuse an unknown parameter from then on, and still take their own."""
    async with await login(cloud, "admin", "2.37") as c:
        uuid = (await create(c, cloud, networks="none"))["id"]
    project = cloud.projects["admin"]
    server = f"{URL}/{uuid}"
    cases = (
        (f"{BASE}/os-keypairs", "2.75", {"limit": "1"}),
        (f"{BASE}/os-keypairs/nokey", "2.75", {"user_id": "u"}),
        (f"{BASE}/limits", "2.75", {"tenant_id": project}),
        (f"{BASE}/os-quota-sets/{project}", "2.75", {"user_id": "u"}),
        (f"{BASE}/os-quota-sets/{project}/detail", "2.75", {"user_id": "u"}),
        (f"{server}/os-volume_attachments", "2.75", {"limit": "1", "offset": "0"}),
        (f"{BASE}/os-server-groups", "2.75", {"all_projects": "true", "limit": "1"}),
        (f"{BASE}/os-services", "2.75", {"binary": "nova-compute"}),
        (f"{BASE}/os-simple-tenant-usage", "2.75", {"detailed": "1"}),
        (f"{BASE}/os-simple-tenant-usage/{project}", "2.75", {"limit": "1"}),
        (f"{server}/os-instance-actions", "2.58", {"limit": "1"}),
        (f"{BASE}/os-hypervisors", "2.53", {"with_servers": "true"}),
        (f"{BASE}/os-hypervisors/detail", "2.53", {"limit": "1"}),
    )
    for path, since, known in cases:
        before = ".".join((since.split(".")[0], str(int(since.split(".")[1]) - 1)))
        async with await login(cloud, "admin", before) as c:
            plain = (await c.get(path)).status_code
            assert (await c.get(path, params={"bogus": "1"})).status_code == plain, path
        for version in (since, "2.104"):
            async with await login(cloud, "admin", version) as c:
                _refused(await c.get(path, params={"bogus": "1"}), "bogus", "1")
                r = await c.get(path, params=known)
                assert r.status_code != 400, (path, version, r.text)
    async with await login(cloud, "admin", "2.75") as c:
        r = await c.delete(f"{BASE}/os-keypairs/nokey", params={"bogus": "1"})
        _refused(r, "bogus", "1")
        r = await c.put(
            f"{BASE}/os-quota-sets/{project}",
            params={"bogus": "1"},
            json={"quota_set": {"cores": 30}},
        )
        _refused(r, "bogus", "1")
