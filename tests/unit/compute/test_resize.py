"""Compute's resize steps: driver work only, reported once per step, safe to repeat."""

from __future__ import annotations

import asyncio
import itertools
import uuid as uuidlib
from typing import Any

from nubes.compute.rpcapi import ComputeAPI
from nubes.context import RequestContext
from nubes.db.api import migrations as migrations_api
from nubes.injected_files import InjectedFiles
from nubes.metadata import configdrive
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.instance_metadata import InstanceMetadata
from nubes.objects.migration import Migration
from nubes.objects.states import PowerState
from nubes.step_key import StepKey
from nubes.testing.cloud import Cloud
from tests.unit.compute.conftest import ComputeHarness, NotificationSink, start_host

_tasks = itertools.count(9000)

MEDIUM = {"vcpus": 2, "memory_mb": 1024, "root_gb": 2}


def _flavor() -> Flavor:
    return Flavor(id=2, flavorid="medium", name="medium", **MEDIUM)


def _migration(inst: Instance, source: str, dest: str) -> Migration:
    return Migration(
        id=1,
        uuid=str(uuidlib.uuid4()),
        instance_uuid=inst.uuid,
        source_compute=source,
        source_node=source,
        dest_compute=dest,
        dest_node=dest,
        status="migrating",
        migration_type="resize",
    )


async def _recorded(compute: ComputeHarness, mig: Migration) -> Migration:
    """``mig`` stored, under way: its destination may then read the instance's
    metadata for the guest's config drive, as in a real move."""
    fields = ("instance_uuid", "source_compute", "source_node", "dest_compute", "dest_node")
    values = {f: getattr(mig, f) for f in (*fields, "status", "migration_type")}
    async with compute.cloud.db.writer() as conn:
        row = await migrations_api.create(conn, values)
    return await Migration.get_by_id(RequestContext(), row["id"])


#: Personality files a guest was created with, on its config drive.
FILES = InjectedFiles.of([("/etc/motd", b"hello"), ("/root/blob", bytes(range(256)))])


async def _with_files(compute: ComputeHarness, inst: Instance) -> None:
    """The guest here gets a drive with :data:`FILES`, as its build wrote it."""
    meta = InstanceMetadata(uuid=inst.uuid, name="p")
    compute.driver.instances[inst.uuid].config_drive = configdrive.build(meta, FILES)


async def _moving(compute: ComputeHarness, **values: Any) -> Instance:
    """An instance in the middle of a move (restart repair leaves those alone), its guest here."""
    values.setdefault("vm_state", "active")
    values.setdefault("task_state", "resize_migrating")
    inst = await compute.instance(**values)
    compute.driver.add_instance(inst)
    return inst


async def _step(
    compute: ComputeHarness, method: str, inst: Instance, task_id: int, attempt: int = 1, **kw: Any
) -> dict[str, Any]:
    """Run a step on the host and return its report (the newest for the task)."""
    before = len([r for r in compute.steps.reports if r["task_id"] == task_id])
    await compute.run(
        getattr(compute.node.manager.resize, method),
        RequestContext(),
        instance=inst,
        task_id=task_id,
        step=method,
        attempt=attempt,
        **kw,
    )
    return (await compute.steps.wait(task_id, count=before + 1))[-1]


async def test_the_source_powers_off_keeps_the_guest_and_reports_the_disks(
    compute: ComputeHarness, sink: NotificationSink
):
    inst = await _moving(compute)
    mig = _migration(inst, compute.name, "cmp2")
    task = next(_tasks)
    report = await _step(
        compute,
        "migrate_disk_and_power_off",
        inst,
        task,
        migration=mig,
        flavor=_flavor(),
        dest_host="cmp2",
    )
    assert report["ok"], report
    assert report["details"]["disk_info"]["source"] == compute.name
    assert report["details"]["disk_info"]["root_gb"] == 2
    assert inst.uuid not in compute.driver.instances
    assert compute.driver.kept[inst.uuid].state == PowerState.SHUTDOWN
    # Driver work only: the instance's state is the conductor's to write.
    saved = await compute.reload(inst.uuid)
    assert (saved.vm_state, saved.task_state) == ("active", "resize_migrating")
    await asyncio.sleep(0.1)
    assert sink.event_types(inst.uuid) == ["instance.resize.start", "instance.resize.end"]


