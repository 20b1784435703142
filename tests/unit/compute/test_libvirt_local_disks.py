"""A libvirt guest's local disks (issue #15): which it has, as which devices,
and the ephemeral and swap files the host makes for them with the real tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from nubes.compute.virt.libvirt import migration
from nubes.compute.virt.libvirt.disks import (
    GuestDisks,
    ephemeral_format,
    layout_of,
    mkfs_command,
)
from nubes.compute.virt.libvirt.guest import (
    DiskKind,
    GuestSpec,
    InstanceFiles,
    LocalDisk,
    disk_layout,
    domain_xml,
)
from nubes.compute.virt.libvirt.imagecache import DirectoryImageSource, ImageCache
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance

UUID = "0b7f3c1e-55aa-4d7e-9d0c-2f6e1c9a7b10"


def _instance(ephemeral_gb: int, swap: int, root_gb: int = 1) -> Instance:
    flavor = Flavor(
        flavorid="f", name="f", memory_mb=64, vcpus=1, root_gb=root_gb,
        ephemeral_gb=ephemeral_gb, swap=swap,
    )  # fmt: skip
    return Instance(uuid=UUID, root_gb=root_gb, ephemeral_gb=ephemeral_gb, flavor=flavor)


def test_the_layout_is_root_then_ephemeral_then_swap_on_the_next_virtio_devices() -> None:
    assert disk_layout(0, 0) == (LocalDisk(DiskKind.ROOT, "disk", "vda"),)
    assert disk_layout(2, 512) == (
        LocalDisk(DiskKind.ROOT, "disk", "vda"),
        LocalDisk(DiskKind.EPHEMERAL, "disk.local", "vdb", 2048),
        LocalDisk(DiskKind.SWAP, "disk.swap", "vdc", 512),
    )
    # No ephemeral disk: swap is the second device, as in Nova.
    assert [(d.name, d.target) for d in disk_layout(0, 256)] == [
        ("disk", "vda"),
        ("disk.swap", "vdb"),
    ]
    # From the instance: its ephemeral_gb and its flavor's swap (MiB).
    assert layout_of(_instance(1, 128)) == disk_layout(1, 128)
    assert layout_of(Instance(uuid=UUID, ephemeral_gb=None)) == disk_layout(0, 0)


def test_the_domain_attaches_every_local_disk_and_a_live_copy_carries_them(
    tmp_path: Path,
) -> None:
    files = InstanceFiles.of(tmp_path, UUID)
    spec = GuestSpec(
        UUID, "qemu", 64, 1, files, disk_format="qcow2", disks=disk_layout(1, 64),
        config_drive=True,
    )  # fmt: skip
    xml = domain_xml(spec)
    disks = ET.fromstring(xml).findall("devices/disk[@device='disk']")
    found = [
        (d.find("source").get("file"), d.find("target").get("dev"), d.find("driver").get("type"))  # type: ignore[union-attr]
        for d in disks
    ]
    assert found == [
        (str(files.disk), "vda", "qcow2"),
        (str(files.ephemeral_disk), "vdb", "qcow2"),
        (str(files.swap_disk), "vdc", "qcow2"),
    ]
    # The read-only config drive is written by the destination itself.
    assert migration.local_disks(xml) == ["vda", "vdb", "vdc"]
    assert migration.local_disks(domain_xml(GuestSpec(UUID, "qemu", 64, 1, files))) == ["vda"]


def test_the_ephemeral_filesystem_is_the_configured_one_else_novas_by_os_type() -> None:
    linux = {"properties": {"os_type": "linux"}}
    assert ephemeral_format("ext3", linux) == "ext3"
    assert ephemeral_format(None, linux) == "ext4"
    assert ephemeral_format(None, {"properties": {"os_type": "windows"}}) == "ntfs"
    assert ephemeral_format(None, {"properties": {}}) == "vfat"
    assert mkfs_command("ext4", "ephemeral0", Path("/x")) == [
        "mkfs", "-t", "ext4", "-F", "-L", "ephemeral0", "/x",
    ]  # fmt: skip
    assert mkfs_command("vfat", "ephemeral0", Path("/x")) == [
        "mkfs", "-t", "vfat", "-n", "ephemeral0", "/x",
    ]  # fmt: skip


def _tools() -> None:
    for tool in ("qemu-img", "mkfs.ext4", "mkfs.vfat", "mkswap", "blkid"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            if os.environ.get("CI"):
                pytest.fail(f"CI requires {tool} (nubes.testing.libvirtd.DEBIAN_PACKAGES)")
            pytest.skip(f"{tool} is not installed")


def _info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True
    ).stdout
    return dict(json.loads(out))


def _probe(qcow2: Path, tmp_path: Path) -> dict[str, str]:
    """What blkid finds on the disk (through a raw copy: blkid reads no qcow2)."""
    raw = tmp_path / f"{qcow2.name}.probe"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True)
    out = subprocess.run(["blkid", "-p", "-o", "export", str(raw)], capture_output=True).stdout
    raw.unlink()
    return dict(line.split("=", 1) for line in out.decode().split() if "=" in line)


@pytest.mark.parametrize("fs", ["ext4", "vfat"])
async def test_spawn_makes_a_labelled_ephemeral_disk_and_a_swap_disk(
    tmp_path: Path, fs: str
) -> None:
    _tools()
    instances = tmp_path / "instances"
    disks = GuestDisks(instances, ImageCache(instances, DirectoryImageSource(tmp_path), "h"), fs)
    instance = _instance(1, 64)
    files = disks.files(UUID)
    files.directory.mkdir(parents=True)
    await disks.make_local_disks(instance, {"properties": {}})
    eph, swap = _info(files.ephemeral_disk), _info(files.swap_disk)
    assert eph["format"] == "qcow2" and eph["virtual-size"] == 1 << 30
    assert swap["format"] == "qcow2" and swap["virtual-size"] == 64 << 20
    assert "backing-filename" not in eph  # standalone: a move copies it as it is
    assert eph["actual-size"] < 64 << 20  # type: ignore[operator]  # sparse: mkfs's blocks only
    assert _probe(files.ephemeral_disk, tmp_path) | {"UUID": ""} == {
        **_probe(files.ephemeral_disk, tmp_path), "LABEL": "ephemeral0", "TYPE": fs, "UUID": "",
    }  # fmt: skip
    assert _probe(files.swap_disk, tmp_path)["TYPE"] == "swap"
    assert not list(files.directory.glob("*.raw"))  # the scratch files are gone

    # A move's destination keeps what it fetched and makes only what is missing.
    files.swap_disk.unlink()
    before = files.ephemeral_disk.stat().st_mtime_ns
    await disks.make_local_disks(instance, {}, keep=True)
    assert files.ephemeral_disk.stat().st_mtime_ns == before and files.swap_disk.exists()

    # A resize grows the root and ephemeral disks; the filesystem on it stays.
    await disks.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(files.disk), "1G"], instance, "t"
    )
    await disks.grow(_instance(2, 64, root_gb=3), "finish_migration")
    assert _info(files.ephemeral_disk)["virtual-size"] == 2 << 30
    assert _info(files.disk)["virtual-size"] == 3 << 30
    assert _probe(files.ephemeral_disk, tmp_path)["LABEL"] == "ephemeral0"


async def test_a_live_migration_destination_gets_blank_disks_of_the_same_size(
    tmp_path: Path,
) -> None:
    _tools()
    instances = tmp_path / "instances"
    disks = GuestDisks(instances, ImageCache(instances, DirectoryImageSource(tmp_path), "h"))
    files = disks.files(UUID)
    files.directory.mkdir(parents=True)
    await disks.make_local_disks(_instance(1, 32), {}, blank=True)
    assert _info(files.ephemeral_disk)["virtual-size"] == 1 << 30
    assert _info(files.swap_disk)["virtual-size"] == 32 << 20
    assert _probe(files.ephemeral_disk, tmp_path) == {}  # nothing to overwrite the copy
