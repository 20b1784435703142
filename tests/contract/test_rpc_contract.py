"""What every transport and the RPC layer on it must do, on memory:// and rabbit://."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from nubes import exception
from nubes.context import RequestContext
from nubes.rpc import message
from nubes.rpc.client import RPCClient
from nubes.rpc.server import RPCServer
from nubes.rpc.transport import Target

from .conftest import TransportFactory


class Thing(exception.NotFound):
    msg_fmt = "Thing %(name)s could not be found"


class Echo:
    RPC_API_VERSION = "1.2"
    RPC_EXPECTED_ERRORS = (Thing,)

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Any] = []
        self.got = asyncio.Event()

    async def echo(self, context: RequestContext, value: Any = None) -> dict[str, Any]:
        return {
            "value": value,
            "server": self.name,
            "caller": context.caller,
            "request_id": context.request_id,
        }

    async def add(self, context: RequestContext, a: int, b: int) -> int:
        return a + b

    async def note(self, context: RequestContext, value: Any) -> None:
        self.seen.append(value)
        self.got.set()

    async def slow(self, context: RequestContext, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "late"

    async def missing(self, context: RequestContext, name: str) -> None:
        raise Thing(name=name)

    async def broken(self, context: RequestContext) -> None:
        raise RuntimeError("kaboom")


async def _servers(
    make_transport: TransportFactory, topic: str, names: list[str]
) -> tuple[list[RPCServer], list[Echo]]:
    servers, endpoints = [], []
    for name in names:
        t = await make_transport(f"server-{name}")
        ep = Echo(name)
        srv = RPCServer(t, topic, name, [ep])
        await srv.start()
        servers.append(srv)
        endpoints.append(ep)
    return servers, endpoints


async def _client(make_transport: TransportFactory, topic: str, **kw: Any) -> RPCClient:
    t = await make_transport("client")
    kw.setdefault("version", "1.0")
    kw.setdefault("timeout", 10.0)
    return RPCClient(t, Target(topic), expected_errors=[Thing], **kw)


async def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_call_returns_result_with_verified_caller(make_transport, topic):
    await _servers(make_transport, topic, ["a"])
    client = await _client(make_transport, topic)
    ctxt = RequestContext(user_id="u1", project_id="p1")
    result = await client.call(ctxt, "echo", value={"k": [1, 2.5, "x", None, True]})
    assert result["value"] == {"k": [1, 2.5, "x", None, True]}
    assert result["caller"] == client.transport.identity
    assert result["request_id"] == ctxt.request_id
    assert await client.call(ctxt, "add", a=2, b=3) == 5


async def test_cast_is_delivered(make_transport, topic):
    _, (ep,) = await _servers(make_transport, topic, ["a"])
    client = await _client(make_transport, topic)
    await client.cast(RequestContext(), "note", value=7)
    await asyncio.wait_for(ep.got.wait(), 10)
    assert ep.seen == [7]


async def test_topic_is_load_balanced(make_transport, topic):
    _, endpoints = await _servers(make_transport, topic, ["a", "b"])
    client = await _client(make_transport, topic)
    # Concurrent calls with a short sleep make both servers take work even
    # when a broker hands out messages in prefetch-sized batches.
    results = await asyncio.gather(
        *(client.call(RequestContext(), "slow", seconds=0.05) for _ in range(40))
    )
    assert results == ["late"] * 40
    for i in range(40):
        await client.cast(RequestContext(), "note", value=i)
    await _wait_for(lambda: sum(len(ep.seen) for ep in endpoints) == 40)
    assert sorted(v for ep in endpoints for v in ep.seen) == list(range(40))
    calls = [await client.call(RequestContext(), "echo") for _ in range(20)]
    calls += await asyncio.gather(*(client.call(RequestContext(), "echo") for _ in range(40)))
    assert {c["server"] for c in calls} <= {"a", "b"}


async def test_topic_load_balancing_reaches_every_server(make_transport, topic):
    _, endpoints = await _servers(make_transport, topic, ["a", "b"])
    client = await _client(make_transport, topic)
    results = await asyncio.gather(
        *(client.call(RequestContext(), "slow", seconds=0.01) for _ in range(20))
    )
    assert results == ["late"] * 20
    for i in range(20):
        await client.cast(RequestContext(), "note", value=i)
    await _wait_for(lambda: sum(len(ep.seen) for ep in endpoints) == 20)
    # Both servers took a share of the casts.
    assert all(ep.seen for ep in endpoints)


async def test_server_target_reaches_only_that_server(make_transport, topic):
    await _servers(make_transport, topic, ["a", "b", "c"])
    client = await _client(make_transport, topic)
    to_b = client.prepare(server="b")
    results = await asyncio.gather(*(to_b.call(RequestContext(), "echo") for _ in range(20)))
    assert {r["server"] for r in results} == {"b"}


async def test_fanout_reaches_every_server(make_transport, topic):
    _, endpoints = await _servers(make_transport, topic, ["a", "b", "c"])
    client = await _client(make_transport, topic)
    await client.prepare(fanout=True).cast(RequestContext(), "note", value="all")
    await _wait_for(lambda: all(ep.seen == ["all"] for ep in endpoints))


async def test_call_times_out_within_bounds(make_transport, topic):
    await _servers(make_transport, topic, ["a"])
    client = await _client(make_transport, topic)
    start = time.monotonic()
    with pytest.raises(exception.MessagingTimeout) as info:
        await client.prepare(timeout=0.3).call(RequestContext(), "slow", seconds=1.0)
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 2.0
    assert "slow" in str(info.value)


async def test_call_with_no_server_times_out(make_transport, topic):
    client = await _client(make_transport, topic)
    with pytest.raises(exception.MessagingTimeout):
        await client.prepare(timeout=0.3).call(RequestContext(), "echo")


async def test_newer_minor_or_other_major_is_refused_at_once(make_transport, topic):
    await _servers(make_transport, topic, ["a"])
    client = await _client(make_transport, topic)
    assert (await client.prepare(version="1.2").call(RequestContext(), "echo"))["server"] == "a"
    for version in ("1.3", "2.0", "0.9"):
        start = time.monotonic()
        with pytest.raises(exception.UnsupportedVersion) as info:
            await client.prepare(version=version).call(RequestContext(), "echo")
        # Refused by the server, not a timeout.
        assert time.monotonic() - start < 5
        assert version in str(info.value)


async def test_version_cap_refuses_locally(make_transport, topic):
    client = await _client(make_transport, topic, version_cap="1.1")
    assert client.can_send_version("1.1")
    assert not client.can_send_version("1.2")
    assert not client.can_send_version("2.0")
    with pytest.raises(exception.UnsupportedVersion):
        await client.prepare(version="1.2").call(RequestContext(), "echo")


async def test_expected_error_arrives_as_its_class(make_transport, topic):
    await _servers(make_transport, topic, ["a"])
    client = await _client(make_transport, topic)
    with pytest.raises(Thing) as info:
        await client.call(RequestContext(), "missing", name="gizmo")
    assert info.value.message == "Thing gizmo could not be found"
    assert info.value.kwargs == {"name": "gizmo"}
    assert info.value.code == 404


async def test_expected_error_not_declared_by_client_is_remote_error(make_transport, topic):
    await _servers(make_transport, topic, ["a"])
    t = await make_transport("client")
    client = RPCClient(t, Target(topic), timeout=10)
    with pytest.raises(exception.RemoteError) as info:
        await client.call(RequestContext(), "missing", name="gizmo")
    assert "Thing" in str(info.value) and "gizmo" in str(info.value)


async def test_unexpected_error_is_remote_error_and_logged(make_transport, topic, caplog):
    await _servers(make_transport, topic, ["a"])
    client = await _client(make_transport, topic)
    with pytest.raises(exception.RemoteError) as info:
        await client.call(RequestContext(), "broken")
    assert "RuntimeError" in str(info.value) and "kaboom" in str(info.value)
    assert any(r.exc_info for r in caplog.records if "broken" in r.getMessage())
    # The server still serves.
    assert await client.call(RequestContext(), "add", a=1, b=1) == 2


async def test_bad_requests_get_typed_errors(make_transport, topic):
    await _servers(make_transport, topic, ["a"])
    client = await _client(make_transport, topic)
    ctxt = RequestContext()
    with pytest.raises(exception.NoSuchMethod):
        await client.call(ctxt, "nope")
    with pytest.raises(exception.NoSuchMethod):
        await client.call(ctxt, "_private")
    with pytest.raises(exception.NoSuchMethod):
        await client.prepare(namespace="other").call(ctxt, "echo")
    with pytest.raises(exception.InvalidArguments, match="missing b"):
        await client.call(ctxt, "add", a=1)
    with pytest.raises(exception.InvalidArguments, match="unexpected c"):
        await client.call(ctxt, "add", a=1, b=2, c=3)
    with pytest.raises(exception.InvalidArguments, match="a must be an integer"):
        await client.call(ctxt, "add", a="1", b=2)
    with pytest.raises(exception.InvalidArguments):
        await client.call(ctxt, "add", a=True, b=2)
    assert await client.call(ctxt, "add", a=1, b=2) == 3


async def test_claimed_identity_must_match_sender(make_transport, topic):
    await _servers(make_transport, topic, ["a"])
    client = await _client(make_transport, topic)
    forged = RequestContext(caller="conductor-1")
    if forged.caller == client.transport.identity:
        pytest.skip("the broker user is the claimed identity")
    with pytest.raises(exception.IdentityMismatch):
        await client.call(forged, "echo")
    honest = RequestContext(caller=client.transport.identity)
    assert (await client.call(honest, "echo"))["caller"] == client.transport.identity


async def test_malformed_bodies_get_errors_and_server_survives(make_transport, topic):
    await _servers(make_transport, topic, ["a"])
    t = await make_transport("client")
    target = Target(topic)
    errors = message.error_table([])
    bodies = [
        b"",
        b"\xc1",
        b"not msgpack at all",
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"v": "1.0"}),
        msgspec.msgpack.encode({"m": 5}),
        msgspec.msgpack.encode({"m": "echo", "v": "x.y"}),
        msgspec.msgpack.encode({"m": "echo", "c": {"roles": "admin"}}),
        msgspec.msgpack.encode({"m": "echo", "a": [1]}),
    ]
    for body in bodies:
        reply = await t.call(target, body, 10.0, label="raw")
        with pytest.raises(exception.RPCError):
            message.decode_reply(reply, errors, "raw")
        await t.cast(target, body, label="raw")
    client = await _client(make_transport, topic)
    assert await client.call(RequestContext(), "add", a=20, b=22) == 42


async def test_base_api_ping_and_whoami(make_transport, topic):
    await _servers(make_transport, topic, ["a"])
    client = await _client(make_transport, topic)
    base = client.prepare(namespace="baseapi")
    assert await base.call(RequestContext(), "ping", arg="pong") == "pong"
    who = await base.call(RequestContext(), "whoami")
    assert who["caller"] == client.transport.identity
    assert who["server"] == "a"


async def test_closed_transport_fails_clearly(make_transport, topic):
    client = await _client(make_transport, topic)
    await client.transport.close()
    with pytest.raises(exception.TransportError):
        await client.call(RequestContext(), "echo")


async def test_an_oversized_message_gets_a_typed_error_and_the_server_keeps_serving(
    make_transport, topic
):
    await _servers(make_transport, topic, ["a"])
    t = await make_transport("raw")
    body = message.encode_request(
        message.Request(m="echo", v="1.0", ns=None, a={"value": "x" * (9 << 20)}, c={}),
        None,
    )
    reply = await t.call(Target(topic), body, 30.0, label="raw")
    with pytest.raises(exception.TooLarge, match="the request is"):
        message.decode_reply(reply, message.error_table(()), "raw")
    client = await _client(make_transport, topic)
    # Our own client refuses to send one at all.
    with pytest.raises(exception.TooLarge):
        await client.call(RequestContext(), "echo", value="x" * (9 << 20))
    assert await client.call(RequestContext(), "add", a=20, b=22) == 42