async def test_the_source_step_again_after_a_restart_reports_the_same_disks(
    compute: ComputeHarness,
):
    inst = await _moving(compute)
    mig = _migration(inst, compute.name, "cmp2")
    task = next(_tasks)
    kw: dict[str, Any] = {"migration": mig, "flavor": _flavor(), "dest_host": "cmp2"}
    first = await _step(compute, "migrate_disk_and_power_off", inst, task, **kw)
    again = await compute.restart()
    assert len(again.node.manager.runner.steps) == 0
    # The conductor heard nothing and sends a new try: the guest is already kept.
    second = await _step(again, "migrate_disk_and_power_off", inst, task, attempt=2, **kw)
    assert second["ok"] and second["details"] == first["details"]
    assert inst.uuid in again.driver.kept and inst.uuid not in again.driver.instances


async def test_the_source_reports_its_guests_files_for_the_destination(compute: ComputeHarness):
    inst = await _moving(compute)
    await _with_files(compute, inst)
    mig = _migration(inst, compute.name, "cmp2")
    task = next(_tasks)
    kw: dict[str, Any] = {
        "migration": mig,
        "flavor": _flavor(),
        "dest_host": "cmp2",
        "carry_files": True,
    }
    report = await _step(compute, "migrate_disk_and_power_off", inst, task, **kw)
    assert report["ok"] and report["injected_files"] == FILES
    assert inst.uuid in compute.driver.kept
    # A new try after a restart finds the guest kept, its drive with it: the same files.
    again = await compute.restart()
    second = await _step(again, "migrate_disk_and_power_off", inst, task, attempt=2, **kw)
    assert second["ok"] and second["injected_files"] == FILES


async def test_a_source_not_asked_for_files_leaves_a_guest_with_files_alone(
    compute: ComputeHarness,
):
    # Compute 1.13: a conductor that may not send the destination files does
    # not ask for them; the guest is not powered off for a move that would
    # lose them. One without files moves as before.
    inst = await _moving(compute)
    await _with_files(compute, inst)
    mig = _migration(inst, compute.name, "cmp2")
    kw: dict[str, Any] = {"migration": mig, "flavor": _flavor(), "dest_host": "cmp2"}
    report = await _step(compute, "migrate_disk_and_power_off", inst, next(_tasks), **kw)
    assert not report["ok"] and "1.13" in report["error"]
    assert report["injected_files"] is None
    assert compute.driver.instances[inst.uuid].state == PowerState.RUNNING
    assert inst.uuid not in compute.driver.kept
    plain = await _moving(compute)
    mig = _migration(plain, compute.name, "cmp2")
    kw = {**kw, "migration": mig}
    report = await _step(compute, "migrate_disk_and_power_off", plain, next(_tasks), **kw)
    assert report["ok"] and report["injected_files"] is None
    # Nor when the conductors cannot take them with a report (capped below 1.8).
    compute.steps.injected_files = False
    other = await _moving(compute)
    await _with_files(compute, other)
    kw = {**kw, "migration": _migration(other, compute.name, "cmp2"), "carry_files": True}
    report = await _step(compute, "migrate_disk_and_power_off", other, next(_tasks), **kw)
    assert not report["ok"] and other.uuid in compute.driver.instances


async def test_the_destination_writes_the_files_on_the_guests_drive(
    cloud: Cloud, compute: ComputeHarness
):
    dest = await start_host(cloud, "cmp2")
    inst = await compute.instance(vm_state="active", task_state="resize_finish", **MEDIUM)
    mig = await _recorded(compute, _migration(inst, compute.name, dest.name))
    kw: dict[str, Any] = {
        "migration": mig,
        "disk_info": {"source": compute.name},
        "image": {"id": "img"},
        "resize_instance": True,
        "power_on": True,
        "injected_files": FILES,
    }
    report = await _step(dest, "finish_migration", inst, next(_tasks), **kw)
    assert report["ok"], report
    drive = dest.driver.instances[inst.uuid].config_drive
    assert drive is not None and drive.injected_files() == FILES


