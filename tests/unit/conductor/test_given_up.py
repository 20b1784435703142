"""A host the conductor gave up on (its report lost, or it is slow) is told to
remove its guest, durably: never a guest on two hosts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nubes.compute.manager import ComputeManager
from nubes.compute.steps import StepReporter
from nubes.conductor.tasks.states import TaskKind
from nubes.context import RequestContext
from nubes.db.api import tasks
from nubes.db.api.tasks import TaskStatus
from nubes.db.models import conductor_tasks
from nubes.injected_files import InjectedFiles
from nubes.notifications.relay import NotificationBatch
from nubes.step_end import EventEnd
from nubes.testing.allinone import AllInOne
from tests.unit.conductor.conftest import IMAGE, start_cloud

pytestmark = pytest.mark.timeout(90)


class LosesBuildReports:
    """A host's reports to the conductor, its build reports lost on the way."""

    def __init__(self, real: StepReporter) -> None:
        self.real = real
        self.reports_events = real.reports_events
        self.reports_notifications = real.reports_notifications
        self.reports_injected_files = real.reports_injected_files
        self.lost = 0

    async def step_finished(
        self,
        context: RequestContext,
        task_id: int,
        step: str,
        attempt: int,
        ok: bool,
        error: str | None = None,
        details: dict[str, Any] | None = None,
        event: EventEnd | None = None,
        notifications: NotificationBatch | None = None,
        injected_files: InjectedFiles | None = None,
    ) -> None:
        if step == "spawn":
            self.lost += 1
            return
        await self.real.step_finished(
            context,
            task_id,
            step,
            attempt,
            ok,
            error=error,
            details=details,
            event=event,
            notifications=notifications,
            injected_files=injected_files,
        )


def _manager(cloud: AllInOne, host: str) -> ComputeManager:
    (manager,) = [e for e in cloud.computes[host].endpoints if isinstance(e, ComputeManager)]
    return manager


async def _remove_guest_tasks(cloud: AllInOne) -> list[Any]:
    t = conductor_tasks
    async with cloud.db.reader() as conn:
        query = select(t.c.status, t.c.payload).where(t.c.kind == TaskKind.REMOVE_GUEST.value)
        return list((await conn.execute(query)).all())


async def test_a_build_whose_success_report_is_lost_leaves_no_guest_on_its_first_host(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    cloud = await start_cloud(tmp_path, hosts=2, conductor={"compute_step_timeout": 1.5})
    try:
        lossy = {h: LosesBuildReports(_manager(cloud, h).runner.conductor) for h in cloud.computes}
        for host, reporter in lossy.items():
            _manager(cloud, host).runner.conductor = reporter
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
        # The first host spawns and its report (with ACTIVE, which the
        # conductor would write with the task's close) is lost.
        (row,) = await cloud.wait_for([inst.uuid], lambda r: r["power_state"] == 1)
        first = row["host"]
        other = next(h for h in cloud.computes if h != first)
        _manager(cloud, other).runner.conductor = lossy[other].real
        await cloud.wait_tasks([inst.uuid], timeout=30)
        (row,) = await cloud.instances([inst.uuid])
        assert (row["vm_state"], row["host"]) == ("active", other)
        assert lossy[first].lost == 1
        # The first host is told to remove its guest, without a restart.
        for _ in range(200):
            if inst.uuid not in await _manager(cloud, first).runner.driver.list_instances():
                break
            await asyncio.sleep(0.05)
        assert inst.uuid not in await _manager(cloud, first).runner.driver.list_instances()
        assert inst.uuid in await _manager(cloud, other).runner.driver.list_instances()
        async with cloud.db.reader() as conn:
            build = (await tasks.list_for_instance(conn, inst.uuid))[-1]
            assert build["kind"] == TaskKind.BUILD and build["status"] == TaskStatus.SUCCEEDED
        ((status, payload),) = await _remove_guest_tasks(cloud)
        assert status == TaskStatus.SUCCEEDED
        assert (payload["host"], payload["instance_uuid"]) == (first, inst.uuid)
        assert payload["outcome"]["details"] == {"removed": True}
    finally:
        await cloud.stop()
