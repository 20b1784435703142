"""Liveness used, not just shown: nothing is placed on a host whose heartbeats
stopped, and a step waiting on such a host is cut short within
service_down_time, not at compute_step_timeout."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.payloads import BuildPayload
from nubes.context import RequestContext
from nubes.db.api import tasks
from nubes.db.api.tasks import TaskStatus
from nubes.testing.allinone import AllInOne
from tests.unit.conductor.conftest import IMAGE, start_cloud

pytestmark = pytest.mark.timeout(90)

DOWN_TIME = 3
#: Far longer than any wait here: a step that waits it out fails the test.
STEP_TIMEOUT = 600.0
BIG = {"vcpus": 1024, "memory_mb": 2**22}


async def _cloud(tmp_path: Path) -> AllInOne:
    cloud = await start_cloud(
        tmp_path,
        hosts=0,
        DEFAULT={"report_interval": 1, "service_down_time": DOWN_TIME},
        conductor={"compute_step_timeout": STEP_TIMEOUT},
    )
    # The engine trusts silence only after reading the database for
    # service_down_time (heartbeats go through a conductor).
    await asyncio.sleep(DOWN_TIME)
    return cloud


async def test_a_build_on_a_host_that_died_moves_on_within_service_down_time(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    cloud = await _cloud(tmp_path)
    try:
        # The dead hosts have the most room: the scheduler prefers them.
        await cloud.add_hosts(["dead-1", "dead-2"], capacity=BIG)
        await cloud.add_hosts(["alive"])
        await cloud.stop_host("dead-1")
        await cloud.stop_host("dead-2")  # both still look up for a while
        started = time.monotonic()
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
        await cloud.wait_tasks([inst.uuid], timeout=30)
        assert time.monotonic() - started < STEP_TIMEOUT
        (row,) = await cloud.instances([inst.uuid])
        assert (row["vm_state"], row["host"]) == ("active", "alive")
        async with cloud.db.reader() as conn:
            (task, *_) = await tasks.list_for_instance(conn, inst.uuid)
        assert task["status"] == TaskStatus.SUCCEEDED
        errors = {f["host"]: f["error"] for f in task["payload"]["failures"]}
        tried_dead = [h for h in ("dead-1", "dead-2") if h in errors]
        assert tried_dead, errors
        for host in tried_dead:
            assert "is down" in errors[host] or "host_down" in errors[host], errors
    finally:
        await cloud.stop()


async def test_the_scheduler_never_places_on_a_host_whose_heartbeats_stopped(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    cloud = await _cloud(tmp_path)
    try:
        await cloud.add_hosts(["dead"], capacity=BIG)
        await cloud.add_hosts(["alive"])
        await cloud.stop_host("dead")
        await asyncio.sleep(DOWN_TIME + 1)  # its last heartbeat is now too old
        made = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE, count=4)
        uuids = [i.uuid for i in made]
        await cloud.wait_tasks(uuids, timeout=30)
        rows = await cloud.instances(uuids)
        assert {(r["vm_state"], r["host"]) for r in rows} == {("active", "alive")}
        async with cloud.db.reader() as conn:
            for uuid in uuids:
                (task, *_) = await tasks.list_for_instance(conn, uuid)
                assert not payloads.decode(task["payload"], BuildPayload).failures
    finally:
        await cloud.stop()