async def test_the_source_step_without_a_guest_fails(compute: ComputeHarness):
    inst = await compute.instance(vm_state="active", task_state="resize_migrating")
    report = await _step(
        compute,
        "migrate_disk_and_power_off",
        inst,
        next(_tasks),
        migration=_migration(inst, compute.name, "cmp2"),
        flavor=_flavor(),
        dest_host="cmp2",
    )
    assert not report["ok"]
    assert "could not be found" in report["error"]
    assert report["details"] == {"exception": "InstanceNotFound"}


async def test_the_destination_builds_the_guest_once(cloud: Cloud, compute: ComputeHarness):
    dest = await start_host(cloud, "cmp2")
    inst = await compute.instance(vm_state="active", task_state="resize_finish", **MEDIUM)
    mig = await _recorded(compute, _migration(inst, compute.name, dest.name))
    task = next(_tasks)
    kw: dict[str, Any] = {
        "migration": mig,
        "disk_info": {"source": compute.name},
        "image": {"id": "img"},
        "resize_instance": True,
        "power_on": False,
    }
    report = await _step(dest, "finish_migration", inst, task, **kw)
    assert report["ok"] and report["details"] == {}
    guest = dest.driver.instances[inst.uuid]
    assert (guest.vcpus, guest.memory_mb, guest.state) == (2, 1024, PowerState.SHUTDOWN)
    # A new try (the report was lost): the guest is there, only its power is set.
    again = await _step(dest, "finish_migration", inst, task, attempt=2, **{**kw, "power_on": True})
    assert again["ok"] and again["details"] == {"already_done": True}
    assert dest.driver.instances[inst.uuid] is guest
    assert guest.state == PowerState.RUNNING


async def test_confirm_forgets_what_the_source_kept(compute: ComputeHarness):
    inst = await _moving(compute, task_state="resize_confirming")
    compute.driver.kept[inst.uuid] = compute.driver.instances.pop(inst.uuid)
    mig = _migration(inst, compute.name, "cmp2")
    task = next(_tasks)
    assert (await _step(compute, "confirm_migration", inst, task, migration=mig))["ok"]
    assert inst.uuid not in compute.driver.kept
    again = await compute.restart()
    assert (await _step(again, "confirm_migration", inst, task, migration=mig))["ok"]


async def test_the_destination_of_a_revert_removes_its_guest_and_nothing_is_fine(
    compute: ComputeHarness,
):
    inst = await _moving(compute, task_state="resize_reverting")
    mig = _migration(inst, "cmp0", compute.name)
    task = next(_tasks)
    report = await _step(compute, "revert_migration_destination", inst, task, migration=mig)
    assert report["ok"] and inst.uuid not in compute.driver.instances
    report = await _step(
        compute, "revert_migration_destination", inst, task, attempt=2, migration=mig
    )
    assert report["ok"]


async def test_on_one_host_the_revert_leaves_the_kept_guest_for_the_source_step(
    compute: ComputeHarness,
):
    inst = await _moving(compute, task_state="resize_reverting")
    driver = compute.driver
    original = driver.instances[inst.uuid]
    driver.kept[inst.uuid] = driver.instances.pop(inst.uuid)
    resized = await compute.instance(vm_state="active", **MEDIUM)
    driver.add_instance(resized)
    driver.instances[inst.uuid] = driver.instances.pop(resized.uuid)
    mig = _migration(inst, compute.name, compute.name)
    task = next(_tasks)
    report = await _step(compute, "revert_migration_destination", inst, task, migration=mig)
    assert report["ok"] and report["details"] == {"same_host": True}
    assert driver.kept[inst.uuid] is original
    report = await _step(
        compute, "finish_revert_migration", inst, next(_tasks), migration=mig, power_on=True
    )
    assert report["ok"]
    assert driver.instances[inst.uuid] is original and not driver.kept
    assert original.state == PowerState.RUNNING


