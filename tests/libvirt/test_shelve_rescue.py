"""Shelve and rescue of a real guest, with ``nubes all-in-one --virt libvirt``
and the unmodified openstack CLI.

The guest boots with ``nubes.disk=1`` (see :mod:`nubes.testing.guestimage`):
on its first boot it writes a token on its root disk and prints it, and every
boot prints which virtio disks it has and what each holds. So the console
log shows what a disk carried across an operation:

* shelve (offloaded at once) snapshots the disk to ``<name>-shelved``, the
  guest and its files go; unshelve spawns from that image (then deletes it)
  and the guest finds its token again, on a new empty ephemeral disk (as
  Nova's: the offload drops its data);
* rescue boots the guest from a fresh disk of its image with its own disk
  second (``vdb`` holds the token); unrescue boots its own disk again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nubes.testing import guestimage
from nubes.testing.guestimage import BOOT_MARKER, DISK_WROTE_MARKER, EPHEMERAL_HOLDS_MARKER
from nubes.testing.libvirtd import PrivateLibvirtd
from tests.functional.api.cli import Cloud, free_port
from tests.libvirt.conftest import BOOT_TIMEOUT
from tests.libvirt.test_all_in_one import _wait_console

pytestmark = [pytest.mark.timeout(420), pytest.mark.libvirt]

DEMO = "nubes-demo"


@pytest.fixture
def cloud(libvirtd: PrivateLibvirtd, tmp_path: Path) -> Iterator[Cloud]:
    options = ("--virt", "libvirt", "--private-libvirtd", "--libvirt-hosts", "1")
    c = Cloud(tmp_path / "state", free_port(), options=options)
    c.start()
    try:
        yield c
    finally:
        stopped = c.stop()
        assert stopped == 0, "".join(c.output[-40:])


def _disk_guest_image(cloud: Cloud) -> str:
    """The test guest as the demo project's image, booting with ``nubes.disk=1``."""
    base = cloud.json(DEMO, "image", "show", "nubes-guest")["properties"]
    made = cloud.json(
        DEMO,
        *("image", "create", "--disk-format", "raw", "--container-format", "bare"),
        *("--file", str(guestimage.build().disk)),
        *("--property", f"kernel_id={base['kernel_id']}"),
        *("--property", f"ramdisk_id={base['ramdisk_id']}"),
        *("--property", "os_command_line=console=ttyS0 no_timer_check nubes.disk=1"),
        "disk-guest",
    )
    return str(made["id"])


def _wait_server(cloud: Cloud, name: str, status: str) -> dict[str, object]:
    deadline = time.monotonic() + BOOT_TIMEOUT * 2
    while True:
        shown = cloud.json(DEMO, "server", "show", name)
        if shown["status"] == status and shown["OS-EXT-STS:task_state"] is None:
            return dict(shown)
        assert shown["status"] != "ERROR", shown
        assert time.monotonic() < deadline, shown
        time.sleep(1)


def _token(log: Path) -> str:
    """The token the guest wrote on its root disk at its first boot."""
    _wait_console(log, DISK_WROTE_MARKER)
    found = re.search(rf"{DISK_WROTE_MARKER} (nubes-[0-9a-f-]+)", log.read_text(errors="replace"))
    assert found is not None
    return found.group(1)


def _boots(log: Path) -> list[str]:
    """The console log, one part per boot (the text after each boot line)."""
    return log.read_text(errors="replace").split(BOOT_MARKER)[1:]


def _ephemeral_token(log: Path) -> str:
    """The token on the ephemeral disk as the guest's last boot printed it."""
    _wait_console(log, f"{EPHEMERAL_HOLDS_MARKER} ")
    last = _boots(log)[-1]
    return last.split(EPHEMERAL_HOLDS_MARKER, 1)[1].split()[0]


