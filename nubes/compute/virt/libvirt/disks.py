"""A guest's files on this host: its root disk (a qcow2 overlay over the
cached image), its flavor's ephemeral and swap disks, kernel and ramdisk
linked from the image cache, the console history it brings along, and the
disks a cold migration fetches from the source. The directory layout is
:class:`~.guest.InstanceFiles`, which disks a guest has :func:`layout_of`.

The ephemeral and swap disks are made as Nova's libvirt driver makes them:
the ephemeral disk holds a filesystem labelled ``ephemeral0``
(:func:`ephemeral_format` says which), the swap disk is made by ``mkswap``;
each is formatted as a sparse raw file (no root, no loop device: ``mkfs``
and ``mkswap`` write to a file) and converted to a standalone qcow2, so a
move copies only what was written. A move carries the root and ephemeral
disks; swap holds nothing once the guest is off, so a cold move's
destination makes it anew for the flavor it lands with (a resize changes
its size), while a live migration copies it with the running guest.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nubes import exception, grants
from nubes.compute.virt.libvirt import diskserver
from nubes.compute.virt.libvirt.guest import (
    EPHEMERAL_DISK,
    EPHEMERAL_LABEL,
    DiskKind,
    InstanceFiles,
    LocalDisk,
    disk_layout,
)
from nubes.compute.virt.libvirt.imagecache import ImageCache

if TYPE_CHECKING:
    from nubes.objects.instance import Instance

#: Image disk formats a root disk can be made from (an overlay over the cached image).
BACKING_FORMATS = {"raw": "raw", "ami": "raw", "qcow2": "qcow2"}
#: Console output returned at most (the end of the log), like Nova's limit.
CONSOLE_LOG_MAX = 100 * 1024
#: The ephemeral disk's filesystem by the image's ``os_type`` when none is
#: configured, and for any other os_type (Nova's defaults).
_FORMAT_BY_OS_TYPE = {"linux": "ext4", "windows": "ntfs"}
_DEFAULT_FORMAT = "vfat"


def layout_of(instance: Instance) -> tuple[LocalDisk, ...]:
    """The instance's local disks, from its flavor (ephemeral_gb, swap MiB);
    an instance object carrying neither field (a driver test's) has none."""
    flavor = instance.flavor if instance.obj_attr_is_set("flavor") else None
    swap = flavor.swap if flavor is not None else 0
    ephemeral = instance.ephemeral_gb if instance.obj_attr_is_set("ephemeral_gb") else 0
    return disk_layout(ephemeral or 0, swap or 0)


def ephemeral_format(configured: str | None, image_meta: dict[str, Any]) -> str:
    """The filesystem of a new ephemeral disk: the configured one, else by
    the image's ``os_type`` property as Nova chooses."""
    if configured:
        return configured
    os_type = str((image_meta.get("properties") or {}).get("os_type") or "").lower()
    return _FORMAT_BY_OS_TYPE.get(os_type, _DEFAULT_FORMAT)


def mkfs_command(fs: str, label: str, path: Path) -> list[str]:
    """``mkfs`` of ``fs`` labelled ``label`` on the file ``path``."""
    command = ["mkfs", "-t", fs]
    if fs in ("ext3", "ext4", "ntfs"):
        command.append("-F")  # no question on a file that is not a block device
    if fs == "ntfs":
        command.append("-Q")  # no zeroing of a sparse file, block by block
    command += ["-n" if fs == "vfat" else "-L", label, str(path)]
    return command


def _sparse_file(path: Path, size_mb: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)


class GuestDisks:
    """The guests' files under ``instances_path``, made over ``images``;
    ephemeral disks get ``ephemeral_format`` (``[DEFAULT]
    default_ephemeral_format``, whose choices are the filesystems allowed;
    None: by the image's os_type)."""

    def __init__(
        self, instances_path: Path, images: ImageCache, ephemeral_format: str | None = None
    ) -> None:
        self.instances_path = instances_path
        self.images = images
        self.ephemeral_format = ephemeral_format

    def files(self, uuid: str) -> InstanceFiles:
        return InstanceFiles.of(self.instances_path, uuid)

    async def _root_disk(
        self, instance: Instance, image_meta: dict[str, Any], disk: Path | None = None
    ) -> str:
        """Make the instance's root disk (or ``disk``: a rescue disk), an
        overlay over the cached image; returns the overlay's format."""
        image_id = image_meta.get("id")
        disk_format = image_meta.get("disk_format") or "raw"
        backing = BACKING_FORMATS.get(disk_format)
        if not image_id or backing is None:
            raise exception.VirtOperationNotSupported(
                driver="libvirt",
                operation="spawn",
                instance_uuid=instance.uuid,
                reason=f"cannot boot from an image of disk format {disk_format!r} "
                f"(raw, ami or qcow2 only)",
            )
        base = await self.images.get(
            image_id, image_meta.get("os_hash_value"), image_grant(image_meta, image_id)
        )
        disk = disk or self.files(instance.uuid).disk
        command = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", backing, "-b", str(base)]
        command.append(str(disk))
        if instance.root_gb:
            command.append(f"{instance.root_gb}G")
        await self.run(command, instance, "spawn")
        return "qcow2"

    async def run(self, command: list[str], instance: Instance, operation: str) -> None:
        """Run a tool (qemu-img) on the guest's files; its failure a VirtDriverError."""
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            raise exception.VirtDriverError(
                operation=operation,
                instance_uuid=instance.uuid,
                reason=f"{command[0]} failed: {err.decode(errors='replace').strip()}",
            )

    async def _link_from_cache(self, image_id: str, dest: Path, image_meta: dict[str, Any]) -> None:
        cached = await self.images.get(image_id, grant=image_grant(image_meta, image_id))
        await asyncio.to_thread(os.link, cached, dest)

    async def prepare(
        self,
        instance: Instance,
        image_meta: dict[str, Any],
        *,
        local_disks: bool = True,
        blank: bool = False,
    ) -> str:
        """The instance's directory with its root disk (an overlay over the cached
        image), its kernel and ramdisk and (``local_disks``) its ephemeral
        and swap disks (``blank``: unformatted, for a copy to fill); returns
        the root disk's format."""
        files = self.files(instance.uuid)
        # Left by a spawn cut off before its domain existed: nothing uses it.
        await asyncio.to_thread(shutil.rmtree, files.directory, True)
        await asyncio.to_thread(files.directory.mkdir, parents=True)
        properties = image_meta.get("properties") or {}
        kernel_id = properties.get("kernel_id")
        ramdisk_id = properties.get("ramdisk_id")
        disk_format = await self._root_disk(instance, image_meta)
        if kernel_id:
            await self._link_from_cache(kernel_id, files.kernel, image_meta)
        if kernel_id and ramdisk_id:
            await self._link_from_cache(ramdisk_id, files.ramdisk, image_meta)
        if local_disks:
            await self.make_local_disks(instance, image_meta, blank=blank)
        return disk_format

    async def make_local_disks(
        self,
        instance: Instance,
        image_meta: dict[str, Any],
        *,
        blank: bool = False,
        keep: bool = False,
        operation: str = "spawn",
    ) -> None:
        """The instance's ephemeral and swap disks, new: formatted, or
        ``blank`` (a live migration's copy fills them); ``keep``: those already
        there (fetched from a move's source) are left as they are."""
        files = self.files(instance.uuid)
        for disk in layout_of(instance):
            path = files.path(disk)
            if disk.kind is DiskKind.ROOT or (keep and await asyncio.to_thread(path.exists)):
                continue
            if blank:
                command = ["qemu-img", "create", "-q", "-f", "qcow2", str(path)]
                await self.run([*command, f"{disk.size_mb}M"], instance, operation)
                continue
            raw = path.with_name(f"{path.name}.raw")
            await asyncio.to_thread(_sparse_file, raw, disk.size_mb)
            try:
                if disk.kind is DiskKind.SWAP:
                    await self.run(["mkswap", str(raw)], instance, operation)
                else:
                    fs = ephemeral_format(self.ephemeral_format, image_meta)
                    await self.run(mkfs_command(fs, EPHEMERAL_LABEL, raw), instance, operation)
                # Zeros are skipped: the qcow2 holds only what mkfs wrote.
                command = ["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(path)]
                await self.run(command, instance, operation)
            finally:
                await asyncio.to_thread(raw.unlink, True)

    async def grow(self, instance: Instance, operation: str) -> None:
        """A resized guest's root and ephemeral disks grown to its new flavor
        (the filesystem on them is left as it is, as Nova leaves a qcow2's)."""
        files = self.files(instance.uuid)
        for disk in layout_of(instance):
            size = (instance.root_gb or 0) * 1024 if disk.kind is DiskKind.ROOT else disk.size_mb
            if disk.kind is DiskKind.SWAP or not size:
                continue  # swap is made for the new flavor; a root of 0: the image's size
            command = ["qemu-img", "resize", "-q", str(files.path(disk)), f"{size}M"]
            await self.run(command, instance, operation)

    async def prepare_rescue(self, instance: Instance, image_meta: dict[str, Any]) -> None:
        """The rescue disk (an overlay over the cached rescue image) and the
        rescue image's kernel and ramdisk, beside the guest's own files (made
        anew: a repeat starts from a fresh rescue disk, as Nova's)."""
        files = self.files(instance.uuid)
        for path in (files.rescue_disk, files.rescue_kernel, files.rescue_ramdisk):
            await asyncio.to_thread(path.unlink, True)
        await self._root_disk(instance, image_meta, files.rescue_disk)
        properties = image_meta.get("properties") or {}
        kernel_id = properties.get("kernel_id")
        ramdisk_id = properties.get("ramdisk_id")
        if kernel_id:
            await self._link_from_cache(kernel_id, files.rescue_kernel, image_meta)
        if kernel_id and ramdisk_id:
            await self._link_from_cache(ramdisk_id, files.rescue_ramdisk, image_meta)

    async def remove_rescue(self, instance: Instance) -> None:
        """The rescue boot's files gone (the guest is back on its own)."""
        files = self.files(instance.uuid)
        for path in (
            files.rescue_disk,
            files.rescue_kernel,
            files.rescue_ramdisk,
            files.unrescue_xml,
        ):
            await asyncio.to_thread(path.unlink, True)

    async def fetch_from_source(
        self, instance: Instance, url: str, grant: str, image_meta: dict[str, Any]
    ) -> None:
        """The guest's overlay, ephemeral disk and console history from the
        source's disk server (cold migration), the overlay rebased on this
        host's cached image; the swap disk, and an ephemeral disk the source
        did not have (a resize gave the guest one), new."""
        files = self.files(instance.uuid)
        backing = qcow2_backing(files.disk)
        fmt = BACKING_FORMATS.get(image_meta.get("disk_format") or "raw", "raw")
        await asyncio.to_thread(diskserver.fetch, f"{url}/disk", grant, files.disk)
        if any(d.kind is DiskKind.EPHEMERAL for d in layout_of(instance)):
            await asyncio.to_thread(
                diskserver.fetch,
                f"{url}/{EPHEMERAL_DISK}",
                grant,
                files.ephemeral_disk,
                missing_ok=True,
            )
        await self.make_local_disks(instance, image_meta, keep=True, operation="finish_migration")
        # The copied overlay names the source's cache: point it at this host's.
        if backing is not None:
            command = ["qemu-img", "rebase", "-u", "-F", fmt, "-b", backing, str(files.disk)]
            await self.run(command, instance, "finish_migration")
        history = b""
        for name in ("console.before.log", "console.log"):
            part = files.directory / f"source-{name}"
            if await asyncio.to_thread(
                diskserver.fetch, f"{url}/{name}", grant, part, missing_ok=True
            ):
                history += await asyncio.to_thread(part.read_bytes)
                await asyncio.to_thread(part.unlink)
        await asyncio.to_thread(files.console_before.write_bytes, history[-CONSOLE_LOG_MAX:])

    def console_history(self, uuid: str) -> str:
        """The console log's end: what the guest wrote on the hosts it lived on
        before (carried by live migrations), then here."""
        files = self.files(uuid)
        data = b""
        for path in (files.console_before, files.console_log):
            try:
                with open(path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - CONSOLE_LOG_MAX))
                    data += f.read()
            except FileNotFoundError:
                pass
        return data[-CONSOLE_LOG_MAX:].decode("utf-8", errors="replace")

    def backing_files(self) -> set[Path]:
        """The cached images the root disks of this host's guests are overlays of."""
        found: set[Path] = set()
        if not self.instances_path.is_dir():
            return found
        # A rescued guest's rescue disk is an overlay of a cached image too.
        disks = [*self.instances_path.glob("*/disk"), *self.instances_path.glob("*/disk.rescue")]
        for disk in disks:
            info = qcow2_backing(disk)
            if info is not None:
                found.add(Path(info))
        return found


def qcow2_backing(disk: Path) -> str | None:
    """The backing file a qcow2 header names (None: none, or not qcow2)."""
    try:
        with open(disk, "rb") as f:
            header = f.read(20)
            if len(header) < 20 or header[:4] != b"QFI\xfb":
                return None
            offset = int.from_bytes(header[8:16], "big")
            size = int.from_bytes(header[16:20], "big")
            if not offset or not size:
                return None
            f.seek(offset)
            return f.read(size).decode(errors="replace")
    except OSError:
        return None


def image_grant(image_meta: dict[str, Any], image_id: str) -> str | None:
    """The conductor's grant (sent with the build) to fetch ``image_id``."""
    found = (image_meta.get(grants.META_KEY) or {}).get(image_id)
    return str(found) if found else None
