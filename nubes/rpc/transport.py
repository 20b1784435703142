"""The transport interface: moving opaque bytes between services.

A transport knows nothing of RPC versions, methods or objects; it carries
bodies (``bytes``) to a :class:`Target` and, for calls, one reply back. The RPC
layer (:mod:`nubes.rpc.client`, :mod:`nubes.rpc.server`) builds on it.

Targets
    ``Target(topic)``                 one of the servers listening on the topic (load-balanced)
    ``Target(topic, server=name)``    that one server
    ``Target(topic, fanout=True)``    every server listening on the topic

Identity
    Every transport is opened with an identity, and every message it delivers
    carries the *sender's* identity as the transport verified it
    (:attr:`IncomingMessage.caller`). On ``memory://`` that is the identity the
    sending transport was opened with; on ``rabbit://`` it is the AMQP
    ``user_id`` property, which the broker checks against the authenticated
    connection. A transport that cannot verify who sent a message delivers it
    with ``caller=None`` and the RPC server refuses it.

Context
    Handlers run in a copy of the context that was current when
    :meth:`Transport.listen` was called, so services sharing one process
    (all-in-one, tests) keep their own context variables, such as the
    indirection API a compute host's objects use.

Delivery
    A cast returns once the bus holds the message (on rabbit: a publisher
    confirm for a persistent message in a durable queue). Messages are
    acknowledged only after the handler returned, so a consumer that dies
    mid-handler gets its message redelivered to another server.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote, urlsplit

from nubes import exception

#: Seconds a call waits for its reply unless the caller says otherwise.
DEFAULT_CALL_TIMEOUT = 60.0
#: Messages a listener handles at once (also the AMQP prefetch count).
DEFAULT_MAX_CONCURRENCY = 256
#: Seconds a stopping listener waits for handlers in flight before cancelling them.
DEFAULT_STOP_GRACE = 10.0
#: The largest message body (request or reply) a service sends or accepts.
#: Far above any legitimate message (a host's instance list, a request spec)
#: and far below what would let one sender exhaust a receiver's memory.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def check_size(body: bytes, what: str, limit: int = MAX_MESSAGE_BYTES) -> None:
    """Refuse a message body over ``limit`` bytes with a typed error."""
    if len(body) > limit:
        raise exception.TooLarge(what=what, size=len(body), limit=limit)


@dataclass(frozen=True, slots=True)
class Target:
    topic: str
    server: str | None = None
    fanout: bool = False

    def __post_init__(self) -> None:
        if not self.topic or not isinstance(self.topic, str):
            raise exception.ValidationError(field="topic", reason="must be a non-empty string")
        if self.fanout and self.server:
            raise exception.ValidationError(
                field="target", reason="a fanout target cannot also name a server"
            )

    def __str__(self) -> str:
        if self.fanout:
            return f"{self.topic} (fanout)"
        if self.server:
            return f"{self.topic}.{self.server}"
        return self.topic


@dataclass(slots=True)
class IncomingMessage:
    """One delivered message, as a handler sees it."""

    body: bytes
    #: Verified identity of the sender, or None when it could not be verified.
    caller: str | None
    #: Sends the reply of a call; None for casts.
    replier: Callable[[bytes], Awaitable[None]] | None = field(default=None, repr=False)

    @property
    def expects_reply(self) -> bool:
        return self.replier is not None

    async def reply(self, body: bytes) -> None:
        if self.replier is not None:
            await self.replier(body)


Handler = Callable[[IncomingMessage], Awaitable[None]]


class Listener(Protocol):
    async def stop(self) -> None:
        """Stop consuming; let handlers in flight finish (within a grace period).

        Messages whose handler did not finish are given back to the bus.
        """


@dataclass(frozen=True, slots=True)
class HostSpec:
    host: str
    port: int | None
    username: str | None
    password: str | None


@dataclass(frozen=True, slots=True)
class TransportURL:
    """``driver://[user:pass@]host[:port][,[user:pass@]host2[:port]]/[virtual_host][?query]``"""

    driver: str
    hosts: tuple[HostSpec, ...]
    virtual_host: str
    query: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> TransportURL:
        if not isinstance(url, str) or "://" not in url:
            raise exception.ConfigError(reason=f"transport_url {url!r} has no scheme")
        scheme, rest = url.split("://", 1)
        netloc, _, path = rest.partition("/")
        query: dict[str, str] = {}
        if "?" in path:
            path, _, qs = path.partition("?")
            for part in qs.split("&"):
                if part:
                    key, _, value = part.partition("=")
                    query[unquote(key)] = unquote(value)
        hosts = []
        for chunk in netloc.split(",") if netloc else []:
            parts = urlsplit(f"//{chunk}")
            try:
                port = parts.port
            except ValueError as exc:
                raise exception.ConfigError(reason=f"transport_url {url!r}: {exc}") from exc
            hosts.append(
                HostSpec(
                    host=parts.hostname or "",
                    port=port,
                    username=unquote(parts.username) if parts.username else None,
                    password=unquote(parts.password) if parts.password is not None else None,
                )
            )
        return cls(scheme.lower(), tuple(hosts), unquote(path), query)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What the bus says of one queue: messages waiting, consumers attached."""

    messages: int
    consumers: int


class Transport(abc.ABC):
    """Moves bytes between services. One per process and identity."""

    def __init__(self, url: TransportURL, identity: str) -> None:
        self.url = url
        self.identity = identity

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections. Calls made before this connect lazily."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every listener and drop connections. Pending calls fail."""

    @abc.abstractmethod
    async def call(self, target: Target, body: bytes, timeout: float, *, label: str = "") -> bytes:
        """Deliver ``body`` to one server of ``target`` and return its reply.

        Raises :class:`~nubes.exception.MessagingTimeout` when no reply came
        within ``timeout`` seconds and :class:`~nubes.exception.TransportError`
        (naming the hop) when the bus failed; never waits past ``timeout``.
        ``label`` names the call in those errors.
        """

    @abc.abstractmethod
    async def cast(
        self, target: Target, body: bytes, *, label: str = "", alone: bool = False
    ) -> None:
        """Deliver ``body`` without waiting for a handler; return once the bus holds it.

        A transport may carry several casts in one bus message (rabbit://
        batches; its own listeners unpack them). ``alone``: this one travels
        as a bus message of its own, for consumers outside nubes (the
        notifications a plain AMQP client reads).
        """

    @abc.abstractmethod
    async def listen(
        self,
        topic: str,
        server: str,
        handler: Handler,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> Listener:
        """Consume ``topic`` (shared), ``topic.server`` and the topic's fanout."""

    async def queue_stats(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        """Depth and consumers of each named queue that exists (others left out).

        For operators (``nubes/rpc/queue_sampler.py``): not every transport
        can tell, and one that cannot answers nothing.
        """
        return {}


def get_transport(url: str, identity: str | None = None, **options: object) -> Transport:
    """Open the transport a ``transport_url`` names (``memory://`` or ``rabbit://``)."""
    parsed = TransportURL.parse(url)
    if parsed.driver == "memory":
        from nubes.rpc.memory import MemoryTransport

        return MemoryTransport(parsed, identity or "nubes")
    if parsed.driver in ("rabbit", "amqp"):
        from nubes.rpc.rabbit import RabbitTransport

        return RabbitTransport(parsed, identity, **options)  # type: ignore[arg-type]
    raise exception.ConfigError(
        reason=f"transport_url scheme {parsed.driver!r} is not supported (memory://, rabbit://)"
    )
