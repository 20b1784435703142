"""Random bytes and random structures thrown at a server: it answers each with
a typed error (or a result) and keeps serving, on memory:// and rabbit://."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nubes import exception
from nubes.context import RequestContext
from nubes.rpc import message
from nubes.rpc.client import RPCClient
from nubes.rpc.server import RPCServer
from nubes.rpc.transport import Target, Transport, get_transport
from tests import servers


class Victim:
    RPC_API_VERSION = "1.4"

    async def add(self, context: RequestContext, a: int, b: int) -> int:
        return a + b

    async def store(self, context: RequestContext, key: str, value: dict[str, Any]) -> str:
        return key

    async def flag(self, context: RequestContext, on: bool | None = None) -> bool | None:
        return on


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "m": st.sampled_from(["add", "store", "flag", "nope", "_x", ""]) | values,
        "v": st.sampled_from(["1.0", "1.4", "1.5", "2.0", "x", ""]) | values,
        "ns": st.none() | st.sampled_from(["baseapi", "zzz"]) | values,
        "a": st.dictionaries(st.sampled_from(["a", "b", "key", "value", "on", "zz"]), values)
        | values,
        "c": st.fixed_dictionaries(
            {},
            optional={
                "request_id": values,
                "roles": values,
                "caller": values,
                "user_id": values,
            },
        )
        | values,
    },
)
bodies = (
    st.binary(max_size=200)
    | values.map(msgspec.msgpack.encode)
    | near_valid.map(msgspec.msgpack.encode)
)


class _Collector(logging.Handler):
    def __init__(self, sink: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record)


class Harness:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.runner = asyncio.Runner()
        self.topic = f"fuzz-{uuid.uuid4().hex[:10]}"
        self.transport: Transport = self.runner.run(self._open("fuzzer"))
        self.server_transport: Transport = self.runner.run(self._open("server"))
        self.server = RPCServer(self.server_transport, self.topic, "victim", [Victim()])
        self.runner.run(self.server.start())
        self.client = RPCClient(self.transport, Target(self.topic), timeout=10)
        self.errors = message.error_table([])
        self.sent = 0
        # Every refusal must be a typed one: an ERROR line from the server
        # means some input reached a place that did not expect it.
        self.unexpected: list[logging.LogRecord] = []
        self._handler = _Collector(self.unexpected)
        logging.getLogger("nubes.rpc").addHandler(self._handler)

    async def _open(self, identity: str) -> Transport:
        if self.kind == "memory":
            t = get_transport("memory:///fuzz", identity=identity)
        else:
            t = get_transport(servers.RABBIT_URL)
        await t.connect()
        return t

    def throw(self, body: bytes) -> None:
        async def go() -> None:
            reply = await self.transport.call(Target(self.topic), body, 10.0, label="fuzz")
            try:
                message.decode_reply(reply, self.errors, "fuzz")
            except exception.NubesError:
                pass
            await self.transport.cast(Target(self.topic), body, label="fuzz")

        self.runner.run(go())
        self.sent += 1

    def still_answers(self) -> bool:
        async def go() -> bool:
            return await self.client.call(RequestContext(), "add", a=40, b=2) == 42

        return self.runner.run(go())

    def close(self) -> None:
        logging.getLogger("nubes.rpc").removeHandler(self._handler)
        self.runner.run(self.server.stop())
        self.runner.run(self.transport.close())
        self.runner.run(self.server_transport.close())
        if self.kind == "rabbit":
            self.runner.run(
                servers.delete_rabbit_topology(servers.RABBIT_URL, self.topic, ("victim",))
            )
        self.runner.close()


@pytest.fixture(scope="module", params=["memory", "rabbit"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "rabbit":
        servers.require("rabbit")
    h = Harness(str(request.param))
    yield h
    h.close()


@pytest.mark.timeout(240)
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
def test_server_survives_random_input(harness: Harness, body: bytes) -> None:
    harness.throw(body)
    assert harness.still_answers()
    assert not harness.unexpected, [r.getMessage() for r in harness.unexpected]


# --- the conductor, attacked by a compute host ------------------------------------
#
# The conductor is the one server every compute host may call, and compute
# hosts are the least trusted part of the cloud: whatever one sends, the
# reply must name one of our typed errors (never RecursionError, ValueError
# or any other raw exception) and the conductor must keep answering.


def _nested_msgpack(depth: int) -> bytes:
    """A kick whose ``task_ids`` is an array nested ``depth`` levels deep."""
    encode = msgspec.msgpack.encode
    return (
        b"\x83"  # a map of three entries: m, v, a
        + encode("m")
        + encode("kick")
        + encode("v")
        + encode("1.0")
        + encode("a")
        + b"\x81"
        + encode("task_ids")
        + b"\x91" * depth  # arrays of one element, each holding the next
        + b"\x01"
    )


HOSTILE_VERSIONS = st.sampled_from(
    ["1.0", "1.1", "1.", "1." + "9" * 5000, "١.٠", "1.٠", "01.0", "1.0.0", "", "2.0", "-1.0"]
) | st.text(max_size=8)
CONDUCTOR_METHODS = st.sampled_from(
    [
        "object_action",
        "object_class_action_versions",
        "object_backport_versions",
        "kick",
        "step_finished",
        "live_migration_abort",
        "live_migration_force_complete",
        "ping",
        "whoami",
        "_private",
        "",
    ]
)
ENVELOPES = st.fixed_dictionaries(
    {
        "nubes_object.name": st.sampled_from(["Instance", "ComputeNode", "Nope", ""]) | values,
        "nubes_object.version": HOSTILE_VERSIONS | values,
        "nubes_object.data": st.dictionaries(st.text(max_size=10), values, max_size=4) | values,
    },
    optional={"nubes_object.changes": st.lists(st.text(max_size=8), max_size=3) | values},
)
conductor_requests = st.fixed_dictionaries(
    {"m": CONDUCTOR_METHODS | st.text(max_size=10), "v": HOSTILE_VERSIONS},
    optional={
        "ns": st.none() | st.sampled_from(["baseapi", "zzz"]),
        "a": st.dictionaries(
            st.sampled_from(
                [
                    "objinst",
                    "objmethod",
                    "args",
                    "kwargs",
                    "object_versions",
                    "task_ids",
                    "objname",
                    "instance_uuid",
                    "migration_id",
                    "result",
                    "zz",
                ]
            ),
            values | ENVELOPES,
            max_size=5,
        ),
        "c": st.fixed_dictionaries(
            {}, optional={"caller": st.sampled_from(["compute.fake-0", "conductor.ctl-0"])}
        )
        | values,
    },
)
conductor_bodies = (
    conductor_requests.map(msgspec.msgpack.encode)
    | st.sampled_from([100_000, 5_000, 2_000, 64]).map(_nested_msgpack)
    | bodies
)


class ConductorHarness:
    """A conductor (with a scheduler and one compute host) on memory://, and
    a second connection under the host's bus identity to attack it from."""

    def __init__(self, tmp: Any) -> None:
        from nubes.service import service_identity
        from nubes.testing.allinone import AllInOne

        self.runner = asyncio.Runner()
        self.cloud = self.runner.run(AllInOne.start(f"sqlite:///{tmp / 'bus.sqlite'}", hosts=1))
        self.attacker = get_transport(
            self.cloud.bus, identity=service_identity("compute", "fake-0")
        )
        self.runner.run(self.attacker.connect())
        self.unexpected: list[logging.LogRecord] = []
        self._handler = _Collector(self.unexpected)
        logging.getLogger("nubes").addHandler(self._handler)

    def reply_to(self, body: bytes) -> msgspec.Raw | Any:
        """The conductor's reply to ``body``, as the envelope it came in."""

        async def go() -> bytes:
            return await self.attacker.call(Target("conductor"), body, 10.0, label="fuzz")

        return msgspec.msgpack.decode(self.runner.run(go()), type=message.Reply)

    def still_answers(self) -> bool:
        client = RPCClient(self.attacker, Target("conductor"), timeout=10, namespace="baseapi")

        async def go() -> Any:
            return await client.call(RequestContext(), "ping", arg="still there")

        return bool(self.runner.run(go()) == "still there")

    def close(self) -> None:
        logging.getLogger("nubes").removeHandler(self._handler)
        self.runner.run(self.attacker.close())
        self.runner.run(self.cloud.stop())
        self.runner.close()


