"""Restart repair: make the database and the hypervisor agree when a host starts.

A compute host that stopped (or died) mid-operation finds, at its next start,
instances the database places on it in states that no longer match what the
hypervisor runs. :func:`repair_host` walks the table in ``docs/compute.md``
("Restart repair"), one row per case; each row has an id (``Row``) that the
result names, so tests and logs can say which row fired.

Moves (resize, migrations, evacuation) are conductor tasks: their instances
are left alone here and the conductor carries their task on. Instances
evacuated from this host are the exception: before anything else, the
guests of those a migration record says were evacuated (``done``) are
removed (:func:`~nubes.compute.rebuild.remove_evacuated_remains`), and the
guests of those being evacuated now are never reaped as unknown.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from nubes import exception
from nubes.compute.rebuild import remove_evacuated_remains
from nubes.compute.reporting import Reporter, utcnow
from nubes.compute.virt.driver import ComputeDriver
from nubes.context import RequestContext
from nubes.objects import states
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState, TaskState, VMState

LOG = logging.getLogger(__name__)

_T = TaskState
_V = VMState


class Row(enum.StrEnum):
    """The rows of the restart repair table (docs/compute.md)."""

    DELETE_HALF_DONE = "delete-half-done"
    DELETED_NOT_REAPED = "deleted-not-reaped"
    SPAWN_NOT_STARTED = "spawn-not-started"
    SPAWN_FINISHED_UNRECORDED = "spawn-finished-unrecorded"
    SPAWN_CUT_OFF = "spawn-cut-off"
    POWER_OFF_CUT_OFF = "power-off-cut-off"
    POWER_ON_CUT_OFF = "power-on-cut-off"
    REBOOT_CUT_OFF = "reboot-cut-off"
    MOVE_IN_PROGRESS = "move-in-progress"
    GUEST_MISSING = "guest-missing"
    GUEST_SHUT_DOWN = "guest-shut-down"
    GUEST_RUNNING_WHEN_STOPPED = "guest-running-when-stopped"
    IN_SYNC = "in-sync"
    EVACUATED = "evacuated"
    EVACUATION_IN_PROGRESS = "evacuation-in-progress"
    UNKNOWN_TO_DB = "unknown-to-db"


@dataclass
class RepairReport:
    #: Instance uuid -> the row that applied to it.
    rows: dict[str, Row] = field(default_factory=dict)
    #: Instances whose repair failed, with why.
    failed: dict[str, str] = field(default_factory=dict)


class _GuestLost(exception.VirtDriverError):
    pass


async def _power(driver: ComputeDriver, instance: Instance) -> PowerState | None:
    try:
        return (await driver.get_info(instance)).state
    except exception.InstanceNotFound:
        return None


def classify(vm: VMState, task: TaskState | None, power: PowerState | None) -> Row:
    """The table row for an instance in ``(vm, task)`` whose guest is in
    ``power`` (None: the driver does not have it)."""
    has = power is not None
    if task == _T.DELETING:
        return Row.DELETE_HALF_DONE
    if vm == _V.DELETED:
        return Row.DELETED_NOT_REAPED
    if vm == _V.BUILDING and task in states.BUILD_TASK_STATES:
        if not has:
            return Row.SPAWN_NOT_STARTED
        if power == PowerState.RUNNING:
            return Row.SPAWN_FINISHED_UNRECORDED
        return Row.SPAWN_CUT_OFF
    if task == _T.POWERING_OFF:
        return Row.POWER_OFF_CUT_OFF
    if task == _T.POWERING_ON:
        return Row.POWER_ON_CUT_OFF
    if task in states.SOFT_REBOOT_TASK_STATES or task in states.HARD_REBOOT_TASK_STATES:
        return Row.REBOOT_CUT_OFF
    if task in states.MOVE_TASK_STATES:
        return Row.MOVE_IN_PROGRESS
    if not has and vm in (_V.ACTIVE, _V.STOPPED, _V.PAUSED, _V.SUSPENDED, _V.RESCUED):
        return Row.GUEST_MISSING
    if vm == _V.ACTIVE and power == PowerState.SHUTDOWN and task is None:
        return Row.GUEST_SHUT_DOWN
    if vm == _V.STOPPED and power == PowerState.RUNNING and task is None:
        return Row.GUEST_RUNNING_WHEN_STOPPED
    return Row.IN_SYNC


class Repairer:
    def __init__(self, host: str, driver: ComputeDriver, reporter: Reporter) -> None:
        self.host = host
        self.driver = driver
        self.reporter = reporter

    async def repair_host(self, ctxt: RequestContext) -> RepairReport:
        """Apply the table to every instance placed on this host, then reap
        guests the database does not place here."""
        report = RepairReport()
        instances = await Instance.get_by_host(ctxt, self.host)
        known = {i.uuid for i in instances}
        # First, by migration record only: what evacuations left here.
        remains = await remove_evacuated_remains(ctxt, self.host, self.driver, known)
        for uuid in remains.removed:
            report.rows[uuid] = Row.EVACUATED
        report.failed.update(remains.failed)
        for instance in instances:
            try:
                report.rows[instance.uuid] = await self.repair_instance(ctxt, instance)
            except Exception as exc:
                LOG.warning("Repair of instance %s on %s failed: %s", instance.uuid, self.host, exc)
                report.failed[instance.uuid] = str(exc)
        for uuid in await self.driver.list_instances():
            if uuid in known or uuid in remains.failed:
                continue
            if uuid in remains.in_progress:
                # Its evacuation may fail and bring it back here.
                report.rows[uuid] = Row.EVACUATION_IN_PROGRESS
                continue
            report.rows[uuid] = Row.UNKNOWN_TO_DB
            LOG.warning(
                "Guest %s runs on %s but no instance is placed here: reaping", uuid, self.host
            )
            try:
                await self.driver.destroy(ctxt, Instance(uuid=uuid))
            except Exception as exc:
                report.failed[uuid] = str(exc)
        if report.rows:
            LOG.info(
                "Restart repair on %s: %d instances, %d failed",
                self.host,
                len(report.rows),
                len(report.failed),
            )
        return report

    async def sync_power_state(self, ctxt: RequestContext, uuid: str) -> Row | None:
        """Record a power change the hypervisor reported for instance ``uuid``
        (a lifecycle event), with the same table as a restart.

        Only while no operation runs on the instance (its task_state is
        None): an operation records its own outcome. Only the rows that
        record what happened are applied (a guest that shut itself down is
        STOPPED; a changed power state is saved), never ones that act on the
        guest. The power is read before and after the instance, and nothing
        is done unless both readings agree, so a reading from before an
        operation started and ended meanwhile is not taken for news; the
        save expects task_state None, so one that began meanwhile wins.
        Returns the row applied (None: nothing).
        """
        probe = Instance(uuid=uuid)
        before = await _power(self.driver, probe)
        if before is None:
            return None  # gone already: its delete records that
        try:
            instance = await Instance.get_by_uuid(ctxt, uuid)
        except (exception.InstanceNotFound, exception.InstanceNotOnHost):
            return None  # not ours to record (evacuated remains; restart repair reaps them)
        if instance.host != self.host or instance.task_state is not None:
            return None
        if await _power(self.driver, probe) != before:
            return None
        row = classify(VMState(instance.vm_state), None, before)
        if row not in (Row.GUEST_SHUT_DOWN, Row.IN_SYNC):
            return None
        if row is Row.IN_SYNC and instance.power_state == before:
            return None
        await self.repair_instance(ctxt, instance)
        return row

    async def repair_instance(self, ctxt: RequestContext, instance: Instance) -> Row:
        vm = VMState(instance.vm_state)
        task = None if instance.task_state is None else TaskState(instance.task_state)
        power = await _power(self.driver, instance)
        row = classify(vm, task, power)
        save = self.reporter.save_state
        driver = self.driver
        if row is Row.DELETE_HALF_DONE:
            await driver.destroy(ctxt, instance)
            await save(
                ctxt,
                instance,
                _V.DELETED,
                None,
                expected_task_state=_T.DELETING,
                power_state=PowerState.NOSTATE,
                terminated_at=utcnow(),
            )
        elif row is Row.DELETED_NOT_REAPED:
            await driver.destroy(ctxt, instance)
        elif row is Row.SPAWN_FINISHED_UNRECORDED:
            if task != _T.SPAWNING:
                await save(ctxt, instance, vm, _T.SPAWNING, expected_task_state=[task])
            await save(
                ctxt,
                instance,
                _V.ACTIVE,
                None,
                expected_task_state=_T.SPAWNING,
                power_state=PowerState.RUNNING,
                launched_at=instance.launched_at or utcnow(),
                launched_on=self.host,
            )
        elif row is Row.SPAWN_CUT_OFF:
            await driver.destroy(ctxt, instance)
        elif row is Row.POWER_OFF_CUT_OFF:
            await driver.power_off(instance)
            await save(
                ctxt,
                instance,
                _V.STOPPED,
                None,
                expected_task_state=_T.POWERING_OFF,
                power_state=PowerState.SHUTDOWN,
            )
        elif row is Row.POWER_ON_CUT_OFF:
            await driver.power_on(ctxt, instance)
            await save(
                ctxt,
                instance,
                _V.ACTIVE,
                None,
                expected_task_state=_T.POWERING_ON,
                power_state=PowerState.RUNNING,
            )
        elif row is Row.REBOOT_CUT_OFF:
            assert task is not None
            if task not in (_T.REBOOTING_HARD, _T.REBOOT_STARTED_HARD):
                await save(ctxt, instance, vm, _T.REBOOTING_HARD, expected_task_state=[task])
            await driver.reboot(ctxt, instance, "HARD")
            await save(
                ctxt,
                instance,
                _V.ACTIVE,
                None,
                expected_task_state=instance.task_state,
                power_state=PowerState.RUNNING,
            )
        elif row is Row.GUEST_MISSING:
            lost = _GuestLost(
                operation="restart repair",
                instance_uuid=instance.uuid,
                reason=f"the guest is gone from {self.host}",
            )
            await save(
                ctxt,
                instance,
                _V.ERROR,
                None,
                expected_task_state=[task],
                power_state=PowerState.NOSTATE,
            )
            await self.reporter.record_fault(ctxt, instance, lost)
        elif row is Row.GUEST_SHUT_DOWN:
            await save(
                ctxt,
                instance,
                _V.STOPPED,
                None,
                expected_task_state=[None],
                power_state=PowerState.SHUTDOWN,
            )
        elif row is Row.GUEST_RUNNING_WHEN_STOPPED:
            await driver.power_off(instance)
            if instance.power_state != PowerState.SHUTDOWN:
                await save(
                    ctxt,
                    instance,
                    vm,
                    None,
                    expected_task_state=[None],
                    power_state=PowerState.SHUTDOWN,
                )
        elif row is Row.IN_SYNC:
            if power is not None and instance.power_state != power:
                await save(ctxt, instance, vm, task, expected_task_state=[task], power_state=power)
        # SPAWN_NOT_STARTED and MOVE_IN_PROGRESS: their conductor task goes on.
        if row is not Row.IN_SYNC:
            LOG.info(
                "Repair %s: instance %s (%s/%s) on %s", row, instance.uuid, vm, task, self.host
            )
        return row
