"""Restart repair: one test per row of the table in docs/compute.md."""

from __future__ import annotations

import asyncio

from nubes.compute.rebuild import remove_evacuated_remains
from nubes.compute.repair import Row, classify
from nubes.compute.virt.driver import LifecycleEvent
from nubes.context import RequestContext
from nubes.db.api import migrations
from nubes.objects.states import PowerState, TaskState, VMState
from nubes.testing.cloud import Cloud
from tests.unit.compute.conftest import start_host


async def _repair(cloud: Cloud, driver_state: PowerState | None, **db: object):
    """An instance in ``db`` state whose guest is in ``driver_state`` (None: no
    guest), on a host that then (re)starts; returns (row, instance, driver)."""
    harness = await start_host(cloud, "rep", init=False)
    inst = await harness.instance(**db)
    if driver_state is not None:
        harness.driver.add_instance(inst, driver_state)
    await harness.run(harness.node.init_host)
    report = harness.node.repair_report
    assert report is not None and not report.failed, report
    saved = await harness.reload(inst.uuid)
    return report.rows[inst.uuid], saved, harness.driver


async def test_delete_half_done(cloud: Cloud):
    row, inst, driver = await _repair(
        cloud, PowerState.RUNNING, vm_state="active", task_state="deleting"
    )
    assert row is Row.DELETE_HALF_DONE
    assert (inst.vm_state, inst.task_state) == (VMState.DELETED, None)
    assert inst.terminated_at is not None
    assert driver.instances == {}


async def test_deleted_not_reaped(cloud: Cloud):
    row, inst, driver = await _repair(cloud, PowerState.SHUTDOWN, vm_state="deleted")
    assert row is Row.DELETED_NOT_REAPED
    assert inst.vm_state == VMState.DELETED
    assert driver.instances == {}


async def test_spawn_not_started(cloud: Cloud):
    row, inst, driver = await _repair(cloud, None, vm_state="building", task_state="spawning")
    assert row is Row.SPAWN_NOT_STARTED
    # Left for the build step, which the conductor repeats.
    assert (inst.vm_state, inst.task_state) == (VMState.BUILDING, TaskState.SPAWNING)
    assert driver.instances == {}


async def test_spawn_finished_but_unrecorded(cloud: Cloud):
    row, inst, driver = await _repair(
        cloud, PowerState.RUNNING, vm_state="building", task_state="spawning"
    )
    assert row is Row.SPAWN_FINISHED_UNRECORDED
    assert (inst.vm_state, inst.task_state) == (VMState.ACTIVE, None)
    assert inst.power_state == PowerState.RUNNING and inst.launched_at is not None
    assert inst.uuid in driver.instances


async def test_spawn_cut_off_mid_way(cloud: Cloud):
    row, inst, driver = await _repair(
        cloud, PowerState.NOSTATE, vm_state="building", task_state="spawning"
    )
    assert row is Row.SPAWN_CUT_OFF
    assert (inst.vm_state, inst.task_state) == (VMState.BUILDING, TaskState.SPAWNING)
    assert driver.instances == {}


async def test_power_off_cut_off(cloud: Cloud):
    row, inst, driver = await _repair(
        cloud, PowerState.RUNNING, vm_state="active", task_state="powering-off"
    )
    assert row is Row.POWER_OFF_CUT_OFF
    assert (inst.vm_state, inst.task_state) == (VMState.STOPPED, None)
    assert driver.instances[inst.uuid].state == PowerState.SHUTDOWN


async def test_power_on_cut_off(cloud: Cloud):
    row, inst, driver = await _repair(
        cloud, PowerState.SHUTDOWN, vm_state="stopped", task_state="powering-on"
    )
    assert row is Row.POWER_ON_CUT_OFF
    assert (inst.vm_state, inst.task_state) == (VMState.ACTIVE, None)
    assert driver.instances[inst.uuid].state == PowerState.RUNNING


async def test_reboot_cut_off(cloud: Cloud):
    row, inst, driver = await _repair(
        cloud, PowerState.SHUTDOWN, vm_state="active", task_state="reboot_started"
    )
    assert row is Row.REBOOT_CUT_OFF
    assert (inst.vm_state, inst.task_state) == (VMState.ACTIVE, None)
    assert inst.power_state == PowerState.RUNNING
    assert driver.instances[inst.uuid].state == PowerState.RUNNING


async def test_move_in_progress_is_left_to_the_conductor(cloud: Cloud):
    row, inst, driver = await _repair(
        cloud, PowerState.RUNNING, vm_state="active", task_state="migrating"
    )
    assert row is Row.MOVE_IN_PROGRESS
    assert (inst.vm_state, inst.task_state) == (VMState.ACTIVE, TaskState.MIGRATING)
    assert inst.uuid in driver.instances


