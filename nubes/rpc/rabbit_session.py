"""What the rabbit transport holds on one live connection, and its listeners.

A :class:`Session` lives exactly as long as one AMQP connection: after a
reconnect the transport builds a new one (new channels, topology declared
again). Hot-path frames (publishes, acks) are encoded by
:mod:`nubes.rpc.rabbit_wire` and written straight to the connection's socket;
deliveries and publisher confirms come back through the read fast path of
:mod:`nubes.rpc.rabbit_socket`. aiormq does the rest.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import aiormq
import aiormq.abc
import aiormq.exceptions
from aiormq.channel import Channel

from nubes import exception
from nubes.rpc import rabbit_wire as wire
from nubes.rpc.rabbit_connection import describe
from nubes.rpc.rabbit_socket import CoalescingWriter, Consumer, Delivery, from_aiormq
from nubes.rpc.transport import Handler, IncomingMessage, Target

LOG = logging.getLogger(__name__)

#: The exchange every topic and topic.server queue is bound to. A *topic*
#: exchange, because RabbitMQ restricts the routing keys a user may publish
#: and bind only on topic exchanges (topic permissions, see
#: nubes/rpc/rabbit_access.py). Every binding key is a literal name (no ``*``
#: or ``#``: :func:`routing_key` refuses them), so it routes exactly as a
#: direct exchange would. A new name: the old direct ``nubes`` exchange
#: cannot be redeclared as a topic one.
EXCHANGE = "nubes_topic"
EXCHANGE_TYPE = "topic"
#: Routing-key prefix of a caller's own reply queue on :data:`EXCHANGE`, for
#: replies from services that may not publish on the default exchange
#: (compute hosts: that exchange reaches every queue by name).
REPLY_PREFIX = "reply."
#: Characters with a meaning in topic binding keys.
_WILDCARDS = frozenset("*#")
#: AMQP's default frame size limit, if the broker named none.
DEFAULT_FRAME_MAX = 131072
#: Method frames kept per session; reply addresses are per caller channel, so
#: the cache is only cleared, never allowed to grow without bound.
MAX_CACHED_METHODS = 4096

CONNECTION_ERRORS = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
)

#: The broker said no to what was asked (rights, arguments, missing entity):
#: asking again gets the same answer, unlike a closed connection.
#: Seconds between tries to subscribe again after the broker cancelled a consumer.
HEAL_BACKOFF_MIN = 0.2
HEAL_BACKOFF_MAX = 5.0

REFUSALS = (
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelNotFoundEntity,
    aiormq.exceptions.ChannelLockedResource,
    aiormq.exceptions.ChannelPreconditionFailed,
)

Replier = Callable[[str, str, bytes], Awaitable[None]]
ChannelFailed = Callable[["Session", "asyncio.Future[Any]", str], None]


def fanout_exchange(topic: str) -> str:
    return f"{topic}_fanout"


def queue_name(target: Target) -> str:
    """The queue of ``target``, which is also its (literal) routing key."""
    return routing_key(f"{target.topic}.{target.server}" if target.server else target.topic)


def routing_key(name: str) -> str:
    """``name`` as a routing key, refused if a topic exchange would read it as a pattern."""
    if not _WILDCARDS.isdisjoint(name):
        raise exception.ValidationError(
            field="target", reason=f"{name!r}: '*' and '#' are not allowed in topics and servers"
        )
    return name


def wants_quorum(option: bool | None, brokers: int) -> bool:
    """Whether the durable topic queues are quorum queues.

    ``[oslo_messaging_rabbit] rabbit_quorum_queue`` decides; unset, they are
    when the transport_url names several brokers (a cluster): a classic
    queue lives on one node and its messages are unreachable while that
    node is down, a quorum queue is replicated (Raft) and keeps serving
    while a majority of its nodes is up.
    """
    return brokers > 1 if option is None else option


def queue_arguments(quorum: bool) -> dict[str, Any]:
    """The declaration arguments of a durable topic queue (empty: classic)."""
    return {"x-queue-type": "quorum"} if quorum else {}


async def declare_queue(
    channel: Channel, name: str, *, passive: bool = False, quorum: bool = False
) -> None:
    # Senders and listeners must declare with identical arguments, or the
    # broker refuses the second declaration with PRECONDITION_FAILED; a
    # passive check compares no arguments, so it needs none.
    if passive:
        # A least-privilege user (a compute host) may not configure shared
        # topology: it only checks that the operator created the queue
        # (nubes-manage broker add-host), and the broker's NOT_FOUND says so.
        await channel.queue_declare(name, durable=True, passive=True)
        return
    await channel.queue_declare(name, durable=True, arguments=queue_arguments(quorum))
    await channel.queue_bind(name, EXCHANGE, routing_key=routing_key(name))


async def declare_fanout(channel: Channel, topic: str, *, passive: bool = False) -> None:
    await channel.exchange_declare(
        fanout_exchange(topic), exchange_type="fanout", durable=True, passive=passive
    )


async def open_channel(conn: aiormq.Connection) -> Channel:
    # Confirms, where wanted, are switched on and tracked by the fast path,
    # not by aiormq.
    return cast(Channel, await conn.channel(publisher_confirms=False))


async def consume(
    writer: CoalescingWriter,
    channel: Channel,
    queue: str,
    consumer: Consumer,
    *,
    no_ack: bool = False,
) -> str:
    """Consume ``queue``, deliveries going to ``consumer``; returns the consumer tag."""
    tag = f"nubes.{uuid.uuid4().hex}"
    # Registered before the broker can deliver anything to the tag.
    writer.fastpath.consume(tag, consumer)

    async def via_aiormq(message: aiormq.abc.DeliveredMessage) -> None:
        consumer(from_aiormq(message))

    try:
        await channel.basic_consume(queue, via_aiormq, no_ack=no_ack, consumer_tag=tag)
    except BaseException:
        writer.fastpath.forget(tag)
        raise
    return tag


async def close_channel(channel: Channel) -> None:
    try:
        await channel.close()
    except Exception as exc:  # already closed with its connection
        LOG.debug("Closing channel: %s", describe(exc))


class Session:
    def __init__(
        self,
        conn: aiormq.Connection,
        hop: str,
        writer: CoalescingWriter,
        fast: Channel,
        safe: Channel,
        admin: Channel,
        *,
        passive: bool = False,
        quorum: bool = False,
    ) -> None:
        self.conn = conn
        #: Declare the durable topic queues as quorum queues (see wants_quorum).
        self.quorum = quorum
        #: Only check that shared queues and exchanges exist, never declare
        #: them (the broker user may not; see nubes/rpc/rabbit_access.py).
        self.passive = passive
        self.hop = hop
        self.writer = writer
        # 0 would mean "no limit"; RabbitMQ always sets one, but stay sane.
        self.frame_max: int = conn.connection_tune.frame_max or DEFAULT_FRAME_MAX
        #: No confirms: call requests, replies, and the direct reply-to consumer.
        self.fast = fast
        #: Confirm mode: casts.
        self.safe = safe
        self.confirms = writer.fastpath.track_confirms(safe.number)
        #: Declarations made by senders; kept apart so a refused declaration
        #: cannot close a channel that carries messages.
        self.admin = admin
        #: The routing key of this connection's own reply queue on EXCHANGE
        #: (controllers, for calls to compute hosts), or None.
        self.reply_key: str | None = None
        #: Queue or fanout exchange names declared on this connection.
        self.declared: set[str] = set()
        self._declaring: dict[str, asyncio.Future[None]] = {}
        self._admin_lock = asyncio.Lock()
        self._methods: dict[tuple[int, str, str], bytes] = {}

    def write(self, channel: Channel, frames: bytes) -> None:
        if channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"channel {channel.number} closed")
        self.writer.write(frames)

    def _method(self, channel: int, exchange: str, routing_key: str) -> bytes:
        key = (channel, exchange, routing_key)
        frame = self._methods.get(key)
        if frame is None:
            if len(self._methods) >= MAX_CACHED_METHODS:
                self._methods.clear()
            frame = self._methods[key] = wire.publish_method(channel, exchange, routing_key)
        return frame

    def publish(
        self, channel: Channel, exchange: str, routing_key: str, properties: bytes, body: bytes
    ) -> None:
        """Send one message on a channel without confirms."""
        number = channel.number
        self.write(
            channel,
            self._method(number, exchange, routing_key)
            + wire.content_frames(number, properties, body, self.frame_max),
        )

    def publish_confirmed(
        self, exchange: str, routing_key: str, properties: bytes, body: bytes
    ) -> asyncio.Future[None]:
        """Send one message on the confirm channel; the future resolves on the
        broker's ack (fails on a nack, or when the channel or connection goes)."""
        # The broker numbers publishes per channel from 1; nothing awaits
        # between writing and numbering, so frames go out in numbering order.
        self.publish(self.safe, exchange, routing_key, properties, body)
        confirmation: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirms.expect(confirmation)
        return confirmation

    def fail(self, exc: BaseException) -> None:
        """The connection or the confirm channel is gone: unconfirmed casts fail."""
        self.confirms.fail(exc)

    async def declare(self, target: Target) -> None:
        name = fanout_exchange(target.topic) if target.fanout else queue_name(target)
        if name in self.declared:
            return
        # Many casts to a new target at once share one declaration.
        fut = self._declaring.get(name)
        if fut is None:
            fut = self._declaring[name] = asyncio.ensure_future(self._declare(target, name))
            fut.add_done_callback(partial(self._declared, name))
        await asyncio.shield(fut)

    async def _declare(self, target: Target, name: str) -> None:
        async with self._admin_lock:
            if self.admin.is_closed and not self.conn.is_closed:
                # A refused declaration closed it; the connection itself is fine.
                self.admin = await open_channel(self.conn)
            if target.fanout:
                await declare_fanout(self.admin, target.topic, passive=self.passive)
            else:
                await declare_queue(self.admin, name, passive=self.passive, quorum=self.quorum)

    def _declared(self, name: str, fut: asyncio.Future[None]) -> None:
        self._declaring.pop(name, None)
        if not fut.cancelled() and fut.exception() is None:
            self.declared.add(name)


