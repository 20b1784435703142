"""The libvirt domain XML of an instance, and where its files live.

One directory per instance under ``[libvirt] instances_path``
(``<instances_path>/<uuid>/``) holds everything the guest has on this host:
its root disk (a qcow2 overlay over the image cache), its flavor's
ephemeral and swap disks (Nova's ``disk.local`` and ``disk.swap``), its
kernel and ramdisk when it boots them directly, and its serial console log.
Removing the directory and the domain removes the guest.

Which disks a guest has, and as which devices, is :func:`disk_layout`: the
domain XML, the disks a spawn makes and the disks a move carries all read it.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import string
from pathlib import Path
from xml.etree import ElementTree as ET

from nubes.compute.network.agent import Vif

#: Domain names of nubes guests; a libvirtd may run guests that are not ours.
NAME_PREFIX = "nubes-"
#: The kernel command line when the image sets no ``os_command_line``:
#: the console on the first serial port, which goes to the console log, and
#: no check of the IO-APIC timer, which an emulated (TCG) guest on a loaded
#: host can fail and panic on ("IO-APIC + timer doesn't work"), as cloud
#: images' own command lines say.
DEFAULT_CMDLINE = "console=ttyS0 no_timer_check"


#: File names in the instance's directory (Nova's), one per kind of local disk.
ROOT_DISK = "disk"
EPHEMERAL_DISK = "disk.local"
SWAP_DISK = "disk.swap"
#: The filesystem label of the flavor's ephemeral disk (Nova's; cloud-init mounts it).
EPHEMERAL_LABEL = "ephemeral0"


def domain_name(uuid: str) -> str:
    return f"{NAME_PREFIX}{uuid}"


class DiskKind(enum.Enum):
    ROOT = "root"
    EPHEMERAL = "ephemeral"
    SWAP = "swap"


@dataclasses.dataclass(frozen=True, slots=True)
class LocalDisk:
    """One disk file of a guest, as its domain attaches it."""

    kind: DiskKind
    #: The file's name in the instance's directory.
    name: str
    #: The guest's device (virtio: vda, vdb ...).
    target: str
    #: Its size in MiB (0 for the root disk: the image's, or the flavor's root_gb).
    size_mb: int = 0


def disk_layout(ephemeral_gb: int, swap_mb: int) -> tuple[LocalDisk, ...]:
    """A guest's local disks in device order, as Nova's libvirt driver lays
    them out: the root disk, then the flavor's ephemeral disk, then swap,
    each on the next virtio device (a guest without an ephemeral disk has its
    swap on vdb)."""
    kinds = [(DiskKind.ROOT, ROOT_DISK, 0)]
    if ephemeral_gb > 0:
        kinds.append((DiskKind.EPHEMERAL, EPHEMERAL_DISK, ephemeral_gb * 1024))
    if swap_mb > 0:
        kinds.append((DiskKind.SWAP, SWAP_DISK, swap_mb))
    return tuple(
        LocalDisk(kind, name, f"vd{letter}", size)
        for (kind, name, size), letter in zip(kinds, string.ascii_lowercase, strict=False)
    )


#: A guest with only its root disk.
ROOT_ONLY = disk_layout(0, 0)


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceFiles:
    """The files of one instance on this host."""

    directory: Path

    @classmethod
    def of(cls, instances_path: Path, uuid: str) -> InstanceFiles:
        return cls(instances_path / uuid)

    @property
    def aside(self) -> InstanceFiles:
        """Where a resize on this host keeps the guest's files (Nova's
        ``<uuid>_resize``) while the resized guest runs from a copy, until
        the resize is confirmed (removed) or reverted (put back)."""
        return InstanceFiles(self.directory.with_name(f"{self.directory.name}_resize"))

    @property
    def kept_xml(self) -> Path:
        """The guest's own definition, kept with its files set aside for a revert."""
        return self.directory / "resize.xml"

    @property
    def disk(self) -> Path:
        return self.directory / ROOT_DISK

    @property
    def ephemeral_disk(self) -> Path:
        return self.directory / EPHEMERAL_DISK

    @property
    def swap_disk(self) -> Path:
        return self.directory / SWAP_DISK

    def path(self, disk: LocalDisk) -> Path:
        return self.directory / disk.name

    @property
    def kernel(self) -> Path:
        return self.directory / "kernel"

    @property
    def ramdisk(self) -> Path:
        return self.directory / "ramdisk"

    @property
    def config_drive(self) -> Path:
        return self.directory / "disk.config"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    @property
    def rescue_disk(self) -> Path:
        """The root disk of a rescue boot: an overlay over the rescue image."""
        return self.directory / "disk.rescue"

    @property
    def rescue_kernel(self) -> Path:
        return self.directory / "kernel.rescue"

    @property
    def rescue_ramdisk(self) -> Path:
        return self.directory / "ramdisk.rescue"

    @property
    def unrescue_xml(self) -> Path:
        """The guest's own definition, kept while it is rescued (Nova's name)."""
        return self.directory / "unrescue.xml"

    @property
    def console_before(self) -> Path:
        """What the guest's console showed on the hosts it lived on before
        this one (written when a live migration brings it here)."""
        return self.directory / "console.before.log"


