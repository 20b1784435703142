"""Quotas over HTTP: each quota enforced, os-quota-sets, os-quota-class-sets, /limits.

No conductor runs (see moves_cloud): a create records its instances, which
count against the quota until deleted, whatever their state.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest

from nubes.db.api import flavors as flavors_db
from nubes.db.api import identity
from nubes.db.api import instances as instances_db
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.moves_cloud import URL, Cloud, act, assert_untouched, boot, fault, make_cloud

BASE = "/compute/v2.1"


@pytest.fixture
async def cloud(api: ApiHarness) -> Cloud:
    made = await make_cloud(api)
    async with api.state.db.writer() as conn:
        for flavorid, vcpus, ram in (("c2", 2, 512), ("c4", 4, 1024), ("c8", 8, 4096)):
            made.flavors[flavorid] = await flavors_db.create(
                conn,
                {
                    "flavorid": flavorid,
                    "name": f"cpu{vcpus}",
                    "vcpus": vcpus,
                    "memory_mb": ram,
                    "root_gb": 1,
                },
            )
    return made


def server(cloud: Cloud, **values: Any) -> dict[str, Any]:
    return {"server": {"name": "vm", "flavorRef": "1", "imageRef": cloud.image, **values}}


async def create(cloud: Cloud, user: str = "demo", **values: Any) -> httpx.Response:
    async with await cloud.login(user) as c:
        return await c.post(URL, json=server(cloud, **values))


async def servers_of(cloud: Cloud, user: str = "demo") -> list[str]:
    async with await cloud.login(user) as c:
        return sorted(s["name"] for s in (await c.get(URL)).json()["servers"])


async def set_quota(
    cloud: Cloud, project: str, user_id: str | None = None, version: str = "2.1", **limits: Any
) -> httpx.Response:
    query = f"?user_id={user_id}" if user_id else ""
    async with await cloud.login("admin", version) as c:
        return await c.put(
            f"{BASE}/os-quota-sets/{cloud.api.projects[project]}{query}",
            json={"quota_set": limits},
        )


async def user_id(cloud: Cloud, name: str) -> str:
    async with cloud.api.state.db.reader() as conn:
        return str((await identity.user_get(conn, name))["id"])


# --- instances, cores, ram ------------------------------------------------------------------


async def test_thirteen_servers_in_one_request_are_refused_whole_at_a_quota_of_ten(
    cloud: Cloud,
) -> None:
    r = await create(cloud, min_count=13, max_count=13)
    assert r.json() == {
        "forbidden": {
            "code": 403,
            "message": "Quota exceeded for instances: Requested 13, "
            "but already used 0 of 10 instances",
        }
    }
    assert await servers_of(cloud) == []


async def test_fifty_concurrent_server_creates_never_overshoot_the_quota(cloud: Cloud) -> None:
    async with await cloud.login("demo") as c:
        answers = await asyncio.gather(
            *(c.post(URL, json=server(cloud, name=f"vm{n}")) for n in range(50))
        )
    codes = sorted(r.status_code for r in answers)
    assert codes == [202] * 10 + [403] * 40
    assert len(await servers_of(cloud)) == 10


async def test_min_count_gets_as_many_servers_as_the_quota_allows(cloud: Cloud) -> None:
    assert (await create(cloud, name="a", min_count=3, max_count=3)).status_code == 202
    r = await create(cloud, name="b", min_count=2, max_count=13)
    assert r.status_code == 202, r.text
    assert await servers_of(cloud) == sorted(
        ["a-1", "a-2", "a-3", *(f"b-{n}" for n in range(1, 8))]
    )
    r = await create(cloud, name="c", min_count=1, max_count=2)
    assert fault(r, 403) == (
        "Quota exceeded for instances: Requested 1-2, but already used 10 of 10 instances"
    )


async def test_cores_over_quota_names_what_is_used(cloud: Cloud) -> None:
    await set_quota(cloud, "demo", cores=20)
    for _ in range(2):
        assert (await create(cloud, flavorRef="c8")).status_code == 202
    assert (await create(cloud, flavorRef="c2")).status_code == 202
    r = await create(cloud, flavorRef="c4")
    assert fault(r, 403) == (
        "Quota exceeded for cores: Requested 4, but already used 18 of 20 cores"
    )


async def test_ram_and_cores_over_quota_together(cloud: Cloud) -> None:
    await set_quota(cloud, "demo", cores=3, ram=1000)
    r = await create(cloud, flavorRef="c4", min_count=1, max_count=1)
    assert fault(r, 403) == (
        "Quota exceeded for cores, ram: Requested 4, 1024, but already used 0, 0 "
        "of 3, 1000 cores, ram"
    )
    r = await create(cloud, flavorRef="c2", min_count=1, max_count=5)
    assert r.status_code == 202  # one fits both
    assert len(await servers_of(cloud)) == 1


async def test_deleted_servers_give_their_quota_back(cloud: Cloud) -> None:
    await set_quota(cloud, "demo", instances=1)
    first = (await create(cloud)).json()["server"]["id"]
    assert (await create(cloud)).status_code == 403
    async with await cloud.login("demo") as c:
        assert (await c.delete(f"{URL}/{first}")).status_code == 204
    # Deleting still counts until the instance row is gone, as in Nova.
    assert (await create(cloud)).status_code == 403
    async with cloud.api.state.db.writer() as conn:
        await instances_db.destroy(conn, first)
    assert (await create(cloud)).status_code == 202


async def test_a_user_limit_caps_that_user_within_the_project(cloud: Cloud) -> None:
    demo = await user_id(cloud, "demo")
    r = await set_quota(cloud, "demo", user_id=demo, instances=2)
    assert r.status_code == 200, r.text
    assert (await create(cloud, min_count=2, max_count=2)).status_code == 202
    r = await create(cloud)
    assert fault(r, 403) == (
        "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances"
    )
    async with await cloud.login("admin") as c:
        project = cloud.api.projects["demo"]
        shown = (await c.get(f"{BASE}/os-quota-sets/{project}?user_id={demo}")).json()
        assert shown["quota_set"]["instances"] == 2
        assert (await c.get(f"{BASE}/os-quota-sets/{project}")).json()["quota_set"][
            "instances"
        ] == 10
        # A user's limit may not exceed the project's.
        r = await c.put(
            f"{BASE}/os-quota-sets/{project}?user_id={demo}",
            json={"quota_set": {"instances": 11}},
        )
        assert fault(r, 400) == "Quota limit 11 for instances must be less than or equal to 10."


async def test_resize_to_a_larger_flavor_needs_the_cores_delta(cloud: Cloud) -> None:
    await set_quota(cloud, "demo", cores=10)
    uuid = await boot(cloud, flavor="c4")
    assert (await create(cloud, flavorRef="c4")).status_code == 202
    r = await act(cloud, uuid, {"resize": {"flavorRef": "c8"}}, user="demo")
    assert fault(r, 403) == (
        "Quota exceeded for cores: Requested 4, but already used 8 of 10 cores"
    )
    await assert_untouched(cloud, uuid)
    await set_quota(cloud, "demo", cores=12)
    r = await act(cloud, uuid, {"resize": {"flavorRef": "c8"}}, user="demo")
    assert r.status_code == 202, r.text
    # While the resize runs the larger flavor counts: nothing else fits.
    assert (await create(cloud, flavorRef="1")).status_code == 403
    async with await cloud.login("demo") as c:
        absolute = (await c.get(f"{BASE}/limits")).json()["limits"]["absolute"]
    assert absolute["totalCoresUsed"] == 12


async def test_metadata_items_over_quota_is_403(cloud: Cloud) -> None:
    await set_quota(cloud, "demo", metadata_items=2)
    r = await create(cloud, metadata={"a": "1", "b": "2", "c": "3"})
    assert fault(r, 403) == "Maximum number of metadata items exceeds 2"
    assert await servers_of(cloud) == []
    assert (await create(cloud, metadata={"a": "1", "b": "2"})).status_code == 202


async def test_rebuild_metadata_over_quota_is_403(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    await set_quota(cloud, "demo", metadata_items=1)
    body = {"rebuild": {"imageRef": cloud.image, "metadata": {"a": "1", "b": "2"}}}
    r = await act(cloud, uuid, body, user="demo")
    assert fault(r, 403) == "Maximum number of metadata items exceeds 1"


# --- server groups ------------------------------------------------------------------------


async def new_group(cloud: Cloud, user: str = "demo") -> httpx.Response:
    async with await cloud.login(user) as c:
        return await c.post(
            f"{BASE}/os-server-groups",
            json={"server_group": {"name": "g", "policies": ["anti-affinity"]}},
        )


async def test_server_group_members_quota_refuses_the_request_that_overfills_a_group(
    cloud: Cloud,
) -> None:
    await set_quota(cloud, "demo", server_group_members=2)
    group = (await new_group(cloud)).json()["server_group"]["id"]
    hints = {"group": group}
    async with await cloud.login("demo") as c:
        body = {**server(cloud, min_count=3, max_count=3), "os:scheduler_hints": hints}
        r = await c.post(URL, json=body)
        assert fault(r, 403) == "Quota exceeded, too many servers in group"
        body = {**server(cloud, min_count=2, max_count=2), "os:scheduler_hints": hints}
        assert (await c.post(URL, json=body)).status_code == 202
        members = (await c.get(f"{BASE}/os-server-groups/{group}")).json()["server_group"][
            "members"
        ]
        assert len(members) == 2
        body = {**server(cloud), "os:scheduler_hints": hints}
        assert fault(await c.post(URL, json=body), 403) == (
            "Quota exceeded, too many servers in group"
        )
    assert len(await servers_of(cloud)) == 2


async def test_unknown_server_group_hint_is_400(cloud: Cloud) -> None:
    hints = {"group": "0f4c8a52-64a3-4d53-a5a4-3f1f1f2c9d0e"}
    async with await cloud.login("demo") as c:
        r = await c.post(URL, json={**server(cloud), "os:scheduler_hints": hints})
    assert "could not be found" in fault(r, 400)
    assert await servers_of(cloud) == []


async def test_server_groups_quota_set_through_the_api(cloud: Cloud) -> None:
    assert (await set_quota(cloud, "demo", server_groups=1)).status_code == 200
    assert (await new_group(cloud)).status_code == 200
    assert fault(await new_group(cloud), 403) == "Quota exceeded, too many server groups."
    async with await cloud.login("demo") as c:
        absolute = (await c.get(f"{BASE}/limits")).json()["limits"]["absolute"]
    assert (absolute["maxServerGroups"], absolute["totalServerGroupsUsed"]) == (1, 1)


# --- os-quota-sets -------------------------------------------------------------------------

SHOWN_2_57 = {
    "cores",
    "instances",
    "key_pairs",
    "metadata_items",
    "ram",
    "server_groups",
    "server_group_members",
}
INJECTED = {"injected_files", "injected_file_content_bytes", "injected_file_path_bytes"}
NETWORK = {"fixed_ips", "floating_ips", "security_groups", "security_group_rules"}


@pytest.mark.parametrize(
    ("version", "keys"),
    [
        ("2.1", SHOWN_2_57 | INJECTED | NETWORK),
        ("2.35", SHOWN_2_57 | INJECTED | NETWORK),
        ("2.36", SHOWN_2_57 | INJECTED),
        ("2.56", SHOWN_2_57 | INJECTED),
        ("2.57", SHOWN_2_57),
        ("2.61", SHOWN_2_57),
    ],
)
async def test_quota_set_fields_per_microversion(
    cloud: Cloud, version: str, keys: set[str]
) -> None:
    project = cloud.api.projects["demo"]
    async with await cloud.login("demo", version) as c:
        shown = (await c.get(f"{BASE}/os-quota-sets/{project}")).json()["quota_set"]
        assert set(shown) == keys | {"id"} and shown["id"] == project
        detail = (await c.get(f"{BASE}/os-quota-sets/{project}/detail")).json()["quota_set"]
        assert set(detail) == keys | {"id"}
        defaults = (await c.get(f"{BASE}/os-quota-sets/{project}/defaults")).json()
        assert set(defaults["quota_set"]) == keys | {"id"}
    r = await set_quota(cloud, "demo", version=version, instances=5)
    assert set(r.json()["quota_set"]) == keys and r.json()["quota_set"]["instances"] == 5
    if "injected_files" not in keys:
        r = await set_quota(cloud, "demo", version=version, injected_files=1)
        assert "injected_files" in fault(r, 400)


async def test_quota_show_detail_and_defaults(cloud: Cloud) -> None:
    project = cloud.api.projects["demo"]
    assert (await create(cloud, flavorRef="c4", min_count=2, max_count=2)).status_code == 202
    assert (await set_quota(cloud, "demo", instances=4)).status_code == 200
    async with await cloud.login("demo", "2.57") as c:
        shown = (await c.get(f"{BASE}/os-quota-sets/{project}")).json()["quota_set"]
        assert shown == {
            "id": project,
            "cores": 20,
            "instances": 4,
            "key_pairs": 100,
            "metadata_items": 128,
            "ram": 51200,
            "server_groups": 10,
            "server_group_members": 10,
        }
        detail = (await c.get(f"{BASE}/os-quota-sets/{project}/detail")).json()["quota_set"]
        assert detail["instances"] == {"in_use": 2, "limit": 4, "reserved": 0}
        assert detail["cores"] == {"in_use": 8, "limit": 20, "reserved": 0}
        assert detail["ram"] == {"in_use": 2048, "limit": 51200, "reserved": 0}
        defaults = (await c.get(f"{BASE}/os-quota-sets/{project}/defaults")).json()
        assert defaults["quota_set"]["instances"] == 10


async def test_quota_policies(cloud: Cloud) -> None:
    demo, other = cloud.api.projects["demo"], cloud.api.projects["other"]
    async with await cloud.login("viewer") as c:
        assert (await c.get(f"{BASE}/os-quota-sets/{demo}")).status_code == 200
        assert (await c.get(f"{BASE}/os-quota-sets/{demo}/detail")).status_code == 200
    async with await cloud.login("demo") as c:
        assert (await c.get(f"{BASE}/os-quota-sets/{other}")).status_code == 403
        assert (await c.get(f"{BASE}/os-quota-sets/{other}/detail")).status_code == 403
        assert (await c.get(f"{BASE}/os-quota-sets/{other}/defaults")).status_code == 200
        r = await c.put(f"{BASE}/os-quota-sets/{demo}", json={"quota_set": {"instances": 50}})
        assert r.status_code == 403
        assert (await c.delete(f"{BASE}/os-quota-sets/{demo}")).status_code == 403
        assert (await c.get(f"{BASE}/os-quota-class-sets/default")).status_code == 403
        r = await c.put(
            f"{BASE}/os-quota-class-sets/default", json={"quota_class_set": {"instances": 50}}
        )
        assert r.status_code == 403
    async with await cloud.login("admin") as c:
        assert (await c.get(f"{BASE}/os-quota-sets/{other}")).status_code == 200


async def test_a_limit_below_usage_needs_force(cloud: Cloud) -> None:
    assert (await create(cloud, min_count=3, max_count=3)).status_code == 202
    r = await set_quota(cloud, "demo", instances=2)
    assert fault(r, 400) == (
        "Quota limit 2 for instances must be greater than or equal to already used and reserved 3."
    )
    r = await set_quota(cloud, "demo", instances=2, force=True)
    assert r.status_code == 200 and r.json()["quota_set"]["instances"] == 2
    assert (await create(cloud)).status_code == 403
    r = await set_quota(cloud, "demo", instances=-1)
    assert r.status_code == 200 and r.json()["quota_set"]["instances"] == -1
    r = await create(cloud, min_count=20, max_count=20, flavorRef="1")
    assert fault(r, 403).startswith("Quota exceeded for cores: Requested 20")
    await set_quota(cloud, "demo", cores=-1, ram=-1)
    assert (await create(cloud, min_count=20, max_count=20)).status_code == 202


@pytest.mark.parametrize(
    "limits",
    [
        {"instances": -2},
        {"instances": "ten"},
        {"instances": 2**31},
        {"bogus": 1},
        {"fixed_ips": "three"},
        {"force": "maybe"},
    ],
)
async def test_bad_quota_updates_are_400(cloud: Cloud, limits: dict[str, Any]) -> None:
    r = await set_quota(cloud, "demo", **limits)
    assert r.status_code == 400, r.text
    async with await cloud.login("admin") as c:
        shown = (await c.get(f"{BASE}/os-quota-sets/{cloud.api.projects['demo']}")).json()
    assert shown["quota_set"]["instances"] == 10


async def test_delete_reverts_a_project_and_its_users_to_the_defaults(cloud: Cloud) -> None:
    project = cloud.api.projects["demo"]
    demo = await user_id(cloud, "demo")
    await set_quota(cloud, "demo", instances=3, cores=5)
    await set_quota(cloud, "demo", user_id=demo, instances=1)
    async with await cloud.login("admin") as c:
        r = await c.delete(f"{BASE}/os-quota-sets/{project}?user_id={demo}")
        assert r.status_code == 202
        shown = (await c.get(f"{BASE}/os-quota-sets/{project}?user_id={demo}")).json()
        assert shown["quota_set"]["instances"] == 3
        await set_quota(cloud, "demo", user_id=demo, instances=1)
        assert (await c.delete(f"{BASE}/os-quota-sets/{project}")).status_code == 202
        for query in ("", f"?user_id={demo}"):
            shown = (await c.get(f"{BASE}/os-quota-sets/{project}{query}")).json()
            assert (shown["quota_set"]["instances"], shown["quota_set"]["cores"]) == (10, 20)


# --- os-quota-class-sets --------------------------------------------------------------------


async def test_quota_class_default_sets_every_projects_defaults(cloud: Cloud) -> None:
    async with await cloud.login("admin", "2.50") as c:
        r = await c.put(
            f"{BASE}/os-quota-class-sets/default",
            json={"quota_class_set": {"instances": 2, "server_groups": 4}},
        )
        assert r.status_code == 200, r.text
        body = r.json()["quota_class_set"]
        assert "id" not in body and (body["instances"], body["server_groups"]) == (2, 4)
        shown = (await c.get(f"{BASE}/os-quota-class-sets/default")).json()["quota_class_set"]
        assert shown["id"] == "default" and shown["instances"] == 2
        project = cloud.api.projects["demo"]
        defaults = (await c.get(f"{BASE}/os-quota-sets/{project}/defaults")).json()
        assert defaults["quota_set"]["instances"] == 2
    assert (await create(cloud, min_count=2, max_count=2)).status_code == 202
    assert fault(await create(cloud), 403) == (
        "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances"
    )
    # A project's own limit wins over the class.
    await set_quota(cloud, "demo", instances=3)
    assert (await create(cloud)).status_code == 202


@pytest.mark.parametrize(
    ("version", "groups", "network", "injected"),
    [
        ("2.1", False, True, True),
        ("2.49", False, True, True),
        ("2.50", True, False, True),
        ("2.57", True, False, False),
    ],
)
async def test_quota_class_fields_per_microversion(
    cloud: Cloud, version: str, groups: bool, network: bool, injected: bool
) -> None:
    expected = (SHOWN_2_57 - {"server_groups", "server_group_members"}) | {"id"}
    if groups:
        expected |= {"server_groups", "server_group_members"}
    if network:
        expected |= NETWORK
    if injected:
        expected |= INJECTED
    async with await cloud.login("admin", version) as c:
        shown = (await c.get(f"{BASE}/os-quota-class-sets/default")).json()["quota_class_set"]
    assert set(shown) == expected


# --- /limits agrees ----------------------------------------------------------------------------


async def test_limits_show_the_effective_quota_and_usage(cloud: Cloud) -> None:
    await set_quota(cloud, "demo", instances=2, cores=7, ram=4096, metadata_items=5)
    assert (await create(cloud, flavorRef="c2")).status_code == 202
    async with await cloud.login("demo", "2.57") as c:
        absolute = (await c.get(f"{BASE}/limits")).json()["limits"]["absolute"]
        detail = (await c.get(f"{BASE}/os-quota-sets/{cloud.api.projects['demo']}/detail")).json()[
            "quota_set"
        ]
    assert absolute == {
        "maxServerGroupMembers": 10,
        "maxServerGroups": 10,
        "maxServerMeta": 5,
        "maxTotalCores": 7,
        "maxTotalInstances": 2,
        "maxTotalKeypairs": 100,
        "maxTotalRAMSize": 4096,
        "totalCoresUsed": 2,
        "totalInstancesUsed": 1,
        "totalRAMUsed": 512,
        "totalServerGroupsUsed": 0,
    }
    for limit_key, used_key, resource in (
        ("maxTotalInstances", "totalInstancesUsed", "instances"),
        ("maxTotalCores", "totalCoresUsed", "cores"),
        ("maxTotalRAMSize", "totalRAMUsed", "ram"),
    ):
        assert detail[resource]["limit"] == absolute[limit_key]
        assert detail[resource]["in_use"] == absolute[used_key]


@pytest.mark.parametrize(
    ("limits", "files", "message"),
    [
        ({"injected_files": 1}, [("/a", b"x"), ("/b", b"y")], "Personality file limit exceeded"),
        (
            {"injected_file_path_bytes": 4},
            [("/etc/motd", b"x")],
            "Personality file path exceeds maximum 4",
        ),
        (
            {"injected_file_content_bytes": 3},
            [("/a", b"four")],
            "Personality file content exceeds maximum 3",
        ),
    ],
)
async def test_personality_over_its_quotas_is_403(
    cloud: Cloud, limits: dict[str, int], files: list[tuple[str, bytes]], message: str
) -> None:
    assert (await set_quota(cloud, "demo", **limits)).status_code == 200
    personality = [
        {"path": path, "contents": base64.b64encode(data).decode()} for path, data in files
    ]
    r = await create(cloud, personality=personality)
    assert fault(r, 403) == message
    assert await servers_of(cloud) == []


async def test_user_limits_share_the_project_limit(cloud: Cloud) -> None:
    demo, viewer = await user_id(cloud, "demo"), await user_id(cloud, "viewer")
    assert (await set_quota(cloud, "demo", user_id=viewer, instances=3)).status_code == 200
    r = await set_quota(cloud, "demo", user_id=demo, instances=8)
    assert fault(r, 400) == "Quota limit 8 for instances must be less than or equal to 7."
    assert (await set_quota(cloud, "demo", user_id=demo, instances=7)).status_code == 200
    r = await set_quota(cloud, "demo", instances=9)
    assert fault(r, 400) == (
        "Quota limit 9 for instances must be greater than or equal to already used and reserved 10."
    )
    r = await set_quota(cloud, "demo", instances=9, force=True)
    assert r.status_code == 200


async def test_network_quotas_before_2_36_are_the_network_services(cloud: Cloud) -> None:
    """Nova's proxies: security group quotas read and set the network service's
    limits (a project's, or, in the default quota class, every project's
    defaults), floating IPs too, and fixed IPs are its ports' limit."""
    project = cloud.api.projects["demo"]
    r = await set_quota(
        cloud, "demo", security_groups=7, security_group_rules=70, fixed_ips=5, floating_ips=6
    )
    assert r.status_code == 200, r.text
    shown = r.json()["quota_set"]
    assert (shown["security_groups"], shown["security_group_rules"]) == (7, 70)
    assert (shown["fixed_ips"], shown["floating_ips"]) == (5, 6)
    async with await cloud.login("admin") as c:
        network = (await c.get(f"/networking/v2.0/quotas/{project}")).json()["quota"]
        assert (network["security_group"], network["security_group_rule"]) == (7, 70)
        assert (network["floatingip"], network["port"]) == (6, 5)
        # And the other way: the network's answer is the compute API's.
        body = {"quota": {"security_group": 3}}
        assert (await c.put(f"/networking/v2.0/quotas/{project}", json=body)).status_code == 200
        detail = (await c.get(f"{BASE}/os-quota-sets/{project}/detail")).json()["quota_set"]
        # The default group the network service made for the project counts.
        assert detail["security_groups"]["limit"] == 3
        assert detail["security_groups"]["in_use"] >= 0
    r = await set_quota(cloud, "demo", user_id=await user_id(cloud, "demo"), security_groups=2)
    assert "cannot be set for a user" in fault(r, 400)
    async with await cloud.login("admin") as c:
        # The default quota class sets the network service's defaults: a
        # project with no limit of its own gets them, one with its own keeps it.
        body = {"quota_class_set": {"security_groups": 9, "security_group_rules": 90}}
        r = await c.put(f"{BASE}/os-quota-class-sets/default", json=body)
        assert r.status_code == 200, r.text
        shown = r.json()["quota_class_set"]
        assert (shown["security_groups"], shown["security_group_rules"]) == (9, 90)
        shown = (await c.get(f"{BASE}/os-quota-class-sets/default")).json()["quota_class_set"]
        assert (shown["security_groups"], shown["security_group_rules"]) == (9, 90)
        other = cloud.api.projects["other"]
        network = (await c.get(f"/networking/v2.0/quotas/{other}")).json()["quota"]
        assert (network["security_group"], network["security_group_rule"]) == (9, 90)
        defaults = (await c.get(f"{BASE}/os-quota-sets/{other}/defaults")).json()["quota_set"]
        assert (defaults["security_groups"], defaults["security_group_rules"]) == (9, 90)
        network = (await c.get(f"/networking/v2.0/quotas/{project}")).json()["quota"]
        assert network["security_group"] == 3
