"""Rescue and unrescue of a libvirt guest, as Nova's libvirt driver does them.

Rescue boots the guest from a rescue image (the server's own, or the one the
user named) with its own root disk attached second, so a broken guest can be
repaired from a working system: the guest's definition is kept as
``unrescue.xml`` in its directory (Nova's name), the rescue disk is a fresh
overlay over the rescue image (``disk.rescue``; its kernel and ramdisk
linked beside, ``kernel.rescue`` / ``ramdisk.rescue``), and the domain is
defined anew from the kept definition with the disks rearranged
(:func:`rescue_domain_xml`): the rescue disk ``vda``, the guest's own ``vdb``.
Its NICs, config drive and console log are the guest's own; its flavor's
ephemeral and swap disks are left out, as Nova leaves them out
(:mod:`nubes.compute.virt.rescue_layout`), and come back at unrescue with
the kept definition.

A stable rescue (2.87; the rescue image sets ``hw_rescue_device`` or
``hw_rescue_bus``) keeps the guest's disks where they are and attaches the
rescue disk after them on that bus as that device, booting from it first.

Unrescue defines the kept definition again, starts it, and removes the rescue
files. Both are safe to repeat: a kept definition is never overwritten, and
unrescue of a guest that is not rescued only makes sure it runs.

The rescue's administrator password is not injected into the rescue disk:
Nova's libvirt driver injects it only with ``[libvirt] inject_password``,
off by default, and nubes has no file injection.
"""

from __future__ import annotations

import asyncio
import logging
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from nubes import exception
from nubes.compute.virt.libvirt.guest import DEFAULT_CMDLINE, InstanceFiles, write_whole
from nubes.compute.virt.rescue_layout import GuestDisk, is_stable, rescued

if TYPE_CHECKING:
    from nubes.compute.virt.libvirt.driver import LibvirtDriver
    from nubes.objects.instance import Instance

LOG = logging.getLogger(__name__)

#: Target device names per bus, as libvirt names them.
_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd"}
#: Rescue devices a stable rescue may attach (Nova's ``hw_rescue_device``).
RESCUE_DEVICES = ("disk", "cdrom")


def _free_target(devices: ET.Element, prefix: str) -> str:
    used = {t.get("dev") for t in devices.findall("disk/target")}
    for letter in string.ascii_lowercase:
        if f"{prefix}{letter}" not in used:
            return f"{prefix}{letter}"
    raise ValueError(f"no free {prefix}* target left")


def _file_disk(device: str, source: Path, fmt: str, target: str, bus: str) -> ET.Element:
    disk = ET.Element("disk", type="file", device=device)
    ET.SubElement(disk, "driver", name="qemu", type=fmt)
    ET.SubElement(disk, "source", file=str(source))
    ET.SubElement(disk, "target", dev=target, bus=bus)
    if device == "cdrom":
        ET.SubElement(disk, "readonly")
    return disk


def _detach_what_a_rescue_leaves_out(
    devices: ET.Element, files: InstanceFiles, image_meta: dict[str, Any]
) -> None:
    """Remove the guest's disks :func:`~nubes.compute.virt.rescue_layout.rescued`
    leaves out of a rescue boot from ``image_meta`` (a non-stable rescue: the
    flavor's ephemeral and swap disks), each known by its file."""
    kinds = {
        str(files.disk): GuestDisk.ROOT,
        str(files.ephemeral_disk): GuestDisk.EPHEMERAL,
        str(files.swap_disk): GuestDisk.SWAP,
        str(files.config_drive): GuestDisk.CONFIG_DRIVE,
    }
    found = []
    for disk in devices.findall("disk"):
        source = disk.find("source")
        kind = kinds.get(source.get("file") or "") if source is not None else None
        if kind is not None:
            found.append((disk, kind))
    kept = set(rescued((kind for _, kind in found), image_meta))
    for disk, kind in found:
        if kind not in kept:
            devices.remove(disk)


