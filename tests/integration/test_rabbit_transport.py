"""The rabbit:// transport against a real RabbitMQ.

Every test uses its own topic; the queues and exchange it made are deleted
afterwards. Two tests restart the broker application (``rabbitmqctl
stop_app``/``start_app``, never the whole server): other test runs may share
the broker, so nothing else here restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiormq
import aiormq.exceptions
import pytest
from pamqp import commands as spec

from nubes import exception
from nubes.rpc import rabbit_batch as batching
from nubes.rpc.rabbit import RabbitTransport
from nubes.rpc.rabbit_connection import amqp_url
from nubes.rpc.rabbit_session import EXCHANGE
from nubes.rpc.transport import IncomingMessage, Target, TransportURL, get_transport
from tests import servers

pytestmark = pytest.mark.rabbit

SERVERS = ("a", "b", "c")
#: Test transports reconnect quickly and give up on the broker after this long.
WAIT_BOUND = 20.0
FAST_BACKOFF = {"reconnect_backoff_min": 0.05, "reconnect_backoff_max": 0.5}
RESTART_TIMEOUT = 180
PASSWORD = "nubes-test-secret"

Factory = Callable[..., Awaitable[RabbitTransport]]


def _with_user(url: str, user: str, password: str) -> str:
    parsed = TransportURL.parse(url)
    host = parsed.hosts[0]
    return f"rabbit://{user}:{password}@{host.host}:{host.port or 5672}/{parsed.virtual_host}"


def _rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, check=check, timeout=120
    )


async def _restart_broker_app() -> None:
    """Restart RabbitMQ's application, keeping the event loop running meanwhile."""
    for step in ("stop_app", "start_app"):
        proc = await asyncio.create_subprocess_exec(
            "rabbitmqctl", step, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, f"rabbitmqctl {step}: {err.decode()}"


async def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def _delete_topology(url: str, topic: str) -> None:
    await servers.delete_rabbit_topology(url, topic, SERVERS)


@pytest.fixture
async def topic(rabbit_url: str) -> AsyncIterator[str]:
    name = f"test-rabbit-{uuid.uuid4().hex[:12]}"
    yield name
    await _delete_topology(rabbit_url, name)


@pytest.fixture
async def make_transport(rabbit_url: str) -> AsyncIterator[Factory]:
    opened: list[RabbitTransport] = []

    async def factory(url: str | None = None, **options: Any) -> RabbitTransport:
        options = {"rpc_response_timeout": WAIT_BOUND, **FAST_BACKOFF, **options}
        transport = get_transport(url or rabbit_url, **options)
        assert isinstance(transport, RabbitTransport)
        opened.append(transport)
        await transport.connect()
        return transport

    yield factory
    for transport in reversed(opened):
        await transport.close()


@pytest.fixture(scope="module")
def broker_users() -> Iterator[tuple[str, str]]:
    """Two broker users with full rights on the test vhost, removed afterwards.

    The names carry a per-run suffix so concurrent runs on a shared broker do
    not delete each other's users.
    """
    servers.require("rabbit")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed; it creates the per-identity broker users")
    suffix = uuid.uuid4().hex[:6]
    vhost = TransportURL.parse(servers.RABBIT_URL).virtual_host or "/"
    users = (f"nubes-test-host-a-{suffix}", f"nubes-test-host-b-{suffix}")
    for user in users:
        if _rabbitmqctl("add_user", user, PASSWORD, check=False).returncode != 0:
            _rabbitmqctl("change_password", user, PASSWORD)  # left over: make it usable again
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    try:
        yield users
    finally:
        for user in users:
            _rabbitmqctl("delete_user", user, check=False)


def _collector() -> tuple[list[IncomingMessage], Callable[[IncomingMessage], Awaitable[None]]]:
    got: list[IncomingMessage] = []

    async def handler(msg: IncomingMessage) -> None:
        got.append(msg)
        if msg.expects_reply:
            await msg.reply(b"re:" + msg.body)

    return got, handler


# -- basic delivery ------------------------------------------------------------


async def test_call_round_trip(make_transport: Factory, topic: str) -> None:
    server = await make_transport()
    client = await make_transport()
    got, handler = _collector()
    await server.listen(topic, "a", handler)

    assert await client.call(Target(topic), b"ping", 5.0) == b"re:ping"
    assert await client.call(Target(topic, server="a"), b"direct", 5.0) == b"re:direct"
    assert [m.caller for m in got] == ["guest", "guest"]
    # Many calls in flight at once are told apart by correlation id.
    bodies = [str(i).encode() for i in range(200)]
    replies = await asyncio.gather(*(client.call(Target(topic), b, 5.0) for b in bodies))
    assert replies == [b"re:" + b for b in bodies]
    # Bodies larger than a frame travel in several body frames; empty ones in none.
    big = os.urandom(1_000_000)
    assert await client.call(Target(topic), big, 10.0) == b"re:" + big
    assert await client.call(Target(topic), b"", 5.0) == b"re:"


async def test_cast_is_load_balanced_across_listeners(make_transport: Factory, topic: str) -> None:
    one, two = await make_transport(), await make_transport()
    got_a, handler_a = _collector()
    got_b, handler_b = _collector()
    await one.listen(topic, "a", handler_a)
    await two.listen(topic, "b", handler_b)
    client = await make_transport()

    for i in range(40):
        await client.cast(Target(topic), str(i).encode())
    await _wait_for(lambda: len(got_a) + len(got_b) == 40)
    assert got_a and got_b
    assert sorted(int(m.body) for m in got_a + got_b) == list(range(40))


async def test_server_target_reaches_only_that_server(make_transport: Factory, topic: str) -> None:
    transport = await make_transport()
    got_a, handler_a = _collector()
    got_b, handler_b = _collector()
    await transport.listen(topic, "a", handler_a)
    await transport.listen(topic, "b", handler_b)

    for i in range(10):
        await transport.cast(Target(topic, server="b"), str(i).encode())
    await _wait_for(lambda: len(got_b) == 10)
    await asyncio.sleep(0.2)
    assert got_a == []


async def test_fanout_reaches_every_listener(make_transport: Factory, topic: str) -> None:
    transports = [await make_transport() for _ in SERVERS]
    gots = []
    for transport, name in zip(transports, SERVERS, strict=True):
        got, handler = _collector()
        gots.append(got)
        await transport.listen(topic, name, handler)

    await transports[0].cast(Target(topic, fanout=True), b"all")
    await _wait_for(lambda: all(len(g) == 1 for g in gots))
    assert [g[0].body for g in gots] == [b"all"] * len(SERVERS)


async def test_call_to_fanout_is_refused(make_transport: Factory, topic: str) -> None:
    transport = await make_transport()
    with pytest.raises(exception.ValidationError):
        await transport.call(Target(topic, fanout=True), b"x", 1.0)


async def test_call_timeout_is_exact(make_transport: Factory, topic: str) -> None:
    server = await make_transport()
    client = await make_transport()
    release = asyncio.Event()

    async def silent(msg: IncomingMessage) -> None:
        await release.wait()

    await server.listen(topic, "a", silent)
    for timeout in (0.3, 1.0):
        start = time.monotonic()
        with pytest.raises(exception.MessagingTimeout) as info:
            await client.call(Target(topic), b"x", timeout, label=f"{topic}.wait")
        elapsed = time.monotonic() - start
        assert timeout <= elapsed < timeout + 0.2
        assert f"{topic}.wait" in str(info.value)
    release.set()


async def test_call_with_no_server_times_out(make_transport: Factory, topic: str) -> None:
    client = await make_transport()
    start = time.monotonic()
    with pytest.raises(exception.MessagingTimeout):
        await client.call(Target(topic), b"x", 0.3)
    assert time.monotonic() - start < 0.5


async def test_cast_before_any_server_is_kept(make_transport: Factory, topic: str) -> None:
    client = await make_transport()
    await client.cast(Target(topic), b"early")
    await client.cast(Target(topic, server="a"), b"early-direct")
    server = await make_transport()
    got, handler = _collector()
    await server.listen(topic, "a", handler)
    await _wait_for(lambda: len(got) == 2)
    assert sorted(m.body for m in got) == [b"early", b"early-direct"]


async def test_handlers_run_concurrently_up_to_max_concurrency(
    make_transport: Factory, topic: str
) -> None:
    server = await make_transport()
    client = await make_transport()
    running = peak = 0

    async def slow(msg: IncomingMessage) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.2)
        running -= 1
        await msg.reply(b"done")

    await server.listen(topic, "a", slow, max_concurrency=4)
    start = time.monotonic()
    await asyncio.gather(*(client.call(Target(topic), b"x", 10.0) for _ in range(12)))
    # 12 handlers of 0.2 s, 4 at a time: three waves, not twelve.
    assert time.monotonic() - start < 1.5
    assert peak == 4


