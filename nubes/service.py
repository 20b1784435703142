"""Running a nubes service: its transport, its RPC server, its heartbeat.

A :class:`Service` is one binary (``conductor``, ``scheduler``, ``compute``,
...) on one host. It opens the transport under its own identity, serves its
manager's endpoints on ``topic`` and ``topic.host``, reports liveness every
``report_interval`` seconds, and stops cleanly: the listener stops taking
messages, handlers in flight finish, then the transport closes.

Several services can share a process (``all-in-one``, tests, a fleet of fake
hosts). Each runs in a context of its own, so a compute host's objects reach
the conductor under that host's identity while the conductor next to it runs
the same objects' methods against the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import os
import random
import signal
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import quote

from oslo_config import cfg

from nubes import access, exception, versions
from nubes.context import get_admin_context
from nubes.objects.base import IndirectionAPI, use_indirection_api
from nubes.objects.serializer import ObjectSerializer
from nubes.objects.service import Service as ServiceRecord
from nubes.rpc.server import RPCServer
from nubes.rpc.transport import Transport, TransportURL, get_transport

LOG = logging.getLogger(__name__)

#: Binaries nubes runs, and the RPC topic each serves.
TOPICS = {
    "conductor": "conductor",
    "scheduler": "scheduler",
    "compute": "compute",
}
#: Version of the service code, recorded with each service row; the oldest
#: one running bounds what newer services send (rolling upgrades, see
#: :mod:`nubes.versions`).
SERVICE_VERSION = versions.SERVICE_VERSION
DEFAULT_REPORT_INTERVAL = 10.0
#: Longest wait between heartbeat attempts while the conductor or the bus is
#: away. Short on purpose: heartbeats are how the scheduler knows a host is
#: up, so after an outage longer than ``service_down_time`` every host looks
#: down until its next beat, and builds arriving then find no valid host. A
#: host whose conductor is back beats again within this many seconds.
HEARTBEAT_BACKOFF_MAX = 2.0
#: Seconds a stopping service waits for its heartbeat loop to end.
HEARTBEAT_STOP_GRACE = 5.0
#: Failures that mean "the conductor or database is away": retried quietly.
_AWAY = exception.TRANSIENT_ERRORS
#: ... or not answering in time.
_AWAY_OR_SLOW: tuple[type[Exception], ...] = (*_AWAY, TimeoutError)
#: Garbage collector thresholds of a service process. CPython's (700, 10, 10)
#: collect the young generation every 700 net container allocations and the
#: whole heap every hundred or so of those; a service handles hundreds of
#: messages and task steps at once, each holding its containers across a few
#: awaits, so at that rate most of them are traced (and promoted) while still
#: in use, and a busy conductor spent about a third of its CPU collecting.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Collect garbage at :data:`GC_THRESHOLDS` (unless set less often already).

    Once per process, before it serves; cycles are still collected, later.
    """
    current = gc.get_threshold()
    if current[0] and current[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)