async def test_the_source_of_a_revert_brings_the_guest_back_once(
    compute: ComputeHarness, sink: NotificationSink
):
    inst = await _moving(compute, task_state="resize_reverting")
    compute.driver.kept[inst.uuid] = compute.driver.instances.pop(inst.uuid)
    mig = _migration(inst, compute.name, "cmp2")
    task = next(_tasks)
    kw: dict[str, Any] = {"migration": mig, "power_on": False}
    assert (await _step(compute, "finish_revert_migration", inst, task, **kw))["ok"]
    guest = compute.driver.instances[inst.uuid]
    assert guest.state == PowerState.SHUTDOWN and not compute.driver.kept
    again = await compute.restart()
    assert (await _step(again, "finish_revert_migration", inst, task, **kw))["ok"]
    assert again.driver.instances[inst.uuid] is guest
    await asyncio.sleep(0.1)
    # The revert started on the destination (not here); each run here ends it.
    assert sink.event_types(inst.uuid) == ["instance.resize_revert.end"] * 2


async def test_a_driver_failure_is_reported_and_changes_nothing(compute: ComputeHarness):
    inst = await _moving(compute)
    compute.faults.fail_next["migrate_disk_and_power_off"] = 1
    report = await _step(
        compute,
        "migrate_disk_and_power_off",
        inst,
        next(_tasks),
        migration=_migration(inst, compute.name, "cmp2"),
        flavor=_flavor(),
        dest_host="cmp2",
    )
    assert not report["ok"]
    assert "injected" in report["error"]
    assert report["details"] == {"exception": "VirtDriverError"}
    assert compute.driver.instances[inst.uuid].state == PowerState.RUNNING


async def test_a_rollback_waits_for_the_step_it_gave_up_on(compute: ComputeHarness):
    # The conductor stopped waiting for the source and sent the rollback:
    # it must run after the copy, not under it, or the guest would be put
    # back and then taken away.
    inst = await _moving(compute)
    mig = _migration(inst, compute.name, "cmp2")
    compute.faults.migration_delay = 0.3
    copy, back = next(_tasks), next(_tasks)
    await asyncio.gather(
        _step(
            compute,
            "migrate_disk_and_power_off",
            inst,
            copy,
            migration=mig,
            flavor=_flavor(),
            dest_host="cmp2",
        ),
        _step(compute, "finish_revert_migration", inst, back, migration=mig, power_on=True),
    )
    assert compute.driver.instances[inst.uuid].state == PowerState.RUNNING
    assert not compute.driver.kept


async def test_resize_steps_arrive_over_rpc(cloud: Cloud, compute: ComputeHarness):
    dest = await start_host(cloud, "cmp2")
    inst = await _moving(compute)
    mig = await _recorded(compute, _migration(inst, compute.name, dest.name))
    api = ComputeAPI(cloud.conductor.transport)
    ctxt = RequestContext()
    await api.migrate_disk_and_power_off(
        ctxt,
        compute.name,
        inst,
        StepKey(task_id=801, step="migrate_source", attempt=1),
        migration=mig,
        flavor=_flavor(),
        dest_host=dest.name,
    )
    (report,) = await compute.steps.wait(801)
    assert report["ok"]
    await api.finish_migration(
        ctxt, dest.name, inst, StepKey(task_id=802, step="finish_dest", attempt=1), migration=mig,
        disk_info=report["details"]["disk_info"], image={"id": "img"}, resize_instance=True,
        power_on=True,
    )  # fmt: skip
    (report,) = await dest.steps.wait(802)
    assert report["ok"] and inst.uuid in dest.driver.instances
    await api.revert_migration_destination(
        ctxt, dest.name, inst, StepKey(task_id=803, step="revert_dest", attempt=1), migration=mig
    )
    await api.finish_revert_migration(
        ctxt,
        compute.name,
        inst,
        StepKey(task_id=804, step="revert_source", attempt=1),
        migration=mig,
        power_on=True,
    )
    await api.confirm_migration(
        ctxt,
        compute.name,
        inst,
        StepKey(task_id=805, step="confirm_source", attempt=1),
        migration=mig,
    )
    for host, task in ((dest, 803), (compute, 804), (compute, 805)):
        (report,) = await host.steps.wait(task)
        assert report["ok"], report
    assert inst.uuid not in dest.driver.instances
    assert compute.driver.instances[inst.uuid].state == PowerState.RUNNING
