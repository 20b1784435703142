"""Personality files in a real guest: every service in one process, one libvirt
host (as test_servers.py).

A server created with personality files (and no ``config_drive``) boots
with a config drive holding them; the test guest's ``/init``
(``nubes.configdrive=1``) copies each to its path as cirros does and prints
what the path then holds (``NUBES-GUEST cd-file <path> <contents>``), as
Tempest's personality test reads it with ``cat`` over ssh. A rebuild with
other files gives the new guest those, and not the create's.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from nubes.api.moves import MovesAPI
from nubes.compute.host import ComputeHost
from nubes.compute.virt.libvirt.driver import LibvirtDriver
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.db.api import images as image_records
from nubes.injected_files import InjectedFiles
from nubes.testing import guestimage
from nubes.testing.allinone import AllInOne
from nubes.testing.libvirtd import PrivateLibvirtd
from tests.libvirt.conftest import BOOT_TIMEOUT, image_record, make_driver, wait_console

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt]

HOST = "lv-0"
CMDLINE = "console=ttyS0 no_timer_check nubes.configdrive=1"
DONE = "NUBES-GUEST cd-files-done"


def _written(console: str) -> dict[str, str]:
    """Each personality file the guest wrote, and what its path held after (newlines dropped)."""
    return dict(re.findall(r"NUBES-GUEST cd-file (\S+) (.*?) ?NUBES-GUEST cd-end", console))


async def _settled(cloud: AllInOne, uuid: str) -> Any:
    """The row once ACTIVE with its task closed (the next action is taken only then)."""
    done = lambda r: r["vm_state"] == "active" and r["task_state"] is None  # noqa: E731
    [row] = await cloud.wait_for([uuid], done, timeout=BOOT_TIMEOUT)
    await cloud.wait_tasks([uuid])
    return row


async def test_a_real_guest_finds_its_personality_files_after_create_and_rebuild(
    libvirtd: PrivateLibvirtd,
    images: guestimage.PublishedImages,
    image_dir: Path,
    tmp_path: Path,
) -> None:
    cloud = await AllInOne.start(f"sqlite:///{tmp_path / 'lv.sqlite'}", hosts=0)
    drivers: list[LibvirtDriver] = []

    def libvirt_host(name: str) -> LibvirtDriver:
        drivers.append(make_driver(libvirtd, image_dir, tmp_path / "instances", name))
        return drivers[-1]

    image = images.with_cmdline(images.raw, CMDLINE)
    try:
        async with cloud.db.writer() as conn:
            row = {"flavorid": "tiny", "name": "tiny", "vcpus": 1, "memory_mb": 96, "root_gb": 1}
            await flavors.create(conn, row)
            # In the registry with its command line: the rebuild reads it there.
            await image_records.create(conn, image_record(image))
        await cloud.add_hosts([HOST], driver_factory=libvirt_host)
        node: ComputeHost = cloud.computes[HOST].hooks[0]  # type: ignore[assignment]
        deadline = time.monotonic() + 30
        while not node.manager.runner.ready.is_set():
            assert time.monotonic() < deadline, "the libvirt host did not finish its start"
            await asyncio.sleep(0.05)
        driver = drivers[-1]
        ctxt = RequestContext(user_id="u1", project_id="p1")

        given = InjectedFiles.of(
            [("/etc/motd", b"hello from nubes\n"), ("/root/deep/dir/note.txt", b"second file")]
        )
        [a] = await cloud.api.create_servers(
            ctxt, name="pers", flavor="tiny", image=image, injected_files=given
        )
        await _settled(cloud, a.uuid)
        console = await wait_console(driver, a, DONE)
        assert _written(console) == {
            "/etc/motd": "hello from nubes",
            "/root/deep/dir/note.txt": "second file",
        }, console[-800:]

        moves = MovesAPI(cloud.db, ConductorAPI(cloud.api_transport), conf=cloud.conf)
        again = InjectedFiles.of([("/etc/rebuilt", b"after the rebuild")])
        await moves.rebuild_server(ctxt, a.uuid, image["id"], injected_files=again)
        await _settled(cloud, a.uuid)
        # The new guest's console: it wrote the rebuild's file, not the create's.
        console = await wait_console(driver, a, "NUBES-GUEST cd-file /etc/rebuilt")
        # (Each boot prints DONE once; the log may or may not keep the first boot's.)
        console = await wait_console(driver, a, DONE, console.count(guestimage.BOOT_MARKER))
        tail = console[console.rindex(guestimage.BOOT_MARKER) :]
        assert _written(tail) == {"/etc/rebuilt": "after the rebuild"}, tail[-800:]

        await cloud.api.delete_server(ctxt, a.uuid)
        await cloud.wait_for([a.uuid], lambda r: r["vm_state"] == "deleted", timeout=BOOT_TIMEOUT)
        await cloud.wait_tasks([a.uuid])
    finally:
        await cloud.stop()
