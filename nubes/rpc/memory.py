"""``memory://``: the in-process transport for ``all-in-one`` and tests.

Transports opened on the same event loop and the same virtual host
(``memory://`` or ``memory:///name``) share one bus. It keeps the semantics of
the RabbitMQ transport that tests can observe: a topic queue is shared by its
listeners (each message to one of them), messages wait in the queue when no
listener is there yet, a listener stopped mid-handler gives its messages back,
fanout reaches every listener, and the sender's identity is the one its
transport was opened with, which a receiver cannot be lied to about.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from nubes import exception
from nubes.rpc.transport import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_STOP_GRACE,
    Handler,
    IncomingMessage,
    Listener,
    QueueStats,
    Target,
    Transport,
    TransportURL,
)

LOG = logging.getLogger(__name__)


@dataclass(slots=True)
class _Envelope:
    body: bytes
    caller: str
    reply: asyncio.Future[bytes] | None


class _Queue:
    """A named queue: hands each message to the next listener with a free slot.

    Explicit round robin rather than listeners competing on an asyncio.Queue:
    a sender that never yields would otherwise see one listener take it all.
    """

    def __init__(self) -> None:
        self.pending: deque[_Envelope] = deque()
        self.consumers: list[_MemoryListener] = []
        self._next = 0

    def put(self, env: _Envelope) -> None:
        n = len(self.consumers)
        for i in range(n):
            consumer = self.consumers[(self._next + i) % n]
            if consumer.free > 0:
                self._next = (self._next + i + 1) % n
                consumer.start(self, env)
                return
        self.pending.append(env)

    def requeue(self, env: _Envelope) -> None:
        self.pending.appendleft(env)
        self.feed_all()

    def feed(self, consumer: _MemoryListener) -> None:
        while self.pending and consumer.free > 0:
            consumer.start(self, self.pending.popleft())

    def feed_all(self) -> None:
        for consumer in list(self.consumers):
            self.feed(consumer)


@dataclass(slots=True)
class _Bus:
    queues: dict[str, _Queue] = field(default_factory=dict)
    fanout: dict[str, set[_Queue]] = field(default_factory=dict)

    def queue(self, name: str) -> _Queue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = _Queue()
        return q


# Buses are per event loop: futures belong to the loop that made them, and
# tests run each case on a fresh loop.
_BUSES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Bus]] = (
    weakref.WeakKeyDictionary()
)


def _bus_for(virtual_host: str) -> _Bus:
    loop = asyncio.get_running_loop()
    per_loop = _BUSES.setdefault(loop, {})
    bus = per_loop.get(virtual_host)
    if bus is None:
        bus = per_loop[virtual_host] = _Bus()
    return bus


class _MemoryListener:
    def __init__(
        self,
        transport: MemoryTransport,
        topic: str,
        queues: list[_Queue],
        fanout_queue: _Queue,
        handler: Handler,
        max_concurrency: int,
    ) -> None:
        self._transport = transport
        self._topic = topic
        self._queues = queues
        self._fanout_queue = fanout_queue
        self._handler = handler
        self.free = max_concurrency
        self._inflight: dict[asyncio.Task[None], tuple[_Queue, _Envelope]] = {}
        self._stopped = False
        # Handlers run in the listening service's context, as they would in
        # its own process, not in the context of the task that sent.
        self._context = contextvars.copy_context()
        for q in queues:
            q.consumers.append(self)
        for q in queues:
            q.feed(self)

    def start(self, queue: _Queue, env: _Envelope) -> None:
        self.free -= 1
        task = asyncio.create_task(self._run(env), context=self._context.copy())
        self._inflight[task] = (queue, env)
        task.add_done_callback(self._done)

    async def _run(self, env: _Envelope) -> None:
        replier = None
        if env.reply is not None:
            fut = env.reply

            async def replier(body: bytes) -> None:
                if not fut.done():
                    fut.set_result(body)

        try:
            await self._handler(IncomingMessage(env.body, env.caller, replier))
        except asyncio.CancelledError:
            raise
        except Exception:
            # The RPC layer turns handler errors into replies; anything that
            # escapes is a bug there, and must not stop the listener.
            LOG.exception("Handler failed on a memory:// message")

    def _done(self, task: asyncio.Task[None]) -> None:
        queue, env = self._inflight.pop(task)
        self.free += 1
        if task.cancelled():
            # Not acknowledged: give it back, as the broker would.
            queue.requeue(env)
        if not self._stopped:
            for q in self._queues:
                q.feed(self)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.free = 0
        for q in self._queues:
            q.consumers.remove(self)
        self._transport.bus.fanout.get(self._topic, set()).discard(self._fanout_queue)
        if self._inflight:
            _, pending = await asyncio.wait(list(self._inflight), timeout=DEFAULT_STOP_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        self._transport._listeners.discard(self)


class MemoryTransport(Transport):
    def __init__(self, url: TransportURL, identity: str) -> None:
        super().__init__(url, identity)
        self._bus: _Bus | None = None
        self._listeners: set[_MemoryListener] = set()
        self._pending_calls: set[asyncio.Future[bytes]] = set()
        self._closed = False

    @property
    def bus(self) -> _Bus:
        if self._bus is None:
            self._bus = _bus_for(self.url.virtual_host)
        return self._bus

    def _check_open(self, label: str) -> None:
        if self._closed:
            raise exception.TransportError(
                hop=f"memory://{self.url.virtual_host}", reason=f"transport closed ({label})"
            )

    async def connect(self) -> None:
        self._check_open("connect")
        _ = self.bus

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(lst.stop() for lst in list(self._listeners)))
        for fut in self._pending_calls:
            if not fut.done():
                fut.set_exception(
                    exception.TransportError(
                        hop=f"memory://{self.url.virtual_host}",
                        reason="transport closed while waiting for a reply",
                    )
                )

    def _deliver(self, target: Target, env: _Envelope) -> None:
        bus = self.bus
        if target.fanout:
            for q in bus.fanout.get(target.topic, ()):
                q.put(env)
        elif target.server:
            bus.queue(f"{target.topic}.{target.server}").put(env)
        else:
            bus.queue(target.topic).put(env)

    async def call(self, target: Target, body: bytes, timeout: float, *, label: str = "") -> bytes:
        self._check_open(label)
        if target.fanout:
            raise exception.ValidationError(field="target", reason="a call cannot be a fanout")
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending_calls.add(fut)
        try:
            self._deliver(target, _Envelope(bytes(body), self.identity, fut))
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a
                # cancellation that lands as the reply arrives, and a
                # stopping service then never stops.
                async with asyncio.timeout(timeout):
                    return await fut
            except TimeoutError:
                raise exception.MessagingTimeout(
                    method=label or "call", target=str(target), timeout=timeout
                ) from None
        finally:
            self._pending_calls.discard(fut)

    async def cast(
        self, target: Target, body: bytes, *, label: str = "", alone: bool = False
    ) -> None:
        # Every message of the in-process bus is delivered on its own, so
        # ``alone`` always holds.
        self._check_open(label)
        self._deliver(target, _Envelope(bytes(body), self.identity, None))

    async def queue_stats(self, queues: Sequence[str]) -> dict[str, QueueStats]:
        return {
            name: QueueStats(len(q.pending), len(q.consumers))
            for name in queues
            if (q := self.bus.queues.get(name)) is not None
        }

    async def listen(
        self,
        topic: str,
        server: str,
        handler: Handler,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> Listener:
        self._check_open("listen")
        bus = self.bus
        fanout_q = _Queue()
        bus.fanout.setdefault(topic, set()).add(fanout_q)
        queues = [bus.queue(topic), bus.queue(f"{topic}.{server}"), fanout_q]
        listener = _MemoryListener(self, topic, queues, fanout_q, handler, max_concurrency)
        self._listeners.add(listener)
        return listener
