"""Bugs users met with the openstack CLI against ``nubes all-in-one``.

Each test drives the unmodified CLI through the clouds.yaml all-in-one
wrote (the harness of ``test_openstack_cli``; ``cloud`` comes through
this directory's conftest).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.functional.api.cli import Cloud, connect_sdk, free_port, parallel, wait_status

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("openstack") is None,
        reason="python-openstackclient is not installed (pip install -e '.[test]')",
    ),
]

ADMIN, DEMO = "nubes-admin", "nubes-demo"


def _image() -> str:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME

    return DEFAULT_IMAGE_NAME


def test_hypervisor_show_answers_with_the_hosts_uptime(cloud: Cloud) -> None:
    shown = cloud.json(ADMIN, "hypervisor", "show", "fake-0")
    assert shown["hypervisor_hostname"] == "fake-0"
    # The CLI splits the uptime line the show body carries (2.88; before, /uptime).
    assert re.fullmatch(r"\d\d:\d\d:\d\d", shown["host_time"]), shown
    assert shown["users"] == "0"
    assert re.fullmatch(r"[\d.]+, [\d.]+, [\d.]+", shown["load_average"]), shown
    assert shown["uptime"], shown


def test_console_log_show_reads_the_guests_log_from_its_host(cloud: Cloud) -> None:
    """``openstack console log show`` (os-getConsoleOutput): the API asks the
    server's host (compute RPC get_console_output), which reads its driver's log."""
    create = ("server", "create", "--flavor", "m1.tiny", "--image", _image(), "--nic", "none")
    vm = cloud.json(DEMO, *create, "--wait", "con1")
    cloud.openstack(DEMO, "server", "reboot", "--wait", "con1")
    log = cloud.openstack(DEMO, "console", "log", "show", "con1").stdout
    assert f"fake guest {vm['id']}: booted on fake-" in log, log
    last = cloud.openstack(DEMO, "console", "log", "show", "--lines", "1", "con1").stdout
    assert last.strip().endswith("rebooted (soft)"), last
    assert len(last.strip().splitlines()) == 1, last
    # A stopped server has no running guest to ask: Nova's 409.
    cloud.openstack(DEMO, "server", "stop", "con1")
    wait_status(connect_sdk(cloud, DEMO), vm["id"], "SHUTOFF")
    stopped = cloud.openstack(DEMO, "console", "log", "show", "con1", check=False)
    assert stopped.returncode != 0 and "409" in stopped.stderr, stopped.stderr


def test_restarting_all_in_one_keeps_active_servers_active(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path / "state", free_port())
    cloud.start()
    try:
        create = ("server", "create", "--flavor", "m1.tiny", "--image", _image(), "--nic", "none")
        vm = cloud.json(DEMO, *create, "--wait", "vm1")
        assert vm["status"] == "ACTIVE"
        assert cloud.stop() == 0
        cloud.start()
        sdk = connect_sdk(cloud, DEMO)
        shown = cloud.json(DEMO, "server", "show", vm["id"])
        assert shown["status"] == "ACTIVE", shown
        assert shown["OS-EXT-STS:power_state"] == 1, shown  # running
        cloud.openstack(DEMO, "server", "stop", "vm1")
        wait_status(sdk, vm["id"], "SHUTOFF")
        # The power state is the hypervisor's too: a second restart keeps it off.
        assert cloud.stop() == 0
        cloud.start()
        sdk = connect_sdk(cloud, DEMO)
        assert cloud.json(DEMO, "server", "show", vm["id"])["status"] == "SHUTOFF"
        cloud.openstack(DEMO, "server", "start", "vm1")
        wait_status(sdk, vm["id"], "ACTIVE")
    finally:
        if cloud.proc is not None and cloud.proc.poll() is None:
            cloud.stop()


def test_server_list_by_tags_returns_only_the_tagged_servers(cloud: Cloud) -> None:
    create = ("server", "create", "--flavor", "m1.tiny", "--image", _image(), "--nic", "none")
    parallel(
        lambda: cloud.json(DEMO, *create, "--tag", "t1", "--tag", "t2", "--wait", "both"),
        lambda: cloud.json(DEMO, *create, "--wait", "plain"),
        lambda: cloud.json(DEMO, *create, "--tag", "t3", "--wait", "other"),
    )
    cloud.openstack(DEMO, "server", "set", "--tag", "t1", "plain")

    def names(*args: str) -> set[str]:
        return {s["Name"] for s in cloud.json(DEMO, "server", "list", *args)}

    assert names("--tags", "t1") == {"both", "plain"}
    assert names("--tags", "t1", "--tags", "t2") == {"both"}
    assert names("--not-tags", "t1", "--not-tags", "t2") == {"plain", "other"}
    # The CLI has no "any" options; openstacksdk sends them.
    sdk = connect_sdk(cloud, DEMO)
    assert {s.name for s in sdk.compute.servers(any_tags="t2,t3")} == {"both", "other"}
    assert {s.name for s in sdk.compute.servers(not_any_tags="t1")} == {"other"}
    assert sorted(cloud.json(DEMO, "server", "show", "both")["tags"]) == ["t1", "t2"]

    cloud.openstack(DEMO, "server", "unset", "--tag", "t1", "plain")
    assert cloud.json(DEMO, "server", "show", "plain")["tags"] == []
    assert names("--tags", "t1") == {"both"}
