"""``rabbit://``: the RabbitMQ transport (aiormq).

Topology (all on the URL's virtual host)::

    exchange  nubes_topic        topic (literal keys only), durable
      queue   <topic>            durable, shared by every server of the topic
      queue   <topic>.<server>   durable, that server only
                                 (both quorum queues on a cluster, see
                                 rabbit_session.wants_quorum)
      queue   amq.gen-...        exclusive, a controller's reply queue,
                                 bound as reply.amq.gen-...
    exchange  <topic>_fanout     fanout, durable
      queue   amq.gen-...        exclusive, auto-delete, one per listener

Casts are persistent and published on a channel in confirm mode, so a cast
returns only once the broker holds the message; the sender declares the
durable queue first so a cast made before any server started is kept. Calls
and replies are transient and go on a channel without confirms: a lost call
surfaces as an error or a timeout anyway, and waiting for confirms would
double its latency. A call request expires in its queue after the call's
timeout, so no server starts work nobody waits for. Replies come back through
RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``): no reply queue to
declare, and the broker hands replies straight to the caller's channel.
Except from compute hosts: direct reply-to replies go through the default
exchange, which reaches every queue by name, so a host's broker user may not
publish there; a controller calling a host gets the reply through its own
exclusive queue on ``nubes_topic`` (routing key ``reply.<queue>``, which a
host's topic permissions let it publish but never bind).

Identity: the transport's identity is the broker user it logs in as. Every
message carries it in the AMQP ``user_id`` property, which RabbitMQ checks
against the authenticated user (a mismatch closes the sender's channel with
PRECONDITION_FAILED), so a receiver can trust it as :attr:`IncomingMessage.caller`.

Delivery: each message runs its handler in its own task; the listener's
``max_concurrency`` bounds how many run at once (and, through prefetch, how
many AMQP messages it takes). An AMQP message is acknowledged after its
handlers returned or raised, and given back to the broker when one is
cancelled, so another server gets it.

Failures: :class:`~nubes.rpc.rabbit_connection.BrokerConnection` reconnects
with backoff (trying the URL's brokers in turn, so a cluster fails over to
the next node) and rebuilds channels, topology and consumers. Calls waiting for
a reply when the connection drops fail at once with a TransportError naming
the hop; casts wait (bounded) for the connection to come back and publish then.

Speed: aiormq, used through its public API only, runs everything; what it
costs is per AMQP message, so the calls, replies and casts a process sends in
one loop iteration to the same address travel as one AMQP message
(:mod:`~nubes.rpc.rabbit_batch`; a lone message goes as it is). Publishes and
acks are queued to aiormq's writer without waiting for the socket to drain
(``wait=False``), so they are pipelined; casts spread over several
confirm-mode channels and each awaits only its own confirm. Modules:
``rabbit_connection`` (reconnecting), ``rabbit_session`` (per-connection
state, listeners), ``rabbit_batch`` (batching), ``rabbit_access`` (broker
users and permissions).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, cast

import aiormq
import aiormq.abc
import aiormq.exceptions

from nubes import access, exception
from nubes.rpc import rabbit_batch as batching
from nubes.rpc.rabbit_connection import (
    DEFAULT_HEARTBEAT,
    DEFAULT_RECONNECT_BACKOFF_MAX,
    DEFAULT_RECONNECT_BACKOFF_MIN,
    DEFAULT_USERNAME,
    BrokerConnection,
    describe,
)
from nubes.rpc.rabbit_session import (
    CONNECTION_ERRORS,
    EXCHANGE,
    EXCHANGE_TYPE,
    REFUSALS,
    REPLY_PREFIX,
    Delivery,
    RabbitListener,
    Session,
    close_channel,
    consume,
    fanout_exchange,
    open_channel,
    queue_name,
    wants_quorum,
)
from nubes.rpc.transport import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_STOP_GRACE,
    Handler,
    Listener,
    QueueStats,
    Target,
    Transport,
    TransportURL,
)

LOG = logging.getLogger(__name__)

#: RabbitMQ's pseudo-queue for direct reply-to.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
#: Messages a listener takes before acknowledging any (capped by max_concurrency).
DEFAULT_PREFETCH_COUNT = DEFAULT_MAX_CONCURRENCY
#: Confirm-mode channels per connection that casts are spread over.
CAST_CHANNELS = 4


def _rejected_by_aiormq() -> bool:
    """After a CancelledError: True when aiormq failed a future with it as it
    closed a channel, rather than our own task being cancelled."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


