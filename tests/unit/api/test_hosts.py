"""os-services, os-hypervisors, os-aggregates, os-availability-zone.

Views at each microversion boundary, and policy.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from nubes.db.api import compute_nodes, instances, services
from tests.unit.api.conftest import ApiHarness
from tests.unit.db.factories import make_instance

BASE = "/compute/v2.1"


async def _hosts(api: ApiHarness, count: int = 2) -> list[dict[str, Any]]:
    rows = []
    async with api.state.db.writer() as conn:
        svc = await services.create(
            conn, {"host": "ctl", "binary": "scheduler", "topic": "scheduler"}
        )
        await services.heartbeat(conn, svc["id"])
        for i in range(count):
            svc = await services.create(
                conn, {"host": f"h{i}", "binary": "compute", "topic": "compute"}
            )
            await services.heartbeat(conn, svc["id"])
            node = await compute_nodes.create(
                conn,
                {
                    "service_id": svc["id"],
                    "host": f"h{i}",
                    "hypervisor_hostname": f"h{i}",
                    "hypervisor_type": "fake",
                    "hypervisor_version": 1000,
                    "vcpus": 16,
                    "memory_mb": 8192,
                    "local_gb": 100,
                    "cpu_info": {"arch": "x86_64"},
                },
            )
            rows.append({"service": svc, "node": node})
    return rows


SERVICE_KEYS = {"id", "binary", "disabled_reason", "host", "state", "status", "updated_at", "zone"}


async def test_services_views(api: ApiHarness) -> None:
    hosts = await _hosts(api)
    async with await api.login("admin") as c:
        for version, keys, id_key in (
            ("2.1", SERVICE_KEYS, "id"),
            ("2.10", SERVICE_KEYS, "id"),
            ("2.11", SERVICE_KEYS | {"forced_down"}, "id"),
            ("2.52", SERVICE_KEYS | {"forced_down"}, "id"),
            ("2.53", SERVICE_KEYS | {"forced_down"}, "uuid"),
        ):
            r = await c.get(
                f"{BASE}/os-services", headers={"OpenStack-API-Version": f"compute {version}"}
            )
            rows = r.json()["services"]
            assert all(set(s) == keys for s in rows), version
            by_host = {s["host"]: s for s in rows}
            assert by_host["h0"]["id"] == hosts[0]["service"][id_key]
        assert by_host["h0"]["binary"] == "nubes-compute" and by_host["h0"]["zone"] == "nova"
        assert by_host["ctl"]["zone"] == "internal"
        assert by_host["h0"]["state"] == "up" and by_host["h0"]["status"] == "enabled"
        r = await c.get(f"{BASE}/os-services?binary=nubes-compute&host=h1")
        assert [s["host"] for s in r.json()["services"]] == ["h1"]
        assert {s["binary"] for s in r.json()["services"]} == {"nubes-compute"}
        # Filtered by Nova's name, the services are named as Nova names them
        # (Tempest and Nova clients compare the names with the filter's).
        r = await c.get(f"{BASE}/os-services?binary=nova-compute")
        assert sorted((s["host"], s["binary"]) for s in r.json()["services"]) == [
            ("h0", "nova-compute"),
            ("h1", "nova-compute"),
        ]
        r = await c.get(f"{BASE}/os-services?binary=nova-scheduler")
        assert [(s["host"], s["binary"]) for s in r.json()["services"]] == [
            ("ctl", "nova-scheduler")
        ]


async def test_service_update_2_53(api: ApiHarness) -> None:
    hosts = await _hosts(api)
    uuid = hosts[0]["service"]["uuid"]
    async with await api.login("admin", "2.53") as c:
        r = await c.put(
            f"{BASE}/os-services/{uuid}", json={"status": "disabled", "disabled_reason": "maint"}
        )
        assert r.status_code == 200
        svc = r.json()["service"]
        assert (
            svc["status"] == "disabled" and svc["disabled_reason"] == "maint" and svc["id"] == uuid
        )
        r = await c.put(f"{BASE}/os-services/{uuid}", json={"forced_down": True})
        assert r.json()["service"]["state"] == "down" and r.json()["service"]["forced_down"] is True
        r = await c.put(
            f"{BASE}/os-services/{uuid}", json={"status": "enabled", "disabled_reason": "x"}
        )
        assert r.status_code == 400
        assert (await c.put(f"{BASE}/os-services/{uuid}", json={})).status_code == 400
        assert (
            await c.put(f"{BASE}/os-services/{uuid}", json={"status": "bogus"})
        ).status_code == 400
        assert (await c.put(f"{BASE}/os-services/1", json={"status": "enabled"})).status_code == 400
        missing = "00000000-0000-0000-0000-000000000000"
        assert (
            await c.put(f"{BASE}/os-services/{missing}", json={"status": "enabled"})
        ).status_code == 404


async def test_service_legacy_actions(api: ApiHarness) -> None:
    await _hosts(api)
    async with await api.login("admin", "2.11") as c:
        body = {"host": "h0", "binary": "nubes-compute", "disabled_reason": "why"}
        r = await c.put(f"{BASE}/os-services/disable-log-reason", json=body)
        assert r.json() == {
            "service": {
                "host": "h0",
                "binary": "nubes-compute",
                "status": "disabled",
                "disabled_reason": "why",
            }
        }
        r = await c.put(
            f"{BASE}/os-services/enable", json={"host": "h0", "binary": "nubes-compute"}
        )
        assert r.json()["service"]["status"] == "enabled"
        r = await c.put(
            f"{BASE}/os-services/force-down",
            json={"host": "h0", "binary": "nubes-compute", "forced_down": True},
        )
        assert r.json()["service"]["forced_down"] is True
        r = await c.put(
            f"{BASE}/os-services/enable", json={"host": "nope", "binary": "nubes-compute"}
        )
        assert r.status_code == 404
    async with await api.login("admin", "2.10") as c:
        r = await c.put(
            f"{BASE}/os-services/force-down",
            json={"host": "h0", "binary": "nubes-compute", "forced_down": True},
        )
        assert r.status_code == 404


async def test_stale_heartbeat_is_down(api: ApiHarness) -> None:
    hosts = await _hosts(api, 1)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3600)
    async with api.state.db.writer() as conn:
        await services.heartbeat(conn, hosts[0]["service"]["id"], now=old)
    async with await api.login("admin") as c:
        by_host = {s["host"]: s for s in (await c.get(f"{BASE}/os-services")).json()["services"]}
    assert by_host["h0"]["state"] == "down"


HYP_BASIC = {"id", "hypervisor_hostname", "state", "status"}


async def test_hypervisor_views(api: ApiHarness) -> None:
    hosts = await _hosts(api)
    async with await api.login("admin") as c:
        for version, id_key, cpu_type in (
            ("2.1", "id", str),
            ("2.27", "id", str),
            ("2.28", "id", dict),
            ("2.53", "uuid", dict),
        ):
            headers = {"OpenStack-API-Version": f"compute {version}"}
            rows = (await c.get(f"{BASE}/os-hypervisors", headers=headers)).json()["hypervisors"]
            assert all(set(h) == HYP_BASIC for h in rows)
            detail = (await c.get(f"{BASE}/os-hypervisors/detail", headers=headers)).json()[
                "hypervisors"
            ]
            h0 = next(h for h in detail if h["hypervisor_hostname"] == "h0")
            assert h0["id"] == hosts[0]["node"][id_key]
            assert isinstance(h0["cpu_info"], cpu_type)
            assert h0["service"]["id"] == hosts[0]["service"][id_key]
            assert h0["free_ram_mb"] == 8192 and h0["state"] == "up"
            shown = await c.get(f"{BASE}/os-hypervisors/{h0['id']}", headers=headers)
            assert shown.json()["hypervisor"] == h0
        assert json.loads(
            (await c.get(f"{BASE}/os-hypervisors/detail")).json()["hypervisors"][0]["cpu_info"]
        ) == {"arch": "x86_64"}
        r = await c.get(
            f"{BASE}/os-hypervisors/1", headers={"OpenStack-API-Version": "compute 2.53"}
        )
        assert r.status_code == 400
        r = await c.get(f"{BASE}/os-hypervisors/abc")
        assert r.status_code == 404
        stats = (await c.get(f"{BASE}/os-hypervisors/statistics")).json()["hypervisor_statistics"]
        assert stats["count"] == 2 and stats["vcpus"] == 32
        r = await c.get(
            f"{BASE}/os-hypervisors?limit=1", headers={"OpenStack-API-Version": "compute 2.33"}
        )
        assert len(r.json()["hypervisors"]) == 1 and "hypervisors_links" in r.json()


async def test_hypervisor_uptime_of_a_host_whose_service_is_down_is_a_400(
    api: ApiHarness,
) -> None:
    hosts = await _hosts(api)
    async with api.state.db.writer() as conn:
        await services.update(conn, hosts[0]["service"]["id"], {"forced_down": True})
    node_id = hosts[0]["node"]["id"]
    async with await api.login("admin") as c:
        r = await c.get(f"{BASE}/os-hypervisors/{node_id}/uptime")
        assert r.status_code == 400
        assert r.json()["badRequest"]["message"] == (
            "Compute service of h0 is unavailable at this time."
        )
        assert (await c.get(f"{BASE}/os-hypervisors/999/uptime")).status_code == 404
    async with await api.login("demo") as c:
        assert (await c.get(f"{BASE}/os-hypervisors/{node_id}/uptime")).status_code == 403


async def test_running_vms_matches_server_list_by_host_at_all_times(api: ApiHarness) -> None:
    """The user saw 15 running VMs against 7 servers: the count was the hosts'
    periodic report, which lagged and counted guests gone or not yet there."""
    await _hosts(api)
    async with api.state.db.writer() as conn:
        # What the host last reported is not what the API counts.
        await compute_nodes.update(
            conn, (await compute_nodes.get_all(conn, host="h0"))[0]["id"], {"running_vms": 15}
        )
        for _ in range(4):
            await make_instance(conn, host="h0", node="h0", vm_state="active")
        await make_instance(conn, host="h0", node=None, vm_state="building")  # claimed, no node yet
        await make_instance(conn, host="h1", node="h1", vm_state="error")
        await make_instance(conn, host=None, vm_state="building")  # not placed anywhere
        gone = await make_instance(conn, host="h1", node="h1", vm_state="active")
        await instances.destroy(conn, gone["uuid"])
    async with await api.login("admin") as c:
        detail = (await c.get(f"{BASE}/os-hypervisors/detail")).json()["hypervisors"]
        counts = {h["hypervisor_hostname"]: h["running_vms"] for h in detail}
        for host in ("h0", "h1"):
            listed = (await c.get(f"{BASE}/servers?all_tenants=1&host={host}")).json()["servers"]
            assert counts[host] == len(listed), host
        assert counts == {"h0": 5, "h1": 1}
        stats = (await c.get(f"{BASE}/os-hypervisors/statistics")).json()["hypervisor_statistics"]
        assert stats["running_vms"] == 6


async def test_admin_only_apis_are_403_for_members_and_readers(api: ApiHarness) -> None:
    await _hosts(api)
    for user in ("demo", "viewer", "other"):
        async with await api.login(user) as c:
            for path in (
                "/os-hypervisors",
                "/os-hypervisors/detail",
                "/os-services",
                "/os-aggregates",
                "/os-availability-zone/detail",
                "/os-hypervisors/statistics",
            ):
                r = await c.get(BASE + path)
                assert r.status_code == 403, (user, path)
                assert r.json()["forbidden"]["code"] == 403
            r = await c.post(f"{BASE}/os-aggregates", json={"aggregate": {"name": "x"}})
            assert r.status_code == 403


AGG_KEYS = {
    "availability_zone",
    "created_at",
    "deleted",
    "deleted_at",
    "hosts",
    "id",
    "metadata",
    "name",
    "updated_at",
}


async def test_aggregates(api: ApiHarness) -> None:
    await _hosts(api)
    async with await api.login("admin", "2.41") as c:
        r = await c.post(
            f"{BASE}/os-aggregates", json={"aggregate": {"name": "agg", "availability_zone": "az1"}}
        )
        assert r.status_code == 200
        created = r.json()["aggregate"]
        assert set(created) == (AGG_KEYS - {"hosts", "metadata"}) | {"uuid"}
        agg_id = created["id"]
        url = f"{BASE}/os-aggregates/{agg_id}"
        r = await c.post(f"{url}/action", json={"add_host": {"host": "h0"}})
        assert r.json()["aggregate"]["hosts"] == ["h0"]
        assert (await c.post(f"{url}/action", json={"add_host": {"host": "h0"}})).status_code == 409
        assert (
            await c.post(f"{url}/action", json={"add_host": {"host": "nope"}})
        ).status_code == 404
        r = await c.post(
            f"{url}/action",
            json={"set_metadata": {"metadata": {"filter_tenant_id": "p1", "k": "v"}}},
        )
        assert r.json()["aggregate"]["metadata"] == {
            "availability_zone": "az1",
            "filter_tenant_id": "p1",
            "k": "v",
        }
        r = await c.post(f"{url}/action", json={"set_metadata": {"metadata": {"k": None}}})
        assert "k" not in r.json()["aggregate"]["metadata"]
        r = await c.put(url, json={"aggregate": {"name": "renamed"}})
        assert r.json()["aggregate"]["name"] == "renamed"
        assert (
            await c.post(f"{BASE}/os-aggregates", json={"aggregate": {"name": "renamed"}})
        ).status_code == 409
        # A host is in one zone only.
        other = (
            await c.post(
                f"{BASE}/os-aggregates",
                json={"aggregate": {"name": "b", "availability_zone": "az2"}},
            )
        ).json()["aggregate"]
        r = await c.post(
            f"{BASE}/os-aggregates/{other['id']}/action", json={"add_host": {"host": "h0"}}
        )
        assert r.status_code == 409
        zones = (await c.get(f"{BASE}/os-availability-zone")).json()["availabilityZoneInfo"]
        assert {z["zoneName"] for z in zones} == {"az1", "nova"}
        assert (await c.delete(url)).status_code == 400
        await c.post(f"{url}/action", json={"remove_host": {"host": "h0"}})
        assert (
            await c.post(f"{url}/action", json={"remove_host": {"host": "h0"}})
        ).status_code == 404
        assert (await c.delete(url)).status_code == 200
        assert (await c.get(url)).status_code == 404
        assert (await c.get(f"{BASE}/os-aggregates/abc")).status_code == 400
        # A number no aggregate can have is not found, as in Nova.
        assert (await c.get(f"{BASE}/os-aggregates/-1")).status_code == 404
        assert (await c.delete(f"{BASE}/os-aggregates/-1")).status_code == 404
    async with await api.login("admin", "2.40") as c:
        (agg,) = (await c.get(f"{BASE}/os-aggregates")).json()["aggregates"]
        assert set(agg) == AGG_KEYS


async def test_availability_zones(api: ApiHarness) -> None:
    await _hosts(api)
    async with await api.login("demo") as c:
        r = await c.get(f"{BASE}/os-availability-zone")
        assert r.json() == {
            "availabilityZoneInfo": [
                {"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}
            ]
        }
    async with await api.login("admin") as c:
        zones = {
            z["zoneName"]: z
            for z in (await c.get(f"{BASE}/os-availability-zone/detail")).json()[
                "availabilityZoneInfo"
            ]
        }
        assert set(zones) == {"nova", "internal"}
        assert zones["nova"]["hosts"]["h0"]["nubes-compute"]["available"] is True
        assert "nubes-scheduler" in zones["internal"]["hosts"]["ctl"]


async def test_hypervisors_count_the_operators_reserved_memory_and_disk_as_used(
    api: ApiHarness,
) -> None:
    # As Nova reports them: reserved memory and disk are used, from the
    # controllers' [DEFAULT] reserved_host_*, whatever the host says.
    await _hosts(api, 1)
    api.state.conf.set_override("reserved_host_memory_mb", 1024)
    api.state.conf.set_override("reserved_host_disk_mb", 2048)
    async with await api.login("admin") as c:
        (node,) = (await c.get(f"{BASE}/os-hypervisors/detail")).json()["hypervisors"]
        stats = (await c.get(f"{BASE}/os-hypervisors/statistics")).json()["hypervisor_statistics"]
    assert (node["memory_mb_used"], node["free_ram_mb"]) == (1024, 8192 - 1024)
    assert (node["local_gb_used"], node["free_disk_gb"]) == (2, 98)
    assert (stats["memory_mb_used"], stats["free_ram_mb"], stats["local_gb_used"]) == (
        1024,
        7168,
        2,
    )


async def test_hypervisor_search_and_servers_up_to_2_52(api: ApiHarness) -> None:
    await _hosts(api)
    async with await api.login("admin", "2.52") as c:
        found = (await c.get(f"{BASE}/os-hypervisors/h/search")).json()["hypervisors"]
        assert sorted(h["hypervisor_hostname"] for h in found) == ["h0", "h1"]
        assert all(set(h) == HYP_BASIC for h in found)
        (h0,) = (await c.get(f"{BASE}/os-hypervisors/h0/servers")).json()["hypervisors"]
        # No server on it: before 2.75 the node comes without a servers key.
        assert h0["hypervisor_hostname"] == "h0" and "servers" not in h0
        r = await c.get(f"{BASE}/os-hypervisors/zz/search")
        assert r.status_code == 404 and "zz" in r.json()["itemNotFound"]["message"]
        assert (await c.get(f"{BASE}/os-hypervisors/zz/servers")).status_code == 404
    async with await api.login("admin", "2.53") as c:
        # 2.53 replaced both with list filters.
        assert (await c.get(f"{BASE}/os-hypervisors/h0/search")).status_code == 404
        assert (await c.get(f"{BASE}/os-hypervisors/h0/servers")).status_code == 404
    async with await api.login("demo", "2.52") as c:
        assert (await c.get(f"{BASE}/os-hypervisors/h0/search")).status_code == 403
        assert (await c.get(f"{BASE}/os-hypervisors/h0/servers")).status_code == 403