def rescue_domain_xml(xml: str, files: InstanceFiles, image_meta: dict[str, Any]) -> str:
    """The guest's own definition ``xml`` turned into its rescue boot from
    ``image_meta`` (whose disk is ``files.rescue_disk``, a qcow2 overlay)."""
    domain = ET.fromstring(xml)
    props = image_meta.get("properties") or {}
    devices = domain.find("devices")
    os_ = domain.find("os")
    if devices is None or os_ is None:
        raise ValueError("the guest's definition has no <devices> or <os>")
    disks = devices.findall("disk")
    own = next(
        (d for d in disks if d.get("device") == "disk" and d.find("target") is not None), None
    )
    if own is None:
        raise ValueError("the guest's definition has no root disk")
    _detach_what_a_rescue_leaves_out(devices, files, image_meta)
    disks = devices.findall("disk")
    # Boot the rescue image's kernel if it has one, else the rescue disk.
    for tag in ("kernel", "initrd", "cmdline", "boot"):
        for node in os_.findall(tag):
            os_.remove(node)
    direct = bool(props.get("kernel_id"))
    if direct:
        ET.SubElement(os_, "kernel").text = str(files.rescue_kernel)
        if props.get("ramdisk_id"):
            ET.SubElement(os_, "initrd").text = str(files.rescue_ramdisk)
        ET.SubElement(os_, "cmdline").text = props.get("os_command_line") or DEFAULT_CMDLINE
    position = list(devices).index(disks[-1]) + 1
    if is_stable(image_meta):
        device = str(props.get("hw_rescue_device") or "disk")
        if device not in RESCUE_DEVICES:
            raise ValueError(f"hw_rescue_device {device!r} is not one of {RESCUE_DEVICES}")
        bus = str(props.get("hw_rescue_bus") or ("ide" if device == "cdrom" else "virtio"))
        prefix = _BUS_PREFIX.get(bus)
        if prefix is None:
            raise ValueError(f"hw_rescue_bus {bus!r} is not one of {sorted(_BUS_PREFIX)}")
        rescue = _file_disk(device, files.rescue_disk, "qcow2", _free_target(devices, prefix), bus)
        if not direct:
            # Per-device boot order (libvirt allows no <os><boot> beside it).
            ET.SubElement(rescue, "boot", order="1")
            ET.SubElement(own, "boot", order="2")
        devices.insert(position, rescue)
    else:
        own_target = own.find("target")
        assert own_target is not None
        first = own_target.get("dev") or "vda"
        bus = own_target.get("bus") or "virtio"
        own_target.set("dev", _free_target(devices, _BUS_PREFIX.get(bus, "vd")))
        # A guest names its virtio disks in the order of their PCI slots, not
        # by libvirt's targets: the own disk gives up the slot it had, so the
        # rescue disk, placed before it, gets the first one free (vda in the
        # guest too).
        for address in own.findall("address"):
            own.remove(address)
        devices.insert(
            list(devices).index(own),
            _file_disk("disk", files.rescue_disk, "qcow2", first, bus),
        )
        if not direct:
            ET.SubElement(os_, "boot", dev="hd")
    return ET.tostring(domain, encoding="unicode")


class GuestRescue:
    """Rescue and unrescue of one driver's guests."""

    def __init__(self, driver: LibvirtDriver) -> None:
        self.driver = driver

    async def rescue(self, instance: Instance, rescue_image: dict[str, Any]) -> None:
        driver = self.driver
        libvirt = driver.libvirt
        dom = await driver.domain(instance, "rescue")
        files = driver.files(instance.uuid)
        try:
            if not await asyncio.to_thread(files.unrescue_xml.exists):
                # Kept once: a repeated rescue finds the rescue definition live.
                own = await driver.connection.call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
                await asyncio.to_thread(write_whole, files.unrescue_xml, own)
            own = await asyncio.to_thread(files.unrescue_xml.read_text)
            try:
                xml = rescue_domain_xml(own, files, rescue_image)
            except ValueError as exc:
                raise exception.VirtDriverError(
                    operation="rescue", instance_uuid=instance.uuid, reason=str(exc)
                ) from None
            await driver.disks.prepare_rescue(instance, rescue_image)
            await driver.hard_stop(dom, instance, "rescue")

            def define_and_start() -> None:
                if dom.hasManagedSaveImage(0):
                    dom.managedSaveRemove(0)  # a saved memory of other disks
                driver.connection.conn.defineXML(xml).create()

            await driver.connection.call(define_and_start)
        except libvirt.libvirtError as exc:
            await self._back_to_own(instance)
            raise driver.error("rescue", instance.uuid, exc) from None
        except BaseException:
            await self._back_to_own(instance)
            raise

    async def _back_to_own(self, instance: Instance) -> None:
        """After a failed rescue: the guest's own definition again (not
        started; the instance goes to ERROR), the rescue files gone."""
        driver = self.driver
        files = driver.files(instance.uuid)
        try:
            if await asyncio.to_thread(files.unrescue_xml.exists):
                own = await asyncio.to_thread(files.unrescue_xml.read_text)
                await driver.hard_stop(await driver.domain(instance, "rescue"), instance, "rescue")
                await driver.connection.call(driver.connection.conn.defineXML, own)
            await driver.disks.remove_rescue(instance)
        except Exception as cleanup:
            LOG.warning("could not undo the failed rescue of %s: %s", instance.uuid, cleanup)

    async def unrescue(self, instance: Instance) -> None:
        driver = self.driver
        dom = await driver.domain(instance, "unrescue")
        files = driver.files(instance.uuid)
        if not await asyncio.to_thread(files.unrescue_xml.exists):
            # Not rescued (a repeat after it finished): its own disk, running.
            await driver.start_domain(dom, instance, "unrescue")
            return
        own = await asyncio.to_thread(files.unrescue_xml.read_text)
        await driver.hard_stop(dom, instance, "unrescue")

        def define_and_start() -> None:
            driver.connection.conn.defineXML(own).create()

        try:
            await driver.connection.call(define_and_start)
        except driver.libvirt.libvirtError as exc:
            raise driver.error("unrescue", instance.uuid, exc) from None
        await driver.disks.remove_rescue(instance)
