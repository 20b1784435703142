"""The compute manager's steps, through a real conductor, with the fake driver."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from nubes.compute.rpcapi import ComputeAPI
from nubes.context import RequestContext
from nubes.injected_files import InjectedFiles
from nubes.objects.instance import Instance
from nubes.objects.instance_action import InstanceAction, InstanceActionEvent
from nubes.objects.states import PowerState, TaskState, VMState
from nubes.rpc import dispatcher
from nubes.rpc.client import RPCClient
from nubes.step_end import EventEnd, InstanceEnd
from nubes.step_key import StepKey
from nubes.testing.cloud import Cloud
from tests.unit.compute.conftest import ComputeHarness, NotificationSink, StepRecorder, start_host

_tasks = itertools.count(1)


async def _action(ctxt: RequestContext, inst: Instance, action: str) -> None:
    await InstanceAction.action_start(ctxt, inst.uuid, action)


async def _events(ctxt: RequestContext, inst: Instance) -> list[InstanceActionEvent]:
    action = await InstanceAction.get_by_request_id(ctxt, inst.uuid, ctxt.request_id)
    return await InstanceActionEvent.get_by_action(ctxt, action.id)


async def _build(
    compute: ComputeHarness, inst: Instance, ctxt: RequestContext, task_id: int
) -> None:
    await compute.run(
        compute.node.manager.build_and_run_instance,
        ctxt,
        instance=inst,
        node=compute.name,
        task_id=task_id,
        step="build",
        attempt=1,
        image={"id": "img"},
        request={},
    )


async def test_build_runs_the_instance_and_reports(compute: ComputeHarness, sink: NotificationSink):
    ctxt = RequestContext(user_id="u1", project_id="p1")
    inst = await compute.instance(vm_state="building", task_state="scheduling")
    await _action(ctxt, inst, "create")
    task_id = next(_tasks)
    await _build(compute, inst, ctxt, task_id)

    (report,) = await compute.steps.wait(task_id)
    assert report["ok"] and report["step"] == "build" and report["attempt"] == 1
    # ACTIVE goes back with the report, for the conductor's closing commit.
    assert report["details"] == {"end": {"vm_state": "active", "power_state": 1}}
    saved = await compute.reload(inst.uuid)
    assert (saved.vm_state, saved.task_state) == (VMState.BUILDING, TaskState.SPAWNING)
    assert saved.power_state == PowerState.RUNNING
    assert saved.launched_at is not None and saved.launched_on == compute.name
    assert inst.uuid in compute.driver.instances
    # The host started its event; the end goes with the report, for the
    # conductor to write with it (nubes/step_end.py).
    (event,) = await _events(ctxt, inst)
    assert event.event == "compute_build_and_run_instance" and event.host == compute.name
    assert event.start_time is not None and event.finish_time is None
    assert report["event"] == EventEnd(event="compute_build_and_run_instance", result="Success")
    assert sink.event_types(inst.uuid) == [
        "instance.create.start",
        "instance.update",
        "instance.create.end",
    ]
    end = sink.messages[-1]
    assert end["publisher_id"] == f"compute:{compute.name}"
    assert end["request_id"] == ctxt.request_id
    assert end["payload"]["nubes_object.name"] == "InstanceActionPayload"
    assert end["payload"]["nubes_object.data"]["state"] == "active"


async def test_failed_spawn_hands_the_instance_back(
    compute: ComputeHarness, sink: NotificationSink
):
    compute.faults.fail_spawn_hosts.add(compute.name)
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="building", task_state="scheduling")
    await _action(ctxt, inst, "create")
    task_id = next(_tasks)
    await _build(compute, inst, ctxt, task_id)

    (report,) = await compute.steps.wait(task_id)
    assert not report["ok"] and "injected" in report["error"]
    assert report["details"] == {"exception": "VirtDriverError"}
    saved = await compute.reload(inst.uuid)
    assert (saved.vm_state, saved.task_state) == (VMState.BUILDING, TaskState.SCHEDULING)
    assert saved.fault is not None and "injected" in (saved.fault.message or "")
    assert saved.fault.host == compute.name
    assert compute.driver.instances == {}
    ended = report["event"]
    assert ended.event == "compute_build_and_run_instance" and ended.result == "Error"
    assert ended.traceback and "VirtDriverError" in ended.traceback
    assert ended.details and "injected" in ended.details
    assert sink.event_types(inst.uuid)[-1] == "instance.create.error"
    error = sink.messages[-1]
    assert error["priority"] == "ERROR"
    fault = error["payload"]["nubes_object.data"]["fault"]["nubes_object.data"]
    assert fault["exception"] == "VirtDriverError"


async def test_a_repeated_step_is_answered_not_redone(compute: ComputeHarness):
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="building", task_state="scheduling")
    task_id = next(_tasks)
    spawns = 0
    real_spawn = compute.driver.spawn

    async def counting_spawn(*args, **kwargs):
        nonlocal spawns
        spawns += 1
        await real_spawn(*args, **kwargs)

    compute.driver.spawn = counting_spawn  # type: ignore[method-assign]
    await _build(compute, inst, ctxt, task_id)
    await _build(compute, inst, ctxt, task_id)
    reports = await compute.steps.wait(task_id, count=2)
    assert [r["ok"] for r in reports] == [True, True]
    assert spawns == 1


async def test_after_a_restart_a_build_already_done_reports_ok(compute: ComputeHarness):
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="building", task_state="scheduling")
    await _build(compute, inst, ctxt, 77)
    await compute.steps.wait(77)
    again = await compute.restart()
    assert len(again.node.manager.runner.steps) == 0
    stale = await again.reload(inst.uuid)
    await _build(again, stale, ctxt, 77)
    reports = await again.steps.wait(77, count=2)
    assert reports[-1]["ok"] and reports[-1]["details"] == {"already_done": True}
    assert list(again.driver.instances) == [inst.uuid]


async def test_a_stop_the_restart_repair_finished_reports_the_cut_off_events_end(
    cloud: Cloud,
) -> None:
    # The host died mid-stop, its event open; the restart repair finished the
    # stop; the conductor then sends the step again with the instance as it
    # is now. Found done, it starts no event, and its report carries the end
    # the conductor writes to close the one left open (conductor 1.5).
    host = await start_host(cloud, "rep", init=False)
    ctxt = RequestContext(user_id="u1", project_id="p1")
    inst = await host.instance(vm_state="active", task_state="powering-off", power_state=1)
    host.driver.add_instance(inst, PowerState.RUNNING)
    await _action(ctxt, inst, "stop")
    await InstanceActionEvent.event_start(ctxt, inst.uuid, "compute_stop_instance", host="rep")
    await host.run(host.node.init_host)
    fresh = await host.reload(inst.uuid)
    assert (fresh.vm_state, fresh.task_state) == (VMState.STOPPED, None)
    key = StepKey(task_id=next(_tasks), step="power", attempt=1)
    await host.run(host.node.manager.stop_instance, ctxt, instance=fresh, key=key)
    (report,) = await host.steps.wait(key.task_id)
    assert report["ok"] and report["details"] == {"already_done": True}
    assert report["event"] == EventEnd(event="compute_stop_instance", result="Success")
    assert len(await _events(ctxt, inst)) == 1  # none started


async def test_terminate_removes_the_guest_and_leaves_the_end_to_the_delete_task(
    compute: ComputeHarness, sink: NotificationSink
):
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="active", task_state="deleting")
    compute.driver.add_instance(inst)
    await _action(ctxt, inst, "delete")
    task_id = next(_tasks)
    args = {"instance": inst, "task_id": task_id, "step": "delete", "attempt": 1}
    await compute.run(compute.node.manager.terminate_instance, ctxt, **args)
    (report,) = await compute.steps.wait(task_id)
    assert report["ok"]
    # DELETED is written by the delete task's close, with the soft delete
    # (db/api/instances.destroy): the instance stays busy until then.
    saved = await compute.reload(inst.uuid)
    assert (saved.vm_state, saved.task_state) == (VMState.ACTIVE, TaskState.DELETING)
    assert saved.terminated_at is None and not report["details"]
    assert compute.driver.instances == {}
    assert sink.event_types(inst.uuid) == [
        "instance.delete.start",
        "instance.update",
        "instance.delete.end",
    ]
    assert report["event"] == EventEnd(event="compute_terminate_instance", result="Success")


async def test_a_host_whose_conductors_are_older_finishes_its_event_itself(
    cloud: Cloud, sink: NotificationSink
):
    """Conductors capped below RPC 1.5 take no event with a report: the host
    then finishes it with its own call, as before, and reports without it."""
    compute = await start_host(cloud, "cmp1", steps=StepRecorder(events=False))
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="building", task_state="scheduling")
    await _action(ctxt, inst, "create")
    task_id = next(_tasks)
    await _build(compute, inst, ctxt, task_id)
    (report,) = await compute.steps.wait(task_id)
    assert report["ok"] and report["event"] is None
    (event,) = await _events(ctxt, inst)
    assert event.event == "compute_build_and_run_instance" and event.result == "Success"
    assert event.finish_time is not None


async def test_a_step_without_an_action_reports_no_event(compute: ComputeHarness):
    """No action row (an internal operation): no event started, none to end."""
    inst = await compute.instance(vm_state="building", task_state="scheduling")
    task_id = next(_tasks)
    await _build(compute, inst, RequestContext(), task_id)
    (report,) = await compute.steps.wait(task_id)
    assert report["ok"] and report["event"] is None


async def test_stop_start_and_reboot(compute: ComputeHarness, sink: NotificationSink):
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="active", power_state=PowerState.RUNNING)
    compute.driver.add_instance(inst)
    manager = compute.node.manager

    async def step(method, name, busy, **extra):
        task_id = next(_tasks)
        current = await compute.reload(inst.uuid)
        args = {"instance": current, "task_id": task_id, "step": name, "attempt": 1, **extra}
        await compute.run(method, ctxt, **args)
        (report,) = await compute.steps.wait(task_id)
        saved = await compute.reload(inst.uuid)
        if not report["ok"]:
            return report, saved
        # The host leaves the end to the conductor's closing commit
        # (nubes/step_end.py): the instance is still busy here. Written as
        # the conductor would, for the next step.
        assert saved.task_state == busy, (name, saved.task_state)
        end = InstanceEnd.from_details(report["details"])
        assert end is not None
        saved.vm_state, saved.task_state, saved.power_state = end.vm_state, None, end.power_state
        await saved.save(ctxt, expected_task_state=busy)
        return report, await compute.reload(inst.uuid)

    report, saved = await step(manager.stop_instance, "stop", TaskState.POWERING_OFF)
    assert report["details"] == {"end": {"vm_state": "stopped", "power_state": 4}}
    assert report["ok"] and (saved.vm_state, saved.task_state) == (VMState.STOPPED, None)
    assert saved.power_state == PowerState.SHUTDOWN
    assert compute.driver.instances[inst.uuid].state == PowerState.SHUTDOWN

    report, saved = await step(manager.start_instance, "start", TaskState.POWERING_ON)
    assert report["ok"] and (saved.vm_state, saved.task_state) == (VMState.ACTIVE, None)
    assert compute.driver.instances[inst.uuid].state == PowerState.RUNNING

    report, saved = await step(
        manager.reboot_instance, "reboot", TaskState.REBOOT_STARTED, reboot_type="SOFT"
    )
    assert report["ok"] and (saved.vm_state, saved.task_state) == (VMState.ACTIVE, None)

    compute.faults.fail_reboot_hosts.add(compute.name)
    report, saved = await step(
        manager.reboot_instance, "reboot", TaskState.REBOOT_STARTED_HARD, reboot_type="HARD"
    )
    assert not report["ok"]
    # ERROR, as Nova's failed reboot, is the conductor's to write with the
    # task's close: the host leaves the instance busy.
    assert (saved.vm_state, saved.task_state) == (VMState.ACTIVE, TaskState.REBOOT_STARTED_HARD)
    types = sink.event_types(inst.uuid)
    for expected in (
        "instance.power_off.start",
        "instance.power_off.end",
        "instance.power_on.end",
        "instance.reboot.end",
        "instance.reboot.error",
    ):
        assert expected in types


async def test_a_transition_the_table_forbids_is_refused(compute: ComputeHarness):
    # Starting an instance that is still being built: the table says no.
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="building", task_state="spawning")
    task_id = next(_tasks)
    args = {"instance": inst, "task_id": task_id, "step": "start", "attempt": 1}
    await compute.run(compute.node.manager.start_instance, ctxt, **args)
    (report,) = await compute.steps.wait(task_id)
    assert not report["ok"]
    assert report["details"] == {"exception": "InvalidInstanceTransition"}
    saved = await compute.reload(inst.uuid)
    assert (saved.vm_state, saved.task_state) == (VMState.BUILDING, TaskState.SPAWNING)


@pytest.mark.parametrize("cap", [None, "1.4"])
async def test_steps_arrive_over_rpc(cloud: Cloud, compute: ComputeHarness, cap: str | None):
    """A step's key travels as one struct (1.5); to a host capped at 1.4 (an
    N-1 host) it is spelled out, and the host takes either form."""
    ctxt = RequestContext()
    inst = await compute.instance(vm_state="building", task_state="scheduling")
    api = ComputeAPI(cloud.conductor.transport, version_cap=cap)
    sent: list[dict[str, Any]] = []
    cast = RPCClient.cast

    async def spy(client: RPCClient, ctxt: RequestContext, method: str, **kwargs: Any) -> None:
        sent.append({"version": client.version, **kwargs})
        await cast(client, ctxt, method, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RPCClient, "cast", spy)
        await api.build_and_run_instance(
            ctxt, compute.name, inst, compute.name, StepKey(task_id=501, step="build", attempt=1),
            {"id": "img"}, {},
        )  # fmt: skip
        (report,) = await compute.steps.wait(501)
        assert report["ok"]
        inst = await compute.reload(inst.uuid)
        # What the conductor writes with the build's close.
        inst.vm_state, inst.task_state = VMState.ACTIVE, None
        await inst.save(ctxt, expected_task_state=TaskState.SPAWNING)
        await api.stop_instance(
            ctxt, compute.name, inst, StepKey(task_id=502, step="stop", attempt=1)
        )
        (report,) = await compute.steps.wait(502)
    assert report["ok"]
    saved = await compute.reload(inst.uuid)
    # The end goes back with the report, for the conductor's closing commit.
    assert (saved.vm_state, saved.task_state) == (VMState.ACTIVE, TaskState.POWERING_OFF)
    assert report["details"]["end"]["vm_state"] == VMState.STOPPED
    if cap is None:
        assert [(s["version"], s["key"]) for s in sent] == [
            ("1.5", StepKey(task_id=501, step="build", attempt=1)),
            ("1.5", StepKey(task_id=502, step="stop", attempt=1)),
        ]
    else:
        assert [(s["version"], s["task_id"], s["step"], "key" in s) for s in sent] == [
            ("1.0", 501, "build", False),
            ("1.0", 502, "stop", False),
        ]


#: The steps that take personality files (compute 1.10).
_TAKE_FILES = (
    "build_and_run_instance",
    "rebuild_instance",
    "pre_live_migration",
    "finish_migration",
)


def test_every_step_handler_takes_its_key_as_a_struct(compute: ComputeHarness) -> None:
    """The RPC server sees ``key`` as a StepKey (converted from the wire's map,
    validated) on every method that also takes the spelled-out form."""
    manager = compute.node.manager
    steps = 0
    for endpoint in (manager, manager.live, manager.resize, manager.rebuild):
        for name, method in dispatcher.describe_endpoint(endpoint).methods.items():
            if "task_id" in method.allowed:
                steps += 1
                # Personality files (1.10, 1.12, 1.13) travel as a struct too.
                files = {"injected_files": InjectedFiles} if name in _TAKE_FILES else {}
                assert dict(method.structs) == {"key": StepKey, **files}, name
                assert not method.required & {"key", "task_id", "step", "attempt"}, name
    assert steps == 21


async def _placed_build(
    compute: ComputeHarness, inst: Instance, ctxt: RequestContext, task_id: int
) -> None:
    await compute.run(
        compute.node.manager.build_and_run_instance,
        ctxt,
        instance=inst,
        node=compute.name,
        key=StepKey(task_id=task_id, step="spawn", attempt=1),
        image={"id": "img"},
        request={},
        placed=True,
    )


async def test_a_placed_build_leaves_the_placement_to_the_conductor(
    compute: ComputeHarness, sink: NotificationSink
):
    """Compute 1.11: the placement commit wrote spawning, launched_on and the
    event's start; the host only spawns, saves the fence and reports."""
    ctxt = RequestContext(user_id="u1", project_id="p1")
    inst = await compute.instance(
        vm_state="building", task_state="spawning", launched_on=compute.name
    )
    await _action(ctxt, inst, "create")
    task_id = next(_tasks)
    await _placed_build(compute, inst, ctxt, task_id)

    (report,) = await compute.steps.wait(task_id)
    assert report["ok"], report
    assert report["details"] == {"end": {"vm_state": "active", "power_state": 1}}
    saved = await compute.reload(inst.uuid)
    assert (saved.vm_state, saved.task_state) == (VMState.BUILDING, TaskState.SPAWNING)
    assert saved.power_state == PowerState.RUNNING and saved.launched_at is not None
    assert inst.uuid in compute.driver.instances
    # No start of its own (the conductor's commit has it); the end goes with
    # the report, which closes the one the conductor started in its name.
    assert await _events(ctxt, inst) == []
    assert report["event"] == EventEnd(event="compute_build_and_run_instance", result="Success")
    assert sink.event_types(inst.uuid) == [
        "instance.create.start",
        "instance.update",
        "instance.create.end",
    ]


