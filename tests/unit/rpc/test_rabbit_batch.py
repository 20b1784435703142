"""The rabbit transport's batching: the envelope reads back what was packed and
refuses anything else; the Batcher groups one loop iteration's sends per key
and gives each sender the outcome of the publish its message went out in."""

from __future__ import annotations

import asyncio

import aiormq.exceptions
import pytest

from nubes.rpc import rabbit_batch as batching
from nubes.rpc.transport import MAX_MESSAGE_BYTES


def test_pack_unpack_round_trip() -> None:
    parts = [("1", b"one"), ("", b""), ("ç" * 100, b"\x00" * 300)]
    assert batching.unpack(batching.pack(parts), len(parts)) == parts


def test_pack_refuses_a_long_id() -> None:
    with pytest.raises(ValueError, match="255"):
        batching.pack([("x" * 256, b"")])


@pytest.mark.parametrize(
    ("data", "count"),
    [
        (batching.pack([("a", b"x")]), 2),  # fewer messages than announced
        (batching.pack([("a", b"x")]) + b"!", 1),  # bytes left over
        (batching.pack([("a", b"xyz")])[:-1], 1),  # truncated body
        (b"\x05ab", 1),  # truncated id
        (b"\x01\xff\x00\x00\x00\x00", 1),  # id not UTF-8
        (b"\x00" + (MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"), 1),  # oversized body
        (batching.pack([("a", b"x")]), 0),
        (batching.pack([("a", b"x")]), -1),
        (batching.pack([("a", b"x")]), batching.MAX_RECEIVED_BATCH + 1),
        (batching.pack([("a", b"x")]), "1"),
        (batching.pack([("a", b"x")]), True),
        (batching.pack([("a", b"x")]), None),
    ],
)
def test_unpack_refuses_a_malformed_batch(data: bytes, count: object) -> None:
    with pytest.raises(ValueError):
        batching.unpack(data, count)


class Recorder:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.sent: list[tuple[str, list[tuple[str, bytes]]]] = []
        self.fail = fail

    async def send(self, key: str, parts: list[tuple[str, bytes]]) -> None:
        await asyncio.sleep(0)
        self.sent.append((key, parts))
        if self.fail is not None:
            raise self.fail


async def test_one_iteration_is_one_publish_per_key() -> None:
    rec = Recorder()
    b: batching.Batcher[str] = batching.Batcher(rec.send)
    await asyncio.gather(b.send("q1", "1", b"a"), b.send("q2", "2", b"b"), b.send("q1", "3", b"c"))
    assert sorted(rec.sent) == [("q1", [("1", b"a"), ("3", b"c")]), ("q2", [("2", b"b")])]
    # A lone send later goes alone.
    await b.send("q1", "4", b"d")
    assert rec.sent[-1] == ("q1", [("4", b"d")])


async def test_a_full_batch_goes_at_once_and_the_rest_follows() -> None:
    rec = Recorder()
    b: batching.Batcher[str] = batching.Batcher(rec.send)
    n = batching.MAX_BATCH + 3
    await asyncio.gather(*(b.send("q", str(i), b"x") for i in range(n)))
    assert [len(parts) for _, parts in rec.sent] == [batching.MAX_BATCH, 3]
    assert [i for _, parts in rec.sent for i, _ in parts] == [str(i) for i in range(n)]


async def test_a_large_body_goes_alone() -> None:
    rec = Recorder()
    b: batching.Batcher[str] = batching.Batcher(rec.send)
    big = b"x" * batching.MAX_BATCHED_BODY
    await asyncio.gather(b.send("q", "1", b"a"), b.send("q", "2", big), b.send("q", "3", b"c"))
    assert sorted(len(parts) for _, parts in rec.sent) == [1, 2]


async def test_a_failed_publish_fails_every_sender_in_it() -> None:
    rec = Recorder(fail=aiormq.exceptions.DeliveryError(None, None))  # type: ignore[arg-type]
    b: batching.Batcher[str] = batching.Batcher(rec.send)
    results = await asyncio.gather(
        b.send("q", "1", b"a"), b.send("q", "2", b"b"), return_exceptions=True
    )
    assert len(rec.sent) == 1
    assert all(isinstance(r, aiormq.exceptions.DeliveryError) for r in results)


async def test_a_sender_that_gave_up_is_left_out() -> None:
    rec = Recorder()
    b: batching.Batcher[str] = batching.Batcher(rec.send)
    gone = asyncio.ensure_future(b.send("q", "1", b"a"))
    stays = asyncio.ensure_future(b.send("q", "2", b"b"))
    await asyncio.sleep(0)  # both queued in this iteration
    gone.cancel()
    await stays
    assert rec.sent == [("q", [("2", b"b")])]


async def test_a_message_sent_alone_is_never_batched() -> None:
    rec = Recorder()
    b: batching.Batcher[str] = batching.Batcher(rec.send)
    await asyncio.gather(b.send("q", "1", b"a"), b.send("q", "2", b"b", alone=True))
    assert sorted(rec.sent) == [("q", [("1", b"a")]), ("q", [("2", b"b")])]
