"""The transport contract suite runs once per transport: memory:// and rabbit://."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from nubes.rpc.transport import Transport, get_transport
from tests import servers

TransportFactory = Callable[..., Awaitable[Transport]]


@pytest.fixture(params=["memory", "rabbit"])
def transport_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "rabbit":
        servers.require("rabbit")
    return str(request.param)


@pytest.fixture
async def make_transport(transport_kind: str) -> AsyncIterator[TransportFactory]:
    opened: list[Transport] = []
    # A private vhost name per test keeps memory:// buses apart; on rabbit the
    # topics are unique per test instead (vhosts need broker admin).
    memory_vhost = f"contract-{uuid.uuid4().hex[:8]}"

    async def factory(identity: str = "svc-a") -> Transport:
        if transport_kind == "memory":
            t = get_transport(f"memory:///{memory_vhost}", identity=identity)
        else:
            t = get_transport(servers.RABBIT_URL)
        await t.connect()
        opened.append(t)
        return t

    yield factory
    for t in reversed(opened):
        await t.close()


#: Server names the contract tests use; their queues are deleted afterwards.
SERVER_NAMES = ("a", "b", "c", "s", "victim")


@pytest.fixture
async def topic(transport_kind: str) -> AsyncIterator[str]:
    name = f"contract-{uuid.uuid4().hex[:12]}"
    yield name
    if transport_kind == "rabbit":
        await servers.delete_rabbit_topology(servers.RABBIT_URL, name, SERVER_NAMES)
