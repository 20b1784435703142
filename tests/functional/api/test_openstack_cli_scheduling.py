"""Scheduling with the unmodified openstack CLI against ``nubes all-in-one`` (two hosts).

Server groups as a user meets them (members recorded, anti-affinity held
when the members' builds race, NoValidHost shown as the fault of the one
that cannot fit), operators' changes to hosts holding from the very next
boot, the scheduler hints ``GET /os-scheduler-hints`` advertises, and
``running_vms`` agreeing with ``server list --host``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.functional.api.cli import Cloud, connect_sdk, parallel

pytestmark = pytest.mark.timeout(420)

ADMIN, DEMO = "nubes-admin", "nubes-demo"
HOSTS = ("fake-0", "fake-1")


def _create(cloud: Cloud, name: str, *extra: str, wait: bool = True) -> dict[str, Any]:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    args = ["server", "create", "--flavor", "m1.tiny", "--image", image, "--nic", "none"]
    return dict(cloud.json(DEMO, *args, *extra, *(["--wait"] if wait else []), name))


def _settled(conn: Any, server_id: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        server = conn.compute.get_server(server_id)
        if server.status in ("ACTIVE", "ERROR") and server.task_state is None:
            return server
        assert time.monotonic() < deadline, (server.status, server.task_state)
        time.sleep(0.2)


def test_openstack_cli_anti_affinity_group(cloud: Cloud) -> None:
    admin = connect_sdk(cloud, ADMIN)
    group = cloud.json(DEMO, "server", "group", "create", "--policy", "anti-affinity", "spread")
    hint = ("--hint", f"group={group['id']}")
    # Three members on two hosts, their builds racing each other.
    made = parallel(*(lambda n=n: _create(cloud, n, *hint, wait=False) for n in "abc"))
    servers = [_settled(admin, m["id"]) for m in made]
    active = [s for s in servers if s.status == "ACTIVE"]
    failed = [s for s in servers if s.status == "ERROR"]
    assert len(active) == 2 and len(failed) == 1, [(s.name, s.status) for s in servers]
    assert {s.compute_host for s in active} == set(HOSTS)
    shown = cloud.json(DEMO, "server", "show", failed[0].id)
    assert "No valid host" in shown["fault"]["message"], shown["fault"]

    members = cloud.json(DEMO, "server", "group", "show", "spread")["members"]
    assert sorted(members) == sorted(m["id"] for m in made)
    cloud.openstack(DEMO, "server", "delete", "--wait", failed[0].id)
    members = cloud.json(DEMO, "server", "group", "show", "spread")["members"]
    assert sorted(members) == sorted(s.id for s in active)


def test_openstack_cli_admin_changes_hold_from_the_next_boot(cloud: Cloud) -> None:
    admin = connect_sdk(cloud, ADMIN)
    cloud.openstack(ADMIN, "compute", "service", "set", "--disable", "fake-0", "nova-compute")
    for name in ("after-disable-1", "after-disable-2"):
        server = _create(cloud, name)
        assert admin.compute.get_server(server["id"]).compute_host == "fake-1"
    cloud.openstack(ADMIN, "compute", "service", "set", "--enable", "fake-0", "nova-compute")

    cloud.openstack(ADMIN, "aggregate", "create", "--zone", "az1", "rack-1")
    cloud.openstack(ADMIN, "aggregate", "add", "host", "rack-1", "fake-0")
    zoned = _create(cloud, "zoned", "--availability-zone", "az1")
    assert zoned["status"] == "ACTIVE"
    assert admin.compute.get_server(zoned["id"]).compute_host == "fake-0"

    # running_vms counts what server list --host lists, at once (2.88 dropped
    # the counters from hypervisors: ask at 2.87).
    for host in HOSTS:
        listed = cloud.json(ADMIN, "server", "list", "--all-projects", "--host", host)
        shown = cloud.json(ADMIN, "--os-compute-api-version", "2.87", "hypervisor", "show", host)
        assert shown["running_vms"] == len(listed), (host, shown["running_vms"], listed)


def test_openstack_cli_scheduler_hints(cloud: Cloud) -> None:
    admin, demo = connect_sdk(cloud, ADMIN), connect_sdk(cloud, DEMO)
    advertised = {
        h["name"] for h in demo.compute.get("/os-scheduler-hints").json()["scheduler_hints"]
    }
    assert advertised == {"group", "same_host", "different_host"}
    first = _create(cloud, "anchor")
    anchor_host = admin.compute.get_server(first["id"]).compute_host
    same, different, unknown = parallel(
        lambda: _create(cloud, "same", "--hint", f"same_host={first['id']}"),
        lambda: _create(cloud, "different", "--hint", f"different_host={first['id']}"),
        # Nova's schema takes any other hint and ignores it.
        lambda: _create(cloud, "unknown", "--hint", "colour=blue"),
    )
    assert admin.compute.get_server(same["id"]).compute_host == anchor_host
    assert admin.compute.get_server(different["id"]).compute_host != anchor_host
    assert unknown["status"] == "ACTIVE"
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    args = ["server", "create", "--flavor", "m1.tiny", "--image", image, "--nic", "none"]
    for hint in ("group=not-a-uuid", "group=8c6a6a56-6d4b-4b33-9f0e-6f3e1f1b1f1b"):
        bad = cloud.openstack(DEMO, *args, "--hint", hint, "bad", check=False)
        assert bad.returncode != 0 and "400" in bad.stderr, bad.stderr
