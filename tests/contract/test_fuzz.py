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
