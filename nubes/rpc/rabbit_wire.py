"""AMQP 0-9-1 frames for the messages the rabbit transport sends most.

aiormq builds every publish through pamqp objects, a lock and a queue; on
the hot path (call requests, replies, casts, acks) that was most of the
transport's time. These frames are the same bytes, built from parts encoded
once: per target the ``Basic.Publish`` method frame, per kind of message the
content properties, with only the correlation or message id spliced in.
Everything else (declarations, consuming, decoding deliveries) stays aiormq's.
"""

from __future__ import annotations

import struct

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_END = b"\xce"
#: type, channel, payload size.
_FRAME = struct.Struct(">BHI")
#: Bytes a frame adds around its payload: the 7-byte header and the end octet.
FRAME_OVERHEAD = _FRAME.size + 1

CLASS_BASIC = 60
METHOD_PUBLISH = 40
METHOD_ACK = 80
METHOD_REJECT = 90
_METHOD_ID = struct.Struct(">HH")
#: class id, weight (always 0), body size.
_CONTENT_HEADER = struct.Struct(">HHQ")
_DELIVERY_TAG_AND_BIT = struct.Struct(">HHQB")

#: Property flag bits, in the order the properties are encoded.
PROPERTY_FLAGS = {
    "content_type": 0x8000,
    "content_encoding": 0x4000,
    "headers": 0x2000,
    "delivery_mode": 0x1000,
    "priority": 0x0800,
    "correlation_id": 0x0400,
    "reply_to": 0x0200,
    "expiration": 0x0100,
    "message_id": 0x0080,
    "timestamp": 0x0040,
    "message_type": 0x0020,
    "user_id": 0x0010,
    "app_id": 0x0008,
}
#: Properties held in one octet; the others we send are short strings.
_OCTET_PROPERTIES = frozenset({"delivery_mode", "priority"})
_SUPPORTED = frozenset(PROPERTY_FLAGS) - {"headers", "timestamp"}


def shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {value[:40]!r}...")
    return bytes((len(raw),)) + raw


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME.pack(kind, channel, len(payload)) + payload + FRAME_END


def publish_method(channel: int, exchange: str, routing_key: str) -> bytes:
    """The ``Basic.Publish`` method frame (not mandatory, not immediate)."""
    payload = (
        _METHOD_ID.pack(CLASS_BASIC, METHOD_PUBLISH)
        + b"\x00\x00"  # reserved (ticket)
        + shortstr(exchange)
        + shortstr(routing_key)
        + b"\x00"
    )
    return _frame(FRAME_METHOD, channel, payload)


class PropertiesTemplate:
    """Content properties fixed but for one short-string field (``variable``).

    ``encode(value)`` gives the property flags and list with ``value`` in
    the variable field, ready for :func:`content_frames`.
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, variable: str | None = None, **fixed: str | int | None) -> None:
        values = {k: v for k, v in fixed.items() if v is not None}
        unknown = set(values) - _SUPPORTED
        if unknown or (variable is not None and variable not in _SUPPORTED - _OCTET_PROPERTIES):
            raise ValueError(f"unsupported properties: {sorted(unknown) or variable}")
        flags = 0
        head: list[bytes] = []
        tail: list[bytes] = []
        seen_variable = False
        for name, bit in PROPERTY_FLAGS.items():
            if name == variable:
                flags |= bit
                seen_variable = True
                continue
            if name not in values:
                continue
            flags |= bit
            value = values[name]
            encoded = bytes((int(value),)) if name in _OCTET_PROPERTIES else shortstr(str(value))
            (tail if seen_variable else head).append(encoded)
        self._head = struct.pack(">H", flags) + b"".join(head)
        self._tail = b"".join(tail)

    def encode(self, value: str = "") -> bytes:
        return self._head + shortstr(value) + self._tail


def content_frames(channel: int, properties: bytes, body: bytes, frame_max: int) -> bytes:
    """Content header and body frames of one message."""
    header = _CONTENT_HEADER.pack(CLASS_BASIC, 0, len(body)) + properties
    parts = [_FRAME.pack(FRAME_HEADER, channel, len(header)), header, FRAME_END]
    chunk = frame_max - FRAME_OVERHEAD
    if len(body) <= chunk:
        if body:
            parts += [_FRAME.pack(FRAME_BODY, channel, len(body)), body, FRAME_END]
    else:
        view = memoryview(body)
        for offset in range(0, len(body), chunk):
            piece = view[offset : offset + chunk]
            parts += [_FRAME.pack(FRAME_BODY, channel, len(piece)), piece.tobytes(), FRAME_END]
    return b"".join(parts)


def ack(channel: int, delivery_tag: int) -> bytes:
    return _frame(
        FRAME_METHOD, channel, _DELIVERY_TAG_AND_BIT.pack(CLASS_BASIC, METHOD_ACK, delivery_tag, 0)
    )


def reject(channel: int, delivery_tag: int, *, requeue: bool) -> bytes:
    return _frame(
        FRAME_METHOD,
        channel,
        _DELIVERY_TAG_AND_BIT.pack(CLASS_BASIC, METHOD_REJECT, delivery_tag, int(requeue)),
    )
