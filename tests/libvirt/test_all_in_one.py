"""A newcomer's ``nubes all-in-one --virt libvirt`` with the unmodified openstack CLI:
boot, reboot, console log, live migration between its two libvirt hosts, delete."""

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


def _host_of(cloud: Cloud, server: str) -> str:
    shown = cloud.json("nubes-admin", "server", "show", server)
    return str(shown["OS-EXT-SRV-ATTR:host"])


def test_all_in_one_boots_reboots_migrates_and_deletes_a_real_guest(
    libvirtd: PrivateLibvirtd, tmp_path: Path
) -> None:
    # Two libvirt hosts, each on a libvirtd of its own that all-in-one starts
    # (and stops, guests and all); `libvirtd` only says this machine can.
    state = tmp_path / "state"
    options = ("--virt", "libvirt", "--private-libvirtd", "--libvirt-hosts", "2")
    cloud = Cloud(state, free_port(), options=options)
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
        first = _host_of(cloud, server["id"])
        log = state / "instances" / first / server["id"] / "console.log"
        _wait_console(log, f"{TICK_MARKER} 1")
        cloud.openstack("nubes-demo", "server", "reboot", "--hard", "--wait", "vm1")
        _wait_console(log, BOOT_MARKER, 2)
        # os-getConsoleOutput: the host reads the guest's serial log for the API.
        shown = cloud.openstack("nubes-demo", "console", "log", "show", "vm1").stdout
        assert shown.count(BOOT_MARKER) >= 2 and f"{TICK_MARKER} 1" in shown, shown[-800:]
        tail = cloud.openstack("nubes-demo", "console", "log", "show", "--lines", "3", "vm1")
        # The last 3 pieces between newlines, as Nova's tail counts them: a log
        # that ends in a newline (the guest's lines are whole between ticks)
        # gives 2 lines and that newline, one caught mid-line 3 lines. The
        # guest writes on meanwhile, and the log only grows: they are
        # consecutive lines of the whole log read after them.
        lines = tail.stdout.strip().splitlines()
        later = cloud.openstack("nubes-demo", "console", "log", "show", "vm1").stdout
        assert len(lines) in (2, 3) and "\n".join(lines) + "\n" in later, lines

        # Live migration to the other host: the guest ticks on there, not rebooted,
        # and its console log (history included) is served from there.
        cloud.openstack(
            "nubes-admin", "server", "migrate", "--live-migration", "--wait", server["id"]
        )
        second = _host_of(cloud, server["id"])
        assert second != first
        moved = state / "instances" / second / server["id"]
        ticks_before = later.count(TICK_MARKER)
        _wait_console(moved / "console.log", TICK_MARKER, 2)
        shown = cloud.openstack("nubes-demo", "console", "log", "show", "vm1").stdout
        assert shown.count(TICK_MARKER) > ticks_before and shown.count(BOOT_MARKER) == 2
        assert not (state / "instances" / first / server["id"]).exists()

        cloud.openstack("nubes-demo", "server", "delete", "--wait", "vm1")
        assert not moved.exists()
    finally:
        stopped = cloud.stop()
        assert stopped == 0, "".join(cloud.output[-40:])
