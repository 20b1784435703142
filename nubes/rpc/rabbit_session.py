"""What the rabbit transport holds on one live connection, and its listeners.

A :class:`Session` lives exactly as long as one AMQP connection: after a
reconnect the transport builds a new one (new channels, topology declared
again). Everything goes through aiormq's public API: channels, declarations,
publishes (pipelined: ``wait=False``, confirms awaited concurrently),
consumers, acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import aiormq
import aiormq.abc
import aiormq.exceptions
from aiormq.channel import Channel

from nubes import exception
from nubes.rpc import rabbit_batch as batching
from nubes.rpc.rabbit_connection import describe
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
#: Frames aiormq buffers per channel between its connection reader and the
#: channel's reader (its default, 10, makes the reader wait on every burst).
FRAME_BUFFER = 256

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

Properties = aiormq.spec.Basic.Properties
TRANSIENT = 1
PERSISTENT = 2
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


async def open_channel(conn: aiormq.Connection, *, confirms: bool = False) -> Channel:
    """A channel on ``conn``; ``confirms`` puts it in publisher-confirm mode
    (aiormq then resolves each publish on the broker's ack or nack)."""
    return cast(
        Channel,
        await conn.channel(publisher_confirms=confirms, frame_buffer_size=FRAME_BUFFER),
    )


@dataclass(slots=True)
class Delivery:
    """The parts of a delivered message the transport uses."""

    delivery_tag: int
    body: bytes
    user_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    #: The ``x-nubes-batch`` header: how many messages the body packs
    #: (see nubes/rpc/rabbit_batch.py), or None for a single message.
    batch: object = None


Consumer = Callable[[Delivery], None]


async def consume(channel: Channel, queue: str, consumer: Consumer, *, no_ack: bool = False) -> str:
    """Consume ``queue``, deliveries going to ``consumer``; returns the consumer tag.

    ``consumer`` is called synchronously with each delivery; it must not block
    (it starts a task when there is work to do).
    """

    async def deliver(message: aiormq.abc.DeliveredMessage) -> None:
        props = message.header.properties
        headers = props.headers
        # A consumer only gets Basic.Deliver, which always carries a tag.
        consumer(
            Delivery(
                cast(int, message.delivery_tag),
                message.body,
                props.user_id,
                props.reply_to,
                props.correlation_id,
                headers.get(batching.BATCH_HEADER) if headers else None,
            )
        )

    tag = f"nubes.{uuid.uuid4().hex}"
    await channel.basic_consume(queue, deliver, no_ack=no_ack, consumer_tag=tag)
    return tag


async def _publish(
    channel: Channel, exchange: str, routing_key: str, properties: Properties, body: bytes
) -> None:
    """Publish on ``channel`` (and, in confirm mode, wait for the confirm).

    ``wait=False``: queued to aiormq's writer without waiting for the socket
    to drain, so concurrent publishes are pipelined. When the channel closes
    first, aiormq fails the publish with the channel's close reason, or with
    a bare ``Exception`` when the close had none; the caller gets the
    channel's reason (the broker's refusal, say) or a ConnectionError.
    """
    async with why_closed(channel):
        await channel.basic_publish(
            body, exchange=exchange, routing_key=routing_key, properties=properties, wait=False
        )


@contextlib.asynccontextmanager
async def why_closed(channel: Channel) -> AsyncIterator[None]:
    """Raise the channel's close reason when what the block awaited failed with
    the channel: aiormq fails whatever waits on a closing channel with its
    close reason, or with a bare ``Exception`` when the close had none (that
    becomes a ConnectionError, so it is retried like any lost connection)."""
    try:
        yield
    except Exception as exc:
        closing = channel.closing
        if closing.done() and not closing.cancelled():
            reason = closing.exception()
            if reason is not None and type(reason) is not Exception and reason is not exc:
                raise reason from exc
        if type(exc) is Exception:
            raise ConnectionError(f"channel {channel.number} closed") from exc
        raise


def _envelope(parts: list[tuple[str, bytes]]) -> tuple[bytes, str, dict[str, Any] | None]:
    """Body, correlation id and headers of the AMQP message carrying ``parts``."""
    if len(parts) == 1:
        ident, body = parts[0]
        return body, ident, None
    return batching.pack(parts), "", {batching.BATCH_HEADER: len(parts)}


async def close_channel(channel: Channel) -> None:
    try:
        await channel.close()
    except Exception as exc:  # already closed with its connection
        LOG.debug("Closing channel: %s", describe(exc))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Session:
    def __init__(
        self,
        conn: aiormq.Connection,
        hop: str,
        user_id: str,
        fast: Channel,
        safe: list[Channel],
        admin: Channel,
        *,
        passive: bool = False,
        quorum: bool = False,
    ) -> None:
        self.conn = conn
        #: Declare the durable topic queues as quorum queues (see wants_quorum).
        self.quorum = quorum
        #: The broker user; every message carries it (the broker checks it).
        self.user_id = user_id
        #: Only check that shared queues and exchanges exist, never declare
        #: them (the broker user may not; see nubes/rpc/rabbit_access.py).
        self.passive = passive
        self.hop = hop
        #: No confirms: call requests, replies, and the reply consumers.
        self.fast = fast
        #: Confirm mode: casts, round robin.
        self.safe = safe
        self._next_safe = itertools.cycle(safe)
        self._calls: batching.Batcher[tuple[str, str, str]] = batching.Batcher(self._send_calls)
        self._replies: batching.Batcher[tuple[str, str]] = batching.Batcher(self._send_replies)
        self._casts: batching.Batcher[tuple[str, str]] = batching.Batcher(self._send_casts)
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

    # Publishing. Each kind of message goes through its own Batcher, keyed by
    # what must be equal for messages to share one AMQP message: address and
    # properties. Publishes are queued to aiormq's writer without waiting for
    # the socket to drain (wait=False), so concurrent ones are pipelined.

    async def call(
        self, routing_key: str, reply_to: str, expiration: str, cid: str, body: bytes
    ) -> None:
        """Send a call request (transient, no confirm) to the queue ``routing_key``."""
        await self._calls.send((routing_key, reply_to, expiration), cid, body)

    async def reply(self, exchange: str, reply_to: str, cid: str, body: bytes) -> None:
        """Send the reply to call ``cid`` (transient, no confirm)."""
        await self._replies.send((exchange, reply_to), cid, body)

    async def cast(
        self, exchange: str, routing_key: str, message_id: str, body: bytes, *, alone: bool = False
    ) -> None:
        """Send a cast (persistent); returns on the broker's confirm.

        Raises :class:`aiormq.exceptions.DeliveryError` on a nack, and the
        channel's or connection's error when either goes first. Concurrent
        casts are not serialised behind each other's confirms: aiormq holds a
        channel only while it queues the frames.
        """
        await self._casts.send((exchange, routing_key), message_id, body, alone=alone)

    def _transient(
        self,
        parts: list[tuple[str, bytes]],
        *,
        reply_to: str | None = None,
        expiration: str | None = None,
    ) -> tuple[bytes, Properties]:
        """Body and properties of a batch of calls or of replies: transient,
        correlated by the one message's id (a batch's is in its parts)."""
        body, ident, headers = _envelope(parts)
        properties = Properties(
            delivery_mode=TRANSIENT,
            correlation_id=ident,
            # Set, so aiormq does not make up a random one for every message.
            message_id=ident or parts[0][0],
            reply_to=reply_to,
            expiration=expiration,
            user_id=self.user_id,
            headers=headers,
            # Calls wait in the topic queues too (a reply needs none): the
            # head's age in the management API counts them.
            timestamp=_now() if reply_to is not None else None,
        )
        return body, properties

    async def _send_calls(self, key: tuple[str, str, str], parts: list[tuple[str, bytes]]) -> None:
        routing_key, reply_to, expiration = key
        # No server starts work on a request nobody waits for any more (expiration).
        body, properties = self._transient(parts, reply_to=reply_to, expiration=expiration)
        await _publish(self.fast, EXCHANGE, routing_key, properties, body)

    async def _send_replies(self, key: tuple[str, str], parts: list[tuple[str, bytes]]) -> None:
        exchange, reply_to = key
        body, properties = self._transient(parts)
        await _publish(self.fast, exchange, reply_to, properties, body)

    async def _send_casts(self, key: tuple[str, str], parts: list[tuple[str, bytes]]) -> None:
        exchange, routing_key = key
        body, _, headers = _envelope(parts)
        properties = Properties(
            delivery_mode=PERSISTENT,
            # The cast's own id; a batch goes by its first cast's.
            message_id=parts[0][0],
            # Whole seconds: the broker's management API shows the head
            # message's, which nubes-manage status reports as the oldest's age.
            timestamp=_now(),
            user_id=self.user_id,
            headers=headers,
        )
        # Spread over the confirm channels, so the broker confirms (and
        # aiormq reads the confirms of) several channels in parallel.
        await _publish(next(self._next_safe), exchange, routing_key, properties, body)

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
            async with why_closed(self.admin):
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
        self._slots = asyncio.Semaphore(prefetch)
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
                async with why_closed(channel):
                    # global_: the limit covers the channel's three consumers
                    # together. Quorum queues refuse consumers on a channel with
                    # a global limit: then it is per consumer (the shared topic
                    # queue carries nearly all the load, so about the same bound).
                    await channel.basic_qos(
                        prefetch_count=self._prefetch, global_=not session.quorum
                    )
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
                    await channel.queue_bind(
                        fanout_queue, fanout_exchange(self.topic), routing_key=""
                    )
                    deliver = partial(self._on_delivery, session, channel)
                    for queue in (self.topic, server_queue, fanout_queue):
                        tags.append(await consume(channel, queue, deliver))
            except BaseException:
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
        tag = delivery.delivery_tag
        if delivery.batch is None:
            parts = [(delivery.correlation_id or "", delivery.body)]
        else:
            try:
                parts = batching.unpack(delivery.body, delivery.batch)
            except ValueError as exc:
                # It will never read better: acknowledged, so not redelivered.
                LOG.warning(
                    "Dropped a malformed batch from %s on %s.%s: %s",
                    delivery.user_id,
                    self.topic,
                    self.server,
                    exc,
                )
                await self._settle(channel, tag, ok=True)
                return
        try:
            if len(parts) == 1:
                await self._handle(delivery, *parts[0])
            else:
                await asyncio.gather(*(self._handle(delivery, *part) for part in parts))
        except asyncio.CancelledError:
            # Not handled: hand it back now so another server takes it, rather
            # than when this channel eventually closes.
            await self._settle(channel, tag, ok=False)
            raise
        except Exception:
            # Handler errors are the RPC layer's business; one that escapes it
            # is a bug there and must not stop the listener.
            LOG.exception("Handler for %s.%s failed", self.topic, self.server)
        await self._settle(channel, tag, ok=True)

    async def _handle(self, delivery: Delivery, correlation_id: str, body: bytes) -> None:
        replier = None
        if delivery.reply_to:
            replier = partial(self._replier, delivery.reply_to, correlation_id)
        # Prefetch bounds the AMQP messages taken, this the handlers they
        # carry (a batch holds several).
        async with self._slots:
            await self._handler(IncomingMessage(body, delivery.user_id, replier))

    async def _settle(self, channel: Channel, tag: int, *, ok: bool) -> None:
        """Acknowledge (or give back) a delivery; queued, not waited for on the socket."""
        try:
            if ok:
                await channel.basic_ack(tag, wait=False)
            else:
                await channel.basic_reject(tag, requeue=True, wait=False)
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