class RabbitTransport(Transport):
    def __init__(
        self,
        url: TransportURL,
        identity: str | None = None,
        *,
        reconnect_backoff_min: float = DEFAULT_RECONNECT_BACKOFF_MIN,
        reconnect_backoff_max: float = DEFAULT_RECONNECT_BACKOFF_MAX,
        heartbeat_timeout: int = DEFAULT_HEARTBEAT,
        prefetch_count: int = DEFAULT_PREFETCH_COUNT,
        rpc_response_timeout: float = DEFAULT_CALL_TIMEOUT,
        stop_grace: float = DEFAULT_STOP_GRACE,
        quorum_queues: bool | None = None,
        **unknown: object,
    ) -> None:
        if unknown:
            raise exception.ConfigError(
                reason=f"rabbit:// does not take the option(s) {', '.join(sorted(unknown))}; "
                "it takes reconnect_backoff_min, reconnect_backoff_max, heartbeat_timeout, "
                "prefetch_count, rpc_response_timeout, stop_grace and quorum_queues"
            )
        usernames = {h.username or DEFAULT_USERNAME for h in url.hosts} or {DEFAULT_USERNAME}
        if len(usernames) > 1:
            raise exception.ConfigError(
                reason=f"transport_url hosts log in as different users ({sorted(usernames)}); "
                "a transport has one identity"
            )
        username = usernames.pop()
        if identity is not None and identity != username:
            # The broker would refuse every message: user_id must equal the login.
            raise exception.ConfigError(
                reason=f"identity {identity!r} differs from the transport_url user "
                f"{username!r}; on rabbit:// the identity is the broker user"
            )
        if reconnect_backoff_min <= 0 or reconnect_backoff_max < reconnect_backoff_min:
            raise exception.ConfigError(
                reason="reconnect backoff needs 0 < reconnect_backoff_min <= reconnect_backoff_max"
            )
        if prefetch_count < 1:
            raise exception.ConfigError(reason="prefetch_count must be at least 1")
        if rpc_response_timeout <= 0:
            raise exception.ConfigError(reason="rpc_response_timeout must be positive")
        super().__init__(url, username)
        #: A compute host's broker user may not declare shared topology
        #: (least privilege, docs/security.md): it only checks it exists.
        self._passive = access.identify_kind(username) is access.CallerKind.COMPUTE
        self._prefetch = prefetch_count
        self._quorum = wants_quorum(quorum_queues, len(url.hosts))
        #: How long casts, replies, listen and connect wait for the broker.
        self._wait_bound = rpc_response_timeout
        self._stop_grace = stop_grace
        self._broker: BrokerConnection[Session] = BrokerConnection(
            url,
            setup=self._setup,
            lost=self._lost,
            backoff_min=reconnect_backoff_min,
            backoff_max=reconnect_backoff_max,
            heartbeat=heartbeat_timeout,
        )
        self._listeners: set[RabbitListener] = set()
        #: correlation id -> (future, label, target) of calls waiting for a reply.
        self._pending: dict[str, tuple[asyncio.Future[bytes], str, Target]] = {}
        self._ids = itertools.count(1)
        self._closed = False

    def __repr__(self) -> str:
        return f"<RabbitTransport {self.identity}@{self._broker.hops}>"

    # -- connection ---------------------------------------------------------

    async def _setup(self, conn: aiormq.Connection, hop: str) -> Session:
        fast = await open_channel(conn)
        safe = [await open_channel(conn, confirms=True) for _ in range(CAST_CHANNELS)]
        admin = await open_channel(conn)
        await admin.exchange_declare(
            EXCHANGE, exchange_type=EXCHANGE_TYPE, durable=True, passive=self._passive
        )
        session = Session(
            conn, hop, self.identity, fast, safe, admin, passive=self._passive, quorum=self._quorum
        )
        await consume(fast, DIRECT_REPLY_TO, self._on_reply, no_ack=True)
        if not self._passive:
            # Replies from compute hosts, which may not use the default exchange.
            declared = await fast.queue_declare("", exclusive=True, auto_delete=True)
            queue = cast(str, declared.queue)
            session.reply_key = REPLY_PREFIX + queue
            await fast.queue_bind(queue, EXCHANGE, routing_key=session.reply_key)
            await consume(fast, queue, self._on_reply, no_ack=True)
        # These carry messages in flight: losing one means starting over
        # (aiormq fails the unconfirmed casts of a closed channel, and they are
        # sent again on the new connection). The admin channel is simply
        # reopened when a declaration closed it.
        for channel in (fast, *safe):
            channel.closing.add_done_callback(
                partial(self._channel_failed, session, what="transport")
            )
        for listener in list(self._listeners):
            await listener.attach(session)
        return session

    def _channel_failed(self, session: Session, closing: asyncio.Future[Any], what: str) -> None:
        if self._closed or session.conn.is_closed:
            return
        exc = None if closing.cancelled() else closing.exception()
        # A channel the broker closed under a live connection (a refused
        # publish or declaration) leaves the session half broken; start over.
        LOG.warning("Broker %s closed the %s channel: %s", session.hop, what, describe(exc))
        # Calls waiting for a reply fail now, with the broker's reason (a
        # refused publish says ACCESS_REFUSED): the connection they went out
        # on is dropped next, which would fail them anyway.
        self._fail_pending(session.hop, f"{what} channel closed", describe(exc))
        self._broker.drop(exc or ConnectionError(f"{what} channel closed"))

    def _lost(self, session: Session, exc: BaseException | None) -> None:
        # Unconfirmed casts of the session fail by themselves: aiormq fails
        # the confirmations of a closed channel.
        self._fail_pending(
            session.hop, "connection lost", describe(exc) if exc else "connection closed"
        )

    def _fail_pending(self, hop: str, why: str, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for fut, label, _ in pending.values():
            if not fut.done():
                fut.set_exception(
                    exception.TransportError(
                        hop=f"broker {hop} ({why} while waiting for the reply to {label})",
                        reason=reason,
                    )
                )

    async def _session(self, deadline: float, what: str, stale: Session | None = None) -> Session:
        if self._closed:
            raise exception.TransportError(
                hop=f"broker {self._broker.hops}", reason=f"transport closed ({what})"
            )
        session = self._broker.session
        if session is None or session is stale:
            session = await self._broker.wait(deadline, what, stale)
        return session

    def _retry_later(self, session: Session, exc: BaseException | None) -> Session:
        """After a send failed on ``session``: the session to wait past."""
        if self._closed:
            raise exception.TransportError(
                hop=f"broker {session.hop}", reason="transport closed while sending"
            )
        if self._broker.session is session:
            # We may notice first; make sure the supervisor replaces the
            # session instead of us spinning on a dead one.
            self._broker.drop(exc or ConnectionError("send failed"))
        return session

    async def connect(self) -> None:
        await self._session(time.monotonic() + self._wait_bound, "connect")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(lst.stop() for lst in list(self._listeners)))
        self._fail_pending(self._broker.hop, "transport closed", "the transport was closed")
        await self._broker.close()

    # -- calls --------------------------------------------------------------

    async def call(self, target: Target, body: bytes, timeout: float, *, label: str = "") -> bytes:
        if target.fanout:
            raise exception.ValidationError(field="target", reason="a call cannot be a fanout")
        label = label or str(target)
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        session = self._broker.session
        if session is None or self._closed:
            session = await self._session(start + timeout, f"call {label}")
        cid = str(next(self._ids))
        # A compute host answers on EXCHANGE, everyone else by direct reply-to.
        reply_to = DIRECT_REPLY_TO
        if target.topic == access.COMPUTE_BINARY and session.reply_key is not None:
            reply_to = session.reply_key
        fut: asyncio.Future[bytes] = loop.create_future()
        # Registered before publishing: the reply may be read before the
        # publish returns.
        self._pending[cid] = (fut, label, target)
        try:
            await session.call(
                queue_name(target), reply_to, str(max(1, int(timeout * 1000))), cid, body
            )
        except BaseException as exc:
            self._pending.pop(cid, None)
            if not isinstance(exc, CONNECTION_ERRORS):
                raise
            raise exception.TransportError(
                hop=f"broker {session.hop} (sending {label})", reason=describe(exc)
            ) from exc
        timer = loop.call_later(
            timeout - (time.monotonic() - start), self._expire, cid, target, timeout
        )
        try:
            return await fut
        finally:
            timer.cancel()
            self._pending.pop(cid, None)

    def _expire(self, cid: str, target: Target, timeout: float) -> None:
        entry = self._pending.pop(cid, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(
                exception.MessagingTimeout(method=entry[1], target=str(target), timeout=timeout)
            )

    def _on_reply(self, delivery: Delivery) -> None:
        if delivery.batch is None:
            self._resolve(delivery.correlation_id or "", delivery.body, delivery.user_id)
            return
        try:
            parts = batching.unpack(delivery.body, delivery.batch)
        except ValueError as exc:
            LOG.warning("Dropped a malformed batch of replies from %s: %s", delivery.user_id, exc)
            return
        for cid, body in parts:
            self._resolve(cid, body, delivery.user_id)

    def _resolve(self, cid: str, body: bytes, user_id: str | None) -> None:
        entry = self._pending.get(cid)
        if entry is not None and not entry[0].done():
            fut, label, target = entry
            if not access.may_answer(target.topic, target.server, user_id):
                # Only the callee answers: a reply from anyone else (another
                # host that took the request off a queue it should not read)
                # is dropped, and the call waits for the real one.
                LOG.warning("Dropped a reply to %s from %s", label, user_id)
                return
            fut.set_result(body)

    async def _reply(self, reply_to: str, correlation_id: str, body: bytes) -> None:
        session = self._broker.session
        if session is None or self._closed:
            session = await self._session(time.monotonic() + self._wait_bound, "reply")
        if reply_to.startswith(DIRECT_REPLY_TO):
            exchange = ""
        elif reply_to.startswith(REPLY_PREFIX):
            exchange = EXCHANGE
        else:
            # Any other address would have this service publish into a queue
            # the caller names (another host's, the conductor's).
            LOG.warning("Not replying to the reply address %r: not a reply queue", reply_to[:100])
            return
        try:
            await session.reply(exchange, reply_to, correlation_id, body)
        except CONNECTION_ERRORS as exc:
            raise exception.TransportError(
                hop=f"broker {session.hop} (sending a reply)", reason=describe(exc)
            ) from exc

    # -- casts --------------------------------------------------------------

    async def cast(
        self, target: Target, body: bytes, *, label: str = "", alone: bool = False
    ) -> None:
        label = label or str(target)
        deadline = time.monotonic() + self._wait_bound
        if target.fanout:
            exchange = declared = fanout_exchange(target.topic)
            routing_key = ""
        else:
            exchange, routing_key = EXCHANGE, queue_name(target)
            declared = routing_key
        # The same id on every attempt, so a receiver can tell a resend.
        message_id = f"{self.identity}.{next(self._ids)}"
        stale: Session | None = None
        while True:
            session = self._broker.session
            if session is None or session is stale or self._closed:
                session = await self._session(deadline, f"cast {label}", stale)
            try:
                if declared not in session.declared:
                    await session.declare(target)
                await session.cast(exchange, routing_key, message_id, body, alone=alone)
            except aiormq.exceptions.DeliveryError as exc:
                raise exception.TransportError(
                    hop=f"broker {session.hop}", reason=f"the broker refused {label} (nack)"
                ) from exc
            except REFUSALS as exc:
                # Sending the same message again would be refused again.
                raise exception.TransportError(
                    hop=f"broker {session.hop}", reason=f"{label}: {describe(exc)}"
                ) from exc
            except asyncio.CancelledError:
                if not _rejected_by_aiormq():
                    raise
                stale = self._retry_later(session, None)
                continue
            except CONNECTION_ERRORS as exc:
                # The message may or may not have reached the broker; it is
                # sent again once connected (at-least-once, like a redelivery).
                stale = self._retry_later(session, exc)
                continue
            return

    # -- for operators --------------------------------------------------------

    async def queue_stats(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        """Passive declares on a channel of their own: the broker answers each
        with the queue's ready messages and consumers, and closes the channel
        on a queue that does not exist (then a new one is opened)."""
        session = await self._session(time.monotonic() + self._wait_bound, "queue stats")
        found: dict[str, QueueStats] = {}
        channel = await open_channel(session.conn)
        try:
            for name in queues:
                try:
                    ok = await channel.queue_declare(name, durable=True, passive=True)
                except aiormq.exceptions.ChannelClosed:
                    channel = await open_channel(session.conn)
                    continue
                found[name] = QueueStats(int(ok.message_count or 0), int(ok.consumer_count or 0))
        finally:
            await close_channel(channel)
        return found

    # -- listening ----------------------------------------------------------

    async def listen(
        self,
        topic: str,
        server: str,
        handler: Handler,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> Listener:
        queue_name(Target(topic, server=server))  # validates the names
        if max_concurrency < 1:
            raise exception.ValidationError(field="max_concurrency", reason="must be at least 1")
        listener = RabbitListener(
            topic,
            server,
            handler,
            prefetch=min(self._prefetch, max_concurrency),
            stop_grace=self._stop_grace,
            replier=self._reply,
            channel_failed=self._channel_failed,
            stopped=self._listeners.discard,
        )
        deadline = time.monotonic() + self._wait_bound
        self._listeners.add(listener)
        stale: Session | None = None
        try:
            while True:
                session = await self._session(deadline, f"listen {topic}.{server}", stale)
                try:
                    await listener.attach(session)
                    return listener
                except REFUSALS as exc:
                    raise exception.TransportError(
                        hop=f"broker {session.hop}", reason=f"listen {topic}: {describe(exc)}"
                    ) from exc
                except asyncio.CancelledError:
                    if not _rejected_by_aiormq():
                        raise
                    stale = self._retry_later(session, None)
                except CONNECTION_ERRORS as exc:
                    stale = self._retry_later(session, exc)
        except BaseException:
            self._listeners.discard(listener)
            raise