class RabbitListener:
    """Consumes ``topic``, ``topic.server`` and the topic's fanout on one channel."""

    def __init__(
        self,
        topic: str,
        server: str,
        handler: Handler,
        *,
        prefetch: int,
        stop_grace: float,
        replier: Replier,
        channel_failed: ChannelFailed,
        stopped: Callable[[RabbitListener], None],
    ) -> None:
        self.topic = topic
        self.server = server
        self._handler = handler
        self._prefetch = prefetch
        self._stop_grace = stop_grace
        self._replier = replier
        self._channel_failed = channel_failed
        self._on_stopped = stopped
        self._lock = asyncio.Lock()
        self._session: Session | None = None
        self._channel: Channel | None = None
        self._tags: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Handlers run in the context of whoever started listening (the
        # service), not of the socket reader: services sharing a process
        # keep their own context variables (see nubes.transport docs).
        self._context = contextvars.copy_context()
        self._stopped = False
        #: Re-subscribing after the broker cancelled a consumer (see _cancelled).
        self._healing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<RabbitListener {self.topic}.{self.server}>"

    async def attach(self, session: Session, *, passive: bool | None = None) -> None:
        """Start consuming on ``session`` (again after a reconnect); idempotent.

        ``passive`` overrides the session's: whether to only check the shared
        queues exist rather than declare them.
        """
        async with self._lock:
            if self._stopped or self._session is session:
                return
            channel = await open_channel(session.conn)
            tags: list[str] = []
            try:
                # global_: the limit covers the channel's three consumers
                # together. Quorum queues refuse consumers on a channel with
                # a global limit: then it is per consumer (the shared topic
                # queue carries nearly all the load, so about the same bound).
                await channel.basic_qos(prefetch_count=self._prefetch, global_=not session.quorum)
                passive = session.passive if passive is None else passive
                await declare_queue(channel, self.topic, passive=passive, quorum=session.quorum)
                server_queue = queue_name(Target(self.topic, server=self.server))
                # Its own queue: every service may (re)declare and bind it, a
                # compute host too (its user may configure exactly that queue
                # and bind exactly that routing key), so it heals itself when
                # the queue is deleted.
                await declare_queue(channel, server_queue, quorum=session.quorum)
                await declare_fanout(channel, self.topic, passive=passive)
                declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
                fanout_queue = cast(str, declared.queue)
                await channel.queue_bind(fanout_queue, fanout_exchange(self.topic), routing_key="")
                deliver = partial(self._on_delivery, session, channel)
                for queue in (self.topic, server_queue, fanout_queue):
                    tags.append(await consume(session.writer, channel, queue, deliver))
            except BaseException:
                for tag in tags:
                    session.writer.fastpath.forget(tag)
                await close_channel(channel)
                raise
            self._channel, self._session, self._tags = channel, session, tags
            channel.closing.add_done_callback(partial(self._closed, session, channel))
            channel.on_consumer_cancel_callbacks.add(partial(self._cancelled, session, channel))

    def _cancelled(self, session: Session, channel: Channel, frame: Any) -> None:
        # The broker cancelled a consumer: its queue was deleted, or the node
        # holding it went away. Without this the service would stay deaf on
        # that queue until restarted; subscribe again instead.
        if self._stopped or self._channel is not channel:
            return
        if self._healing is None or self._healing.done():
            LOG.warning(
                "Broker %s cancelled a consumer of %s.%s; subscribing again",
                session.hop,
                self.topic,
                self.server,
            )
            self._healing = asyncio.get_running_loop().create_task(self._heal(session, channel))

    async def _heal(self, session: Session, channel: Channel) -> None:
        async with self._lock:
            if self._channel is not channel:
                return
            # Forgotten first, so closing the channel is not taken as a failure.
            self._channel, self._session = None, None
            for tag in self._tags:
                session.writer.fastpath.forget(tag)
            self._tags = []
        # Unacknowledged messages of the other consumers go back to their queues.
        await close_channel(channel)
        delay = HEAL_BACKOFF_MIN
        passive: bool | None = None
        while not self._stopped and not session.conn.is_closed:
            try:
                await self.attach(session, passive=passive)
            except asyncio.CancelledError:
                raise
            except aiormq.exceptions.ChannelNotFoundEntity:
                # The queue is gone and this user only checks: try declaring
                # it (allowed to controllers; a least-privilege host is
                # refused and waits for the operator to re-create it).
                passive = False if passive is None else None
                LOG.warning("%s.%s: a queue is missing; retrying", self.topic, self.server)
            except Exception as exc:
                passive = None
                LOG.warning(
                    "%s.%s: cannot subscribe again: %s", self.topic, self.server, describe(exc)
                )
            else:
                LOG.info("%s.%s consumes again", self.topic, self.server)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, HEAL_BACKOFF_MAX)

    def _closed(self, session: Session, channel: Channel, closing: asyncio.Future[Any]) -> None:
        if self._channel is channel and not self._stopped:
            self._channel_failed(session, closing, f"listener {self.topic}.{self.server}")

    def _on_delivery(self, session: Session, channel: Channel, delivery: Delivery) -> None:
        # Called from the socket's read path: start the handler and return.
        # The task is the listener's, not the channel's, so a broken
        # connection does not cancel work half-done (its ack is lost and the
        # broker redelivers instead).
        if self._stopped:
            return  # left unacknowledged: back to the queue when the channel closes
        task = asyncio.get_running_loop().create_task(
            self._run(session, channel, delivery), context=self._context.copy()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, session: Session, channel: Channel, delivery: Delivery) -> None:
        replier = None
        if delivery.reply_to:
            replier = partial(self._replier, delivery.reply_to, delivery.correlation_id or "")
        tag = delivery.delivery_tag
        try:
            await self._handler(IncomingMessage(delivery.body, delivery.user_id, replier))
        except asyncio.CancelledError:
            # Not handled: hand it back now so another server takes it, rather
            # than when this channel eventually closes.
            self._settle(session, channel, wire.reject(channel.number, tag, requeue=True))
            raise
        except Exception:
            # Handler errors are the RPC layer's business; one that escapes it
            # is a bug there and must not stop the listener.
            LOG.exception("Handler for %s.%s failed", self.topic, self.server)
        self._settle(session, channel, wire.ack(channel.number, tag))

    def _settle(self, session: Session, channel: Channel, frame: bytes) -> None:
        try:
            session.write(channel, frame)
        except CONNECTION_ERRORS as exc:
            # The channel went with its connection; the broker redelivers.
            LOG.debug("Ack on %s.%s lost: %s", self.topic, self.server, describe(exc))

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._on_stopped(self)
        if self._healing is not None and not self._healing.done():
            self._healing.cancel()
        async with self._lock:
            channel = self._channel
            if channel is not None and not channel.is_closed:
                for tag in self._tags:
                    try:
                        async with asyncio.timeout(self._stop_grace):
                            await channel.basic_cancel(tag)
                    except (*CONNECTION_ERRORS, TimeoutError) as exc:
                        LOG.debug("Cancelling consumer %s: %s", tag, describe(exc))
            if self._session is not None:
                for tag in self._tags:
                    self._session.writer.fastpath.forget(tag)
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=self._stop_grace)
                for task in pending:
                    task.cancel()
                if pending:
                    LOG.warning(
                        "Listener %s.%s: %d handlers still running after %.1f s; cancelled",
                        self.topic,
                        self.server,
                        len(pending),
                        self._stop_grace,
                    )
                    await asyncio.gather(*pending, return_exceptions=True)
            self._channel = None
            if channel is not None:
                # Anything still unacknowledged goes back to the queue.
                await close_channel(channel)
