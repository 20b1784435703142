"""Operators' changes to hosts hold from the very next scheduling request.

The routine refresh of the host view is pushed out of reach here (an hour),
so only the host facts' generation can tell the schedulers of a change.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from oslo_config import cfg

from nubes import exception
from nubes.context import RequestContext
from nubes.db.api import groups, services
from nubes.db.engine import Database
from nubes.objects.request_spec import RequestSpec
from nubes.scheduler.manager import SchedulerManager
from nubes.testing.fleet import HostSpec, create_hosts
from tests.unit.scheduler.helpers import flavor


@pytest.fixture
async def schedulers(db: Database, conf: cfg.ConfigOpts) -> AsyncIterator[list[SchedulerManager]]:
    """Two schedulers with views of their own (as two processes), both loaded."""
    conf.set_override("host_state_refresh_interval", 3600.0, group="scheduler")
    await create_hosts(db, [HostSpec(f"h{i}", vcpus=16, memory_mb=16384) for i in range(3)])
    made = [SchedulerManager(db, conf), SchedulerManager(db, conf)]
    for m in made:
        await m.view.refresh()
    yield made
    for m in made:
        await m.close()


async def _place(manager: SchedulerManager, **spec: object) -> str:
    request = RequestSpec(
        flavor=flavor(vcpus=1, memory_mb=256, root_gb=1),
        project_id="p1",
        **spec,  # type: ignore[arg-type]
    )
    (chosen,) = await manager.select_destinations(
        RequestContext(), request, [str(uuid.uuid4())], False
    )
    return chosen[0].host


async def _service(db: Database, host: str) -> int:
    async with db.reader() as conn:
        return int((await services.get_by_host_and_binary(conn, host, "compute"))["id"])


async def test_a_disabled_host_gets_no_server_on_the_very_next_request(
    db: Database, schedulers: list[SchedulerManager]
):
    h0 = await _service(db, "h0")
    async with db.writer() as conn:
        await services.update(conn, h0, {"disabled": True, "disabled_reason": "maintenance"})
    for manager in schedulers:
        placed = {await _place(manager) for _ in range(6)}
        assert "h0" not in placed
    async with db.writer() as conn:
        await services.update(conn, h0, {"disabled": False, "disabled_reason": None})
        await services.update(conn, await _service(db, "h1"), {"forced_down": True})
        await services.update(conn, await _service(db, "h2"), {"disabled": True})
    for manager in schedulers:
        assert await _place(manager) == "h0"


async def test_a_host_just_added_to_a_zone_takes_the_next_server_for_that_zone(
    db: Database, schedulers: list[SchedulerManager]
):
    with pytest.raises(exception.NoValidHost, match="AvailabilityZoneFilter removed 3"):
        await _place(schedulers[0], availability_zone="az1")
    async with db.writer() as conn:
        agg = await groups.aggregate_create(conn, "rack-1", metadata={"availability_zone": "az1"})
        await groups.aggregate_host_add(conn, agg["id"], "h2")
    for manager in schedulers:
        assert await _place(manager, availability_zone="az1") == "h2"
    async with db.writer() as conn:
        await groups.aggregate_host_delete(conn, agg["id"], "h2")
    with pytest.raises(exception.NoValidHost):
        await _place(schedulers[1], availability_zone="az1")
