"""One supervised AMQP connection to RabbitMQ, kept up across broker restarts.

:class:`BrokerConnection` owns a background task that opens a connection to
one of the URL's hosts, asks its owner to build what it needs on it (channels,
topology, consumers) and then waits for the connection to drop. When it drops,
the owner is told at once (so calls waiting for replies can fail fast) and the
task reconnects with exponential backoff and full jitter, trying the hosts in
turn. The loss is logged once and the recovery once; single attempts only at
debug level, so a long outage does not flood the log.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar
from urllib.parse import quote

import aiormq
import aiormq.exceptions

from nubes import exception
from nubes.rpc.rabbit_socket import DEFAULT_PORT, CoalescingWriter, FastPathTCP
from nubes.rpc.transport import HostSpec, TransportURL

LOG = logging.getLogger(__name__)

#: First wait (seconds) before reconnecting; doubles per round of failed hosts.
DEFAULT_RECONNECT_BACKOFF_MIN = 0.2
#: Longest wait (seconds) between reconnection rounds. Short on purpose: a
#: service must be back on the bus within ~2 s of the broker answering again
#: (a round costs one refused TCP connect per host, so polling each second
#: during an outage is cheap, even for a few hundred services).
DEFAULT_RECONNECT_BACKOFF_MAX = 1.0
#: AMQP heartbeat in seconds (0 switches heartbeats off).
DEFAULT_HEARTBEAT = 60
#: Seconds one connection attempt (TCP + AMQP handshake + owner setup) may take.
DEFAULT_CONNECT_ATTEMPT_TIMEOUT = 10.0
#: RabbitMQ's default account, used when the URL names no user (as oslo.messaging does).
DEFAULT_USERNAME = "guest"
DEFAULT_PASSWORD = "guest"

T = TypeVar("T")


def host_label(host: HostSpec) -> str:
    return f"{host.host or 'localhost'}:{host.port or DEFAULT_PORT}"


def amqp_url(host: HostSpec, virtual_host: str, heartbeat: int) -> str:
    user = quote(host.username or DEFAULT_USERNAME, safe="")
    password = quote(host.password if host.password is not None else DEFAULT_PASSWORD, safe="")
    # An empty path means the default vhost "/"; any other name travels quoted
    # so that a vhost containing "/" survives yarl's path handling.
    vhost = quote(virtual_host, safe="") if virtual_host else ""
    return (
        f"amqp://{user}:{password}@{host.host or 'localhost'}:{host.port or DEFAULT_PORT}"
        f"/{vhost}?heartbeat={int(heartbeat)}"
    )


def is_auth_failure(exc: BaseException | None) -> bool:
    return isinstance(
        exc,
        aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError,
    )


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection closed"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


class BrokerConnection(Generic[T]):
    """Keeps one connection up and hands the owner a fresh session ``T`` on each.

    ``setup(connection, hop, writer)`` builds the owner's session on a new
    connection (an exception makes the attempt count as failed); ``writer``
    is the connection's socket writer (for frames the owner encodes itself,
    and its read fast path).
    ``lost(session, exc)`` is called synchronously the moment that connection
    is gone.
    """

    def __init__(
        self,
        url: TransportURL,
        *,
        setup: Callable[[aiormq.Connection, str, CoalescingWriter], Awaitable[T]],
        lost: Callable[[T, BaseException | None], None],
        backoff_min: float = DEFAULT_RECONNECT_BACKOFF_MIN,
        backoff_max: float = DEFAULT_RECONNECT_BACKOFF_MAX,
        heartbeat: int = DEFAULT_HEARTBEAT,
        attempt_timeout: float = DEFAULT_CONNECT_ATTEMPT_TIMEOUT,
    ) -> None:
        self._hosts = url.hosts or (HostSpec("localhost", None, None, None),)
        self._vhost = url.virtual_host
        self._setup = setup
        self._lost = lost
        self._backoff_min = backoff_min
        self._backoff_max = max(backoff_max, backoff_min)
        self._heartbeat = heartbeat
        self._attempt_timeout = attempt_timeout
        self._next_host = 0
        #: The session on the live connection, None while disconnected.
        self.session: T | None = None
        self.hop = host_label(self._hosts[0])
        self.last_error: BaseException | None = None
        self.ever_connected = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connection: aiormq.Connection | None = None
        #: Connections being closed by drop() (also keeps their closing tasks alive).
        self._dropping: set[aiormq.Connection] = set()
        self._closed = False

    @property
    def hops(self) -> str:
        return ",".join(host_label(h) for h in self._hosts)

    def start(self) -> None:
        if self._closed:
            raise exception.TransportError(hop=f"broker {self.hops}", reason="transport closed")
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"nubes-rabbit-{self.hops}"
            )

    async def wait(self, deadline: float, what: str, stale: T | None = None) -> T:
        """The live session, waiting (until the monotonic ``deadline``) for one.

        ``stale`` is a session the caller saw fail: wait for its replacement.
        """
        while True:
            if self.session is not None and self.session is not stale:
                return self.session
            self.start()
            if not self.ever_connected and is_auth_failure(self.last_error):
                # Retrying a refused login only delays the obvious error.
                raise exception.TransportError(
                    hop=f"broker {self.hop}", reason=f"login refused: {describe(self.last_error)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not self.ever_connected:
                    # Nobody will use a transport that never came up; stop
                    # retrying in the background (the next use starts again).
                    await self.stop()
                raise exception.TransportError(
                    hop=f"broker {self.hops}",
                    reason=f"not connected ({what}); last error from {self.hop}: "
                    f"{describe(self.last_error)}",
                )
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def _notify(self) -> None:
        self._changed.set()

    def _backoff(self, failed_rounds: int) -> float:
        cap = min(self._backoff_max, self._backoff_min * (2 ** max(failed_rounds - 1, 0)))
        return random.uniform(self._backoff_min, cap)

    async def _attempt(self, host: HostSpec) -> tuple[aiormq.Connection, T]:
        hop = host_label(host)
        factory = FastPathTCP()
        conn = aiormq.Connection(
            amqp_url(host, self._vhost, self._heartbeat), transport_factory=factory
        )
        try:
            async with asyncio.timeout(self._attempt_timeout):
                await conn.connect()
                assert factory.writer is not None
                session = await self._setup(conn, hop, factory.writer)
        except BaseException:
            await _close_quietly(conn)
            raise
        return conn, session

    async def _supervise(self) -> None:
        failed_rounds = 0
        attempts = 0
        lost_at: float | None = None
        try:
            while not self._closed:
                host = self._hosts[self._next_host % len(self._hosts)]
                self._next_host += 1
                self.hop = host_label(host)
                try:
                    conn, session = await self._attempt(host)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    attempts += 1
                    self.last_error = exc
                    LOG.debug("Connecting to broker %s failed: %s", self.hop, describe(exc))
                    self._notify()
                    if self._next_host % len(self._hosts) == 0:
                        failed_rounds += 1
                        await asyncio.sleep(self._backoff(failed_rounds))
                    continue
                self._connection = conn
                self.session = session
                self.ever_connected = True
                self.last_error = None
                if lost_at is not None:
                    LOG.info(
                        "Reconnected to broker %s after %.1f s (%d failed attempts)",
                        self.hop,
                        time.monotonic() - lost_at,
                        attempts,
                    )
                failed_rounds = attempts = 0
                lost_at = None
                self._notify()

                closing = conn.closing
                await asyncio.wait([closing])
                cause = None if closing.cancelled() else closing.exception()
                self.session = None
                self._connection = None
                self.last_error = cause
                self._lost(session, cause)
                self._notify()
                if self._closed:
                    break
                lost_at = time.monotonic()
                LOG.warning(
                    "Lost connection to broker %s: %s; reconnecting", self.hop, describe(cause)
                )
        finally:
            if self.session is not None:
                session, self.session = self.session, None
                self._lost(session, None)
            conn_left, self._connection = self._connection, None
            if conn_left is not None:
                await _close_quietly(conn_left)

    def drop(self, reason: BaseException) -> None:
        """Force the live connection closed (e.g. after a channel failed); it reconnects."""
        conn = self._connection
        if conn is not None and not conn.is_closed and conn not in self._dropping:
            self._dropping.add(conn)
            task = asyncio.get_running_loop().create_task(_close_quietly(conn, reason))
            task.add_done_callback(lambda _: self._dropping.discard(conn))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        await self.stop()
        self._notify()


async def _close_quietly(conn: aiormq.Connection, reason: BaseException | None = None) -> None:
    try:
        await conn.close(reason)
    except Exception as exc:  # the socket may already be gone; nothing left to free
        LOG.debug("Closing broker connection: %s", describe(exc))