async def test_guest_missing(cloud: Cloud):
    row, inst, _ = await _repair(cloud, None, vm_state="active", power_state=1)
    assert row is Row.GUEST_MISSING
    assert (inst.vm_state, inst.task_state) == (VMState.ERROR, None)
    assert inst.power_state == PowerState.NOSTATE
    assert inst.fault is not None and "gone" in (inst.fault.message or "")


async def test_guest_shut_down_by_itself(cloud: Cloud):
    row, inst, _ = await _repair(cloud, PowerState.SHUTDOWN, vm_state="active", power_state=1)
    assert row is Row.GUEST_SHUT_DOWN
    assert (inst.vm_state, inst.task_state) == (VMState.STOPPED, None)
    assert inst.power_state == PowerState.SHUTDOWN


async def test_guest_running_when_stopped(cloud: Cloud):
    row, inst, driver = await _repair(cloud, PowerState.RUNNING, vm_state="stopped", power_state=1)
    assert row is Row.GUEST_RUNNING_WHEN_STOPPED
    assert inst.vm_state == VMState.STOPPED and inst.power_state == PowerState.SHUTDOWN
    assert driver.instances[inst.uuid].state == PowerState.SHUTDOWN


async def test_in_sync_only_refreshes_the_power_state(cloud: Cloud):
    row, inst, _ = await _repair(cloud, PowerState.RUNNING, vm_state="active", power_state=0)
    assert row is Row.IN_SYNC
    assert (inst.vm_state, inst.task_state) == (VMState.ACTIVE, None)
    assert inst.power_state == PowerState.RUNNING


async def test_guest_unknown_to_the_database_is_reaped(cloud: Cloud):
    harness = await start_host(cloud, "rep", init=False)
    elsewhere = await harness.instance(host="other-host", node="other-node", vm_state="active")
    harness.driver.add_instance(elsewhere)
    await harness.run(harness.node.init_host)
    report = harness.node.repair_report
    assert report is not None
    assert report.rows == {elsewhere.uuid: Row.UNKNOWN_TO_DB}
    assert harness.driver.instances == {}
    untouched = await harness.reload(elsewhere.uuid)
    assert untouched.vm_state == VMState.ACTIVE


async def _evacuation(cloud: Cloud, instance_uuid: str, source: str, status: str) -> int:
    async with cloud.db.writer() as conn:
        row = await migrations.create(
            conn,
            {
                "instance_uuid": instance_uuid,
                "source_compute": source,
                "source_node": source,
                "dest_compute": "other-host",
                "dest_node": "other-node",
                "migration_type": "evacuation",
                "status": status,
            },
        )
    return int(row["id"])


async def _migration_status(cloud: Cloud, migration_id: int) -> str:
    async with cloud.db.reader() as conn:
        return str((await migrations.get_by_id(conn, migration_id))["status"])


async def test_evacuated_remains_are_removed_and_the_migration_completed(cloud: Cloud):
    harness = await start_host(cloud, "rep", init=False)
    gone = await harness.instance(host="other-host", node="other-node", vm_state="active")
    harness.driver.add_instance(gone)
    mig = await _evacuation(cloud, gone.uuid, "rep", "done")
    await harness.run(harness.node.init_host)
    report = harness.node.repair_report
    assert report is not None and not report.failed
    assert report.rows == {gone.uuid: Row.EVACUATED}
    assert harness.driver.instances == {}
    assert await _migration_status(cloud, mig) == "completed"
    untouched = await harness.reload(gone.uuid)
    assert (untouched.host, untouched.vm_state) == ("other-host", VMState.ACTIVE)


async def test_a_guest_being_evacuated_is_not_reaped(cloud: Cloud):
    harness = await start_host(cloud, "rep", init=False)
    leaving = await harness.instance(
        host="other-host", node="other-node", vm_state="active", task_state="rebuild_spawning"
    )
    harness.driver.add_instance(leaving)
    mig = await _evacuation(cloud, leaving.uuid, "rep", "pre-migrating")
    await harness.run(harness.node.init_host)
    report = harness.node.repair_report
    assert report is not None
    assert report.rows == {leaving.uuid: Row.EVACUATION_IN_PROGRESS}
    # A failed evacuation brings the instance back to this guest.
    assert leaving.uuid in harness.driver.instances
    assert await _migration_status(cloud, mig) == "pre-migrating"


