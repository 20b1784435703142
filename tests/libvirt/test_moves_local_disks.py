"""A real guest's ephemeral and swap disks across its moves (issue #15), on
two namespaced hosts (nubes.testing.realhosts).

The guest boots with ``nubes.disk=1`` (nubes.testing.guestimage): each boot
prints its disks, the one labelled ``ephemeral0``, the token on it (written
at its first boot), and the swap disks it put to use. A live migration does
not reboot the guest: there the token is read from the destination's copy of
the disk. Nova's rules: a move keeps the ephemeral disk's data (a resize
grows it), swap is made for the flavor the guest lands with, a rebuild
starts from a new empty ephemeral disk.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nubes.testing.guestimage import (
    BOOT_MARKER,
    EPHEMERAL_HOLDS_MARKER,
    EPHEMERAL_MARKER,
    EPHEMERAL_TOKEN_SECTOR,
    SWAP_MARKER,
    TICK_MARKER,
)
from nubes.testing.realhosts import EPHEMERAL, EPHEMERAL_BIGGER, RealHostsCloud

pytestmark = [pytest.mark.timeout(600), pytest.mark.libvirt]

CMDLINE = "console=ttyS0 no_timer_check nubes.disk=1"


def _on(host: str, vm_state: str) -> Any:
    return lambda r: r["host"] == host and r["vm_state"] == vm_state and r["task_state"] is None


def _last_boot(log: str) -> str:
    return log.rsplit(BOOT_MARKER, 1)[1]


def _token(log: str) -> str:
    """The ephemeral disk's token as the guest's last boot printed it."""
    return _last_boot(log).split(EPHEMERAL_HOLDS_MARKER, 1)[1].split()[0]


def _read_token(disk: Path, scratch: Path) -> str:
    """The token on a guest's ephemeral disk file (read beside a running guest)."""
    command = ["qemu-img", "convert", "-U", "-O", "raw", str(disk), str(scratch)]
    subprocess.run(command, check=True)
    with open(scratch, "rb") as f:
        f.seek(EPHEMERAL_TOKEN_SECTOR * 512)
        data = f.read(512)
    scratch.unlink()
    return "".join(c for c in data.decode(errors="replace") if c.isalnum() or c == "-")


async def _booted(real: RealHostsCloud, host: str, uuid: str, boots: int) -> str:
    """The guest's console history on ``host`` once its ``boots``-th boot
    (counting those before it came there) printed its disks and ticked."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while True:
        log = real.console(host, uuid)
        if log.count(BOOT_MARKER) >= boots and TICK_MARKER in _last_boot(log):
            return log
        assert loop.time() < deadline, f"boot {boots} not seen on {host}:\n{log[-800:]}"
        await asyncio.sleep(0.25)


def _virtual_size(disk: Path) -> int:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(disk)], capture_output=True, check=True
    ).stdout
    return int(json.loads(out)["virtual-size"])


async def test_a_real_guests_ephemeral_disk_moves_with_it_and_its_swap_follows_its_flavor(
    namespaced_hosts: None, rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    real = await RealHostsCloud.start(rabbit_url, postgres_url, tmp_path)
    scratch = tmp_path / "probe.raw"
    try:
        image = {
            **real.image,
            "properties": {**real.image["properties"], "os_command_line": CMDLINE},
        }
        uuid = await real.create_server("eph", image, flavor=EPHEMERAL["flavorid"])
        row = await real.wait(uuid, lambda r: r["vm_state"] == "active", timeout=180)
        a = row["host"]
        [b] = [h for h in real.cloud.host_names if h != a]
        log = await _booted(real, a, uuid, 1)
        assert "NUBES-GUEST disks vda vdb vdc" in log, log[-800:]
        assert f"{EPHEMERAL_MARKER} /dev/vdb" in log and f"{SWAP_MARKER} vdc on" in log
        token = _token(log)

        # 1. Live migration a -> b: the ephemeral disk's blocks came along (and
        # swap's, in use by the running guest); nothing is left on a.
        await real.moves(lambda api, ctxt: api.live_migrate_server(ctxt, uuid))
        await real.wait(uuid, _on(b, "active"), timeout=180)
        on_b = real.files(b, uuid)
        assert await asyncio.to_thread(_read_token, on_b.ephemeral_disk, scratch) == token
        assert _virtual_size(on_b.swap_disk) == EPHEMERAL["swap"] << 20
        assert not real.files(a, uuid).directory.exists()
        ticks = real.console(b, uuid).count(TICK_MARKER)
        await real.wait_console(b, uuid, TICK_MARKER, ticks + 2)  # running on at b

        # 2. Resize b -> a to a bigger ephemeral disk and swap: the disk came
        # over the disk server and grew, its data kept; swap is the new size.
        await real.moves(
            lambda api, ctxt: api.resize_server(ctxt, uuid, EPHEMERAL_BIGGER["flavorid"])
        )
        await real.wait(uuid, _on(a, "resized"), timeout=240)
        on_a = real.files(a, uuid)
        log = await _booted(real, a, uuid, 2)
        assert _token(log) == token, _last_boot(log)[:800]
        assert f"{SWAP_MARKER} vdc on" in _last_boot(log)
        assert _virtual_size(on_a.ephemeral_disk) == EPHEMERAL_BIGGER["ephemeral_gb"] << 30
        assert _virtual_size(on_a.swap_disk) == EPHEMERAL_BIGGER["swap"] << 20

        # 3. Revert: b's own guest (powered off for the move) boots with its disk.
        await real.moves(lambda api, ctxt: api.revert_resize(ctxt, uuid))
        await real.wait(uuid, _on(b, "active"), timeout=180)
        log = await _booted(real, b, uuid, 2)
        assert _token(log) == token and not on_a.directory.exists()
        assert _virtual_size(on_b.ephemeral_disk) == EPHEMERAL["ephemeral_gb"] << 30

        # 4. Cold migration b -> a and confirm: the data arrives; b keeps nothing.
        await real.moves(lambda api, ctxt: api.migrate_server(ctxt, uuid))
        await real.wait(uuid, _on(a, "resized"), timeout=240)
        await real.moves(lambda api, ctxt: api.confirm_resize(ctxt, uuid))
        await real.wait(uuid, _on(a, "active"), timeout=120)
        log = await _booted(real, a, uuid, 3)
        assert _token(log) == token and not on_b.directory.exists()

        # 5. Rebuild (from the image as registered: no nubes.disk=1): a new
        # guest with a new empty ephemeral disk and swap, as Nova's.
        await real.moves(lambda api, ctxt: api.rebuild_server(ctxt, uuid, real.image["id"]))
        await real.wait(uuid, _on(a, "active"), timeout=180)
        await _booted(real, a, uuid, 1)
        assert await asyncio.to_thread(_read_token, on_a.ephemeral_disk, scratch) == ""
        assert _virtual_size(on_a.swap_disk) == EPHEMERAL["swap"] << 20
        assert await real.check_consistent(uuid) == []
    finally:
        await real.stop()
