"""Servers on a real hypervisor: every service in one process, one libvirt host.

The API, conductor task engine and scheduler are the functional tests' own
(``AllInOne``); the compute host runs its guests through the private
libvirtd, so each state the database shows is checked against a real QEMU
guest and its console.
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
from nubes.objects.states import PowerState
from nubes.testing import guestimage
from nubes.testing.allinone import AllInOne
from nubes.testing.guestimage import BOOT_MARKER, POWEROFF_MARKER, TICK_MARKER
from nubes.testing.libvirtd import PrivateLibvirtd
from tests.libvirt.conftest import BOOT_TIMEOUT, make_driver, wait_console

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt]

HOST = "lv-0"


def _active(row: dict[str, Any]) -> bool:
    return row["vm_state"] == "active" and row["task_state"] is None


def _stopped(row: dict[str, Any]) -> bool:
    return (
        row["vm_state"] == "stopped"
        and row["task_state"] is None
        and row["power_state"] == PowerState.SHUTDOWN
    )


async def _host_ready(cloud: AllInOne) -> ComputeHost:
    node: ComputeHost = cloud.computes[HOST].hooks[0]  # type: ignore[assignment]
    deadline = time.monotonic() + 30
    while not node.manager.runner.ready.is_set():
        assert time.monotonic() < deadline, "the libvirt host did not finish its start"
        await asyncio.sleep(0.05)
    return node


async def test_servers_boot_stop_start_survive_a_restart_and_go(
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
        await cloud.add_hosts([HOST], driver_factory=libvirt_host)
        await _host_ready(cloud)
        ctxt = RequestContext(user_id="u1", project_id="p1")
        [a] = await cloud.api.create_servers(ctxt, name="a", flavor="tiny", image=images.raw)
        # b's init powers the guest off after 6 seconds of ticks.
        off = images.with_cmdline(images.qcow2, "console=ttyS0 no_timer_check nubes.poweroff=6")
        [b] = await cloud.api.create_servers(ctxt, name="b", flavor="tiny", image=off)
        both = [a.uuid, b.uuid]
        rows = await cloud.wait_for(both, _active, timeout=BOOT_TIMEOUT)
        assert {r["host"] for r in rows} == {HOST}
        driver = drivers[-1]
        await wait_console(driver, a, f"{TICK_MARKER} 1")

        # A guest that shuts itself down is recorded STOPPED (its lifecycle event).
        await wait_console(driver, b, POWEROFF_MARKER)
        await cloud.wait_for([b.uuid], _stopped, timeout=30)

        await cloud.api.stop_server(ctxt, a.uuid)
        await cloud.wait_for([a.uuid], _stopped, timeout=BOOT_TIMEOUT)
        assert (await driver.get_info(a)).state == PowerState.SHUTDOWN
        await cloud.api.start_server(ctxt, a.uuid)
        await cloud.wait_for([a.uuid], _active, timeout=BOOT_TIMEOUT)
        # (Reboots through every service: test_all_in_one.py, with the CLI.)
        log = await wait_console(driver, a, BOOT_MARKER, 2)

        # The compute agent restarts; its guests run on and nothing is lost.
        await cloud.stop_host(HOST)
        await cloud.add_hosts([HOST], driver_factory=libvirt_host)
        node = await _host_ready(cloud)
        assert node.repair_report is not None and node.repair_report.failed == {}
        driver = drivers[-1]
        assert sorted(await driver.list_instances()) == sorted(both)
        assert (await driver.get_info(a)).state == PowerState.RUNNING
        assert (await driver.get_info(b)).state == PowerState.SHUTDOWN
        assert (await driver.get_console_output(a)).count(BOOT_MARKER) == log.count(BOOT_MARKER)
        rows = {r["uuid"]: r for r in await cloud.instances(both)}
        assert _active(rows[a.uuid]) and rows[a.uuid]["power_state"] == PowerState.RUNNING
        assert _stopped(rows[b.uuid])

        for uuid in both:
            await cloud.api.delete_server(ctxt, uuid)
        await cloud.wait_for(both, lambda r: r["vm_state"] == "deleted", timeout=BOOT_TIMEOUT)
        await cloud.wait_tasks(both)
        # No domain, no instance directory, no cache entry in use.
        assert await driver.list_instances() == []
        assert [p.name for p in driver.instances_path.iterdir()] == ["_base"]
        assert driver.images.in_use(driver.backing_files()) == []
        assert await _domains(libvirtd) == []
    finally:
        await cloud.stop()


async def _domains(libvirtd: PrivateLibvirtd) -> list[str]:
    """Every domain libvirtd has, ours or not."""
    import libvirt

    def domains() -> list[str]:
        conn = libvirt.open(libvirtd.uri)
        try:
            return [d.UUIDString() for d in conn.listAllDomains()]
        finally:
            conn.close()

    return await asyncio.to_thread(domains)
