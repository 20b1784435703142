"""Versioned objects as RPC arguments and results, across versions."""

from __future__ import annotations

from typing import Any

import pytest

from nubes import exception
from nubes.context import RequestContext
from nubes.objects.base import VersionedObject
from nubes.objects.indirection import LoopbackIndirectionAPI
from nubes.objects.serializer import ObjectSerializer
from nubes.rpc import RPCClient, RPCServer, Target, get_transport
from tests.unit.objects import fakes


class Keeper:
    RPC_API_VERSION = "1.0"

    def __init__(self) -> None:
        self.got: list[Any] = []

    async def keep(self, context: RequestContext, thing: VersionedObject) -> dict[str, Any]:
        self.got.append(thing)
        return {"name": thing.obj_name(), "version": thing.VERSION}

    async def make(self, context: RequestContext, id: int) -> list[VersionedObject]:
        g = fakes.gadget(id=id)
        return [g]


@pytest.fixture
def restore_indirection():
    saved = VersionedObject.indirection_api
    yield
    VersionedObject.indirection_api = saved


async def _pair(server_registry, client_serializer):
    t = get_transport("memory:///objs", identity="x")
    keeper = Keeper()
    server = RPCServer(
        t, "objs", "s", [keeper], serializer=ObjectSerializer(registry=server_registry)
    )
    await server.start()
    client = RPCClient(t, Target("objs"), serializer=client_serializer, timeout=5)
    return t, keeper, client


async def test_objects_travel_both_ways_with_changes():
    t, keeper, client = await _pair(fakes.NEW, ObjectSerializer(registry=fakes.NEW))
    g = fakes.gadget()
    g.label = "changed"
    assert await client.call(RequestContext(), "keep", thing=g) == {
        "name": "Gadget",
        "version": "1.2",
    }
    (got,) = keeper.got
    assert isinstance(got, fakes.Gadget)
    assert got.label == "changed" and got.obj_what_changed() == {"label"}
    assert got.main.name == g.main.name
    made = await client.call(RequestContext(), "make", id=9)
    assert isinstance(made[0], fakes.Gadget) and made[0].id == 9
    await t.close()


async def test_capped_client_sends_older_versions():
    caps = {"Gadget": "1.0", "Part": "1.0"}
    t, keeper, client = await _pair(
        fakes.OLD, ObjectSerializer(object_versions=caps, registry=fakes.NEW)
    )
    assert (await client.call(RequestContext(), "keep", thing=fakes.gadget()))["version"] == "1.0"
    assert isinstance(keeper.got[0], fakes.OldGadget)
    await t.close()


async def test_older_server_asks_for_a_backport(restore_indirection):
    # An old process receiving a newer object asks the conductor (here the
    # loopback double, serving the newer registry) to backport it.
    VersionedObject.indirection_api = LoopbackIndirectionAPI(
        registry=fakes.OLD, serving_registry=fakes.NEW
    )
    t, keeper, client = await _pair(fakes.OLD, ObjectSerializer(registry=fakes.NEW))
    assert (await client.call(RequestContext(), "keep", thing=fakes.gadget()))["version"] == "1.0"
    (got,) = keeper.got
    assert isinstance(got, fakes.OldGadget) and got.main.name == fakes.gadget().main.name
    await t.close()


async def test_newer_object_without_indirection_is_refused(restore_indirection):
    VersionedObject.indirection_api = None
    t, _, client = await _pair(fakes.OLD, ObjectSerializer(registry=fakes.NEW))
    with pytest.raises(exception.IncompatibleObjectVersion):
        await client.call(RequestContext(), "keep", thing=fakes.gadget())
    await t.close()
