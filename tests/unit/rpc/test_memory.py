"""memory:// keeps the delivery guarantees the rabbit transport gives."""

from __future__ import annotations

import asyncio

import pytest

from nubes import exception
from nubes.rpc.memory import MemoryTransport
from nubes.rpc.transport import IncomingMessage, Target, TransportURL, get_transport


async def test_cast_before_any_listener_is_kept():
    t = get_transport("memory:///kept", identity="a")
    await t.cast(Target("early"), b"one")
    got: list[bytes] = []

    async def handler(msg: IncomingMessage) -> None:
        got.append(msg.body)

    await t.listen("early", "s1", handler)
    for _ in range(5):
        await asyncio.sleep(0)
    assert got == [b"one"]
    await t.close()


async def test_listener_stopped_mid_handler_gives_the_message_back(monkeypatch):
    monkeypatch.setattr("nubes.rpc.memory.DEFAULT_STOP_GRACE", 0.05)
    t = get_transport("memory:///redeliver", identity="a")
    first_started = asyncio.Event()
    second: list[bytes] = []

    async def stuck(msg: IncomingMessage) -> None:
        first_started.set()
        await asyncio.Event().wait()

    async def ok(msg: IncomingMessage) -> None:
        second.append(msg.body)

    l1 = await t.listen("redo", "s1", stuck)
    await t.cast(Target("redo"), b"job")
    await asyncio.wait_for(first_started.wait(), 1)
    await t.listen("redo", "s2", ok)
    await l1.stop()
    for _ in range(5):
        await asyncio.sleep(0)
    assert second == [b"job"]
    await t.close()


async def test_sender_identity_is_the_transport_identity():
    a = get_transport("memory:///ids", identity="compute.host-a")
    b = get_transport("memory:///ids", identity="conductor")
    seen: list[str | None] = []

    async def handler(msg: IncomingMessage) -> None:
        seen.append(msg.caller)
        await msg.reply(b"ok")

    await b.listen("who", "s", handler)
    assert await a.call(Target("who"), b"?", 1.0) == b"ok"
    assert seen == ["compute.host-a"]
    await a.close()
    await b.close()


async def test_buses_are_separate_per_virtual_host():
    a = get_transport("memory:///one", identity="x")
    b = get_transport("memory:///two", identity="x")
    got: list[bytes] = []

    async def handler(msg: IncomingMessage) -> None:
        got.append(msg.body)

    await b.listen("t", "s", handler)
    await a.cast(Target("t"), b"lost?")
    await asyncio.sleep(0.01)
    assert got == []
    await a.close()
    await b.close()


async def test_pending_call_fails_when_transport_closes():
    t = MemoryTransport(TransportURL.parse("memory:///close"), "a")
    call = asyncio.create_task(t.call(Target("nobody"), b"x", 5.0, label="x.y"))
    await asyncio.sleep(0.01)
    await t.close()
    with pytest.raises(exception.TransportError, match="closed"):
        await call


def test_transport_url_parsing():
    url = TransportURL.parse("rabbit://user:p%40ss@h1:5672,u2:pw2@h2/vhost?ssl=1")
    assert url.driver == "rabbit"
    assert [(h.host, h.port, h.username, h.password) for h in url.hosts] == [
        ("h1", 5672, "user", "p@ss"),
        ("h2", None, "u2", "pw2"),
    ]
    assert url.virtual_host == "vhost"
    assert url.query == {"ssl": "1"}
    with pytest.raises(exception.ConfigError):
        TransportURL.parse("no-scheme")
    with pytest.raises(exception.ConfigError):
        get_transport("kafka://x")


def test_target_rules():
    with pytest.raises(exception.ValidationError):
        Target("")
    with pytest.raises(exception.ValidationError):
        Target("t", server="s", fanout=True)
    assert str(Target("t", server="s")) == "t.s"


async def test_handlers_run_in_the_listening_context_not_the_senders():
    import contextvars

    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    t = get_transport("memory:///ctx", identity="a")
    seen: list[str] = []

    async def handler(msg: IncomingMessage) -> None:
        seen.append(who.get())
        await msg.reply(b"")

    async def listen_as_server() -> None:
        who.set("server")
        await t.listen("ctx", "s", handler)

    await asyncio.create_task(listen_as_server())
    who.set("sender")
    await t.call(Target("ctx"), b"x", 1.0)
    assert seen == ["server"]
    await t.close()
