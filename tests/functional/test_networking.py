"""Servers' ports through the real build and delete tasks (every service in one process).

50 concurrent boots on one network never share an address; each port is
bound to its server's host (again after a reschedule); a build that cannot
get an address ends in ERROR with the reason and leaves no port; deletes
free every port and address.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.db.models import instance_faults, ip_allocations, ports
from nubes.network import ports as network_ports
from nubes.network.resources import NetworkService
from nubes.testing.allinone import AllInOne

pytestmark = pytest.mark.timeout(180)

IMAGE = {"id": "img-1", "properties": {}}
BAD = "bad-host"
CTXT = RequestContext(user_id="u1", project_id="p1", roles=["member"])


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[AllInOne]:
    c = await AllInOne.start(f"sqlite:///{tmp_path / 'net.sqlite'}", hosts=0)
    async with c.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 64, "root_gb": 1}
        )
    try:
        yield c
    finally:
        await c.stop()


async def _network(service: NetworkService, cidr: str) -> str:
    net = await service.create_network(CTXT, {"name": f"net-{cidr}"})
    await service.create_subnet(CTXT, {"network_id": net["id"], "cidr": cidr})
    return str(net["id"])


async def _boot(cloud: AllInOne, service: NetworkService, net_id: str, name: str) -> str:
    nics = await network_ports.resolve(service, CTXT, [{"uuid": net_id}], None, 1)
    made = await cloud.api.create_servers(
        CTXT, name=name, flavor="small", image=IMAGE, network_requests=nics
    )
    return made[0].uuid


async def _ports(cloud: AllInOne) -> list[dict[str, Any]]:
    async with cloud.db.reader() as conn:
        return [dict(r) for r in (await conn.execute(select(ports))).mappings()]


async def test_fifty_concurrent_boots_get_distinct_bound_addresses(cloud: AllInOne) -> None:
    cloud.faults.fail_spawn_hosts.add(BAD)
    # The failing host is the roomiest: builds try it first and are rescheduled.
    await cloud.add_hosts([BAD], capacity={"vcpus": 4096, "memory_mb": 2**24})
    await cloud.add_hosts(["good-0", "good-1"])
    service = NetworkService(cloud.db, cloud.conf)
    net_id = await _network(service, "10.60.0.0/24")
    uuids = list(
        await asyncio.gather(*(_boot(cloud, service, net_id, f"vm{n}") for n in range(50)))
    )
    await cloud.wait_tasks(uuids, timeout=120)
    rows = {r["uuid"]: r for r in await cloud.instances(uuids)}
    assert {r["vm_state"] for r in rows.values()} == {"active"}
    async with cloud.db.reader() as conn:
        shown = await network_ports.addresses(conn, uuids)
    addresses = [a["addr"] for uuid in uuids for a in shown[uuid]["net-10.60.0.0/24"]]
    assert len(addresses) == 50 == len(set(addresses))
    made = await _ports(cloud)
    assert len(made) == 50
    for port in made:
        # Bound where the server runs (after the reschedule away from BAD).
        assert port["binding_host_id"] == rows[port["device_id"]]["host"] != BAD
        assert port["status"] == "ACTIVE" and port["device_owner"] == "compute:nova"

    for uuid in uuids:
        await cloud.api.delete_server(CTXT, uuid)
    await cloud.wait_tasks(uuids, timeout=120)
    assert await _ports(cloud) == []
    async with cloud.db.reader() as conn:
        left = (await conn.execute(select(func.count()).select_from(ip_allocations))).scalar_one()
    assert left == 0


async def test_a_build_without_an_address_fails_and_leaves_no_port(cloud: AllInOne) -> None:
    await cloud.add_hosts(["good-0"])
    service = NetworkService(cloud.db, cloud.conf)
    net_id = await _network(service, "10.61.0.0/29")  # 5 addresses
    uuids = [await _boot(cloud, service, net_id, f"vm{n}") for n in range(7)]
    await cloud.wait_tasks(uuids, timeout=60)
    rows = await cloud.instances(uuids)
    failed = [r for r in rows if r["vm_state"] == "error"]
    assert len(failed) == 2 and sum(r["vm_state"] == "active" for r in rows) == 5
    f = instance_faults
    async with cloud.db.reader() as conn:
        for row in failed:
            fault = (
                (await conn.execute(select(f.c.message).where(f.c.instance_uuid == row["uuid"])))
                .scalars()
                .all()
            )
            assert any("No more IP addresses" in m for m in fault), fault
            assert row["host"] is None
    assert {p["device_id"] for p in await _ports(cloud)} == {
        r["uuid"] for r in rows if r["vm_state"] == "active"
    }


def _networking_steps() -> float:
    """Networking steps this process's conductors ran (any outcome)."""
    return sum(
        REGISTRY.get_sample_value(
            "nubes_task_step_seconds_count",
            {"kind": "build", "step": "networking", "outcome": outcome},
        )
        or 0.0
        for outcome in ("ok", "error", "timeout")
    )


async def test_a_build_without_nics_skips_the_networking_step(cloud: AllInOne) -> None:
    """``networks: none`` has no ports to make or bind: the build goes from
    schedule straight to spawn; a server with a NIC still runs the step."""
    await cloud.add_hosts(["good-0"])
    before = _networking_steps()
    (bare,) = await cloud.api.create_servers(CTXT, name="bare", flavor="small", image=IMAGE)
    await cloud.wait_tasks([bare.uuid], timeout=60)
    (row,) = await cloud.instances([bare.uuid])
    assert (row["vm_state"], row["host"]) == ("active", "good-0")
    assert _networking_steps() == before
    assert await _ports(cloud) == []

    service = NetworkService(cloud.db, cloud.conf)
    wired = await _boot(cloud, service, await _network(service, "10.62.0.0/24"), "wired")
    await cloud.wait_tasks([wired], timeout=60)
    assert _networking_steps() == before + 1
    assert [p["device_id"] for p in await _ports(cloud)] == [wired]
