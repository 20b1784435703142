"""The rescue boot's domain XML, made from the guest's own definition (no
libvirtd needed): Nova's rescue (the rescue disk first, the own disk second)
and stable rescue (2.87: the own disks where they are, the rescue disk after
them on the image's bus, booted first)."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from nubes.compute.network.agent import Vif
from nubes.compute.virt.libvirt.guest import GuestSpec, InstanceFiles, disk_layout, domain_xml
from nubes.compute.virt.libvirt.rescue import rescue_domain_xml
from nubes.compute.virt.rescue_layout import is_stable

UUID = "6f1c5b8e-9b8a-4e0a-9a8e-3c0d2b1f0a11"
KERNEL_IMAGE = {
    "id": "rescue-img",
    "properties": {"kernel_id": "k", "ramdisk_id": "r", "os_command_line": "console=ttyS0 x=1"},
}


def _own(
    tmp_path: Path, *, direct: bool = True, drive: bool = True, local: bool = False
) -> tuple[str, InstanceFiles]:
    """The guest's own definition (``local``: with a 1 GiB ephemeral disk and 64 MiB swap)."""
    files = InstanceFiles.of(tmp_path, UUID)
    vif = Vif("p1", "fa:16:3e:00:00:01", "nbr-net", "tapp1", 1450)
    spec = GuestSpec(
        UUID,
        "qemu",
        64,
        1,
        files,
        disks=disk_layout(1, 64) if local else disk_layout(0, 0),
        direct_kernel=direct,
        with_ramdisk=direct,
        config_drive=drive,
        vifs=(vif,),
    )
    return domain_xml(spec), files


def _disks(dom: ET.Element) -> list[tuple[str | None, str | None, str | None]]:
    return [
        (d.get("device"), d.find("source").get("file"), d.find("target").get("dev"))  # type: ignore[union-attr]
        for d in dom.findall("devices/disk")
    ]


def test_rescue_boots_the_rescue_kernel_from_the_rescue_disk_with_the_own_disk_second(
    tmp_path: Path,
) -> None:
    own, files = _own(tmp_path)
    # As libvirt keeps it: the root disk on the PCI slot it was given.
    parsed = ET.fromstring(own)
    ET.SubElement(parsed.find("devices/disk"), "address", type="pci", slot="0x02")  # type: ignore[arg-type]
    own = ET.tostring(parsed, encoding="unicode")
    dom = ET.fromstring(rescue_domain_xml(own, files, KERNEL_IMAGE))
    assert _disks(dom) == [
        ("disk", str(files.rescue_disk), "vda"),
        ("disk", str(files.disk), "vdb"),
        ("cdrom", str(files.config_drive), "hda"),
    ]
    assert dom.findtext("os/kernel") == str(files.rescue_kernel)
    assert dom.findtext("os/initrd") == str(files.rescue_ramdisk)
    assert dom.findtext("os/cmdline") == "console=ttyS0 x=1"
    # Libvirt gives both disks PCI slots in this order (the guest's vda, vdb).
    assert all(d.find("address") is None for d in dom.findall("devices/disk")[:2])
    rescue_driver = dom.find("devices/disk/driver")
    assert rescue_driver is not None and rescue_driver.get("type") == "qcow2"
    # The same guest otherwise: name, uuid, NIC, console log.
    assert dom.findtext("uuid") == UUID and dom.findtext("name") == f"nubes-{UUID}"
    assert dom.find("devices/interface/target").get("dev") == "tapp1"  # type: ignore[union-attr]
    serial = dom.find("devices/serial/source")
    assert serial is not None and serial.get("path") == str(files.console_log)


def test_rescue_leaves_the_ephemeral_and_swap_disks_out_as_nova_does(tmp_path: Path) -> None:
    # Regression: they stayed attached after the own disk (rescue vda, own
    # vdd), where Nova's rescue has the rescue disk, the root disk and the
    # config drive only.
    own, files = _own(tmp_path, local=True)
    assert [s for _, s, _ in _disks(ET.fromstring(own))] == [
        str(files.disk),
        str(files.ephemeral_disk),
        str(files.swap_disk),
        str(files.config_drive),
    ]
    dom = ET.fromstring(rescue_domain_xml(own, files, KERNEL_IMAGE))
    assert _disks(dom) == [
        ("disk", str(files.rescue_disk), "vda"),
        ("disk", str(files.disk), "vdb"),
        ("cdrom", str(files.config_drive), "hda"),
    ]
    # A stable rescue keeps every disk of the guest where it was.
    stable = {"id": "i", "properties": {"hw_rescue_bus": "virtio"}}
    dom = ET.fromstring(rescue_domain_xml(own, files, stable))
    assert _disks(dom) == [
        ("disk", str(files.disk), "vda"),
        ("disk", str(files.ephemeral_disk), "vdb"),
        ("disk", str(files.swap_disk), "vdc"),
        ("cdrom", str(files.config_drive), "hda"),
        ("disk", str(files.rescue_disk), "vdd"),
    ]


def test_a_rescue_image_without_a_kernel_boots_its_disk(tmp_path: Path) -> None:
    own, files = _own(tmp_path)
    dom = ET.fromstring(rescue_domain_xml(own, files, {"id": "i", "properties": {}}))
    assert dom.find("os/kernel") is None and dom.find("os/initrd") is None
    assert dom.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]
    assert _disks(dom)[0] == ("disk", str(files.rescue_disk), "vda")


def test_stable_rescue_keeps_the_own_disks_and_boots_the_rescue_device_first(
    tmp_path: Path,
) -> None:
    own, files = _own(tmp_path, direct=False)
    image = {"id": "i", "properties": {"hw_rescue_device": "disk", "hw_rescue_bus": "virtio"}}
    assert is_stable(image) and not is_stable({"properties": {}})
    dom = ET.fromstring(rescue_domain_xml(own, files, image))
    assert _disks(dom) == [
        ("disk", str(files.disk), "vda"),
        ("cdrom", str(files.config_drive), "hda"),
        ("disk", str(files.rescue_disk), "vdb"),
    ]
    orders = {
        d.find("target").get("dev"): d.find("boot").get("order")  # type: ignore[union-attr]
        for d in dom.findall("devices/disk")
        if d.find("boot") is not None
    }
    assert orders == {"vdb": "1", "vda": "2"}
    assert dom.find("os/boot") is None  # libvirt takes one way of ordering boots


def test_stable_rescue_as_a_cdrom_goes_on_a_free_ide_target(tmp_path: Path) -> None:
    own, files = _own(tmp_path, direct=False)
    image = {"id": "i", "properties": {"hw_rescue_device": "cdrom"}}
    dom = ET.fromstring(rescue_domain_xml(own, files, image))
    device, source, target = _disks(dom)[-1]
    assert (device, source, target) == ("cdrom", str(files.rescue_disk), "hdb")
    assert dom.findall("devices/disk")[-1].find("readonly") is not None


@pytest.mark.parametrize(
    "properties",
    [{"hw_rescue_device": "floppy"}, {"hw_rescue_bus": "fdc"}],
)
def test_a_rescue_device_or_bus_nubes_cannot_attach_is_refused(
    tmp_path: Path, properties: dict[str, str]
) -> None:
    own, files = _own(tmp_path)
    with pytest.raises(ValueError):
        rescue_domain_xml(own, files, {"id": "i", "properties": properties})
