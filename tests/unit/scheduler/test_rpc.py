"""The scheduler over the bus (memory://): SchedulerAPI against a real Service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from oslo_config import cfg

from nubes import exception
from nubes.context import RequestContext
from nubes.db.engine import Database
from nubes.objects.request_spec import RequestSpec, Selection
from nubes.rpc.transport import get_transport
from nubes.scheduler.manager import SchedulerManager
from nubes.scheduler.rpcapi import SchedulerAPI
from nubes.service import Service
from nubes.testing.fleet import HostSpec, create_hosts
from tests.unit.scheduler.helpers import flavor


@pytest.fixture
async def bus(
    db: Database,
    conf: cfg.ConfigOpts,
) -> AsyncIterator[str]:
    url = f"memory:///sched-{uuid.uuid4().hex[:8]}"
    manager = SchedulerManager(db, conf)
    svc = Service(
        "scheduler",
        "ctl",
        get_transport(url, identity="scheduler.ctl"),
        [manager],
        report_interval=None,
    )
    await svc.start()
    yield url
    await svc.stop()
    await manager.close()


async def _api(url: str, identity: str) -> SchedulerAPI:
    transport = get_transport(url, identity=identity)
    await transport.connect()
    return SchedulerAPI(transport, timeout=10)


async def test_select_claim_release_over_rpc(db: Database, bus: str):
    await create_hosts(db, [HostSpec("h1", vcpus=1), HostSpec("h2", vcpus=1)])
    api = await _api(bus, "conductor.ctl")
    ctxt = RequestContext()
    spec = RequestSpec(flavor=flavor(vcpus=1), project_id="p1")
    instance = str(uuid.uuid4())
    (sels,) = await api.select_destinations(ctxt, spec, [instance])
    assert all(isinstance(s, Selection) for s in sels)
    assert sels[0].claimed and not sels[1].claimed
    moved = await api.claim_alternate(ctxt, sels[1])
    assert moved.claimed and moved.host == sels[1].host
    assert await api.release(ctxt, instance) == 1
    with pytest.raises(exception.NoValidHost, match="CoreFilter removed 2"):
        big = RequestSpec(flavor=flavor(vcpus=2), project_id="p1")
        await api.select_destinations(ctxt, big, [str(uuid.uuid4())])
    await api.client.transport.close()


async def test_hints_over_rpc(bus: str):
    api = await _api(bus, "api.ctl")
    hints = await api.get_scheduler_hints(RequestContext())
    assert {h["name"] for h in hints} == {"group", "same_host", "different_host"}
    await api.client.transport.close()


async def test_compute_hosts_may_not_claim(db: Database, bus: str):
    await create_hosts(db, [HostSpec("h1")])
    api = await _api(bus, "compute.h1")
    with pytest.raises(exception.Forbidden):
        await api.select_destinations(
            RequestContext(), RequestSpec(flavor=flavor()), [str(uuid.uuid4())]
        )
    with pytest.raises(exception.Forbidden):
        await api.release(RequestContext(), str(uuid.uuid4()))
    await api.client.transport.close()


async def test_the_scheduler_does_not_answer_hints_to_a_compute_host(bus: str):
    api = await _api(bus, "compute.h1")
    with pytest.raises(exception.Forbidden, match=r"compute\.h1 may not call scheduler"):
        await api.get_scheduler_hints(RequestContext())
    await api.client.transport.close()


async def test_select_waits_while_every_host_is_silent_after_an_outage(
    db: Database, bus: str, monkeypatch: pytest.MonkeyPatch
):
    """The client asks again while the scheduler says ComputeHostsSilent: once a
    host beats again the build is placed, instead of failing with NoValidHost."""
    import asyncio
    import datetime as dt

    from sqlalchemy import update

    from nubes.db.models import service_heartbeats
    from nubes.scheduler import rpcapi

    monkeypatch.setattr(rpcapi, "SILENT_RETRY", 0.2)
    await create_hosts(db, [HostSpec("h1", silent_for=90)])
    api = await _api(bus, "conductor.ctl")
    spec = RequestSpec(flavor=flavor(vcpus=1), project_id="p1")

    async def beat_again() -> None:
        await asyncio.sleep(0.5)
        async with db.writer() as conn:
            await conn.execute(
                update(service_heartbeats).values(last_seen_at=dt.datetime.now(dt.UTC))
            )

    beating = asyncio.create_task(beat_again())
    (sels,) = await api.select_destinations(RequestContext(), spec, [str(uuid.uuid4())])
    await beating
    assert sels[0].host == "h1" and sels[0].claimed
    await api.client.transport.close()
