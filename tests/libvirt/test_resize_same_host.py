"""A resize of a real guest on its own host (``allow_resize_to_same_host``).

The driver alone: the source and the destination are one libvirt driver: the steps the
conductor sends (``migrate_disk_and_power_off``, ``finish_migration``,
``confirm_migration`` / ``finish_revert_migration``) run in their order on
it, each one first cut off at each of its kill points (the step dies there:
what it did before stays, nothing after runs) and then run again, as the
task engine repeats a step whose host died. The guest (``nubes.disk=1``)
writes a token on its root disk at its first boot; every later boot shows
it again, and reports what it was given (CPUs, memory, disk size).

A cloud of one host (nubes.testing.realhosts, as test_moves.py): resize
and revert, resize and confirm through the API's logic and the conductor's
tasks, then the host's agent killed mid-resize; each move ends consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from nubes.compute.virt.libvirt import moves as moves_module
from nubes.compute.virt.libvirt.driver import LibvirtDriver
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.migration import Migration
from nubes.objects.states import MigrationStatus, PowerState
from nubes.testing import guestimage
from nubes.testing.guestimage import BOOT_MARKER, DISK_WROTE_MARKER, SIZE_MARKER, TICK_MARKER
from nubes.testing.realhosts import BIGGER, FLAVOR, RealHostsCloud
from tests.libvirt.conftest import wait_console

pytestmark = [pytest.mark.timeout(420), pytest.mark.libvirt]

OLD = {"vcpus": 1, "memory_mb": 96, "root_gb": 1}
NEW = {"vcpus": 2, "memory_mb": 160, "root_gb": 2}
SECTORS_PER_GIB = (1 << 30) // 512


class Killed(Exception):
    """The step's process died here."""


@contextlib.contextmanager
def killed_at(owner: Any, name: str) -> Iterator[None]:
    """``owner.name`` dies when called (the kill point is just before it runs)."""
    real = getattr(owner, name)

    def die(*args: Any, **kwargs: Any) -> Any:
        raise Killed(name)

    setattr(owner, name, die)
    try:
        yield
    finally:
        setattr(owner, name, real)


def _instance(uid: str, sizes: dict[str, int]) -> Instance:
    return Instance(uuid=uid, ephemeral_gb=0, **sizes)


def _migration(drv: LibvirtDriver, uid: str) -> Migration:
    return Migration(
        instance_uuid=uid,
        source_compute=drv.host,
        dest_compute=drv.host,
        source_node=drv.host,
        dest_node=drv.host,
        migration_type="resize",
    )


async def _xml_sizes(drv: LibvirtDriver, uid: str) -> tuple[int, int]:
    dom = await drv.lookup(uid)
    root = ET.fromstring(await drv.connection.call(dom.XMLDesc, 0))
    memory_kib = int(root.findtext("memory") or 0)
    return int(root.findtext("vcpu") or 0), memory_kib // 1024


def _sizes_seen(log: str) -> list[tuple[int, int, str]]:
    """(cpus, MemTotal KiB, vda sectors) per boot, from the console."""
    pattern = rf"{SIZE_MARKER} cpus (\d+) mem (\d+) vda (\w+)"
    return [(int(c), int(m), v) for c, m, v in re.findall(pattern, log)]


async def _repeat_through(kill_points: list[tuple[Any, str]], step: Callable[[], Any]) -> None:
    """``step`` cut off at each kill point in turn, then run whole, twice."""
    for owner, name in kill_points:
        with killed_at(owner, name), pytest.raises(Killed):
            await step()
    await step()
    await step()


