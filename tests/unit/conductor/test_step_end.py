"""The end of a host's step, written by the commit that closes its task
(``nubes/step_end.py``): what the conductor accepts from a host, and a host
that saved the end itself (release N) or an end that no longer applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nubes import exception
from nubes.conductor.tasks.helpers import reported_end
from nubes.conductor.tasks.payloads import Outcome
from nubes.context import RequestContext
from nubes.db.api import tasks
from nubes.db.api.tasks import TaskStatus
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState, TaskState, VMState
from nubes.step_end import InstanceEnd
from tests.unit.conductor.conftest import IMAGE, start_cloud


def _outcome(details: dict[str, Any] | None) -> Outcome:
    return Outcome(step="power", attempt=1, host="h1", ok=True, details=details or {})


def test_a_reported_end_is_read_and_checked_against_the_state_table() -> None:
    pausing = (TaskState.PAUSING,)
    row = {"vm_state": "active", "task_state": "pausing"}
    end = reported_end(_outcome({"end": {"vm_state": "paused", "power_state": 3}}), row, pausing)
    assert end == InstanceEnd(vm_state="paused", power_state=3)
    paused = _outcome({"end": {"vm_state": "paused"}})
    # None: a host that saved it itself (release N), or nothing to do ...
    assert reported_end(_outcome({"already_done": True}), row, pausing) is None
    # ... the instance gone, or no longer pausing (saved already, reset).
    assert reported_end(paused, None, pausing) is None
    assert reported_end(paused, {"vm_state": "paused", "task_state": None}, pausing) is None
    refused = [
        {"vm_state": "bogus"},  # no such vm_state
        {"vm_state": "paused", "power_state": 99},  # no such power state
        {"vm_state": "rescued"},  # active/pausing never ends rescued
        {"vm_state": 5},  # not a string
        "paused",  # not a struct
    ]
    for bad in refused:
        with pytest.raises(exception.Invalid):
            reported_end(_outcome({"end": bad}), row, pausing)


async def _host_manager(cloud: Any) -> Any:
    (svc,) = cloud.computes.values()
    (node,) = [h for h in svc.hooks if hasattr(h, "manager")]
    return node.manager


async def test_an_end_the_host_saved_itself_is_not_written_again(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    """A host of release N saves the end itself (and a reset-state may move
    the instance on before the close): the closing commit's write then
    matches nothing, and the task still closes."""
    cloud = await start_cloud(tmp_path, hosts=1)
    try:
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
        await cloud.wait_tasks([inst.uuid])
        reporter = (await _host_manager(cloud)).runner.reporter
        end_state = reporter.end_state

        async def saved_first(
            c: RequestContext, instance: Instance, vm_state: VMState, power: Any = None
        ) -> InstanceEnd:
            busy = instance.task_state
            end = await end_state(c, instance, vm_state, power)
            await instance.save(c, expected_task_state=busy)
            return end

        reporter.end_state = saved_first
        await cloud.api.pause_server(ctxt, inst.uuid)
        await cloud.wait_tasks([inst.uuid])
        (row,) = await cloud.instances([inst.uuid])
        assert (row["vm_state"], row["task_state"]) == (VMState.PAUSED, None)
        assert row["power_state"] == PowerState.PAUSED
        async with cloud.db.reader() as conn:
            pause = (await tasks.list_for_instance(conn, inst.uuid))[-1]
        assert (pause["kind"], pause["status"]) == ("pause", TaskStatus.SUCCEEDED)
    finally:
        await cloud.stop()


async def test_an_end_the_state_table_refuses_fails_the_task(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    cloud = await start_cloud(tmp_path, hosts=1)
    try:
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
        await cloud.wait_tasks([inst.uuid])
        reporter = (await _host_manager(cloud)).runner.reporter

        async def forged(
            c: RequestContext, instance: Instance, vm_state: VMState, power: Any = None
        ) -> InstanceEnd:
            return InstanceEnd(vm_state=VMState.RESCUED.value)

        reporter.end_state = forged
        await cloud.api.pause_server(ctxt, inst.uuid)
        await cloud.wait_tasks([inst.uuid])
        (row,) = await cloud.instances([inst.uuid])
        # Not written: the pause's task_state dropped, with a fault.
        assert (row["vm_state"], row["task_state"]) == (VMState.ACTIVE, None)
        async with cloud.db.reader() as conn:
            pause = (await tasks.list_for_instance(conn, inst.uuid))[-1]
        assert pause["status"] == TaskStatus.FAILED
        assert "may not end in" in pause["last_error"]
    finally:
        await cloud.stop()