async def test_remains_are_removed_only_by_migration_record(cloud: Cloud):
    harness = await start_host(cloud, "rep", init=False)
    evacuated = await harness.instance(host="other-host", node="other-node")
    unrecorded = await harness.instance(host="other-host", node="other-node")
    from_elsewhere = await harness.instance(host="other-host", node="other-node")
    back_here = await harness.instance(vm_state="active")
    for inst in (evacuated, unrecorded, from_elsewhere, back_here):
        harness.driver.add_instance(inst)
    mine = await _evacuation(cloud, evacuated.uuid, "rep", "done")
    theirs = await _evacuation(cloud, from_elsewhere.uuid, "third-host", "done")
    returned = await _evacuation(cloud, back_here.uuid, "rep", "done")

    remains = await harness.run(
        remove_evacuated_remains, RequestContext(), "rep", harness.driver, {back_here.uuid}
    )

    assert remains.removed == [evacuated.uuid]
    assert remains.placed_here == [back_here.uuid]
    assert not remains.in_progress and not remains.failed
    assert set(harness.driver.instances) == {unrecorded.uuid, from_elsewhere.uuid, back_here.uuid}
    assert await _migration_status(cloud, mine) == "completed"
    assert await _migration_status(cloud, returned) == "completed"
    assert await _migration_status(cloud, theirs) == "done"


async def test_remains_that_cannot_be_removed_are_retried_at_the_next_start(cloud: Cloud):
    harness = await start_host(cloud, "rep", init=False)
    gone = await harness.instance(host="other-host", node="other-node")
    harness.driver.add_instance(gone)
    mig = await _evacuation(cloud, gone.uuid, "rep", "done")
    harness.faults.fail_destroy_hosts.add("rep")
    await harness.run(harness.node.init_host)
    report = harness.node.repair_report
    assert report is not None and gone.uuid in report.failed
    assert gone.uuid not in report.rows  # not reaped as unknown either
    assert await _migration_status(cloud, mig) == "done"

    harness.faults.fail_destroy_hosts.clear()
    again = await harness.restart()
    assert again.node.repair_report is not None
    assert again.node.repair_report.rows == {gone.uuid: Row.EVACUATED}
    assert await _migration_status(cloud, mig) == "completed"


def test_every_row_has_a_test():
    tested = {
        Row.DELETE_HALF_DONE,
        Row.DELETED_NOT_REAPED,
        Row.SPAWN_NOT_STARTED,
        Row.SPAWN_FINISHED_UNRECORDED,
        Row.SPAWN_CUT_OFF,
        Row.POWER_OFF_CUT_OFF,
        Row.POWER_ON_CUT_OFF,
        Row.REBOOT_CUT_OFF,
        Row.MOVE_IN_PROGRESS,
        Row.GUEST_MISSING,
        Row.GUEST_SHUT_DOWN,
        Row.GUEST_RUNNING_WHEN_STOPPED,
        Row.IN_SYNC,
        Row.EVACUATED,
        Row.EVACUATION_IN_PROGRESS,
        Row.UNKNOWN_TO_DB,
    }
    assert tested == set(Row)


def test_classify_is_total():
    for vm in VMState:
        for task in (None, *TaskState):
            for power in (None, *PowerState):
                assert classify(vm, task, power) in set(Row)


async def test_lifecycle_events_record_what_the_guest_did(cloud: Cloud):
    """A power change the driver reports is recorded only while no operation
    runs, and only as a record (never acting on the guest)."""
    harness = await start_host(cloud, "ev")
    quiet = await harness.instance(vm_state="active", power_state=1)
    busy = await harness.instance(vm_state="active", power_state=1, task_state="powering-off")
    stopped = await harness.instance(vm_state="stopped", power_state=4)
    for inst, state in ((quiet, 4), (busy, 4), (stopped, 1)):
        harness.driver.add_instance(inst, PowerState(state))
    sync = harness.node.repairer.sync_power_state
    assert await harness.run(sync, RequestContext(), quiet.uuid) is Row.GUEST_SHUT_DOWN
    assert await harness.run(sync, RequestContext(), busy.uuid) is None
    # A stopped instance whose guest runs is left for the operator and the next restart.
    assert await harness.run(sync, RequestContext(), stopped.uuid) is None
    assert harness.driver.instances[stopped.uuid].state == PowerState.RUNNING
    # Not placed here, or gone: nothing.
    assert await harness.run(sync, RequestContext(), "8c2f8f2e-0000-4000-8000-000000000000") is None
    saved = await harness.reload(quiet.uuid)
    assert (saved.vm_state, saved.task_state, saved.power_state) == (
        VMState.STOPPED,
        None,
        PowerState.SHUTDOWN,
    )
    assert (await harness.reload(busy.uuid)).task_state == TaskState.POWERING_OFF
    # Through the host's listener, as a driver's event arrives.
    quiet2 = await harness.instance(vm_state="active", power_state=1)
    harness.driver.add_instance(quiet2, PowerState.SHUTDOWN)

    async def event() -> None:  # in the host's context, as a driver's events are
        harness.driver.emit_event(LifecycleEvent(quiet2.uuid, PowerState.SHUTDOWN))

    await harness.run(event)
    for _ in range(200):
        if (await harness.reload(quiet2.uuid)).vm_state == VMState.STOPPED:
            break
        await asyncio.sleep(0.02)
    assert (await harness.reload(quiet2.uuid)).vm_state == VMState.STOPPED