async def test_resize_on_its_own_host_confirm_then_revert_survives_every_kill_point(
    driver: LibvirtDriver, images: guestimage.PublishedImages
) -> None:
    ctxt = RequestContext()
    uid = str(uuid.uuid4())
    image = images.with_cmdline(images.raw, "console=ttyS0 no_timer_check nubes.disk=1")
    old, new = _instance(uid, OLD), _instance(uid, NEW)
    migration = _migration(driver, uid)
    files = driver.files(uid)
    aside = files.aside

    await driver.spawn(ctxt, old, image, {})
    log = await wait_console(driver, old, SIZE_MARKER)
    [token] = re.findall(rf"{DISK_WROTE_MARKER} (\S+)", log)
    [(cpus, mem_before, sectors)] = _sizes_seen(log)
    assert cpus == 1 and sectors == str(SECTORS_PER_GIB)

    async def set_aside() -> None:
        info = await driver.migrate_disk_and_power_off(
            ctxt, old, driver.host, Flavor(**NEW, flavorid="new", name="new")
        )
        assert info == {}  # nothing to fetch over the network

    # Source half: off, the directory moved aside with the definition, no domain.
    source_kills = [
        (driver, "power_off"),
        (moves_module, "write_whole"),
        (moves_module.os, "rename"),
        (driver, "destroy_guest"),
    ]
    await _repeat_through(source_kills, set_aside)
    assert await driver.lookup(uid) is None
    assert not files.directory.exists()
    assert aside.kept_xml.exists() and aside.disk.exists()

    async def finish() -> None:
        await driver.finish_migration(ctxt, migration, new, {}, image, True, True)

    # Destination half: a copy of the directory, the disk grown, the new flavor.
    dest_kills = [
        (moves_module.shutil, "copytree"),
        (driver.disks, "run"),
        (driver, "define_guest"),
    ]
    # Killed mid-copy (nothing cleans up after a kill): a partial directory.
    files.directory.mkdir()
    files.disk.write_bytes(b"half a copy")
    await _repeat_through(dest_kills, finish)
    assert await _xml_sizes(driver, uid) == (NEW["vcpus"], NEW["memory_mb"])
    assert (await driver.get_info(new)).state == PowerState.RUNNING
    log = await wait_console(driver, new, SIZE_MARKER, 2)
    cpus, mem_after, sectors = _sizes_seen(log)[-1]
    assert cpus == NEW["vcpus"] and mem_after > mem_before
    assert sectors == str(NEW["root_gb"] * SECTORS_PER_GIB)
    assert f"disk vda {token}" in log.split(BOOT_MARKER)[-1]  # the disk's data came along
    assert aside.disk.exists() and not files.kept_xml.exists()

    # Confirm: only what was set aside goes; the resized guest runs on.
    await _repeat_through(
        [(moves_module.shutil, "rmtree")],
        lambda: driver.confirm_migration(ctxt, migration, new),
    )
    assert not aside.directory.exists()
    assert (await driver.get_info(new)).state == PowerState.RUNNING
    assert driver.backing_files() == {driver.images.path(image["id"])}

    # Again (the new flavor is now the old one), then revert; something an
    # earlier resize left aside (a confirm that never ended) is no revert's.
    aside.directory.mkdir()
    aside.disk.write_bytes(b"stale")
    grown = _instance(uid, NEW)
    bigger = {**NEW, "root_gb": 3}
    await driver.migrate_disk_and_power_off(
        ctxt, grown, driver.host, Flavor(**bigger, flavorid="b", name="b")
    )
    await driver.finish_migration(ctxt, migration, _instance(uid, bigger), {}, image, True, True)
    await wait_console(driver, grown, SIZE_MARKER, 3)
    aside_xml = aside.kept_xml.read_text()

    async def revert() -> None:
        await driver.finish_revert_migration(ctxt, grown, migration, True)

    revert_kills = [
        (driver, "destroy_guest"),
        (moves_module.os, "rename"),
        (driver.connection.conn, "defineXML"),
    ]
    await _repeat_through(revert_kills, revert)
    assert not aside.directory.exists() and not files.kept_xml.exists()
    # Killed after the kept definition was defined, before it was dropped.
    files.kept_xml.write_text(aside_xml)
    await revert()
    assert not files.kept_xml.exists()
    assert await _xml_sizes(driver, uid) == (NEW["vcpus"], NEW["memory_mb"])
    # The console log is the one set aside (its two boots, as Nova's revert
    # brings the old directory back), then this boot's.
    log = await wait_console(driver, grown, SIZE_MARKER, 3)
    cpus, _mem, sectors = _sizes_seen(log)[-1]
    assert cpus == NEW["vcpus"] and sectors == str(NEW["root_gb"] * SECTORS_PER_GIB)
    assert f"disk vda {token}" in log.split(BOOT_MARKER)[-1]
    assert (await driver.get_info(grown)).state == PowerState.RUNNING

    # Deleting a server whose resize here awaits its confirm removes what was set aside too.
    await driver.migrate_disk_and_power_off(
        ctxt, grown, driver.host, Flavor(**bigger, flavorid="b", name="b")
    )
    await driver.finish_migration(ctxt, migration, _instance(uid, bigger), {}, image, True, False)
    await driver.destroy(ctxt, grown)
    assert not files.directory.exists() and not aside.directory.exists()


#: A third flavor, for a resize up from BIGGER.
BIGGEST: dict[str, Any] = {
    "flavorid": "real-biggest", "name": "real-biggest", "vcpus": 1, "memory_mb": 144, "root_gb": 3,
}  # fmt: skip


async def _migration_in(real: RealHostsCloud, uid: str, status: MigrationStatus) -> None:
    deadline = time.monotonic() + 120
    while not any(m["status"] == status for m in await real.migrations(uid)):
        assert time.monotonic() < deadline, await real.migrations(uid)
        await asyncio.sleep(0.05)


