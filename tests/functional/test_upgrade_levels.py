"""Rolling upgrades: with ``[upgrade_levels] compute = auto`` an old compute host caps the moves.

A compute host still running service version 1 serves compute RPC 1.0 and
knows no move steps. Conductors derive their cap from the oldest compute
host registered; a move is then refused at its first host step with a fault
naming the cap — nothing is sent that an old host would drop — and the
instance stays where it was. Once that host runs new code, moves work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from nubes import versions
from nubes.api.moves import MovesAPI
from nubes.api.state import ApiState
from nubes.conductor.rpcapi import ConductorAPI
from nubes.conductor.tasks import caps
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.db.api import services as services_api
from nubes.db.models import instance_faults, services
from nubes.exception import UnsupportedVersion
from nubes.testing.allinone import AllInOne
from nubes.testing.moves import check_consistent

pytestmark = pytest.mark.timeout(120)

IMAGE = {"id": "img-1", "properties": {}}


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[AllInOne]:
    c = await AllInOne.start(
        f"sqlite:///{tmp_path / 'caps.sqlite'}",
        hosts=3,
        overrides={"upgrade_levels": {"compute": "auto"}},
    )
    async with c.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 512, "root_gb": 1}
        )
    yield c
    await c.stop()


async def _set_compute_versions(cloud: AllInOne, version: int, host: str | None = None) -> None:
    stmt = update(services).where(services.c.binary == "compute").values(version=version)
    if host is not None:
        stmt = stmt.where(services.c.host == host)
    async with cloud.db.writer() as conn:
        await conn.execute(stmt)
    for engine in cloud.engines:
        await caps.refresh(engine)


async def test_an_old_compute_host_caps_moves_until_it_is_upgraded(cloud: AllInOne) -> None:
    ctxt = RequestContext(user_id="u1", project_id="p1", roles=["admin"])
    (inst,) = await cloud.api.create_servers(ctxt, name="vm", flavor="small", image=IMAGE)
    await cloud.wait_tasks([inst.uuid])
    (before,) = await cloud.instances([inst.uuid])
    engine = cloud.engines[0]
    # Started before any compute host registered: nothing old to cap for.
    assert engine.compute.client.version_cap is None
    await caps.refresh(engine)
    # Every host runs this code: the cap is what it serves.
    assert engine.compute.client.version_cap == versions.api_version_of(
        versions.SERVICE_VERSION, "compute"
    )

    await _set_compute_versions(cloud, 1, host=sorted(cloud.computes)[0])
    assert engine.compute.client.version_cap == "1.0"
    moves = MovesAPI(cloud.db, ConductorAPI(cloud.api_transport), conf=cloud.conf)
    await moves.live_migrate_server(ctxt, inst.uuid)
    await cloud.wait_tasks([inst.uuid])
    (row,) = await cloud.instances([inst.uuid])
    assert (row["vm_state"], row["task_state"], row["host"]) == ("active", None, before["host"])
    async with cloud.db.reader() as conn:
        messages = [
            r.message
            for r in await conn.execute(
                instance_faults.select().where(instance_faults.c.instance_uuid == inst.uuid)
            )
        ]
    assert any("RPC version 1.1" in m for m in messages), messages
    assert await check_consistent(cloud.db, inst.uuid) == []

    # The old host is upgraded: the cap lifts and the same move goes through.
    await _set_compute_versions(cloud, 2)
    assert engine.compute.client.version_cap == "1.1"
    await moves.live_migrate_server(ctxt, inst.uuid)
    await cloud.wait_tasks([inst.uuid])
    (row,) = await cloud.instances([inst.uuid])
    assert (row["vm_state"], row["task_state"]) == ("active", None)
    assert row["host"] != before["host"]
    assert await check_consistent(cloud.db, inst.uuid) == []


def _host_hook(cloud: AllInOne, host: str) -> Any:
    """Compute host ``host``'s own hook (its others, metrics say, have no manager)."""
    (node,) = [h for h in cloud.computes[host].hooks if hasattr(h, "manager")]
    return node


def _conductor_client(cloud: AllInOne, host: str) -> Any:
    """The client compute host ``host`` sends the conductors with."""
    return _host_hook(cloud, host).manager.runner.conductor.client


async def _api_state(cloud: AllInOne) -> ApiState:
    state = ApiState(conf=cloud.conf, db=cloud.db, transport=cloud.api_transport)
    await state.refresh_caps()
    return state


async def test_upgrade_levels_given_as_release_names_and_versions_cap_every_sender(
    tmp_path: Path,
) -> None:
    levels = {"conductor": "alder", "compute": "birch", "scheduler": "1.0"}
    cloud = await AllInOne.start(
        f"sqlite:///{tmp_path / 'names.sqlite'}", hosts=1, overrides={"upgrade_levels": levels}
    )
    try:
        ctxt = RequestContext(user_id="u1", project_id="p1", roles=["admin"])
        # The conductors: compute and scheduler.
        engine = cloud.engines[0]
        assert engine.compute.client.version_cap == "1.1"  # what birch's hosts serve
        assert engine.scheduler.client.version_cap == "1.0"
        # A compute host: the conductor (alder served 1.0). It registered its
        # node through that client, so 1.0 messages went out and were served.
        client = _conductor_client(cloud, "fake-0")
        assert client.version_cap == "1.0"
        capped = ConductorAPI(cloud.api_transport)
        capped.client.set_version_cap(client.version_cap)
        with pytest.raises(UnsupportedVersion, match=r"RPC version 1\.1 .*cap 1\.0"):
            await capped.live_migration_abort(ctxt, "a4f0b0b6-93a3-4e55-9a5e-0f6c4b3a8f11", 1)
        # The API service: all three.
        state = await _api_state(cloud)
        caps = {api: c.version_cap for api, c in state.rpc_clients().items()}
        assert caps == {"conductor": "1.0", "compute": "1.1", "scheduler": "1.0"}
        with pytest.raises(UnsupportedVersion, match=r"RPC version 1\.2"):
            await state.compute_api().get_host_uptime(ctxt, "fake-0")
    finally:
        await cloud.stop()


async def test_upgrade_levels_auto_follows_the_oldest_service_of_each_api(
    tmp_path: Path,
) -> None:
    levels = dict.fromkeys(versions.APIS, "auto")
    cloud = await AllInOne.start(
        f"sqlite:///{tmp_path / 'auto.sqlite'}", hosts=1, overrides={"upgrade_levels": levels}
    )
    try:
        async with cloud.db.writer() as conn:
            old = await services_api.create(
                conn, {"host": "old-ctl", "binary": "conductor", "topic": "conductor", "version": 1}
            )
        # A compute host asks the conductor which conductors run (it has no DB).
        node = _host_hook(cloud, "fake-0")
        await node.refresh_caps()
        assert _conductor_client(cloud, "fake-0").version_cap == "1.0"
        state = await _api_state(cloud)
        assert state.rpc_clients()["conductor"].version_cap == "1.0"
        assert state.rpc_clients()["compute"].version_cap == versions.api_version_of(
            versions.SERVICE_VERSION, "compute"
        )
        # The old conductor is upgraded: the caps lift at the next refresh.
        async with cloud.db.writer() as conn:
            await services_api.update(conn, old["id"], {"version": versions.SERVICE_VERSION})
        newest = versions.api_version_of(versions.SERVICE_VERSION, "conductor")
        await node.refresh_caps()  # type: ignore[attr-defined]
        assert _conductor_client(cloud, "fake-0").version_cap == newest
        await state.refresh_caps()
        assert state.rpc_clients()["conductor"].version_cap == newest
    finally:
        await cloud.stop()
