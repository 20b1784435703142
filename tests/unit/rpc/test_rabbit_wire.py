"""The transport's own AMQP framing: frames it builds decode (with pamqp) to
what was meant, and the read fast path takes exactly the frames it should."""

from __future__ import annotations

import asyncio
import datetime

import pamqp.frame
import pytest
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from nubes.rpc import rabbit_wire as wire
from nubes.rpc.rabbit_socket import Delivery, FastPathProtocol, PublishRefused

FRAME_MAX = 4096


def _frames(data: bytes) -> list[tuple[int, object]]:
    out = []
    offset = 0
    while offset < len(data):
        consumed, channel, frame = pamqp.frame.unmarshal(data[offset:])
        out.append((channel, frame))
        offset += consumed
    return out


def test_publish_method_matches_pamqp() -> None:
    expected = pamqp.frame.marshal(spec.Basic.Publish(exchange="nubes", routing_key="t.s"), 7)
    assert wire.publish_method(7, "nubes", "t.s") == expected


@pytest.mark.parametrize(
    ("variable", "fixed", "value"),
    [
        (
            "correlation_id",
            {
                "delivery_mode": 1,
                "reply_to": "amq.rabbitmq.reply-to",
                "expiration": "5000",
                "user_id": "host-a",
            },
            "42",
        ),
        ("message_id", {"delivery_mode": 2, "user_id": "host-a"}, "host-a.9"),
        ("correlation_id", {"user_id": "é-unicode"}, ""),
    ],
)
def test_properties_and_content_decode_to_the_same_message(
    variable: str, fixed: dict[str, str | int], value: str
) -> None:
    body = bytes(range(256)) * 40  # several body frames at FRAME_MAX
    data = wire.content_frames(
        3, wire.PropertiesTemplate(variable, **fixed).encode(value), body, FRAME_MAX
    )
    frames = _frames(data)
    assert all(channel == 3 for channel, _ in frames)
    header = frames[0][1]
    assert isinstance(header, ContentHeader)
    assert header.body_size == len(body)
    decoded = {name: getattr(header.properties, name) for name in (*fixed, variable)}
    assert decoded == {**fixed, variable: value}
    chunks = [f for _, f in frames[1:]]
    assert all(isinstance(f, ContentBody) for f in chunks)
    assert all(len(f.value) <= FRAME_MAX - wire.FRAME_OVERHEAD for f in chunks)
    assert b"".join(f.value for f in chunks) == body


def test_empty_body_has_no_body_frame() -> None:
    data = wire.content_frames(1, wire.PropertiesTemplate("message_id").encode("x"), b"", 131072)
    assert [type(f) for _, f in _frames(data)] == [ContentHeader]


def test_ack_and_reject() -> None:
    assert wire.ack(5, 2**40) == pamqp.frame.marshal(spec.Basic.Ack(delivery_tag=2**40), 5)
    assert wire.reject(5, 9, requeue=True) == pamqp.frame.marshal(
        spec.Basic.Reject(delivery_tag=9, requeue=True), 5
    )


def test_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(ValueError):
        wire.PropertiesTemplate("headers")
    with pytest.raises(ValueError):
        wire.shortstr("x" * 256)


# -- the read fast path -----------------------------------------------------------


def _deliver(channel: int, consumer_tag: str, tag: int, body: bytes, **props: object) -> bytes:
    return (
        pamqp.frame.marshal(
            spec.Basic.Deliver(
                consumer_tag=consumer_tag, delivery_tag=tag, exchange="nubes", routing_key="t"
            ),
            channel,
        )
        + pamqp.frame.marshal(
            ContentHeader(0, len(body), spec.Basic.Properties(**props)),  # type: ignore[arg-type]
            channel,
        )
        + b"".join(
            pamqp.frame.marshal(ContentBody(body[i : i + 1000]), channel)
            for i in range(0, len(body), 1000)
        )
    )


async def _protocol() -> tuple[FastPathProtocol, asyncio.StreamReader]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    return FastPathProtocol(reader, loop), reader


async def _forwarded(reader: asyncio.StreamReader) -> bytes:
    reader.feed_eof()
    return await reader.read()


@pytest.mark.parametrize("chunk", [1, 7, 100, 100_000])
async def test_fast_path_takes_registered_deliveries_and_passes_the_rest(chunk: int) -> None:
    protocol, reader = await _protocol()
    got: list[Delivery] = []
    protocol.consume("mine", got.append)
    body = bytes(range(256)) * 20
    other = pamqp.frame.marshal(spec.Basic.QosOk(), 2)
    theirs = _deliver(4, "aiormq-tag", 1, b"not mine")
    stream = (
        _deliver(
            3,
            "mine",
            7,
            body,
            user_id="host-a",
            reply_to="r",
            correlation_id="c1",
            headers={"x": 1},
            timestamp=datetime.datetime(2026, 1, 2, 3, 4, 5),
            delivery_mode=2,
            expiration="10",
        )
        + other
        + theirs
        + _deliver(3, "mine", 8, b"", user_id="host-b")
    )
    for i in range(0, len(stream), chunk):
        protocol.data_received(stream[i : i + chunk])
    assert [(d.delivery_tag, d.user_id, d.reply_to, d.correlation_id) for d in got] == [
        (7, "host-a", "r", "c1"),
        (8, "host-b", None, None),
    ]
    assert got[0].body == body and got[1].body == b""
    assert await _forwarded(reader) == other + theirs


async def test_fast_path_settles_confirms_of_tracked_channels() -> None:
    protocol, reader = await _protocol()
    loop = asyncio.get_running_loop()
    tracker = protocol.track_confirms(5)
    futures = [loop.create_future() for _ in range(4)]
    for fut in futures:
        tracker.expect(fut)
    protocol.data_received(
        pamqp.frame.marshal(spec.Basic.Ack(delivery_tag=2, multiple=True), 5)
        + pamqp.frame.marshal(spec.Basic.Nack(delivery_tag=3), 5)
        + pamqp.frame.marshal(spec.Basic.Ack(delivery_tag=1), 6)  # untracked channel
    )
    assert futures[0].result() is None and futures[1].result() is None
    with pytest.raises(PublishRefused):
        futures[2].result()
    assert not futures[3].done()
    tracker.fail(ConnectionError("gone"))
    with pytest.raises(ConnectionError):
        futures[3].result()
    assert await _forwarded(reader) == pamqp.frame.marshal(spec.Basic.Ack(delivery_tag=1), 6)


async def test_fast_path_keeps_aiormq_aware_of_a_busy_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    protocol, reader = await _protocol()
    protocol.consume("mine", lambda d: None)
    monkeypatch.setattr("nubes.rpc.rabbit_socket.AIORMQ_KEEPALIVE", -1.0)
    protocol.data_received(_deliver(1, "mine", 1, b"x"))
    # Only a heartbeat reaches aiormq: proof of life without the message.
    assert await _forwarded(reader) == pamqp.frame.marshal(Heartbeat(), 0)


async def test_fast_path_stays_out_of_a_protocol_mismatch() -> None:
    protocol, reader = await _protocol()
    protocol.consume("mine", lambda d: None)
    protocol.data_received(b"AMQP\x00\x00\x09\x01" + _deliver(1, "mine", 1, b"x"))
    assert (await _forwarded(reader)).startswith(b"AMQP")