@dataclasses.dataclass(frozen=True, slots=True)
class GuestSpec:
    """What the domain XML is made from."""

    uuid: str
    virt_type: str
    memory_mb: int
    vcpus: int
    files: InstanceFiles
    #: The root disk's format (the others are qcow2).
    disk_format: str = "qcow2"
    #: The guest's local disks (:func:`disk_layout`).
    disks: tuple[LocalDisk, ...] = ROOT_ONLY
    #: Boot this kernel (and ramdisk) directly instead of the disk's bootloader.
    direct_kernel: bool = False
    with_ramdisk: bool = False
    cmdline: str = DEFAULT_CMDLINE
    #: Network interfaces, in the order of the instance's ports.
    vifs: tuple[Vif, ...] = ()
    #: Attach ``files.config_drive`` (an ISO 9660 image) as a read-only cdrom.
    config_drive: bool = False
    #: Give the guest a VNC server listening on this host address (None: no VNC).
    vnc_listen: str | None = None


def write_whole(path: Path, text: str) -> None:
    """Write ``path`` by write-and-rename (a crash leaves it whole or absent)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, tag, attrs)
    if text is not None:
        node.text = text
    return node


def domain_xml(spec: GuestSpec) -> str:
    """The libvirt domain XML for ``spec``."""
    domain = ET.Element("domain", type=spec.virt_type)
    _sub(domain, "name", domain_name(spec.uuid))
    _sub(domain, "uuid", spec.uuid)
    _sub(domain, "memory", str(spec.memory_mb), unit="MiB")
    _sub(domain, "vcpu", str(max(1, spec.vcpus)))
    os_ = _sub(domain, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="pc")
    if spec.direct_kernel:
        _sub(os_, "kernel", str(spec.files.kernel))
        if spec.with_ramdisk:
            _sub(os_, "initrd", str(spec.files.ramdisk))
        _sub(os_, "cmdline", spec.cmdline)
    else:
        _sub(os_, "boot", dev="hd")
    features = _sub(domain, "features")
    # ACPI: a soft reboot or a clean power off presses the guest's power button.
    _sub(features, "acpi")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")
    for local in spec.disks:
        fmt = spec.disk_format if local.kind is DiskKind.ROOT else "qcow2"
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=fmt)
        _sub(disk, "source", file=str(spec.files.path(local)))
        _sub(disk, "target", dev=local.target, bus="virtio")
    for vif in spec.vifs:
        # A tap libvirt makes on the bridge the network agent made; the
        # agent's rules name the tap, so the guest is filtered from its start.
        interface = _sub(devices, "interface", type="bridge")
        _sub(interface, "mac", address=vif.mac_address)
        _sub(interface, "source", bridge=vif.bridge)
        _sub(interface, "target", dev=vif.tap)
        _sub(interface, "model", type="virtio")
        _sub(interface, "mtu", size=str(vif.mtu))
    if spec.config_drive:
        cdrom = _sub(devices, "disk", type="file", device="cdrom")
        _sub(cdrom, "driver", name="qemu", type="raw")
        _sub(cdrom, "source", file=str(spec.files.config_drive))
        # IDE, as Nova's default cdrom bus on the "pc" machine these guests get:
        # common guest kernels (Debian's cloud kernel among them) have its
        # driver (ata_piix) but not AHCI's, so a SATA drive would go unseen.
        _sub(cdrom, "target", dev="hda", bus="ide")
        _sub(cdrom, "readonly")
    # The serial console appends to the log across reboots and restarts, so
    # the console log shows the guest's whole life on this host.
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(spec.files.console_log), append="on")
    _sub(serial, "target", port="0")
    if spec.vnc_listen:
        # A port libvirt picks (5900 up): the host's console relay reads it
        # from the running domain, so a restarted or migrated guest's new one
        # is found too.
        graphics = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes")
        _sub(graphics, "listen", type="address", address=spec.vnc_listen)
    _sub(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")
