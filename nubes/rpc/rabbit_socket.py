"""The socket under aiormq, with a fast path for the frames that carry load.

aiormq reads every frame through a chain of awaits and queues (connection
reader, channel reader, one task per delivery) and writes every frame with
its own send. Under load that machinery, not RabbitMQ, bounded throughput. So
the transport hands aiormq this socket (through aiormq's ``TransportFactory``
hook) and does two things itself:

* Writes: everything written in one event-loop iteration goes out in one send
  (:class:`CoalescingWriter`), whether aiormq or the transport wrote it.
* Reads: :class:`FastPathProtocol` splits the incoming byte stream into
  frames and keeps two kinds for itself: deliveries to consumers the
  transport registered (``Basic.Deliver`` and its content frames) and
  publisher confirms on channels it tracks (``Basic.Ack``/``Basic.Nack``).
  Every other frame goes on to aiormq, in order, as if nothing happened, so
  aiormq still runs the connection: handshake, channels, declarations,
  consumer registration, heartbeats, closing.

aiormq notices a dead connection by the time since the last frame *it* saw;
when the fast path took all the traffic for a while, an empty heartbeat frame
is passed on to it so a busy connection is not mistaken for a stuck one.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiormq.exceptions
from aiormq.connection import TransportFactory
from yarl import URL

LOG = logging.getLogger(__name__)

DEFAULT_PORT = 5672
#: Seconds of fast-path-only traffic after which aiormq is shown a heartbeat.
AIORMQ_KEEPALIVE = 1.0

_FRAME_HEADER = struct.Struct(">BHI")
_HEARTBEAT_FRAME = _FRAME_HEADER.pack(8, 0, 0) + b"\xce"
_METHOD_ID = struct.Struct(">HH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64_BIT = struct.Struct(">QB")
_CONTENT_HEADER = struct.Struct(">HHQ")
FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
BASIC = 60
BASIC_DELIVER, BASIC_ACK, BASIC_NACK = 60, 80, 120

# Basic properties in wire order: (flag bit, kind). Kinds: s = short string,
# o = octet, t = field table (skipped whole), l = 64-bit timestamp.
_PROPERTIES = (
    (0x8000, "s", None),  # content_type
    (0x4000, "s", None),  # content_encoding
    (0x2000, "t", None),  # headers
    (0x1000, "o", None),  # delivery_mode
    (0x0800, "o", None),  # priority
    (0x0400, "s", "correlation_id"),
    (0x0200, "s", "reply_to"),
    (0x0100, "s", None),  # expiration
    (0x0080, "s", None),  # message_id
    (0x0040, "l", None),  # timestamp
    (0x0020, "s", None),  # type
    (0x0010, "s", "user_id"),
    (0x0008, "s", None),  # app_id
    (0x0004, "s", None),  # cluster_id
)


@dataclass(slots=True)
class Delivery:
    """The parts of a delivered message the transport uses."""

    delivery_tag: int
    body: bytes
    user_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None


Consumer = Callable[[Delivery], None]


def from_aiormq(message: Any) -> Delivery:
    """A Delivery from an aiormq DeliveredMessage (when aiormq got it instead)."""
    props = message.header.properties
    return Delivery(
        message.delivery.delivery_tag,
        message.body,
        props.user_id,
        props.reply_to,
        props.correlation_id,
    )


class PublishRefused(aiormq.exceptions.AMQPError):
    reason = "The broker refused (nack) the message with delivery tag %s"


class ConfirmTracker:
    """Publisher confirms of one channel: the n-th publish is delivery tag n."""

    __slots__ = ("_pending", "last_tag")

    def __init__(self) -> None:
        self.last_tag = 0
        self._pending: dict[int, asyncio.Future[None]] = {}

    def expect(self, future: asyncio.Future[None]) -> None:
        """Register the confirmation of the publish just written."""
        self.last_tag += 1
        self._pending[self.last_tag] = future

    def settle(self, tag: int, multiple: bool, ok: bool) -> None:
        pending = self._pending
        tags = [tag] if not multiple else [t for t in pending if t <= tag]
        for t in tags:
            fut = pending.pop(t, None)
            if fut is None or fut.done():
                continue
            if ok:
                fut.set_result(None)
            else:
                fut.set_exception(PublishRefused(t))

    def fail(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)


class _Partial:
    __slots__ = ("consumer", "delivery", "parts", "remaining")

    def __init__(self, consumer: Consumer, delivery_tag: int) -> None:
        self.consumer: Consumer | None = consumer
        self.delivery = Delivery(delivery_tag, b"")
        self.parts: list[bytes] = []
        self.remaining = -1  # unknown until the content header


def _shortstr(buf: bytearray, at: int) -> tuple[str, int]:
    end = at + 1 + buf[at]
    return buf[at + 1 : end].decode(), end


def _read_properties(buf: bytearray, at: int, delivery: Delivery) -> None:
    (flags,) = _U16.unpack_from(buf, at)
    at += 2
    word = flags
    while word & 1:  # further flag words: none are defined for Basic, skip them
        (word,) = _U16.unpack_from(buf, at)
        at += 2
    for bit, kind, name in _PROPERTIES:
        if not flags & bit:
            continue
        if kind == "s":
            value, at = _shortstr(buf, at)
            if name is not None:
                setattr(delivery, name, value)
        elif kind == "o":
            at += 1
        elif kind == "t":
            at += 4 + _U32.unpack_from(buf, at)[0]
        else:
            at += 8


class FastPathProtocol(asyncio.StreamReaderProtocol):
    def __init__(self, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reader, loop=loop)
        self._loop = loop
        self._buf = bytearray()
        self._consumers: dict[str, Consumer] = {}
        self._confirms: dict[int, ConfirmTracker] = {}
        self._partial: dict[int, _Partial] = {}
        self._passthrough = False
        self._last_forward = loop.time()

    def consume(self, consumer_tag: str, consumer: Consumer) -> None:
        """Deliveries to ``consumer_tag`` go to ``consumer`` (called in the read path)."""
        self._consumers[consumer_tag] = consumer

    def forget(self, consumer_tag: str) -> None:
        self._consumers.pop(consumer_tag, None)

    def track_confirms(self, channel: int) -> ConfirmTracker:
        tracker = self._confirms[channel] = ConfirmTracker()
        return tracker

    def data_received(self, data: bytes) -> None:
        if self._passthrough:
            super().data_received(data)
            return
        buf = self._buf
        buf += data
        if buf[:4] == b"AMQP":
            # The broker answered with its protocol header: it speaks another
            # AMQP version. aiormq reports that; stay out of the way.
            self._passthrough = True
            super().data_received(bytes(buf))
            buf.clear()
            return
        forward: list[bytes] = []
        took = False
        at, size = 0, len(buf)
        while size - at >= 8:
            kind, channel, length = _FRAME_HEADER.unpack_from(buf, at)
            end = at + 8 + length
            if end > size:
                break
            try:
                mine = self._take(kind, channel, buf, at + 7, length)
            except Exception:
                mine = self._failed(kind, channel)
            if mine:
                took = True
            else:
                forward.append(bytes(buf[at:end]))
            at = end
        del buf[:at]
        now = self._loop.time()
        if took and not forward and now - self._last_forward > AIORMQ_KEEPALIVE:
            forward.append(_HEARTBEAT_FRAME)
        if forward:
            self._last_forward = now
            super().data_received(b"".join(forward))

    def _failed(self, kind: int, channel: int) -> bool:
        """A frame the fast path could not read: who gets the rest of it."""
        partial_ = self._partial.get(channel)
        if kind == FRAME_METHOD or partial_ is None:
            # Nothing of this delivery was taken yet: aiormq reads all of it.
            LOG.exception("Fast path could not read a frame; handing it to aiormq")
            return False
        # aiormq has not seen the delivery's method frame and could not make
        # sense of its content: drop the message here. It stays unacknowledged
        # and the broker redelivers it when the channel closes.
        LOG.exception("Dropped an unreadable delivery (tag %s)", partial_.delivery.delivery_tag)
        partial_.consumer = None
        return True

    def _take(self, kind: int, channel: int, buf: bytearray, at: int, length: int) -> bool:
        if kind == FRAME_METHOD:
            if channel in self._partial:
                # Content frames of a delivery are contiguous on their channel:
                # a method frame means the one we were reading (and could not
                # finish: see _failed) is over.
                del self._partial[channel]
            class_id, method_id = _METHOD_ID.unpack_from(buf, at)
            if class_id != BASIC:
                return False
            if method_id == BASIC_DELIVER:
                tag, at = _shortstr(buf, at + 4)
                consumer = self._consumers.get(tag)
                if consumer is None:
                    return False
                delivery_tag, _ = _U64_BIT.unpack_from(buf, at)
                self._partial[channel] = _Partial(consumer, delivery_tag)
                return True
            if method_id == BASIC_ACK or method_id == BASIC_NACK:
                tracker = self._confirms.get(channel)
                if tracker is None:
                    return False
                delivery_tag, bits = _U64_BIT.unpack_from(buf, at + 4)
                tracker.settle(delivery_tag, bool(bits & 1), method_id == BASIC_ACK)
                return True
            return False
        partial_ = self._partial.get(channel)
        if partial_ is None:
            return False
        if kind == FRAME_HEADER:
            _, _, partial_.remaining = _CONTENT_HEADER.unpack_from(buf, at)
            _read_properties(buf, at + _CONTENT_HEADER.size, partial_.delivery)
        elif kind == FRAME_BODY:
            partial_.parts.append(bytes(buf[at : at + length]))
            partial_.remaining -= length
        else:
            return False
        if partial_.remaining == 0:
            del self._partial[channel]
            delivery = partial_.delivery
            parts = partial_.parts
            delivery.body = parts[0] if len(parts) == 1 else b"".join(parts)
            if partial_.consumer is not None:
                try:
                    partial_.consumer(delivery)
                except Exception:
                    LOG.exception("Consumer of delivery %s failed", delivery.delivery_tag)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._partial.clear()
        super().connection_lost(exc)


class CoalescingWriter(asyncio.StreamWriter):
    """A StreamWriter that sends everything written in one loop iteration at once.

    With TCP_NODELAY every ``write()`` is a send syscall and a segment; aiormq
    writes each frame (each publish, each ack) separately. Joining the writes
    of one iteration turns 64 replies and acks into one send.
    """

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: FastPathProtocol,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self.fastpath = protocol
        self._flush_soon = partial(loop.call_soon, self._flush)
        self._chunks: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._chunks:
            self._flush_soon()
        self._chunks.append(bytes(data))

    def _flush(self) -> None:
        if not self._chunks:
            return
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        if not self.transport.is_closing():
            super().write(data)

    async def drain(self) -> None:
        self._flush()
        await super().drain()

    def write_eof(self) -> None:
        self._flush()
        super().write_eof()

    def close(self) -> None:
        self._flush()
        super().close()


class FastPathTCP(TransportFactory):
    """aiormq's hook for opening the socket; remembers the writer it made."""

    def __init__(self) -> None:
        self.writer: CoalescingWriter | None = None

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = FastPathProtocol(reader, loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, url.host or "localhost", url.port or DEFAULT_PORT
            )
        except OSError as exc:
            # aiormq expects its own error type for a refused connection.
            raise aiormq.exceptions.AMQPConnectionError(*exc.args) from exc
        self.writer = CoalescingWriter(transport, protocol, reader, loop)
        return reader, self.writer
