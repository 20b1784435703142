"""Real guests: one private libvirtd per test session, a busybox guest built once.

Without what a libvirt host needs (see ``nubes.testing.libvirtd.DEBIAN_PACKAGES``,
root, and ``pip install 'nubes[libvirt]'``) these tests skip, or fail under CI.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from nubes.compute.virt.libvirt.driver import LibvirtDriver
from nubes.compute.virt.libvirt.imagecache import DirectoryImageSource
from nubes.context import RequestContext
from nubes.objects.instance import Instance
from nubes.testing import guestimage, netns
from nubes.testing.libvirtd import PrivateLibvirtd, missing
from nubes.testing.netns import HostNetwork

#: Seconds a tiny guest gets to reach a console marker under TCG on a busy machine.
BOOT_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    why = missing()
    if why is not None:
        message = f"no private libvirtd here: {why}"
        if os.environ.get("CI"):
            pytest.fail(f"CI requires libvirt: {message}")
        pytest.skip(message)
    daemon = PrivateLibvirtd()
    daemon.start()
    yield daemon
    daemon.cleanup()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def images(libvirtd: PrivateLibvirtd, image_dir: Path) -> guestimage.PublishedImages:
    return guestimage.publish(guestimage.build(), image_dir)


def make_driver(
    libvirtd: PrivateLibvirtd, image_dir: Path, instances: Path, host: str = "lv-0"
) -> LibvirtDriver:
    return LibvirtDriver(
        host,
        connection_uri=libvirtd.uri,
        virt_type="qemu",
        instances_path=instances,
        image_source=DirectoryImageSource(image_dir),
        soft_reboot_wait=30.0,
    )


@pytest.fixture
async def driver(
    libvirtd: PrivateLibvirtd, image_dir: Path, tmp_path: Path
) -> AsyncIterator[LibvirtDriver]:
    drv = make_driver(libvirtd, image_dir, tmp_path / "instances")
    await drv.init_host()
    yield drv
    for uuid in await drv.list_instances():
        await drv.destroy(RequestContext(), Instance(uuid=uuid))
    await drv.cleanup_host()


async def wait_console(
    driver: LibvirtDriver, instance: Instance, marker: str, count: int = 1
) -> str:
    """The console log once ``marker`` appears ``count`` times in it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOOT_TIMEOUT
    while True:
        log = await driver.get_console_output(instance)
        if log.count(marker) >= count:
            return log
        if loop.time() > deadline:
            raise AssertionError(f"{marker!r} x{count} not on the console; it ends:\n{log[-800:]}")
        await asyncio.sleep(0.25)


@pytest.fixture
def namespaced_hosts() -> None:
    """Skips (fails under CI) where compute hosts cannot run in namespaces."""
    why = missing() or netns.missing()
    if why is not None:
        message = f"no namespaced hosts here: {why}"
        if os.environ.get("CI"):
            pytest.fail(f"CI requires namespaced hosts: {message}")
        pytest.skip(message)


@pytest.fixture
def host_network(namespaced_hosts: None, tmp_path: Path) -> Iterator[HostNetwork]:
    """Two compute hosts, each in its own network namespace (nubes.testing.netns)."""
    with HostNetwork(tmp_path / "hosts", hosts=2) as net:
        yield net


def image_record(meta: dict[str, Any]) -> dict[str, Any]:
    """The image API's row for a published test image (``images.raw`` or a copy
    with its own command line), for an all-in-one cloud's image table."""
    return {
        "id": meta["id"],
        "name": "guest",
        "status": "active",
        "visibility": "public",
        "disk_format": meta["disk_format"],
        "container_format": "bare",
        "os_hash_algo": meta["os_hash_algo"],
        "os_hash_value": meta["os_hash_value"],
        "properties": meta["properties"],
    }
