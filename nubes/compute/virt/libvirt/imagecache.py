"""The host's image cache: each image's bytes fetched once, shared by its guests.

Cached images live in ``<instances_path>/_base/<image id>`` (read-only once
there). Guests never write them: a root disk is a qcow2 overlay backed by the
cached file, a kernel or ramdisk is hard-linked into the instance's directory.
So an entry is in use while an overlay names it as backing file or a link
to it exists (:meth:`ImageCache.in_use`), and :meth:`ImageCache.prune`
removes the entries nothing uses.

Where bytes come from is an :class:`ImageSource`. Phase 1 ships one,
:class:`DirectoryImageSource`: the image API's data directory read directly
(``[libvirt] image_source_dir``), which works where the compute host shares
the controller's disk (all-in-one). The issue's design, a fetch over HTTP
from the image API with a short-lived per-image grant from the conductor, is
a second source behind the same seam (not built yet).
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import os
import shutil
import uuid
from pathlib import Path

from nubes import exception

BASE_DIR_NAME = "_base"
_CHUNK = 1 << 20


def _check_id(image_id: str) -> str:
    # Image ids name files: only a uuid is a safe file name.
    try:
        return str(uuid.UUID(image_id))
    except (ValueError, TypeError, AttributeError):
        raise exception.Invalid(reason=f"image id {image_id!r} is not a uuid") from None


class ImageSource(abc.ABC):
    """Where a host gets an image's bytes."""

    @abc.abstractmethod
    async def fetch(self, image_id: str, dest: Path) -> None:
        """Write image ``image_id``'s bytes to ``dest``; ImageNotFound if there are none."""


class DirectoryImageSource(ImageSource):
    """Images as files named by id in one directory (the image API's ``image_dir``)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    async def fetch(self, image_id: str, dest: Path) -> None:
        source = self.directory / _check_id(image_id)
        try:
            await asyncio.to_thread(shutil.copyfile, source, dest)
        except FileNotFoundError:
            raise exception.ImageNotFound(image_id=image_id) from None


def _sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ImageCache:
    def __init__(self, instances_path: Path, source: ImageSource, host: str) -> None:
        self.base = instances_path / BASE_DIR_NAME
        self.source = source
        self.host = host
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, image_id: str) -> Path:
        return self.base / _check_id(image_id)

    async def get(self, image_id: str, sha512: str | None = None) -> Path:
        """The cached file of ``image_id``, fetched first if it is not there.

        With ``sha512`` (the image record's ``os_hash_value``) the bytes are
        checked before they enter the cache: a host never boots a guest from
        bytes that are not the image's.
        """
        path = self.path(image_id)
        lock = self._locks.setdefault(image_id, asyncio.Lock())
        async with lock:
            if path.exists():
                return path
            await asyncio.to_thread(self.base.mkdir, parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.part")
            try:
                await self.source.fetch(image_id, partial)
                if sha512:
                    got = await asyncio.to_thread(_sha512, partial)
                    if got != sha512:
                        raise exception.ImageFetchFailed(
                            image_id=image_id,
                            host=self.host,
                            reason="its bytes do not match the image's sha512",
                        )
                await asyncio.to_thread(os.chmod, partial, 0o444)
                await asyncio.to_thread(os.replace, partial, path)
            finally:
                await asyncio.to_thread(partial.unlink, missing_ok=True)
        return path

    def entries(self) -> list[Path]:
        if not self.base.is_dir():
            return []
        return sorted(p for p in self.base.iterdir() if not p.name.startswith("."))

    def in_use(self, backing_files: set[Path]) -> list[Path]:
        """Entries some guest uses: linked into an instance directory, or
        named in ``backing_files`` (the backing files of the overlays here)."""
        return [p for p in self.entries() if p.stat().st_nlink > 1 or p in backing_files]

    def prune(self, backing_files: set[Path]) -> list[Path]:
        """Remove the entries no guest uses; returns them."""
        used = set(self.in_use(backing_files))
        removed = []
        for entry in self.entries():
            if entry not in used:
                entry.unlink(missing_ok=True)
                removed.append(entry)
        return removed