def test_a_file_written_in_the_guest_survives_shelve_offload_unshelve(
    cloud: Cloud, tmp_path: Path
) -> None:
    image = _disk_guest_image(cloud)
    # With an ephemeral disk and swap (issue #15): Nova drops the ephemeral
    # disk's data at the offload; the unshelved guest gets new empty ones.
    cloud.openstack(
        "nubes-admin", "flavor", "create", "--ram", "128", "--disk", "1", "--vcpus", "1",
        "--ephemeral", "1", "--swap", "32", "eph.tiny",
    )  # fmt: skip
    vm = cloud.json(
        DEMO, "server", "create", "--flavor", "eph.tiny", "--image", image, "--nic", "none",
        "--wait", "vm1",
    )  # fmt: skip
    log = tmp_path / "state" / "instances" / vm["id"] / "console.log"
    token = _token(log)
    ephemeral = _ephemeral_token(log)

    # shelved_offload_time is 0 by default: offloaded as part of the shelve.
    cloud.openstack(DEMO, "server", "shelve", "vm1")
    shown = _wait_server(cloud, "vm1", "SHELVED_OFFLOADED")
    assert not shown.get("OS-EXT-SRV-ATTR:host"), shown
    (shelved,) = cloud.json(DEMO, "image", "list", "--name", "vm1-shelved")
    assert shelved["Status"] == "active", shelved
    snapshot = cloud.json(DEMO, "image", "show", shelved["ID"])
    assert snapshot["disk_format"] == "qcow2" and snapshot["size"] > 0, snapshot
    # The guest and its files are gone from the host.
    assert not log.exists()

    cloud.openstack(DEMO, "server", "unshelve", "vm1")
    _wait_server(cloud, "vm1", "ACTIVE")
    # A new guest from the snapshot: its root disk holds the token it wrote.
    _wait_console(log, f"NUBES-GUEST disk vda {token}")
    assert DISK_WROTE_MARKER not in log.read_text(errors="replace")
    assert _ephemeral_token(log) != ephemeral
    assert "NUBES-GUEST disks vda vdb vdc" in _boots(log)[-1]
    assert cloud.json(DEMO, "image", "list", "--name", "vm1-shelved") == []
    cloud.openstack(DEMO, "server", "delete", "--wait", "vm1")


def test_rescue_boots_the_rescue_image_with_the_own_disk_second(
    cloud: Cloud, tmp_path: Path
) -> None:
    image = _disk_guest_image(cloud)
    vm = cloud.json(
        DEMO, "server", "create", "--flavor", "m1.tiny", "--image", image, "--nic", "none",
        "--wait", "vm1",
    )  # fmt: skip
    log = tmp_path / "state" / "instances" / vm["id"] / "console.log"
    token = _token(log)

    rescue = cloud.openstack(DEMO, "server", "rescue", "vm1")
    assert rescue.returncode == 0, rescue.stderr
    _wait_server(cloud, "vm1", "RESCUE")
    # A second boot, from a fresh disk of the rescue image (it writes a token
    # of its own there), with the server's own disk second, token and all.
    _wait_console(log, f"NUBES-GUEST disk vdb {token}")
    rescued = _boots(log)[1]
    assert "NUBES-GUEST disks vda vdb" in rescued, rescued
    assert f"NUBES-GUEST disk vda {token}" not in rescued, rescued

    cloud.openstack(DEMO, "server", "unrescue", "vm1")
    _wait_server(cloud, "vm1", "ACTIVE")
    # A third boot, from its own disk again, alone.
    _wait_console(log, BOOT_MARKER, 3)
    _wait_console(log, f"NUBES-GUEST disk vda {token}")
    back = _boots(log)[2]
    assert "NUBES-GUEST disks vda\n" in back.replace("\r", ""), back
    assert f"NUBES-GUEST disk vda {token}" in back, back
    state = tmp_path / "state" / "instances" / vm["id"]
    assert not (state / "disk.rescue").exists() and not (state / "unrescue.xml").exists()
    cloud.openstack(DEMO, "server", "delete", "--wait", "vm1")
