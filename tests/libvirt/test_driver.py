"""The libvirt driver against a real libvirtd with real (tiny, TCG) guests."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from nubes import exception
from nubes.compute.virt.driver import LifecycleEvent
from nubes.compute.virt.libvirt.driver import LibvirtDriver
from nubes.context import RequestContext
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.migration import Migration
from nubes.objects.states import PowerState
from nubes.testing import guestimage
from nubes.testing.guestimage import (
    BOOT_MARKER,
    BOOTLOADER_MARKER,
    EPHEMERAL_HOLDS_MARKER,
    EPHEMERAL_MARKER,
    POWER_BUTTON_MARKER,
    POWEROFF_MARKER,
    SWAP_MARKER,
)
from nubes.testing.libvirtd import PrivateLibvirtd
from tests.libvirt.conftest import make_driver, wait_console

pytestmark = [pytest.mark.timeout(240), pytest.mark.libvirt]


def _instance(memory_mb: int = 96) -> Instance:
    return Instance(uuid=str(uuid.uuid4()), vcpus=1, memory_mb=memory_mb, root_gb=1, ephemeral_gb=0)


async def test_lifecycle_of_a_real_guest(
    driver: LibvirtDriver, images: guestimage.PublishedImages
) -> None:
    ctxt = RequestContext()
    inst = _instance()
    await driver.spawn(ctxt, inst, images.raw, {})
    info = await driver.get_info(inst)
    assert info.state == PowerState.RUNNING and info.memory_mb == 96 and info.vcpus == 1
    await wait_console(driver, inst, f"{guestimage.TICK_MARKER} 1")
    with pytest.raises(exception.Conflict):
        await driver.spawn(ctxt, inst, images.raw, {})

    # Soft: the guest hears its power button, shuts down and boots again.
    await driver.reboot(ctxt, inst, "SOFT")
    log = await wait_console(driver, inst, BOOT_MARKER, 2)
    assert POWER_BUTTON_MARKER in log
    # Hard: power-cycled without asking.
    await driver.reboot(ctxt, inst, "HARD")
    await wait_console(driver, inst, BOOT_MARKER, 3)
    assert (await driver.get_info(inst)).state == PowerState.RUNNING

    await driver.power_off(inst, timeout=30, retry_interval=5)
    assert (await driver.get_info(inst)).state == PowerState.SHUTDOWN
    assert (await driver.get_console_output(inst)).count(POWER_BUTTON_MARKER) == 2
    await driver.power_off(inst)  # already off
    await driver.power_on(ctxt, inst)
    await driver.power_on(ctxt, inst)  # already on
    assert (await driver.get_info(inst)).state == PowerState.RUNNING

    # The root disk is an overlay over the image cache; kernel and ramdisk are links to it.
    files = driver.files(inst.uuid)
    base = driver.images.path(images.raw["id"])
    assert driver.backing_files() == {base}
    assert set(driver.images.in_use(driver.backing_files())) == set(driver.images.entries())
    assert len(driver.images.entries()) == 3

    await driver.destroy(ctxt, inst)
    await driver.destroy(ctxt, inst)  # idempotent
    assert inst.uuid not in await driver.list_instances()
    assert not files.directory.exists()
    assert driver.images.in_use(driver.backing_files()) == []
    with pytest.raises(exception.InstanceNotFound):
        await driver.get_info(inst)
    # Nothing uses the cache any more: pruning empties it.
    assert len(driver.images.prune(driver.backing_files())) == 3
    assert driver.images.entries() == []


async def test_qcow2_image_host_resources_and_a_restart_that_loses_nothing(
    driver: LibvirtDriver,
    images: guestimage.PublishedImages,
    libvirtd: PrivateLibvirtd,
    image_dir: Path,
) -> None:
    resources = await driver.get_available_resource("lv-0")
    assert resources["vcpus"] == os.cpu_count()
    assert resources["memory_mb"] > 0 and resources["local_gb"] > 0
    assert resources["hypervisor_type"] == "QEMU" and resources["hypervisor_hostname"] == "lv-0"
    assert 0 <= (await driver.get_host_metrics("lv-0"))["cpu.percent"] <= 100
    assert " up " in await driver.get_host_uptime()

    ctxt = RequestContext()
    inst = _instance()
    await driver.spawn(ctxt, inst, images.qcow2, {})
    assert driver.backing_files() == {driver.images.path(images.qcow2["id"])}

    # The compute agent restarts: a new driver on the same libvirtd and
    # instances path finds its guest running, and only its own guests.
    again = make_driver(libvirtd, image_dir, driver.instances_path)
    await again.init_host()
    try:
        assert await again.list_instances() == [inst.uuid]
        assert (await again.get_info(inst)).state == PowerState.RUNNING
        await wait_console(again, inst, f"{guestimage.TICK_MARKER} 1")
    finally:
        await again.cleanup_host()


async def test_a_guest_that_powers_itself_off_is_reported(
    driver: LibvirtDriver, images: guestimage.PublishedImages
) -> None:
    events: list[LifecycleEvent] = []
    driver.register_event_listener(events.append)
    inst = _instance()
    meta = images.with_cmdline(images.raw, "console=ttyS0 no_timer_check nubes.poweroff=1")
    await driver.spawn(RequestContext(), inst, meta, {})
    await wait_console(driver, inst, POWEROFF_MARKER)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while LifecycleEvent(inst.uuid, PowerState.SHUTDOWN) not in events:
        assert loop.time() < deadline, events
        await asyncio.sleep(0.1)
    assert (await driver.get_info(inst)).state == PowerState.SHUTDOWN


async def test_bad_images_leave_nothing_behind(
    driver: LibvirtDriver, images: guestimage.PublishedImages
) -> None:
    ctxt = RequestContext()
    inst = _instance()
    with pytest.raises(exception.VirtOperationNotSupported):
        await driver.spawn(ctxt, inst, {**images.raw, "disk_format": "iso"}, {})
    with pytest.raises(exception.ImageFetchFailed):
        await driver.spawn(ctxt, inst, {**images.raw, "os_hash_value": "0" * 128}, {})
    missing = {**images.raw, "properties": {"kernel_id": str(uuid.uuid4())}}
    with pytest.raises(exception.ImageNotFound):
        await driver.spawn(ctxt, inst, missing, {})
    assert await driver.list_instances() == []
    assert not driver.files(inst.uuid).directory.exists()
    # A live migration of a guest this host does not run is refused before anything.
    with pytest.raises(exception.InstanceNotFound):
        await driver.check_can_live_migrate_source(ctxt, inst, {})
    with pytest.raises(exception.InstanceNotFound):
        await driver.finish_revert_migration(
            ctxt, inst, Migration(source_compute=driver.host, dest_compute="elsewhere")
        )
    # A resize on its own host of a guest it does not run: nothing set aside.
    flavor = Flavor(flavorid="f", name="f", vcpus=1, memory_mb=96, root_gb=1)
    with pytest.raises(exception.InstanceNotFound):
        await driver.migrate_disk_and_power_off(ctxt, inst, driver.host, flavor)
    assert not driver.files(inst.uuid).aside.directory.exists()


async def test_a_disk_image_boots_through_its_own_bootloader(
    driver: LibvirtDriver, images: guestimage.PublishedImages, image_dir: Path
) -> None:
    # A qcow2 whole-disk image (FAT + SYSLINUX, built from Debian packages and
    # cached): no kernel_id, so the BIOS runs the disk's own boot sector.
    meta = guestimage.publish_disk(guestimage.build_bootable(), image_dir, "qcow2")
    ctxt = RequestContext()
    inst = _instance()
    await driver.spawn(ctxt, inst, meta, {})
    log = await wait_console(driver, inst, BOOT_MARKER)
    assert BOOTLOADER_MARKER in log.split(BOOT_MARKER)[0], log[-800:]
    await driver.destroy(ctxt, inst)
    assert await driver.list_instances() == []


async def test_a_config_drive_is_attached_as_a_cdrom(
    driver: LibvirtDriver, images: guestimage.PublishedImages
) -> None:
    import xml.etree.ElementTree as ET

    from nubes.compute.virt.libvirt.guest import domain_name
    from nubes.injected_files import InjectedFiles
    from nubes.metadata import configdrive
    from nubes.objects.instance_metadata import InstanceMetadata

    inst = _instance()
    meta = InstanceMetadata(uuid=inst.uuid, name="cd", key_name="k", public_key="ssh-rsa AAAA k")
    given = InjectedFiles.of([("/etc/motd", b"hi"), ("/root/blob", bytes(range(256)))])
    drive = configdrive.build(meta, given)
    await driver.spawn(RequestContext(), inst, images.raw, {}, config_drive=drive)
    await wait_console(driver, inst, BOOT_MARKER)
    xml = driver.connection.conn.lookupByName(domain_name(inst.uuid)).XMLDesc()
    (cdrom,) = [d for d in ET.fromstring(xml).iter("disk") if d.get("device") == "cdrom"]
    assert cdrom.find("readonly") is not None
    source = Path(cdrom.find("source").get("file"))  # type: ignore[union-attr]
    assert source == driver.files(inst.uuid).config_drive
    # What the guest's cdrom holds: the config-2 volume with Nova's layout.
    label, files = configdrive.read_iso(source)
    assert label == "config-2" and files == drive.files
    assert (
        '"public_keys": {"k": "ssh-rsa AAAA k"}'
        in files["openstack/latest/meta_data.json"].decode()
    )
    # What a live migration's source reads back for the destination's drive.
    attached = await driver.attached_config_drive(inst)
    assert attached is not None and attached.injected_files() == given
    await driver.destroy(RequestContext(), inst)
    assert not await asyncio.to_thread(source.exists)


async def test_rescue_boots_the_rescue_disk_with_the_own_disk_second_and_unrescue_undoes_it(
    driver: LibvirtDriver, images: guestimage.PublishedImages
) -> None:
    ctxt = RequestContext()
    inst = _instance()
    image = images.with_cmdline(images.raw, "console=ttyS0 no_timer_check nubes.disk=1")
    await driver.spawn(ctxt, inst, image, {})
    log = await wait_console(driver, inst, guestimage.DISK_WROTE_MARKER)
    token = log.split(guestimage.DISK_WROTE_MARKER, 1)[1].split()[0]
    files = driver.files(inst.uuid)

    await driver.rescue(inst, image, None)
    await driver.rescue(inst, image, None)  # a repeat keeps the guest's own definition
    assert (await driver.get_info(inst)).state == PowerState.RUNNING
    log = await wait_console(driver, inst, f"NUBES-GUEST disk vdb {token}")
    rescued = log.split(BOOT_MARKER)[-1]
    assert "NUBES-GUEST disks vda vdb" in rescued, rescued
    assert files.rescue_disk.exists() and files.unrescue_xml.exists()
    assert driver.backing_files() == {driver.images.path(images.raw["id"])}

    await driver.unrescue(inst)
    await driver.unrescue(inst)  # a repeat: running on its own disk already
    log = await wait_console(driver, inst, f"NUBES-GUEST disk vda {token}")
    back = log.split(BOOT_MARKER)[-1]
    assert "NUBES-GUEST disks vda\r\n" in back or "NUBES-GUEST disks vda\n" in back, back
    assert not files.rescue_disk.exists() and not files.unrescue_xml.exists()
    await driver.destroy(ctxt, inst)


async def test_a_guest_sees_its_ephemeral_disk_labelled_and_its_swap_in_use(
    driver: LibvirtDriver, images: guestimage.PublishedImages
) -> None:
    # Issue #15: a flavor's ephemeral_gb and swap were accepted and did nothing.
    ctxt = RequestContext()
    inst = _instance()
    inst.ephemeral_gb = 1
    inst.flavor = Flavor(
        flavorid="eph", name="eph", memory_mb=96, vcpus=1, root_gb=1, ephemeral_gb=1, swap=32
    )
    image = images.with_cmdline(images.raw, "console=ttyS0 no_timer_check nubes.disk=1")
    image["properties"]["os_type"] = "linux"  # ext4, as Nova formats a Linux guest's
    await driver.spawn(ctxt, inst, image, {})
    # The disks' lines come before the first tick.
    log = await wait_console(driver, inst, f"{guestimage.TICK_MARKER} 1")
    assert "NUBES-GUEST disks vda vdb vdc" in log, log
    assert f"{EPHEMERAL_MARKER} /dev/vdb" in log and f"{SWAP_MARKER} vdc on" in log, log
    token = log.split(EPHEMERAL_HOLDS_MARKER, 1)[1].split()[0]
    files = driver.files(inst.uuid)
    assert files.ephemeral_disk.exists() and files.swap_disk.exists()

    # What the guest wrote on its ephemeral disk is there after a power cycle.
    await driver.power_off(inst)
    await driver.power_on(ctxt, inst)
    log = await wait_console(driver, inst, BOOT_MARKER, 2)
    log = await wait_console(driver, inst, f"{guestimage.TICK_MARKER} 1", 2)
    assert log.rsplit(EPHEMERAL_HOLDS_MARKER, 1)[1].split()[0] == token
    assert log.count(f"{SWAP_MARKER} vdc on") == 2

    # A rescue boots the rescue disk and the own disk only (Nova's layout):
    # neither the ephemeral disk nor swap; unrescue gives them back.
    await driver.rescue(inst, image, None)
    log = await wait_console(driver, inst, BOOT_MARKER, 3)
    log = await wait_console(driver, inst, f"{guestimage.TICK_MARKER} 1", 3)
    rescued = log.split(BOOT_MARKER)[-1]
    assert "NUBES-GUEST disks vda vdb\r\n" in rescued or "NUBES-GUEST disks vda vdb\n" in rescued
    assert f"{SWAP_MARKER} vdc on" not in rescued, rescued
    await driver.unrescue(inst)
    log = await wait_console(driver, inst, BOOT_MARKER, 4)
    log = await wait_console(driver, inst, f"{guestimage.TICK_MARKER} 1", 4)
    assert "NUBES-GUEST disks vda vdb vdc" in log.split(BOOT_MARKER)[-1]
    await driver.destroy(ctxt, inst)
    assert not files.directory.exists()