async def test_a_placed_build_deleted_during_its_spawn_removes_its_guest(
    compute: ComputeHarness,
):
    """The fence save after spawn stays: a build given up meanwhile (its
    instance being deleted) refuses it, and the host removes its guest."""
    ctxt = RequestContext()
    inst = await compute.instance(
        vm_state="building", task_state="spawning", launched_on=compute.name
    )
    real_spawn = compute.driver.spawn

    async def spawn_then_deleted(*args: Any, **kwargs: Any) -> None:
        await real_spawn(*args, **kwargs)
        deleting = await compute.reload(inst.uuid)
        deleting.task_state = TaskState.DELETING
        await deleting.save(RequestContext())

    compute.driver.spawn = spawn_then_deleted  # type: ignore[method-assign]
    task_id = next(_tasks)
    await _placed_build(compute, inst, ctxt, task_id)
    (report,) = await compute.steps.wait(task_id)
    assert not report["ok"]
    assert report["details"] == {"exception": "InstanceUpdateConflict"}
    assert compute.driver.instances == {}
    saved = await compute.reload(inst.uuid)
    assert saved.task_state == TaskState.DELETING  # the delete's, untouched


async def test_a_placed_build_whose_spawn_fails_is_handed_back_for_a_reschedule(
    compute: ComputeHarness,
):
    compute.faults.fail_spawn_hosts.add(compute.name)
    ctxt = RequestContext()
    inst = await compute.instance(
        vm_state="building", task_state="spawning", launched_on=compute.name
    )
    task_id = next(_tasks)
    await _placed_build(compute, inst, ctxt, task_id)
    (report,) = await compute.steps.wait(task_id)
    assert not report["ok"] and "injected" in report["error"]
    saved = await compute.reload(inst.uuid)
    assert (saved.vm_state, saved.task_state) == (VMState.BUILDING, TaskState.SCHEDULING)
    assert compute.driver.instances == {}
