"""Running the API: uvicorn servers inside the caller's event loop.

:class:`ApiServer` is a service hook (see :class:`nubes.service.Service`): the
``api`` service opens its bus connection (identity ``api.<host>``), then the
hook binds the port(s) and serves until the service stops. Sockets are bound
here, not by uvicorn, so a port in use is a clear error at start instead of
uvicorn exiting the process; uvicorn's own signal handling is switched off,
the service runner owns Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from oslo_config import cfg

from nubes import exception
from nubes.api.app import SERVICES, build_app, build_dashboard_app
from nubes.api.state import ApiState
from nubes.db.engine import Database
from nubes.rpc.transport import Transport

LOG = logging.getLogger(__name__)

#: Seconds to wait for in-flight requests when stopping.
GRACEFUL_TIMEOUT = 5


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        return


def quiet_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server that leaves signals to the service runner."""
    return _Server(config)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise exception.ConfigError(reason=f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class ApiServer:
    """The HTTP side of the api service: one port for all, plus optional per-service ports."""

    def __init__(self, conf: cfg.ConfigOpts, db: Database, transport: Transport | None) -> None:
        self.conf = conf
        self.state = ApiState(conf=conf, db=db, transport=transport)
        self._servers: list[tuple[_Server, asyncio.Task[None], socket.socket]] = []
        self._caps: asyncio.Task[None] | None = None

    def _listeners(self) -> list[tuple[int, tuple[str, ...]]]:
        api = self.conf.api
        out: list[tuple[int, tuple[str, ...]]] = [(int(api.bind_port), SERVICES)]
        for name in SERVICES:
            port = getattr(api, f"{name}_port")
            if port:
                out.append((int(port), (name,)))
        if self.conf.dashboard.enabled and self.conf.dashboard.port:
            out.append((int(self.conf.dashboard.port), ("dashboard",)))
        return out

    @property
    def ports(self) -> list[int]:
        return [sock.getsockname()[1] for _, _, sock in self._servers]

    async def start(self) -> None:
        # Capped before the first request can send anything.
        await self.state.refresh_caps()
        self._caps = asyncio.create_task(self.state.follow_caps(), name="api-rpc-caps")
        host = self.conf.api.bind_host
        for port, only in self._listeners():
            sock = bind_socket(host, port)
            app = (
                build_dashboard_app(self.state)
                if only == ("dashboard",)
                else build_app(self.state, only=only)
            )
            config = uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
                server_header=False,
            )
            server = _Server(config)
            task = asyncio.create_task(server.serve(sockets=[sock]), name=f"api:{port}")
            self._servers.append((server, task, sock))
            while not server.started:
                if task.done():
                    task.result()
                    raise exception.ConfigError(reason=f"API server on port {port} did not start")
                await asyncio.sleep(0.01)
            LOG.info("API listening on http://%s:%d (%s)", host, port, ", ".join(only))

    async def stop(self) -> None:
        if self._caps is not None:
            self._caps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._caps
            self._caps = None
        for server, _, _ in self._servers:
            server.should_exit = True
        for _, task, sock in self._servers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            sock.close()
        self._servers.clear()


def api_service(conf: cfg.ConfigOpts, host: str) -> Any:
    """The ``api`` service: its bus identity, a heartbeat, and the HTTP server hook."""
    from nubes.db import engine
    from nubes.service import Service, open_transport

    transport = open_transport(conf, "api", host)
    server = ApiServer(conf, engine.get_database(), transport)
    svc = Service("api", host, transport, [], hooks=[server], report_interval=conf.report_interval)
    svc.api_server = server  # type: ignore[attr-defined]
    return svc
