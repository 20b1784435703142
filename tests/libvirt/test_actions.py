"""Pause and suspend a real guest: every service in one process, one libvirt
host (as test_servers.py).

Pause stops the guest's vCPUs (libvirt PAUSED); suspend saves its memory by
libvirt's managed save (the domain stops) and resume restores it: the guest
carries on ticking without booting again. Shelve (whose snapshot the host
uploads to the image API) and rescue: ``test_shelve_rescue.py``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from nubes.compute.host import ComputeHost
from nubes.compute.virt.libvirt.driver import LibvirtDriver
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.db.api import images as image_records
from nubes.objects.states import PowerState
from nubes.testing import guestimage
from nubes.testing.allinone import AllInOne
from nubes.testing.guestimage import BOOT_MARKER, TICK_MARKER
from nubes.testing.libvirtd import PrivateLibvirtd
from tests.libvirt.conftest import BOOT_TIMEOUT, image_record, make_driver, wait_console

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt]

HOST = "lv-0"


def _in(vm_state: str) -> Any:
    return lambda r: r["vm_state"] == vm_state and r["task_state"] is None


async def _settled(cloud: AllInOne, uuid: str, vm_state: str) -> Any:
    """The row once in ``vm_state`` and its task closed: the task row ends in
    the step after the instance's, and the next action is refused (409) until then."""
    [row] = await cloud.wait_for([uuid], _in(vm_state), timeout=BOOT_TIMEOUT)
    await cloud.wait_tasks([uuid])
    return row


async def _ticks(driver: LibvirtDriver, instance: Any) -> int:
    return (await driver.get_console_output(instance)).count(TICK_MARKER)


async def test_pause_suspend_a_real_guest(
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

    try:
        async with cloud.db.writer() as conn:
            row = {"flavorid": "tiny", "name": "tiny", "vcpus": 1, "memory_mb": 96, "root_gb": 1}
            await flavors.create(conn, row)
            # In the registry: an offloaded server is spawned from it again.
            await image_records.create(conn, image_record(images.raw))
        await cloud.add_hosts([HOST], driver_factory=libvirt_host)
        node: ComputeHost = cloud.computes[HOST].hooks[0]  # type: ignore[assignment]
        deadline = time.monotonic() + 30
        while not node.manager.runner.ready.is_set():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        driver = drivers[-1]
        ctxt = RequestContext(user_id="u1", project_id="p1")
        [a] = await cloud.api.create_servers(ctxt, name="a", flavor="tiny", image=images.raw)
        await _settled(cloud, a.uuid, "active")
        await wait_console(driver, a, f"{TICK_MARKER} 1")

        await cloud.api.pause_server(ctxt, a.uuid)
        row = await _settled(cloud, a.uuid, "paused")
        assert row["power_state"] == PowerState.PAUSED
        assert (await driver.get_info(a)).state == PowerState.PAUSED
        await cloud.api.unpause_server(ctxt, a.uuid)
        await _settled(cloud, a.uuid, "active")
        await cloud.api.suspend_server(ctxt, a.uuid)
        row = await _settled(cloud, a.uuid, "suspended")
        # Managed save: the domain is off, its memory in libvirt's save file.
        assert row["power_state"] == PowerState.SHUTDOWN
        before = await _ticks(driver, a)
        await cloud.api.resume_server(ctxt, a.uuid)
        row = await _settled(cloud, a.uuid, "active")
        assert row["power_state"] == PowerState.RUNNING
        # Restored, not booted again: it ticks on with one boot on its console.
        log = await wait_console(driver, a, TICK_MARKER, before + 1)
        assert log.count(BOOT_MARKER) == 1

        # A suspended server deletes too, its managed-save image with it
        # (regression: libvirt refused to undefine it, and the guest stayed).
        await cloud.api.suspend_server(ctxt, a.uuid)
        await _settled(cloud, a.uuid, "suspended")
        await cloud.api.delete_server(ctxt, a.uuid)
        await cloud.wait_for([a.uuid], lambda r: r["vm_state"] == "deleted", timeout=BOOT_TIMEOUT)
        await cloud.wait_tasks([a.uuid])
        assert await driver.list_instances() == []
    finally:
        await cloud.stop()
