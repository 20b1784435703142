"""The libvirt driver's parts that need no libvirtd: domain XML, image cache, test guest."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from nubes import exception
from nubes.compute.network.agent import Vif
from nubes.compute.virt.libvirt.guest import GuestSpec, InstanceFiles, domain_xml
from nubes.compute.virt.libvirt.imagecache import DirectoryImageSource, ImageCache
from nubes.testing import guestimage

UUID = "6f1c5b8e-9b8a-4e0a-9a8e-3c0d2b1f0a11"


def test_domain_xml_boots_the_kernel_with_the_console_on_a_file(tmp_path: Path) -> None:
    files = InstanceFiles.of(tmp_path, UUID)
    spec = GuestSpec(
        uuid=UUID,
        virt_type="qemu",
        memory_mb=96,
        vcpus=0,
        files=files,
        direct_kernel=True,
        with_ramdisk=True,
        cmdline="console=ttyS0 nubes.poweroff=3",
    )
    dom = ET.fromstring(domain_xml(spec))
    assert dom.get("type") == "qemu" and dom.findtext("name") == f"nubes-{UUID}"
    assert dom.findtext("uuid") == UUID and dom.findtext("vcpu") == "1"
    assert dom.find("memory").get("unit") == "MiB" and dom.findtext("memory") == "96"
    assert dom.findtext("os/kernel") == str(files.kernel)
    assert dom.findtext("os/initrd") == str(files.ramdisk)
    assert dom.findtext("os/cmdline") == "console=ttyS0 nubes.poweroff=3"
    assert dom.find("devices/disk/source").get("file") == str(files.disk)
    serial = dom.find("devices/serial/source")
    assert serial is not None and serial.get("path") == str(files.console_log)
    assert serial.get("append") == "on"
    # Without a kernel: the disk's own bootloader.
    plain = ET.fromstring(domain_xml(GuestSpec(UUID, "kvm", 64, 2, files)))
    assert plain.find("os/kernel") is None and plain.find("os/boot").get("dev") == "hd"


def test_domain_xml_puts_each_port_on_its_bridge_with_its_tap_and_mac(tmp_path: Path) -> None:
    vif = Vif("p1", "fa:16:3e:00:00:01", "nbr-net", "tapp1", 1450)
    spec = GuestSpec(UUID, "qemu", 64, 1, InstanceFiles.of(tmp_path, UUID), vifs=(vif,))
    (interface,) = ET.fromstring(domain_xml(spec)).findall("devices/interface")
    assert interface.get("type") == "bridge"
    assert interface.find("mac").get("address") == "fa:16:3e:00:00:01"  # type: ignore[union-attr]
    assert interface.find("source").get("bridge") == "nbr-net"  # type: ignore[union-attr]
    assert interface.find("target").get("dev") == "tapp1"  # type: ignore[union-attr]
    assert interface.find("mtu").get("size") == "1450"  # type: ignore[union-attr]


async def test_image_cache_checks_bytes_and_ids(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    image_id = str(uuid.uuid4())
    (store / image_id).write_bytes(b"image bytes")
    digest = hashlib.sha512(b"image bytes").hexdigest()
    cache = ImageCache(tmp_path / "instances", DirectoryImageSource(store), "h1")
    with pytest.raises(exception.ImageFetchFailed):
        await cache.get(image_id, "0" * 128)
    assert cache.entries() == []  # nothing unchecked enters
    path = await cache.get(image_id, digest)
    assert path.read_bytes() == b"image bytes" and path == await cache.get(image_id)
    with pytest.raises(exception.ImageNotFound):
        await cache.get(str(uuid.uuid4()))
    with pytest.raises(exception.Invalid):
        await cache.get("../../etc/passwd")
    assert cache.in_use(set()) == [] and cache.in_use({path}) == [path]
    (tmp_path / "link").hardlink_to(path)
    assert cache.in_use(set()) == [path] and cache.prune(set()) == []
    (tmp_path / "link").unlink()
    assert cache.prune(set()) == [path] and cache.entries() == []


def test_the_test_guest_initramfs_is_a_cpio_archive_with_init(tmp_path: Path) -> None:
    # cpio reads it as the kernel will (CI installs it: libvirtd.DEBIAN_PACKAGES).
    if shutil.which("cpio") is None:
        if os.environ.get("CI"):
            pytest.fail("CI requires cpio (apt-get install cpio)")
        pytest.skip("cpio is not installed (apt-get install cpio)")
    archive = guestimage.newc_archive([("bin", 0o040755, b""), ("init", 0o100755, b"#!/bin/sh\n")])
    listed = subprocess.run(
        ["cpio", "-it", "--quiet"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert listed.split() == ["bin", "init"]
