"""Compute's rebuild steps (in place, evacuation to this host, its rollback), through a
real conductor with the fake driver. The steps do driver work only: the instance's
state is the conductor's to write, so it is checked to be left alone."""

from __future__ import annotations

import itertools
from typing import Any

from nubes.context import RequestContext
from nubes.objects.instance import Instance
from nubes.objects.instance_action import InstanceAction, InstanceActionEvent
from nubes.objects.states import PowerState, TaskState, VMState
from nubes.step_end import EventEnd
from tests.unit.compute.conftest import ComputeHarness, NotificationSink

_tasks = itertools.count(1000)
IMAGE = {"id": "img-2", "properties": {}}


async def _rebuild(
    compute: ComputeHarness,
    inst: Instance,
    ctxt: RequestContext,
    *,
    evacuate: bool,
    power_on: bool = True,
    task_id: int | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    task_id = task_id if task_id is not None else next(_tasks)
    before = len([r for r in compute.steps.reports if r["task_id"] == task_id])
    await compute.run(
        compute.node.manager.rebuild.rebuild_instance,
        ctxt,
        instance=inst,
        task_id=task_id,
        step="rebuild",
        attempt=attempt,
        image=IMAGE,
        evacuate=evacuate,
        power_on=power_on,
    )
    reports = await compute.steps.wait(task_id, count=before + 1)
    return reports[-1]


def _counting(compute: ComputeHarness, name: str) -> list[str]:
    """Record every call of a driver method (by instance uuid)."""
    calls: list[str] = []
    real = getattr(compute.driver, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        inst = next(a for a in (*args, *kwargs.values()) if isinstance(a, Instance))
        calls.append(inst.uuid)
        return await real(*args, **kwargs)

    setattr(compute.driver, name, counted)
    return calls


async def _event(ctxt: RequestContext, inst: Instance) -> InstanceActionEvent:
    action = await InstanceAction.get_by_request_id(ctxt, inst.uuid, ctxt.request_id)
    (event,) = await InstanceActionEvent.get_by_action(ctxt, action.id)
    return event


async def test_rebuild_in_place_replaces_the_guest(compute: ComputeHarness, sink: NotificationSink):
    ctxt = RequestContext(user_id="u1", project_id="p1")
    inst = await compute.instance(vm_state="active", task_state="rebuild_spawning", power_state=1)
    compute.driver.add_instance(inst)
    old_guest = compute.driver.instances[inst.uuid]
    await InstanceAction.action_start(ctxt, inst.uuid, "rebuild")
    destroyed, spawned = _counting(compute, "destroy"), _counting(compute, "spawn")

    report = await _rebuild(compute, inst, ctxt, evacuate=False)

    assert report["ok"] and report["details"] == {"power_state": PowerState.RUNNING}
    assert destroyed == spawned == [inst.uuid]
    guest = compute.driver.instances[inst.uuid]
    assert guest is not old_guest and guest.state == PowerState.RUNNING
    # The conductor writes the state, not the host.
    saved = await compute.reload(inst.uuid)
    assert (saved.vm_state, saved.task_state) == (VMState.ACTIVE, TaskState.REBUILD_SPAWNING)
    event = await _event(ctxt, inst)  # started here; it ends with the report
    assert (event.event, event.result, event.host) == (
        "compute_rebuild_instance",
        None,
        compute.name,
    )
    assert report["event"] == EventEnd(event="compute_rebuild_instance", result="Success")
    assert sink.event_types(inst.uuid) == ["instance.rebuild.start", "instance.rebuild.end"]


async def test_rebuild_of_a_stopped_instance_leaves_it_off(compute: ComputeHarness):
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="stopped", task_state="rebuild_spawning", power_state=4)
    compute.driver.add_instance(inst, PowerState.SHUTDOWN)
    report = await _rebuild(compute, inst, ctxt, evacuate=False, power_on=False)
    assert report["ok"] and report["details"] == {"power_state": PowerState.SHUTDOWN}
    assert compute.driver.instances[inst.uuid].state == PowerState.SHUTDOWN


async def test_failed_rebuild_reports_with_a_fault_and_leaves_no_guest(
    compute: ComputeHarness, sink: NotificationSink
):
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="active", task_state="rebuild_spawning")
    compute.driver.add_instance(inst)
    await InstanceAction.action_start(ctxt, inst.uuid, "rebuild")
    compute.faults.fail_next["spawn"] = 1
    report = await _rebuild(compute, inst, ctxt, evacuate=False)
    assert not report["ok"] and "injected" in report["error"]
    assert report["details"] == {"exception": "VirtDriverError"}
    assert compute.driver.instances == {}
    saved = await compute.reload(inst.uuid)
    assert saved.fault is not None and "injected" in (saved.fault.message or "")
    assert (saved.vm_state, saved.task_state) == (VMState.ACTIVE, TaskState.REBUILD_SPAWNING)
    assert report["event"].result == "Error" and "injected" in report["event"].details
    assert sink.event_types(inst.uuid)[-1] == "instance.rebuild.error"


async def test_evacuation_spawns_here_once(compute: ComputeHarness, sink: NotificationSink):
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="active", task_state="rebuild_spawning")
    spawned = _counting(compute, "spawn")
    destroyed = _counting(compute, "destroy")
    task_id = next(_tasks)
    first = await _rebuild(compute, inst, ctxt, evacuate=True, task_id=task_id)
    assert first["ok"] and first["details"] == {"power_state": PowerState.RUNNING}
    assert compute.driver.instances[inst.uuid].state == PowerState.RUNNING
    # The same message again is answered from the step log ...
    again = await _rebuild(compute, inst, ctxt, evacuate=True, task_id=task_id)
    assert again == first
    # ... and a later try (or one after a restart) finds the guest made.
    later = await _rebuild(compute, inst, ctxt, evacuate=True, task_id=task_id, attempt=2)
    assert later["ok"] and later["details"]["already_done"] is True
    assert spawned == [inst.uuid] and destroyed == []
    assert sink.event_types(inst.uuid)[:2] == ["instance.evacuate.start", "instance.evacuate.end"]


async def test_evacuation_of_a_stopped_instance_leaves_it_off(compute: ComputeHarness):
    inst = await compute.instance(vm_state="stopped", task_state="rebuild_spawning")
    report = await _rebuild(compute, inst, RequestContext(), evacuate=True, power_on=False)
    assert report["ok"]
    assert compute.driver.instances[inst.uuid].state == PowerState.SHUTDOWN


async def test_failed_evacuation_then_its_rollback_removes_the_guest(compute: ComputeHarness):
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="active", task_state="rebuild_spawning")
    # Spawned, then failing to power off: a guest is left for the rollback.
    compute.faults.fail_next["power_off"] = 1
    task_id = next(_tasks)
    report = await _rebuild(compute, inst, ctxt, evacuate=True, power_on=False, task_id=task_id)
    assert not report["ok"]
    assert inst.uuid in compute.driver.instances

    args = {"instance": inst, "task_id": task_id, "step": "rollback_dest", "attempt": 1}
    await compute.run(compute.node.manager.rebuild.rollback_evacuation_at_destination, ctxt, **args)
    reports = await compute.steps.wait(task_id, count=2)
    assert reports[-1]["ok"] and reports[-1]["step"] == "rollback_dest"
    assert compute.driver.instances == {}
    # A repeat (the guest already gone) is fine too.
    args["attempt"] = 2
    await compute.run(compute.node.manager.rebuild.rollback_evacuation_at_destination, ctxt, **args)
    assert (await compute.steps.wait(task_id, count=3))[-1]["ok"]
