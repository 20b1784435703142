"""The console proxy: nova-novncproxy's part in nubes.

A browser (noVNC) opens a websocket to the proxy with the token of a console
URL (``?token=...``, or a ``token`` cookie). The proxy looks the token up
(hashed, unexpired: ``db/api/consoles.py``) to learn which compute host's
console relay to connect to, hands the relay the token, and the relay has
the conductor spend it for one of that host's own guests before it connects
on to the guest's VNC server (``nubes/compute/console_relay.py``). Then bytes
flow both ways: websocket binary messages to the relay and back.

What the proxy refuses before the websocket opens (HTTP 403): no token, an
unknown, expired or spent one, an ``Origin`` that is neither the proxy
itself nor the host of ``[vnc] novncproxy_base_url`` (a page elsewhere must
not drive a user's browser into a console), and a relay that refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from pathlib import Path
from typing import Any

from oslo_config import cfg
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from nubes.compute.console_relay import CHUNK, HANDSHAKE_TIMEOUT, MAGIC
from nubes.db.api import consoles
from nubes.db.engine import Database

LOG = logging.getLogger(__name__)

#: Longest relay answer line read.
MAX_ANSWER = 512


def _origin_allowed(websocket: WebSocket, base_url: str) -> bool:
    origin = websocket.headers.get("origin")
    if not origin:
        # Not a browser page (a command-line client): nothing to forge.
        return True
    origin_host = urllib.parse.urlsplit(origin).hostname
    allowed = {urllib.parse.urlsplit(base_url).hostname}
    host_header = websocket.headers.get("host", "")
    allowed.add(urllib.parse.urlsplit(f"//{host_header}").hostname)
    return origin_host is not None and origin_host in allowed


async def _open_relay(
    host: str, port: int, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
    """Connect to a host's console relay and present ``token``: the open
    connection, or the reason it refused."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), HANDSHAKE_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        return f"the host's console relay at {host}:{port} does not answer ({exc})"
    try:
        writer.write(MAGIC + token.encode("ascii", errors="replace") + b"\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        writer.close()
        return f"the host's console relay failed ({exc})"
    if answer != b"OK\n":
        writer.close()
        return answer[:MAX_ANSWER].decode("utf-8", errors="replace").strip() or "relay closed"
    return reader, writer


class ConsoleProxy:
    """The proxy's ASGI app over one database."""

    def __init__(self, conf: cfg.ConfigOpts, db: Database) -> None:
        self.conf = conf
        self.db = db

    def app(self) -> Starlette:
        routes: list[BaseRoute] = [
            WebSocketRoute("/", self.websocket),
            WebSocketRoute("/websockify", self.websocket),
        ]
        web = self.conf.vnc.web
        if web and Path(web).is_dir():
            # The noVNC client itself (Debian's novnc package), as nova-novncproxy serves it.
            routes.append(Mount("/", StaticFiles(directory=web, html=True)))
        return Starlette(routes=routes)

    async def websocket(self, websocket: WebSocket) -> None:
        token = websocket.query_params.get("token") or websocket.cookies.get("token")
        if not token:
            await websocket.close(code=1008, reason="no console token")
            return
        if not _origin_allowed(websocket, self.conf.vnc.novncproxy_base_url):
            LOG.warning("Console refused: origin %s", websocket.headers.get("origin"))
            await websocket.close(code=1008, reason="origin not allowed")
            return
        async with self.db.reader() as conn:
            row = await consoles.get_valid(conn, token)
        if row is None:
            LOG.info("Console refused: invalid, expired or spent token")
            await websocket.close(code=1008, reason="invalid token")
            return
        opened = await _open_relay(row["host"], row["port"], token)
        if isinstance(opened, str):
            LOG.info("Console of %s refused: %s", row["instance_uuid"], opened)
            await websocket.close(code=1008, reason=opened[:120])
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="binary" if "binary" in offered else None)
        LOG.info("Console of %s open", row["instance_uuid"])
        await self._splice(websocket, *opened)

    @staticmethod
    async def _splice(
        websocket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def to_guest() -> None:
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    data = message.get("bytes")
                    if data is None and message.get("text") is not None:
                        data = message["text"].encode()
                    if data:
                        writer.write(data)
                        await writer.drain()

        async def to_browser() -> None:
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                while data := await reader.read(CHUNK):
                    await websocket.send_bytes(data)

        tasks = [asyncio.ensure_future(to_guest()), asyncio.ensure_future(to_browser())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await websocket.close()


class ConsoleProxyServer:
    """Serves :class:`ConsoleProxy` on ``[vnc] novncproxy_host:novncproxy_port``
    with uvicorn (a service hook: ``start``/``stop``)."""

    def __init__(self, conf: cfg.ConfigOpts, db: Database, *, follow_port: bool = False) -> None:
        self.conf = conf
        self.proxy = ConsoleProxy(conf, db)
        #: Point console URLs at the port bound ([vnc] novncproxy_base_url's
        #: default, not a configured one): all-in-one on any free port.
        self.follow_port = follow_port
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> None:
        import uvicorn

        from nubes.api.server import GRACEFUL_TIMEOUT, bind_socket, quiet_server

        sock = bind_socket(self.conf.vnc.novncproxy_host, self.conf.vnc.novncproxy_port)
        self.port = sock.getsockname()[1]
        if self.follow_port:
            host = self.conf.vnc.novncproxy_host
            self.conf.set_default(
                "novncproxy_base_url", f"http://{host}:{self.port}/vnc_auto.html", group="vnc"
            )
        config = uvicorn.Config(
            self.proxy.app(),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
            server_header=False,
            ws="websockets-sansio",
        )
        self._server = quiet_server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="console-proxy")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                return
            await asyncio.sleep(0.01)
        LOG.info("Console proxy listening on ws://%s:%d", self.conf.vnc.novncproxy_host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._server = self._task = None
