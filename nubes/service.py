"""Running a nubes service: its transport, its RPC server, its lifetime.

A :class:`Service` is one binary (``conductor``, ``scheduler``, ``compute``,
...) on one host. It opens the transport under its own identity, serves its
manager's endpoints on ``topic`` and ``topic.host``, and stops cleanly: the
listener stops taking messages, handlers in flight finish, then the transport
closes. Several services can share one process (``all-in-one``, tests), each
with its own transport, so each keeps its own identity on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable

from oslo_config import cfg

from nubes.rpc.server import RPCServer
from nubes.rpc.transport import Transport, TransportURL, get_transport

LOG = logging.getLogger(__name__)

#: Binaries nubes runs, and the RPC topic each serves.
TOPICS = {
    "conductor": "conductor",
    "scheduler": "scheduler",
    "compute": "compute",
}


def service_identity(binary: str, host: str) -> str:
    """The bus identity of a service: ``<binary>.<host>``.

    On memory:// the transport is opened with it. On rabbit:// the identity
    is the broker user of the service's ``transport_url``, which the broker
    verifies; name broker users by this convention (``compute.<host>``) so
    the conductor knows which host is calling.
    """
    return f"{binary}.{host}"


def open_transport(conf: cfg.ConfigOpts, binary: str, host: str) -> Transport:
    """The transport ``conf`` names, opened as this service."""
    url = TransportURL.parse(conf.transport_url)
    if url.driver == "memory":
        return get_transport(conf.transport_url, identity=service_identity(binary, host))
    rabbit = conf.oslo_messaging_rabbit
    return get_transport(
        conf.transport_url,
        None,
        reconnect_backoff_min=rabbit.reconnect_backoff_min,
        reconnect_backoff_max=rabbit.reconnect_backoff_max,
        heartbeat_timeout=rabbit.heartbeat_timeout,
        prefetch_count=rabbit.prefetch_count,
        rpc_response_timeout=conf.rpc_response_timeout,
    )


class Service:
    def __init__(
        self,
        binary: str,
        host: str,
        transport: Transport,
        endpoints: Iterable[object] = (),
        *,
        topic: str | None = None,
    ) -> None:
        self.binary = binary
        self.host = host
        self.topic = topic or TOPICS.get(binary, binary)
        self.transport = transport
        self.rpcserver = RPCServer(self.transport, self.topic, host, list(endpoints))
        self._started = False

    async def start(self) -> None:
        await self.transport.connect()
        await self.rpcserver.start()
        self._started = True
        LOG.info(
            "%s on %s serving topic %s as %s",
            self.binary,
            self.host,
            self.topic,
            self.transport.identity,
        )

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self.rpcserver.stop()
        await self.transport.close()
        LOG.info("%s on %s stopped", self.binary, self.host)


async def run_until_signalled(services: list[Service], ready_message: str = "") -> None:
    """Start ``services``, wait for SIGINT/SIGTERM, stop them in reverse order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    started: list[Service] = []
    try:
        for svc in services:
            await svc.start()
            started.append(svc)
        if ready_message:
            print(ready_message, flush=True)
        await stop.wait()
    finally:
        for svc in reversed(started):
            await svc.stop()
