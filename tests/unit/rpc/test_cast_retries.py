"""A cast whose method fails because the database or the bus is away is held
and run again, never acknowledged as done and dropped; a call's caller gets
the error at once."""

from __future__ import annotations

import asyncio

import pytest

from nubes import exception
from nubes.context import RequestContext
from nubes.rpc import memory
from nubes.rpc.client import RPCClient
from nubes.rpc.server import RPCServer
from nubes.rpc.transport import Target, get_transport

pytestmark = pytest.mark.timeout(30)


class Flaky:
    """Records each report; the first ``outage`` runs find the database away."""

    RPC_API_VERSION = "1.0"

    def __init__(self, outage: int, error: Exception) -> None:
        self.outage = outage
        self.error = error
        self.runs = 0
        self.applied: list[int] = []
        self.done = asyncio.Event()
        self.tried = asyncio.Event()

    async def report(self, context: RequestContext, n: int) -> None:
        self.runs += 1
        if self.runs >= 2:
            self.tried.set()
        if self.runs <= self.outage:
            raise self.error
        self.applied.append(n)
        self.done.set()

    async def ask(self, context: RequestContext) -> None:
        raise self.error


async def _pair(vhost: str, endpoint: object) -> tuple[RPCServer, RPCClient, list]:
    server_t = get_transport(f"memory:///{vhost}", identity="conductor.c")
    peer_t = get_transport(f"memory:///{vhost}", identity="compute.h1")
    await server_t.connect()
    await peer_t.connect()
    server = RPCServer(server_t, "t", "c", [endpoint], cast_retry_min=0.01, cast_retry_max=0.05)
    await server.start()
    client = RPCClient(
        peer_t, Target("t"), timeout=5, expected_errors=(exception.DBConnectionError,)
    )
    return server, client, [server_t, peer_t]


@pytest.mark.parametrize(
    "error",
    [
        exception.DBConnectionError(reason="CannotConnectNowError: the database is starting"),
        exception.DBConnectionError(reason="database is locked"),
        exception.DBDeadlock(reason="deadlock"),
        exception.TransportError(hop="broker", reason="connection lost"),
    ],
)
async def test_a_report_arriving_while_the_database_is_down_is_applied_once_it_is_back(
    error: Exception,
) -> None:
    flaky = Flaky(outage=3, error=error)
    server, client, transports = await _pair("cast-retries", flaky)
    try:
        await client.cast(RequestContext(), "report", n=1)
        await asyncio.wait_for(flaky.done.wait(), 10)
        assert flaky.applied == [1]
        assert flaky.runs == 4
    finally:
        await server.stop()
        for t in transports:
            await t.close()


async def test_a_cast_that_fails_for_good_is_not_retried() -> None:
    flaky = Flaky(outage=1, error=exception.Forbidden(reason="not yours"))
    server, client, transports = await _pair("cast-no-retry", flaky)
    try:
        await client.cast(RequestContext(), "report", n=1)
        await client.cast(RequestContext(), "report", n=2)
        await asyncio.wait_for(flaky.done.wait(), 10)
        assert flaky.applied == [2]
        assert flaky.runs == 2
    finally:
        await server.stop()
        for t in transports:
            await t.close()


async def test_a_call_finding_the_database_down_gets_the_error_at_once() -> None:
    flaky = Flaky(outage=0, error=exception.DBConnectionError(reason="down"))
    server, client, transports = await _pair("call-no-retry", flaky)
    try:
        with pytest.raises(exception.DBConnectionError):
            await client.call(RequestContext(), "ask")
    finally:
        await server.stop()
        for t in transports:
            await t.close()


async def test_a_held_cast_goes_back_to_the_bus_when_its_server_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flaky = Flaky(outage=10**6, error=exception.DBConnectionError(reason="down"))
    server, client, transports = await _pair("cast-handback", flaky)
    server_t = transports[0]
    try:
        await client.cast(RequestContext(), "report", n=1)
        await asyncio.wait_for(flaky.tried.wait(), 10)
        # A stop cancels the held handler after the grace: the message is
        # not acknowledged, so a new server of the topic gets it.
        monkeypatch.setattr(memory, "DEFAULT_STOP_GRACE", 0.1)
        await server.stop()
        healthy = Flaky(outage=0, error=exception.DBConnectionError(reason="down"))
        again = RPCServer(server_t, "t", "c2", [healthy])
        await again.start()
        try:
            await asyncio.wait_for(healthy.done.wait(), 10)
            assert healthy.applied == [1]
        finally:
            await again.stop()
    finally:
        for t in transports:
            await t.close()