@pytest.fixture(scope="module")
def conductor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConductorHarness]:
    h = ConductorHarness(tmp_path_factory.mktemp("bus-fuzz"))
    yield h
    h.close()


def _typed_error(reply: message.Reply) -> str | None:
    """The error a reply carries, if it is not one of our typed errors."""
    if reply.e is None or reply.e.t in exception.ERRORS_BY_NAME:
        return None
    return f"{reply.e.t}: {reply.e.m[:200]}"


@pytest.mark.timeout(120)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=conductor_bodies)
def test_conductor_answers_a_hostile_host_with_typed_errors(
    conductor: ConductorHarness, body: bytes
) -> None:
    reply = conductor.reply_to(body)
    assert _typed_error(reply) is None, (body[:200], _typed_error(reply))
    assert conductor.still_answers()
    assert not conductor.unexpected, [r.getMessage() for r in conductor.unexpected]


def test_msgpack_nested_100000_deep_is_a_malformed_message(conductor: ConductorHarness) -> None:
    reply = conductor.reply_to(_nested_msgpack(100_000))
    assert reply.e is not None and reply.e.t == "MalformedMessage", reply
    assert conductor.still_answers()


def test_a_version_of_5000_digits_is_a_malformed_message(conductor: ConductorHarness) -> None:
    body = msgspec.msgpack.encode({"m": "kick", "v": "1." + "5" * 5000, "a": {}})
    reply = conductor.reply_to(body)
    assert reply.e is not None and reply.e.t == "MalformedMessage", reply
    assert len(reply.e.m) < 200, reply.e.m


def test_arabic_indic_digits_are_not_version_1_0(conductor: ConductorHarness) -> None:
    body = msgspec.msgpack.encode({"m": "kick", "v": "١.٠", "a": {}})
    reply = conductor.reply_to(body)
    assert reply.e is not None and reply.e.t == "MalformedMessage", reply
