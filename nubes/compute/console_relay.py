"""A compute host's console relay: the one way from the console proxy to a
guest's VNC server, and only to this host's own guests.

The proxy connects over TCP and sends one line, ``NUBES-CONSOLE 1 <token>``.
The relay hands the token to the conductor (``ConductorAPI.open_console``),
which spends it only if it names this host and its instance is placed here
now; the relay then connects to that guest's VNC server (the driver says
where, on this host) and answers ``OK``, after which bytes flow both ways
untouched until either side closes. Any refusal is one ``ERR <reason>`` line
and the connection closes: a token never reaches a guest of another host,
and a spent, expired or foreign token opens nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nubes import exception
from nubes.compute.virt.driver import ComputeDriver
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.objects.instance import Instance

LOG = logging.getLogger(__name__)

#: The request line's first words; the version lets the line change later.
MAGIC = b"NUBES-CONSOLE 1 "
#: Longest request line read (a token is 43 characters; the rest is slack).
MAX_LINE = 512
#: Seconds a client has to send its request line.
HANDSHAKE_TIMEOUT = 10.0
#: Bytes copied per read.
CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy bytes both ways between two connections until one side ends."""
    one = asyncio.ensure_future(_pipe(a[0], b[1]))
    other = asyncio.ensure_future(_pipe(b[0], a[1]))
    try:
        await asyncio.wait({one, other}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (one, other):
            task.cancel()
        for _, writer in (a, b):
            with contextlib.suppress(Exception):
                writer.close()


class ConsoleRelay:
    """The listener (a service hook: started and stopped with the compute service)."""

    def __init__(
        self,
        host: str,
        driver: ComputeDriver,
        conductor: ConductorAPI,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.host = host
        self.driver = driver
        self.conductor = conductor
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the relay listens, once started."""
        if self.server is None or not self.server.sockets:
            return None
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.listen_host, self.listen_port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None
        for task in list(self._sessions):
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
        try:
            guest = await self._open(reader, writer)
            if guest is not None:
                await splice((reader, writer), guest)
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._sessions.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _open(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Read the request, have the conductor spend the token, connect to
        the guest; None (after an ERR line) when any of it fails."""
        try:
            line = await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT)
        except (TimeoutError, ValueError, ConnectionError, OSError):
            return None
        if not line.startswith(MAGIC) or len(line) > MAX_LINE or not line.endswith(b"\n"):
            await self._refuse(writer, "malformed request")
            return None
        token = line[len(MAGIC) :].strip().decode("ascii", errors="replace")
        try:
            opened = await self.conductor.open_console(RequestContext(), token)
            if opened["console_type"] != "novnc":
                raise exception.ConsoleTypeUnavailable(console_type=opened["console_type"])
            address, port = await self.driver.get_vnc_endpoint(
                Instance(uuid=opened["instance_uuid"])
            )
            guest = await asyncio.open_connection(address, port)
        except exception.NubesError as exc:
            LOG.info("Console refused on %s: %s", self.host, exc)
            await self._refuse(writer, exc.user_message())
            return None
        except OSError as exc:
            LOG.warning("Console of a guest on %s unreachable: %s", self.host, exc)
            await self._refuse(writer, "the guest's console does not answer")
            return None
        LOG.info("Console of %s opened on %s", opened["instance_uuid"], self.host)
        writer.write(b"OK\n")
        await writer.drain()
        return guest

    @staticmethod
    async def _refuse(writer: asyncio.StreamWriter, reason: str) -> None:
        with contextlib.suppress(Exception):
            writer.write(b"ERR " + reason.replace("\n", " ").encode()[:400] + b"\n")
            await writer.drain()
