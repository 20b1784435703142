"""Moving servers with the unmodified openstack CLI against ``nubes all-in-one``.

Cold migration (to a named host at 2.56+), resize with confirm and with
revert, live migration, evacuation from a host forced down, rebuild, and
``server migration list``: the commands as an operator types them, with
``--wait`` where the CLI has it (it polls the server's status every 5 s
until ACTIVE, VERIFY_RESIZE or SHUTOFF). The CLI negotiates the newest
microversion both sides know (2.61 here) unless told otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.functional.api.cli import Cloud, connect_sdk, parallel, wait_status

pytestmark = pytest.mark.timeout(420)

ADMIN, DEMO = "nubes-admin", "nubes-demo"
HOSTS = ("fake-0", "fake-1")


def _boot(cloud: Cloud, *names: str, flavor: str = "m1.tiny") -> list[dict[str, Any]]:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    create = ("server", "create", "--flavor", flavor, "--image", image, "--nic", "none")
    return parallel(*(lambda n=n: cloud.json(DEMO, *create, "--wait", n) for n in names))


def _host(admin: Any, server_id: str) -> str:
    return str(admin.compute.get_server(server_id).compute_host)


def _other(host: str) -> str:
    return HOSTS[1] if host == HOSTS[0] else HOSTS[0]


def test_openstack_cli_cold_migrate_and_resize(cloud: Cloud) -> None:
    kept, migrated, reverted = _boot(cloud, "kept", "migrated", "reverted")
    admin, demo = connect_sdk(cloud, ADMIN), connect_sdk(cloud, DEMO)
    source = _host(admin, migrated["id"])
    target = _other(source)

    def resize_and_confirm() -> Any:
        cloud.openstack(DEMO, "server", "resize", "--flavor", "m1.small", "--wait", "kept")
        assert demo.compute.get_server(kept["id"]).status == "VERIFY_RESIZE"
        cloud.openstack(DEMO, "server", "resize", "confirm", "kept")
        return wait_status(demo, kept["id"], "ACTIVE", timeout=60)

    def migrate_to_a_host_and_confirm() -> Any:
        # --host without --live-migration needs 2.56 (the CLI's own check).
        cloud.openstack(ADMIN, "server", "migrate", "--host", target, "--wait", migrated["id"])
        assert admin.compute.get_server(migrated["id"]).status == "VERIFY_RESIZE"
        cloud.openstack(ADMIN, "server", "resize", "confirm", migrated["id"])
        return wait_status(admin, migrated["id"], "ACTIVE", timeout=60)

    def resize_and_revert() -> Any:
        cloud.openstack(DEMO, "server", "resize", "--flavor", "m1.small", "--wait", "reverted")
        assert demo.compute.get_server(reverted["id"]).status == "VERIFY_RESIZE"
        cloud.openstack(DEMO, "server", "resize", "revert", "reverted")
        return wait_status(demo, reverted["id"], "ACTIVE", timeout=60)

    resized, moved, back = parallel(
        resize_and_confirm, migrate_to_a_host_and_confirm, resize_and_revert
    )
    assert resized.flavor.original_name == "m1.small"
    assert moved.flavor.original_name == "m1.tiny"
    assert _host(admin, migrated["id"]) == target
    assert back.flavor.original_name == "m1.tiny"

    events = [e["Action"] for e in cloud.json(DEMO, "server", "event", "list", "kept")]
    assert events == ["confirmResize", "resize", "create"], events
    listed = cloud.json(ADMIN, "server", "migration", "list")
    by_server = {m["Server UUID"]: m for m in listed}
    assert by_server[kept["id"]]["Status"] == "confirmed"
    assert by_server[kept["id"]]["Type"] == "resize"
    assert by_server[migrated["id"]]["Status"] == "confirmed"
    assert by_server[migrated["id"]]["Type"] == "migration"
    assert by_server[migrated["id"]]["Source Compute"] == source
    assert by_server[migrated["id"]]["Dest Compute"] == target
    assert by_server[reverted["id"]]["Status"] == "reverted"
    assert by_server[reverted["id"]]["Old Flavor"] != by_server[reverted["id"]]["New Flavor"]
    only = cloud.json(
        ADMIN, "server", "migration", "list", "--server", reverted["id"], "--type", "resize"
    )
    assert [m["Server UUID"] for m in only] == [reverted["id"]]
    # Users may not list migrations (admin only, as Nova's default policy).
    refused = cloud.openstack(DEMO, "server", "migration", "list", check=False)
    assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr


def test_openstack_cli_live_migrate_rebuild_and_evacuate(cloud: Cloud) -> None:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    live, rebuilt, evacuated = _boot(cloud, "live", "rebuilt", "evacuated")
    admin = connect_sdk(cloud, ADMIN)
    start = _host(admin, live["id"])

    def live_migrate_twice() -> list[str]:
        cloud.openstack(ADMIN, "server", "migrate", "--live-migration", "--wait", live["id"])
        first = _host(admin, live["id"])
        cloud.openstack(
            ADMIN, "server", "migrate", "--live-migration", "--host", start, "--wait", live["id"]
        )
        return [first, _host(admin, live["id"])]

    def rebuild() -> dict[str, Any]:
        args = ("server", "rebuild", "--image", image, "--name", "renewed", "--wait", "rebuilt")
        out = cloud.openstack(DEMO, *args, "-f", "json").stdout
        # --wait writes "Complete" before the server it shows.
        assert out.startswith("Complete\n"), out
        shown: dict[str, Any] = json.loads(out.removeprefix("Complete\n"))
        return shown

    hops, shown = parallel(live_migrate_twice, rebuild)
    assert hops == [_other(start), start]
    assert admin.compute.get_server(live["id"]).status == "ACTIVE"
    assert shown["name"] == "renewed"
    assert admin.compute.get_server(rebuilt["id"]).status == "ACTIVE"
    events = [e["Action"] for e in cloud.json(DEMO, "server", "event", "list", rebuilt["id"])]
    assert events == ["rebuild", "create"], events
    events = [e["Action"] for e in cloud.json(ADMIN, "server", "event", "list", live["id"])]
    assert events == ["live-migration", "live-migration", "create"], events

    # Evacuate: only once its host's compute service is down (forced down here).
    dead = _host(admin, evacuated["id"])
    refused = cloud.openstack(ADMIN, "server", "evacuate", evacuated["id"], check=False)
    assert refused.returncode != 0, refused.stdout
    assert f"Compute service of {dead} is still in use." in refused.stderr, refused.stderr
    cloud.openstack(ADMIN, "compute", "service", "set", "--down", dead, "nubes-compute")
    services = {s["Host"]: s for s in cloud.json(ADMIN, "compute", "service", "list")}
    assert services[dead]["State"] == "down"
    # Not --wait: this CLI waits for "ACTIVE" among lower-cased statuses, so
    # its evacuate --wait never ends (against Nova too); the SDK polls instead.
    cloud.openstack(ADMIN, "server", "evacuate", evacuated["id"])
    # The CLI speaks 2.95 or later: an evacuated server is left stopped.
    server = wait_status(admin, evacuated["id"], "SHUTOFF", timeout=60)
    assert server.compute_host == _other(dead)
    listed = cloud.json(ADMIN, "server", "migration", "list", "--type", "evacuation")
    assert [(m["Server UUID"], m["Source Compute"]) for m in listed] == [(evacuated["id"], dead)]
    live_listed = cloud.json(ADMIN, "server", "migration", "list", "--type", "live-migration")
    assert {m["Status"] for m in live_listed} == {"completed"} and len(live_listed) == 2
    cloud.openstack(ADMIN, "compute", "service", "set", "--up", dead, "nubes-compute")
