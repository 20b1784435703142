"""A server's ports follow it on every move (issue 14), and back on each rollback.

Every service in one process (memory:// + SQLite, fake hosts): a server
with a port on a network is cold-migrated (its port bound to the
destination once the destination is asked to finish; bound to the source
again on revert and when the finish fails), live-migrated and evacuated.
Each case ends with the shared consistency check, which wants every port
of an instance bound to the instance's host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nubes.api.moves import MovesAPI
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.api import flavors, services
from nubes.db.models import ports
from nubes.network import ports as network_ports
from nubes.network.resources import NetworkService
from nubes.testing.allinone import AllInOne
from nubes.testing.moves import check_consistent

pytestmark = pytest.mark.timeout(120)

IMAGE = {"id": "img-1", "properties": {}}
CTXT = RequestContext(user_id="u1", project_id="p1", roles=["member"])
ADMIN = RequestContext(user_id="admin", project_id="p1", roles=["admin", "member"])


class Cloud:
    def __init__(self, cloud: AllInOne) -> None:
        self.cloud = cloud
        self.moves = MovesAPI(cloud.db, ConductorAPI(cloud.api_transport), conf=cloud.conf)

    async def boot(self) -> dict[str, Any]:
        service = NetworkService(self.cloud.db, self.cloud.conf)
        net = await service.create_network(CTXT, {"name": "net"})
        await service.create_subnet(CTXT, {"network_id": net["id"], "cidr": "10.9.0.0/24"})
        nics = await network_ports.resolve(service, CTXT, [{"uuid": net["id"]}], None, 1)
        (inst,) = await self.cloud.api.create_servers(
            CTXT, name="vm", flavor="small", image=IMAGE, network_requests=nics
        )
        return await self.settle(inst.uuid)

    async def settle(self, uuid: str) -> dict[str, Any]:
        await self.cloud.wait_tasks([uuid], timeout=60)
        (row,) = await self.cloud.instances([uuid])
        return row

    async def bound(self, uuid: str) -> list[str]:
        stmt = select(ports.c.binding_host_id).where(ports.c.device_id == uuid)
        async with self.cloud.db.reader() as conn:
            return list((await conn.execute(stmt)).scalars())

    async def consistent(self, uuid: str) -> None:
        assert await check_consistent(self.cloud.db, uuid) == []


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    c = await AllInOne.start(f"sqlite:///{tmp_path / 'ports.sqlite'}", hosts=3)
    async with c.db.writer() as conn:
        for name, vcpus in (("small", 1), ("medium", 2)):
            await flavors.create(
                conn,
                {"flavorid": name, "name": name, "vcpus": vcpus, "memory_mb": 64, "root_gb": 1},
            )
    try:
        yield Cloud(c)
    finally:
        await c.stop()


async def test_resize_binds_the_destination_and_revert_the_source(cloud: Cloud) -> None:
    row = await cloud.boot()
    uuid, source = row["uuid"], row["host"]
    assert await cloud.bound(uuid) == [source]
    await cloud.moves.resize_server(CTXT, uuid, "medium")
    row = await cloud.settle(uuid)
    assert row["vm_state"] == "resized" and row["host"] != source
    assert await cloud.bound(uuid) == [row["host"]]
    await cloud.consistent(uuid)
    await cloud.moves.revert_resize(CTXT, uuid)
    row = await cloud.settle(uuid)
    assert (row["vm_state"], row["host"]) == ("active", source)
    assert await cloud.bound(uuid) == [source]
    await cloud.consistent(uuid)


async def test_a_failed_finish_binds_the_ports_back_to_the_source(cloud: Cloud) -> None:
    row = await cloud.boot()
    uuid, source = row["uuid"], row["host"]
    cloud.cloud.faults.fail_next["finish_migration"] = 1
    await cloud.moves.migrate_server(ADMIN, uuid)
    row = await cloud.settle(uuid)
    assert (row["vm_state"], row["host"]) == ("active", source)
    assert await cloud.bound(uuid) == [source]
    await cloud.consistent(uuid)


async def test_live_migration_binds_the_destination(cloud: Cloud) -> None:
    row = await cloud.boot()
    uuid, source = row["uuid"], row["host"]
    await cloud.moves.live_migrate_server(ADMIN, uuid)
    row = await cloud.settle(uuid)
    assert row["vm_state"] == "active" and row["host"] != source
    assert await cloud.bound(uuid) == [row["host"]]
    await cloud.consistent(uuid)


async def test_evacuation_binds_the_destination(cloud: Cloud) -> None:
    row = await cloud.boot()
    uuid, source = row["uuid"], row["host"]
    await cloud.cloud.stop_host(source)
    async with cloud.cloud.db.writer() as conn:
        svc = await services.get_by_host_and_binary(conn, source, "compute")
        await services.update(conn, svc["id"], {"forced_down": True})
    await cloud.moves.evacuate_server(ADMIN, uuid)
    row = await cloud.settle(uuid)
    assert row["vm_state"] == "active" and row["host"] != source
    assert await cloud.bound(uuid) == [row["host"]]
    await cloud.consistent(uuid)
