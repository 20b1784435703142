"""A peer that keeps sending junk gets typed refusals, and the operator one
log line per peer per interval, not a flood."""

from __future__ import annotations

import logging

import msgspec
import pytest

from nubes import exception, versions
from nubes.context import RequestContext
from nubes.rpc import message
from nubes.rpc.client import RPCClient
from nubes.rpc.server import RefusalLog, RPCServer
from nubes.rpc.transport import Target, get_transport


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusal_log_admits_one_line_per_caller_per_interval_with_a_count() -> None:
    clock = Clock()
    log = RefusalLog(interval=10.0, clock=clock)
    assert log.admit("compute.a") == 0
    assert [log.admit("compute.a") for _ in range(5)] == [None] * 5
    assert log.admit("compute.b") == 0  # another caller has its own window
    clock.now += 10.0
    assert log.admit("compute.a") == 5  # the line says how many it left out
    assert log.admit("compute.a") is None
    clock.now += 30.0
    assert log.admit("compute.a") == 1


@pytest.mark.parametrize("text", ["1." + "9" * 5000, "١.٠", "1.٠", "01.0", "1.0.0", "", "1."])
def test_versions_parse_only_bounded_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        versions.parse_version(text)
    assert len(str(caught.value)) < 100


def test_nested_msgpack_is_a_malformed_message_not_a_recursion_error() -> None:
    body = (
        b"\x82"
        + msgspec.msgpack.encode("m")
        + msgspec.msgpack.encode("x")
        + msgspec.msgpack.encode("a")
        + b"\x81"
        + msgspec.msgpack.encode("k")
        + b"\x91" * 100_000
        + b"\x01"
    )
    with pytest.raises(exception.MalformedMessage):
        message.decode_request(body)


class Echo:
    RPC_API_VERSION = "1.0"

    async def echo(self, context: RequestContext, x: int) -> int:
        return x


async def test_a_flood_of_refused_messages_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server_t = get_transport("memory:///refusals", identity="conductor.c")
    peer_t = get_transport("memory:///refusals", identity="compute.h1")
    await server_t.connect()
    await peer_t.connect()
    server = RPCServer(server_t, "refusals", "c", [Echo()])
    await server.start()
    try:
        with caplog.at_level(logging.WARNING, logger="nubes.rpc.server"):
            for _ in range(20):
                body = msgspec.msgpack.encode({"m": "echo", "v": "١.٠", "a": {"x": 1}})
                reply = await peer_t.call(Target("refusals"), body, 5.0, label="t")
                with pytest.raises(exception.MalformedMessage):
                    message.decode_reply(reply, message.error_table([]), "echo")
        refused = [r for r in caplog.records if "Refused" in r.getMessage()]
        assert len(refused) == 1, [r.getMessage() for r in refused]
        client = RPCClient(peer_t, Target("refusals"), timeout=5)
        assert await client.call(RequestContext(), "echo", x=7) == 7
    finally:
        await server.stop()
        await peer_t.close()
        await server_t.close()
