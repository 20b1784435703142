"""createImage of a real guest with ``nubes all-in-one --virt libvirt`` and the
unmodified openstack CLI: the host's ``qemu-img convert`` of the running
guest's disk, uploaded with the conductor's grant, boots a new server that
reaches its console marker; the first guest ticks on."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubes.testing.guestimage import BOOT_MARKER, TICK_MARKER
from nubes.testing.libvirtd import PrivateLibvirtd
from tests.functional.api.cli import Cloud, free_port
from tests.libvirt.test_all_in_one import _wait_console

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt]


def test_a_snapshot_of_a_real_guest_boots_a_new_server(
    libvirtd: PrivateLibvirtd, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    options = ("--virt", "libvirt", "--private-libvirtd", "--libvirt-hosts", "1")
    cloud = Cloud(state, free_port(), options=options)
    cloud.start()
    try:
        create = ("server", "create", "--flavor", "m1.tiny", "--nic", "none", "--wait")
        first = cloud.json("nubes-demo", *create, "--image", "nubes-guest", "vm1")
        # One libvirt host: its guests live right under state/instances.
        log = state / "instances" / first["id"] / "console.log"
        _wait_console(log, f"{TICK_MARKER} 1")
        made = cloud.json(
            "nubes-demo", "server", "image", "create", "--wait", "--name", "vm1-snap", "vm1"
        )
        image = cloud.json("nubes-demo", "image", "show", made["id"])
        assert image["status"] == "active" and image["disk_format"] == "qcow2", image
        assert image["size"] > 0 and image["properties"]["image_type"] == "snapshot", image
        # The guest was paused for the copy only: it ticks on.
        shown = cloud.json("nubes-demo", "server", "show", "vm1")
        assert shown["status"] == "ACTIVE" and shown["OS-EXT-STS:task_state"] is None, shown
        ticks = log.read_text(errors="replace").count(TICK_MARKER)
        _wait_console(log, TICK_MARKER, ticks + 1)
        second = cloud.json("nubes-demo", *create, "--image", made["id"], "vm2")
        assert second["status"] == "ACTIVE"
        log2 = state / "instances" / second["id"] / "console.log"
        _wait_console(log2, BOOT_MARKER)
        cloud.openstack("nubes-demo", "server", "delete", "--wait", "vm1", "vm2")
    finally:
        stopped = cloud.stop()
        assert stopped == 0, "".join(cloud.output[-40:])