def _domain_memory_mib(real: RealHostsCloud, host: str, uid: str) -> int:
    import libvirt

    uri = real.host(host).libvirtd
    assert uri is not None
    conn = libvirt.open(uri.uri)
    try:
        xml = conn.lookupByUUIDString(uid).XMLDesc(0)
    finally:
        conn.close()
    return int(ET.fromstring(xml).findtext("memory") or 0) // 1024


def _settled(host: str, vm_state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["host"] == host and r["vm_state"] == vm_state and r["task_state"] is None


async def test_a_real_guest_resizes_on_its_only_host_reverts_confirms_and_survives_a_kill(
    namespaced_hosts: None, rabbit_url: str, postgres_url: str, tmp_path: Any
) -> None:
    real = await RealHostsCloud.start(
        rabbit_url, postgres_url, tmp_path, hosts=1, controller={"allow_resize_to_same_host": True}
    )
    try:
        uid = await real.create_server("alone")
        row = await real.wait(uid, lambda r: r["vm_state"] == "active", timeout=180)
        [host] = real.cloud.host_names
        files = real.files(host, uid)
        log = await real.wait_console(host, uid, SIZE_MARKER)
        [(_cpus, small, _vda)] = _sizes_seen(log)

        async def resize() -> dict[str, Any]:
            await real.moves(lambda api, ctxt: api.resize_server(ctxt, uid, BIGGER["flavorid"]))
            row = await real.wait(uid, _settled(host, "resized"), timeout=240)
            assert row["memory_mb"] == BIGGER["memory_mb"], row
            assert _domain_memory_mib(real, host, uid) == BIGGER["memory_mb"]
            assert files.aside.disk.exists()
            return row

        # 1. Resize on the one host, then revert: the old flavor, the aside gone.
        await resize()
        log = await real.wait_console(host, uid, SIZE_MARKER, 2)
        assert _sizes_seen(log)[-1][1] > small  # more memory, seen from inside
        await real.moves(lambda api, ctxt: api.revert_resize(ctxt, uid))
        row = await real.wait(uid, _settled(host, "active"), timeout=240)
        assert row["memory_mb"] == FLAVOR["memory_mb"]
        assert _domain_memory_mib(real, host, uid) == FLAVOR["memory_mb"]
        assert not files.aside.directory.exists()
        assert (await real.migrations(uid))[-1]["status"] == MigrationStatus.REVERTED
        log = await real.wait_console(host, uid, SIZE_MARKER, 2)
        assert _sizes_seen(log)[-1][1] == small
        assert await real.check_consistent(uid) == []

        # 2. Resize again, and confirm: the new flavor stays, the aside goes.
        await resize()
        await real.moves(lambda api, ctxt: api.confirm_resize(ctxt, uid))
        row = await real.wait(uid, _settled(host, "active"), timeout=120)
        assert row["memory_mb"] == BIGGER["memory_mb"]
        assert not files.aside.directory.exists()
        assert (await real.migrations(uid))[-1]["status"] == MigrationStatus.CONFIRMED
        assert await real.check_consistent(uid) == []

        # 3. A cold migration stays refused on one host (as Nova's libvirt
        # driver: no same-host cold migration): no host, the guest untouched.
        await real.moves(lambda api, ctxt: api.migrate_server(ctxt, uid))
        row = await real.wait(uid, lambda r: r["task_state"] is None, timeout=120)
        assert row["vm_state"] == "active" and row["host"] == host, row
        assert (await real.migrations(uid))[-1]["status"] == MigrationStatus.ERROR
        assert await real.check_consistent(uid) == []

        # 4. The host's agent killed while a resize runs (then back): the move
        # ends consistent, done or rolled back, the guest running.
        assert real.cloud.db is not None
        async with real.cloud.db.writer() as conn:
            await flavors.create(conn, dict(BIGGEST))
        await real.moves(lambda api, ctxt: api.resize_server(ctxt, uid, BIGGEST["flavorid"]))
        await _migration_in(real, uid, MigrationStatus.MIGRATING)
        await real.kill_compute(host)
        await real.cloud.wait_serving([await real.start_compute(host)], timeout=120)
        row = await real.wait(
            uid, lambda r: r["task_state"] is None and r["vm_state"] != "building", timeout=300
        )
        assert row["vm_state"] in ("active", "resized"), row
        assert await real.check_consistent(uid) == []
        if row["vm_state"] == "resized":
            await real.moves(lambda api, ctxt: api.confirm_resize(ctxt, uid))
            row = await real.wait(uid, _settled(host, "active"), timeout=120)
            assert await real.check_consistent(uid) == []
        assert not files.aside.directory.exists()
        seen = real.console(host, uid).count(TICK_MARKER)
        await real.wait_console(host, uid, TICK_MARKER, seen + 2)
    finally:
        await real.stop()