async def test_handler_error_is_logged_and_message_acked(
    make_transport: Factory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_transport()
    seen: list[bytes] = []

    async def broken(msg: IncomingMessage) -> None:
        seen.append(msg.body)
        raise RuntimeError("handler bug")

    listener = await server.listen(topic, "a", broken)
    with caplog.at_level(logging.ERROR, logger="nubes.rpc.rabbit_session"):
        await server.cast(Target(topic), b"boom")
        await _wait_for(lambda: len(seen) == 1)
        await asyncio.sleep(0.2)
    assert "handler bug" in caplog.text
    await listener.stop()
    # Acknowledged despite the error: a new listener gets nothing.
    got, handler = _collector()
    await server.listen(topic, "b", handler)
    await asyncio.sleep(0.3)
    assert got == [] and seen == [b"boom"]


# -- redelivery ------------------------------------------------------------------


async def test_listener_stopped_mid_handler_gives_message_back(
    make_transport: Factory, topic: str
) -> None:
    first = await make_transport(stop_grace=0.2)
    started = asyncio.Event()

    async def stuck(msg: IncomingMessage) -> None:
        started.set()
        await asyncio.Event().wait()

    listener = await first.listen(topic, "a", stuck)
    await first.cast(Target(topic), b"work")
    await asyncio.wait_for(started.wait(), 5)

    second = await make_transport()
    got, handler = _collector()
    await second.listen(topic, "b", handler)
    await listener.stop()
    await _wait_for(lambda: len(got) == 1)
    assert got[0].body == b"work"


async def test_handler_cancelled_without_ack_is_redelivered(
    make_transport: Factory, topic: str
) -> None:
    transport = await make_transport()
    attempts: list[bytes] = []

    async def flaky(msg: IncomingMessage) -> None:
        attempts.append(msg.body)
        if len(attempts) == 1:
            raise asyncio.CancelledError  # the handler's task is killed

    await transport.listen(topic, "a", flaky)
    await transport.cast(Target(topic), b"again")
    await _wait_for(lambda: len(attempts) == 2)
    assert attempts == [b"again", b"again"]


async def test_process_killed_mid_handler_redelivers(
    rabbit_url: str, make_transport: Factory, topic: str
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from nubes.rpc.transport import get_transport

        async def main():
            transport = get_transport({rabbit_url!r})
            async def stuck(msg):
                print("got", flush=True)
                await asyncio.Event().wait()
            await transport.listen({topic!r}, "a", stuck)
            print("listening", flush=True)
            await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, env=dict(os.environ)
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"listening"
        client = await make_transport()
        await client.cast(Target(topic), b"survivor")
        assert (await asyncio.wait_for(proc.stdout.readline(), 10)).strip() == b"got"
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    got, handler = _collector()
    await client.listen(topic, "b", handler)
    await _wait_for(lambda: len(got) == 1)
    assert got[0].body == b"survivor"


# -- identity --------------------------------------------------------------------


async def test_caller_is_the_sending_broker_user(
    rabbit_url: str, make_transport: Factory, topic: str, broker_users: tuple[str, str]
) -> None:
    server = await make_transport()
    got, handler = _collector()
    await server.listen(topic, "a", handler)
    for user in broker_users:
        sender = await make_transport(_with_user(rabbit_url, user, PASSWORD))
        assert sender.identity == user
        await sender.cast(Target(topic), user.encode())
        assert await sender.call(Target(topic), user.encode(), 5.0) == b"re:" + user.encode()
    await _wait_for(lambda: len(got) == 4)
    assert all(m.caller == m.body.decode() for m in got)
    assert {m.caller for m in got} == set(broker_users)


def test_identity_must_be_the_broker_user(rabbit_url: str) -> None:
    with pytest.raises(exception.ConfigError, match="broker user"):
        get_transport(rabbit_url, identity="someone-else")
    assert get_transport(rabbit_url, identity="guest").identity == "guest"


async def test_forged_user_id_is_refused_and_missing_one_is_unverified(
    rabbit_url: str, make_transport: Factory, topic: str, broker_users: tuple[str, str]
) -> None:
    server = await make_transport()
    got, handler = _collector()
    await server.listen(topic, "a", handler)
    host_a, host_b = broker_users
    parsed = TransportURL.parse(_with_user(rabbit_url, host_a, PASSWORD))
    conn = await aiormq.connect(amqp_url(parsed.hosts[0], parsed.virtual_host, 0))
    try:
        channel = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="user_id"):
            await channel.basic_publish(
                b"forged",
                exchange=EXCHANGE,
                routing_key=topic,
                properties=spec.Basic.Properties(user_id=host_b),
            )
        channel = await conn.channel()
        await channel.basic_publish(b"anonymous", exchange=EXCHANGE, routing_key=topic)
    finally:
        await conn.close()
    await _wait_for(lambda: len(got) == 1)
    await asyncio.sleep(0.2)
    assert [(m.body, m.caller) for m in got] == [(b"anonymous", None)]


# -- failures --------------------------------------------------------------------


async def test_connection_refused_names_the_host(make_transport: Factory) -> None:
    start = time.monotonic()
    with pytest.raises(exception.TransportError, match=r"127\.0\.0\.1:1\b") as info:
        await make_transport("rabbit://guest:guest@127.0.0.1:1/", rpc_response_timeout=0.5)
    assert time.monotonic() - start < 2.0
    assert "broker" in str(info.value)


async def test_cast_while_unreachable_fails_after_the_bound(make_transport: Factory) -> None:
    transport = get_transport(
        "rabbit://guest:guest@127.0.0.1:1/", rpc_response_timeout=0.5, **FAST_BACKOFF
    )
    start = time.monotonic()
    with pytest.raises(exception.TransportError, match=r"127\.0\.0\.1:1\b"):
        await transport.cast(Target("nowhere"), b"x")
    assert 0.5 <= time.monotonic() - start < 2.0
    await transport.close()


async def test_next_host_is_tried(rabbit_url: str, make_transport: Factory, topic: str) -> None:
    good = TransportURL.parse(rabbit_url).hosts[0]
    url = f"rabbit://guest:guest@127.0.0.1:1,guest:guest@{good.host}:{good.port or 5672}/"
    transport = await make_transport(url)
    _, handler = _collector()
    await transport.listen(topic, "a", handler)
    assert await transport.call(Target(topic), b"x", 5.0) == b"re:x"


async def test_refused_declaration_fails_the_cast_not_the_connection(
    rabbit_url: str, make_transport: Factory, topic: str
) -> None:
    # Someone made the topic's queue with other arguments than ours.
    parsed = TransportURL.parse(rabbit_url)
    conn = await aiormq.connect(amqp_url(parsed.hosts[0], parsed.virtual_host, 0))
    try:
        await (await conn.channel()).queue_declare(topic, durable=False)
    finally:
        await conn.close()
    transport = await make_transport()
    got, handler = _collector()
    await transport.listen(f"{topic}-ok", "a", handler)
    try:
        with pytest.raises(exception.TransportError, match="PRECONDITION_FAILED"):
            await transport.cast(Target(topic), b"x")
        # The connection, its consumers and its calls are unharmed.
        assert await transport.call(Target(f"{topic}-ok"), b"y", 5.0) == b"re:y"
        await transport.cast(Target(f"{topic}-ok", server="a"), b"z")
        await _wait_for(lambda: len(got) == 2)
    finally:
        await _delete_topology(rabbit_url, f"{topic}-ok")


async def test_close_fails_pending_calls(make_transport: Factory, topic: str) -> None:
    server = await make_transport()

    async def silent(msg: IncomingMessage) -> None:
        await asyncio.sleep(30)

    await server.listen(topic, "a", silent)
    client = await make_transport()
    call = asyncio.ensure_future(client.call(Target(topic), b"x", 30.0, label="slow.call"))
    await asyncio.sleep(0.2)
    await client.close()
    with pytest.raises(exception.TransportError, match=r"slow\.call"):
        await call
    with pytest.raises(exception.TransportError, match="closed"):
        await client.cast(Target(topic), b"late")


@pytest.mark.exclusive
@pytest.mark.timeout(RESTART_TIMEOUT)
async def test_broker_restart_fails_calls_in_flight_then_recovers(
    make_transport: Factory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The hanging handler outlives the connection; don't wait for it at close.
    server = await make_transport(stop_grace=0.5)
    client = await make_transport()
    entered = asyncio.Event()

    async def handler(msg: IncomingMessage) -> None:
        if msg.body == b"hang":
            entered.set()
            await asyncio.sleep(60)
        await msg.reply(b"re:" + msg.body)

    await server.listen(topic, "a", handler)
    assert await client.call(Target(topic), b"before", 5.0) == b"re:before"
    in_flight = asyncio.ensure_future(
        client.call(Target(topic), b"hang", 60.0, label="conductor.object_action")
    )
    await asyncio.wait_for(entered.wait(), 5)

    with caplog.at_level(logging.INFO, logger="nubes.rpc.rabbit_connection"):
        restart = asyncio.ensure_future(_restart_broker_app())
        start = time.monotonic()
        with pytest.raises(exception.TransportError) as info:
            await in_flight
        # Failed when the connection went, not after the call's 60 s.
        assert time.monotonic() - start < 15
        text = str(info.value)
        assert "127.0.0.1:5672" in text and "conductor.object_action" in text
        assert "connection lost" in text
        await restart

        # Both sides reconnect by themselves; the listener consumes again.
        deadline = time.monotonic() + 30
        while True:
            try:
                assert await client.call(Target(topic), b"after", 2.0) == b"re:after"
                break
            except (exception.TransportError, exception.MessagingTimeout):
                if time.monotonic() > deadline:
                    raise
    lost = [r for r in caplog.records if "Lost connection" in r.getMessage()]
    back = [r for r in caplog.records if "Reconnected" in r.getMessage()]
    assert len(lost) == 2 and len(back) == 2  # once per transport, not per attempt


@pytest.mark.exclusive
@pytest.mark.timeout(RESTART_TIMEOUT)
async def test_cast_survives_broker_restart(make_transport: Factory, topic: str) -> None:
    client = await make_transport()
    await client.cast(Target(topic), b"persisted")
    await _restart_broker_app()
    # Sent while the client may still be reconnecting: it waits, then sends.
    await client.cast(Target(topic), b"after")
    server = await make_transport()
    got, handler = _collector()
    await server.listen(topic, "a", handler)
    await _wait_for(lambda: len(got) == 2, timeout=20)
    assert sorted(m.body for m in got) == [b"after", b"persisted"]


async def test_a_listener_whose_queue_was_deleted_subscribes_again(
    make_transport: Factory, topic: str, rabbit_url: str
) -> None:
    # What issue 12 saw: a queue deleted under a running service left it deaf
    # until restarted. Deleting the server queue (as a broker failover or an
    # operator would) must heal: the listener declares it again and consumes.
    server = await make_transport()
    _, handler = _collector()
    await server.listen(topic, "a", handler)
    client = await make_transport()
    assert await client.call(Target(topic, server="a"), b"before", 5.0) == b"re:before"

    conn = await aiormq.connect(rabbit_url.replace("rabbit://", "amqp://", 1))
    try:
        channel = await conn.channel()
        await channel.queue_delete(f"{topic}.a")
        await channel.queue_delete(topic)
    finally:
        await conn.close()

    deadline = time.monotonic() + 20
    while True:
        try:
            reply = await client.call(Target(topic, server="a"), b"after", 1.0)
            break
        except (exception.MessagingTimeout, exception.TransportError):
            # Until the listener subscribed again, the call has no queue.
            if time.monotonic() > deadline:
                raise
    assert reply == b"re:after"
    assert await client.call(Target(topic), b"shared", 5.0) == b"re:shared"


async def test_a_reply_from_a_host_that_took_a_controllers_call_is_dropped(
    make_transport: Factory, topic: str, rabbit_url: str
) -> None:
    # Issue 12: a compute host that consumed from a controller's queue
    # answered its callers and was believed. A reply is now accepted only
    # from an identity that may serve the call's target (access.may_answer).
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to create a compute host's broker user")
    user = f"compute.thief-{uuid.uuid4().hex[:6]}"
    vhost = TransportURL.parse(rabbit_url).virtual_host or "/"
    _rabbitmqctl("add_user", user, PASSWORD)
    try:
        # The old '.*' permissions, which let a host consume any queue.
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        # Its transport only checks shared queues exist: let a controller
        # declare the topic's first.
        owner = await make_transport()
        listener = await owner.listen(topic, "a", _collector()[1])
        await listener.stop()
        base = TransportURL.parse(rabbit_url).hosts[0]
        thief = await make_transport(
            f"rabbit://{user}:{PASSWORD}@{base.host or '127.0.0.1'}:{base.port or 5672}/"
            + (vhost if vhost != "/" else "")
        )
        got, handler = _collector()
        await thief.listen(topic, "a", handler)
        client = await make_transport()
        with pytest.raises(exception.MessagingTimeout):
            await client.call(Target(topic), b"secret", 2.0)
        assert [m.caller for m in got] == ["guest"]  # it took the call, its reply was dropped
        # Positive control: the real server's reply is accepted.
        await owner.listen(topic, "b", _collector()[1])
        await thief.close()
        assert await client.call(Target(topic, server="b"), b"hello", 5.0) == b"re:hello"
    finally:
        _rabbitmqctl("delete_user", user, check=False)


# -- batching ---------------------------------------------------------------------


async def test_concurrent_casts_travel_as_one_batch(
    make_transport: Factory, topic: str, rabbit_url: str
) -> None:
    # What one loop iteration sends to one queue is one AMQP message with
    # the x-nubes-batch header; a listener runs each cast of it.
    client = await make_transport()
    await asyncio.gather(*(client.cast(Target(topic), str(i).encode()) for i in range(10)))
    conn = await aiormq.connect(rabbit_url.replace("rabbit://", "amqp://", 1))
    try:
        channel = await conn.channel()
        got = await channel.basic_get(topic, no_ack=False)
        assert got.header.properties.headers == {batching.BATCH_HEADER: 10}
        assert got.header.properties.delivery_mode == 2  # persistent
        parts = batching.unpack(got.body, 10)
        assert sorted(int(body) for _, body in parts) == list(range(10))
        await channel.basic_reject(got.delivery_tag, requeue=True)  # type: ignore[arg-type]
    finally:
        await conn.close()
    server = await make_transport()
    received, handler = _collector()
    await server.listen(topic, "a", handler)
    await _wait_for(lambda: len(received) == 10)
    assert sorted(int(m.body) for m in received) == list(range(10))
    assert {m.caller for m in received} == {"guest"}


async def test_concurrent_calls_are_batched_and_each_gets_its_own_reply(
    make_transport: Factory, topic: str
) -> None:
    server = await make_transport()
    _, handler = _collector()
    await server.listen(topic, "a", handler)
    client = await make_transport()
    bodies = [str(i).encode() for i in range(50)]
    replies = await asyncio.gather(*(client.call(Target(topic), b, 5.0) for b in bodies))
    assert replies == [b"re:" + b for b in bodies]


async def test_a_malformed_batch_is_dropped_and_the_listener_goes_on(
    make_transport: Factory, topic: str, rabbit_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_transport()
    received, handler = _collector()
    await server.listen(topic, "a", handler)
    conn = await aiormq.connect(rabbit_url.replace("rabbit://", "amqp://", 1))
    try:
        channel = await conn.channel()
        for count in (3, "x", 10**6):
            await channel.basic_publish(
                b"\x01",
                exchange=EXCHANGE,
                routing_key=topic,
                properties=spec.Basic.Properties(headers={batching.BATCH_HEADER: count}),
            )
    finally:
        await conn.close()
    client = await make_transport()
    with caplog.at_level(logging.WARNING, logger="nubes.rpc.rabbit_session"):
        assert await client.call(Target(topic), b"still here", 5.0) == b"re:still here"
        await _wait_for(lambda: caplog.text.count("Dropped a malformed batch") == 3)
    assert [m.body for m in received] == [b"still here"]
