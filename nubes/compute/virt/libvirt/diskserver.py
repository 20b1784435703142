"""The disk server of a libvirt host: a cold migration's destination pulls from it.

Compute hosts never take commands from each other, but a cold migration or
resize must move a stopped guest's disk host to host. The source serves it
over HTTP on its migration address; what it serves, and to whom, the
conductor decides:

- ``migrate_disk_and_power_off`` makes a random key for that one migration,
  keeps it in the instance's directory (:data:`KEY_FILE`; it outlives a
  restart of the agent) and reports it in ``disk_info``;
- the conductor signs a grant with it for the destination host
  (:func:`nubes.grants.issue_disk`) and sends the grant to the destination
  only;
- this server answers ``GET /<instance uuid>/<file>`` only for an instance
  that has a key file, only for the files in :data:`SERVED`, and only with a
  grant (header :data:`nubes.grants.DISK_HEADER`) that key verifies for that
  instance. Confirming or reverting removes the key: nothing is served any more.

The server reads nothing else and writes nothing: it is a few lines of
asyncio rather than a web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from nubes import exception, grants
from nubes.compute.virt.libvirt.guest import EPHEMERAL_DISK, ROOT_DISK

LOG = logging.getLogger(__name__)

#: Where a guest being moved off this host keeps its migration's key.
KEY_FILE = "migration.key"
#: The files of an instance a destination may fetch: the disks that hold the
#: guest's data (not swap, which a cold move's destination makes anew) and
#: its console history.
SERVED = frozenset({ROOT_DISK, EPHEMERAL_DISK, "console.log", "console.before.log"})
_REQUEST = re.compile(r"^GET /([0-9a-f-]{36})/([a-z.]+) HTTP/1\.[01]$")
_CHUNK = 1 << 20


class DiskServer:
    """Serves the files of the guests leaving ``instances_path`` to their grants."""

    def __init__(self, instances_path: Path, address: str, port: int = 0) -> None:
        self.instances_path = instances_path
        self.address = address
        self.port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.address, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        LOG.info("disk server on %s", self.url)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    def _key(self, uuid: str) -> str | None:
        try:
            return (self.instances_path / uuid / KEY_FILE).read_text().strip() or None
        except OSError:
            return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, path = await self._authorise(reader)
            if path is None:
                writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
            else:
                await self._send(writer, path)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            LOG.debug("disk server: %s", exc)
        finally:
            writer.close()

    async def _authorise(self, reader: asyncio.StreamReader) -> tuple[str, Path | None]:
        request = (await reader.readline()).decode("latin-1").strip()
        headers: dict[str, str] = {}
        while (line := (await reader.readline()).decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        match = _REQUEST.match(request)
        if match is None or match.group(2) not in SERVED:
            return "404 Not Found", None
        uuid, name = match.groups()
        key = self._key(uuid)
        token = headers.get(grants.DISK_HEADER.lower())
        if key is None:
            return "404 Not Found", None
        if not token:
            return "401 Unauthorized", None
        try:
            host = grants.verify_disk(key, token, uuid)
        except exception.NotAuthenticated:
            return "401 Unauthorized", None
        except exception.Forbidden:
            return "403 Forbidden", None
        path = self.instances_path / uuid / name
        if not path.is_file():
            return "404 Not Found", None
        LOG.info("disk server: %s of %s to %s", name, uuid, host)
        return "200 OK", path

    async def _send(self, writer: asyncio.StreamWriter, path: Path) -> None:
        f = await asyncio.to_thread(path.open, "rb")
        try:
            size = os.fstat(f.fileno()).st_size
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n".encode()
            )
            while chunk := await asyncio.to_thread(f.read, _CHUNK):
                writer.write(chunk)
                await writer.drain()
        finally:
            f.close()


def fetch(url: str, grant: str, dest: Path, *, missing_ok: bool = False) -> bool:
    """Download ``url`` (a file of a disk server) with ``grant`` into ``dest``
    (through a temporary file, renamed at the end). Blocking; False when the
    file is not there and ``missing_ok``."""
    request = urllib.request.Request(url, headers={grants.DISK_HEADER: grant})
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        if exc.code == 404 and missing_ok:
            return False
        raise exception.VirtDriverError(
            operation="fetch the disk", instance_uuid="-", reason=f"{url}: HTTP {exc.code}"
        ) from None
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise exception.VirtDriverError(
            operation="fetch the disk", instance_uuid="-", reason=f"{url}: {exc}"
        ) from None
    os.replace(part, dest)
    return True
