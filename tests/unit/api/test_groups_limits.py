"""os-server-groups and limits per microversion; scheduler hints."""

from __future__ import annotations

from typing import Any

from tests.unit.api.conftest import ApiHarness

BASE = "/compute/v2.1"


async def test_server_group_views(api: ApiHarness) -> None:
    async with await api.login("demo", "2.12") as c:
        r = await c.post(
            f"{BASE}/os-server-groups",
            json={"server_group": {"name": "g", "policies": ["affinity"]}},
        )
        assert r.status_code == 200
        group = r.json()["server_group"]
        assert set(group) == {"id", "name", "policies", "members", "metadata"}
        assert (
            group["policies"] == ["affinity"] and group["members"] == [] and group["metadata"] == {}
        )
    async with await api.login("demo", "2.13") as c:
        shown = (await c.get(f"{BASE}/os-server-groups/{group['id']}")).json()["server_group"]
        assert set(shown) == {
            "id",
            "name",
            "policies",
            "members",
            "metadata",
            "project_id",
            "user_id",
        }
        assert shown["project_id"] == api.projects["demo"]


async def test_soft_policies_from_2_15(api: ApiHarness) -> None:
    body = {"server_group": {"name": "g", "policies": ["soft-affinity"]}}
    async with await api.login("demo", "2.14") as c:
        r = await c.post(f"{BASE}/os-server-groups", json=body)
        assert r.status_code == 400 and "policies" in r.json()["badRequest"]["message"]
    async with await api.login("demo", "2.15") as c:
        assert (await c.post(f"{BASE}/os-server-groups", json=body)).status_code == 200
        for bad in (
            {"name": "g"},
            {"name": "g", "policies": ["affinity", "anti-affinity"]},
            {"name": "g", "policies": ["affinity"], "extra": 1},
            {"name": "", "policies": ["affinity"]},
        ):
            r = await c.post(f"{BASE}/os-server-groups", json={"server_group": bad})
            assert r.status_code == 400, bad


async def test_server_groups_are_per_project(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        gid = (
            await c.post(
                f"{BASE}/os-server-groups",
                json={"server_group": {"name": "g", "policies": ["anti-affinity"]}},
            )
        ).json()["server_group"]["id"]
    async with await api.login("other") as c:
        assert (await c.get(f"{BASE}/os-server-groups/{gid}")).status_code == 404
        assert (await c.delete(f"{BASE}/os-server-groups/{gid}")).status_code == 404
        assert (await c.get(f"{BASE}/os-server-groups")).json() == {"server_groups": []}
    async with await api.login("viewer") as c:
        assert (await c.get(f"{BASE}/os-server-groups/{gid}")).status_code == 200
        assert (await c.delete(f"{BASE}/os-server-groups/{gid}")).status_code == 403
        r = await c.post(
            f"{BASE}/os-server-groups",
            json={"server_group": {"name": "g", "policies": ["affinity"]}},
        )
        assert r.status_code == 403
    async with await api.login("admin") as c:
        assert (await c.get(f"{BASE}/os-server-groups")).json() == {"server_groups": []}
        assert (
            len((await c.get(f"{BASE}/os-server-groups?all_projects=true")).json()["server_groups"])
            == 1
        )
    async with await api.login("demo") as c:
        assert (await c.delete(f"{BASE}/os-server-groups/{gid}")).status_code == 204
        assert (await c.get(f"{BASE}/os-server-groups/{gid}")).status_code == 404


async def test_server_group_quota(api: ApiHarness) -> None:
    api.state.conf.set_override("server_groups", 1, group="quota")
    async with await api.login("demo") as c:
        body = {"server_group": {"name": "g", "policies": ["affinity"]}}
        assert (await c.post(f"{BASE}/os-server-groups", json=body)).status_code == 200
        r = await c.post(f"{BASE}/os-server-groups", json=body)
        assert r.status_code == 403 and "Quota exceeded" in r.json()["forbidden"]["message"]


COMMON = {
    "maxServerGroupMembers",
    "maxServerGroups",
    "maxServerMeta",
    "maxTotalCores",
    "maxTotalInstances",
    "maxTotalKeypairs",
    "maxTotalRAMSize",
    "totalCoresUsed",
    "totalInstancesUsed",
    "totalRAMUsed",
    "totalServerGroupsUsed",
}
NETWORK = {
    "maxSecurityGroupRules",
    "maxSecurityGroups",
    "maxTotalFloatingIps",
    "totalFloatingIpsUsed",
    "totalSecurityGroupsUsed",
}
PERSONALITY = {"maxPersonality", "maxPersonalitySize"}


async def _limits(api: ApiHarness, user: str, version: str, query: str = "") -> Any:
    async with await api.login(user, version) as c:
        return await c.get(f"{BASE}/limits{query}")


async def test_limits_per_microversion(api: ApiHarness) -> None:
    for version, keys in (
        ("2.1", COMMON | NETWORK | PERSONALITY | {"maxImageMeta"}),
        ("2.35", COMMON | NETWORK | PERSONALITY | {"maxImageMeta"}),
        ("2.36", COMMON | PERSONALITY | {"maxImageMeta"}),
        ("2.38", COMMON | PERSONALITY | {"maxImageMeta"}),
        ("2.39", COMMON | PERSONALITY),
        ("2.56", COMMON | PERSONALITY),
        ("2.57", COMMON),
    ):
        body = (await _limits(api, "demo", version)).json()["limits"]
        assert body["rate"] == []
        assert set(body["absolute"]) == keys, version
    absolute = (await _limits(api, "demo", "2.57")).json()["limits"]["absolute"]
    assert absolute["maxTotalCores"] == 20 and absolute["totalInstancesUsed"] == 0


async def test_limits_of_another_project_need_admin(api: ApiHarness) -> None:
    other = api.projects["other"]
    assert (await _limits(api, "demo", "2.1", f"?tenant_id={other}")).status_code == 403
    assert (await _limits(api, "admin", "2.1", f"?tenant_id={other}")).status_code == 200


async def test_scheduler_hints_without_a_bus(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        assert (await c.get(f"{BASE}/os-scheduler-hints")).json() == {"scheduler_hints": []}
