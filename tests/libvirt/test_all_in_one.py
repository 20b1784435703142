"""A newcomer's ``nubes all-in-one --virt libvirt`` with the unmodified openstack CLI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nubes.testing.guestimage import BOOT_MARKER, TICK_MARKER
from nubes.testing.libvirtd import PrivateLibvirtd
from tests.functional.api.cli import Cloud, free_port
from tests.libvirt.conftest import BOOT_TIMEOUT

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt]


def _wait_console(log: Path, marker: str, count: int = 1) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if text.count(marker) >= count:
            return
        assert time.monotonic() < deadline, f"{marker!r} x{count} not in {log}:\n{text[-800:]}"
        time.sleep(0.25)


def test_all_in_one_boots_reboots_and_deletes_a_real_guest(
    libvirtd: PrivateLibvirtd, tmp_path: Path
) -> None:
    # The session's libvirtd stands for the system one ([libvirt] connection_uri).
    conf = tmp_path / "libvirt.conf"
    conf.write_text(f"[libvirt]\nconnection_uri = {libvirtd.uri}\nvirt_type = qemu\n")
    state = tmp_path / "state"
    cloud = Cloud(state, free_port(), options=("--virt", "libvirt"), config_files=(conf,))
    cloud.start()
    try:
        server = cloud.json(
            "nubes-demo",
            "server",
            "create",
            "--flavor",
            "m1.tiny",
            "--image",
            "nubes-guest",
            "--nic",
            "none",
            "--wait",
            "vm1",
        )
        assert server["status"] == "ACTIVE"
        guest = state / "instances" / server["id"]
        _wait_console(guest / "console.log", f"{TICK_MARKER} 1")
        cloud.openstack("nubes-demo", "server", "reboot", "--hard", "--wait", "vm1")
        _wait_console(guest / "console.log", BOOT_MARKER, 2)
        cloud.openstack("nubes-demo", "server", "delete", "--wait", "vm1")
        assert not guest.exists()
    finally:
        stopped = cloud.stop()
        # all-in-one leaves guests running, as a compute host does when it stops.
        libvirtd.destroy_all_domains()
        assert stopped == 0, "".join(cloud.output[-40:])