class ServiceHook(Protocol):
    """Work a service starts once it listens and stops before it stops
    listening (a compute host's repair and periodic reports)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def service_identity(binary: str, host: str) -> str:
    """The bus identity of a service: ``<binary>.<host>``.

    On memory:// the transport is opened with it. On rabbit:// the identity
    is the broker user of the service's ``transport_url``, which the broker
    verifies; name broker users by this convention (``compute.<host>``) so
    the conductor knows which host is calling.
    """
    return f"{binary}.{host}"


def transport_url_for(conf: cfg.ConfigOpts, host: str) -> str:
    """``transport_url`` with ``{host}`` replaced by this service's host.

    A fleet of hosts in one process (``nubes compute --fake-hosts N``) needs
    one broker user per host on rabbit://, so each is identified as itself:
    ``rabbit://compute.{host}:secret@broker/`` gives each its own login.
    """
    return conf.transport_url.replace("{host}", quote(host, safe=""))


def open_transport(conf: cfg.ConfigOpts, binary: str, host: str) -> Transport:
    """The transport ``conf`` names, opened as this service."""
    url_text = transport_url_for(conf, host)
    url = TransportURL.parse(url_text)
    if url.driver == "memory":
        return get_transport(url_text, identity=service_identity(binary, host))
    rabbit = conf.oslo_messaging_rabbit
    return get_transport(
        url_text,
        None,
        reconnect_backoff_min=rabbit.reconnect_backoff_min,
        reconnect_backoff_max=rabbit.reconnect_backoff_max,
        heartbeat_timeout=rabbit.heartbeat_timeout,
        prefetch_count=rabbit.prefetch_count,
        quorum_queues=rabbit.rabbit_quorum_queue,
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
        indirection_api: IndirectionAPI | None = None,
        report_interval: float | None = DEFAULT_REPORT_INTERVAL,
        hooks: Iterable[ServiceHook] = (),
        rules: access.MethodRules | None = None,
        drain_timeout: float = 0.0,
    ) -> None:
        self.binary = binary
        #: Seconds its hooks may take to finish their work when it stops
        #: (the conductor's ``[conductor] drain_timeout``), on top of STOP_TIMEOUT.
        self.drain_timeout = drain_timeout
        endpoints = list(endpoints)
        #: The objects whose methods the service serves (its managers).
        self.endpoints = endpoints
        self.hooks = list(hooks)
        self.host = host
        self.topic = topic or TOPICS.get(binary, binary)
        self.transport = transport
        self.rpcserver = RPCServer(
            transport,
            self.topic,
            host,
            endpoints,
            serializer=ObjectSerializer(),
            rules=rules if rules is not None else access.for_endpoints(endpoints),
        )
        self.report_interval = report_interval
        self.record: ServiceRecord | None = None
        self._context = contextvars.copy_context()
        if indirection_api is not None:
            self._context.run(use_indirection_api, indirection_api)
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.started = False

    async def start(self) -> None:
        # Started in the service's own context: the listener and the
        # heartbeat keep it, whatever context the caller runs in.
        await asyncio.create_task(self._start(), context=self._context.copy())

    async def _start(self) -> None:
        await self.transport.connect()
        await self.rpcserver.start()
        for hook in self.hooks:
            await hook.start()
        if self.report_interval:
            self._heartbeat = asyncio.create_task(self._report_state(self.report_interval))
        self.started = True
        LOG.info(
            "%s on %s serving topic %s as %s",
            self.binary,
            self.host,
            self.topic,
            self.transport.identity,
        )

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        self._stopping.set()
        if self._heartbeat is not None:
            # The loop also watches _stopping: a cancel that lands as its
            # heartbeat completes can be lost (Python 3.11's wait_for), and
            # the stop must not wait on it forever.
            self._heartbeat.cancel()
            await asyncio.wait({self._heartbeat}, timeout=HEARTBEAT_STOP_GRACE)
        for hook in reversed(self.hooks):
            await hook.stop()
        await self.rpcserver.stop()
        await self.transport.close()
        LOG.info("%s on %s stopped", self.binary, self.host)

    async def _ensure_record(self) -> ServiceRecord:
        ctxt = get_admin_context()
        try:
            record = await ServiceRecord.get_by_host_and_binary(ctxt, self.host, self.binary)
        except exception.ServiceNotFound:
            record = ServiceRecord(
                host=self.host, binary=self.binary, topic=self.topic, version=SERVICE_VERSION
            )
            try:
                await record.create(ctxt)
            except exception.DBDuplicateEntry:
                # Another copy of this service on the same host won the race.
                record = await ServiceRecord.get_by_host_and_binary(ctxt, self.host, self.binary)
        if record.version != SERVICE_VERSION:
            record.version = SERVICE_VERSION
            await record.save(ctxt)
        return record

    async def report_state(self) -> None:
        """One heartbeat: the service row exists and says we are alive now."""
        if self.record is None:
            self.record = await self._ensure_record()
        await self.record.heartbeat(get_admin_context())

    async def _report_state(self, interval: float) -> None:
        backoff = min(1.0, interval)
        away = False
        limit = max(interval, 5.0)
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(limit):
                    await self.report_state()
            except asyncio.CancelledError:
                raise
            except exception.ServiceTooOld as exc:
                # No retry can help: this code must be upgraded first.
                LOG.error("%s on %s refused by the conductor: %s", self.binary, self.host, exc)
                return
            except _AWAY_OR_SLOW as exc:
                if not away:
                    # Once, not on every beat: a conductor outage would
                    # otherwise flood the log of every host.
                    LOG.warning(
                        "%s on %s cannot report liveness (%s); retrying with backoff",
                        self.binary,
                        self.host,
                        # A timeout has no text of its own: say what it was.
                        str(exc) or f"{type(exc).__name__}: no answer within {limit:.0f} s",
                    )
                    away = True
                delay = random.uniform(backoff / 2, backoff)
                backoff = min(backoff * 2, HEARTBEAT_BACKOFF_MAX)
            except Exception:
                LOG.exception("%s on %s: heartbeat failed", self.binary, self.host)
                delay = interval
            else:
                if away:
                    LOG.info("%s on %s reports liveness again", self.binary, self.host)
                    away = False
                backoff = min(1.0, interval)
                delay = interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()


#: Seconds one service may take to stop before the rest go on without it.
STOP_TIMEOUT = 20.0


async def run_until_signalled(services: list[Service], ready: asyncio.Event | None = None) -> None:
    """Start ``services``, wait for SIGINT/SIGTERM, stop them in reverse order.

    A second signal while stopping exits at once: an operator who presses
    Ctrl-C twice means it, and the durable tasks and broker redelivery make
    an abrupt stop safe.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            LOG.warning("second signal: exiting without waiting for services to stop")
            os._exit(1)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    started: list[Service] = []
    try:
        for svc in services:
            await svc.start()
            started.append(svc)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for svc in reversed(started):
            limit = STOP_TIMEOUT + svc.drain_timeout
            try:
                await asyncio.wait_for(svc.stop(), limit)
            except TimeoutError:
                LOG.error(
                    "%s on %s did not stop within %s s; going on without it",
                    svc.binary,
                    svc.host,
                    limit,
                )
