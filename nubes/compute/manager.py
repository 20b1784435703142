"""The compute manager: the RPC endpoint a compute host serves.

Every method is a conductor task step (see :mod:`nubes.compute.steps`): it
runs once per ``key``, saves the instance's state
through the conductor as it goes, records the action event (and a fault on
failure), sends notifications, and ends by reporting the outcome with
``ConductorAPI.step_finished``. Work waits until the host finished its start
(:class:`~nubes.compute.host.ComputeHost` repairs instances first), so a
message that arrives early never races the repair.

Failures and the states they leave (the conductor decides what follows):

=========  =======================================================
build      the guest is removed; the task_state goes back to what
           it was (scheduling or none); vm_state stays building
delete     vm_state error, task none
stop/start task none, vm_state unchanged
reboot     vm_state error, task none
=========  =======================================================
"""

from __future__ import annotations

import logging
from typing import Any

from nubes import exception
from nubes.compute.actions import ActionSteps
from nubes.compute.console_relay import ConsoleRelay
from nubes.compute.live_migration import LiveMigrationSteps
from nubes.compute.rebuild import RebuildSteps
from nubes.compute.reporting import GONE, utcnow
from nubes.compute.resize import ResizeSteps
from nubes.compute.shelve import ShelveSteps
from nubes.compute.snapshots import upload_guest_disk
from nubes.compute.steps import ComputeEndpoint, Outcome, StepRunner, step_handler
from nubes.compute.virt.driver import console_tail
from nubes.context import RequestContext
from nubes.injected_files import InjectedFiles
from nubes.objects import states
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState, TaskState, VMState
from nubes.step_key import StepKey

LOG = logging.getLogger(__name__)

_T = TaskState
_V = VMState


class ComputeManager(ComputeEndpoint):
    """A compute host's build, power and delete steps and host queries.

    Composition, not mixins: the resize, live-migration, rebuild,
    lifecycle-action and shelve steps are objects of their own
    (``self.resize``, ``self.live``, ``self.rebuild``, ``self.actions``,
    ``self.shelve``), each holding its own state; all six share one
    :class:`~nubes.compute.steps.StepRunner` (``self.runner``), and the RPC
    server serves all six (:meth:`endpoints`).
    """

    def __init__(self, runner: StepRunner) -> None:
        #: Host, driver, reporter, the step log and the ready event, shared by
        #: every step group (not an RPC endpoint: nothing on it is served).
        self.runner = runner
        self.resize = ResizeSteps(self.runner)
        self.live = LiveMigrationSteps(self.runner)
        self.rebuild = RebuildSteps(self.runner)
        #: The host's console relay (set by the launcher; None: consoles refused).
        self.console_relay: ConsoleRelay | None = None
        self.actions = ActionSteps(self.runner)
        self.shelve = ShelveSteps(self.runner)

    def endpoints(self) -> list[ComputeEndpoint]:
        """What the host's RPC server serves: this manager and its step groups."""
        return [self, self.resize, self.live, self.rebuild, self.actions, self.shelve]

    # -- host queries (1.2) --------------------------------------------------

    async def get_host_uptime(self, context: RequestContext) -> str:
        """The hypervisor's uptime line (``os-hypervisors/{id}/uptime``); not a
        step: it changes nothing, so it answers at once, even during start."""
        return await self.runner.driver.get_host_uptime()

    # -- console log (1.4) ---------------------------------------------------

    async def get_console_output(
        self, context: RequestContext, instance_uuid: str, length: int | None = None
    ) -> str:
        """The last ``length`` lines of the guest's console log (all of what
        the driver keeps when None), for ``os-getConsoleOutput``. A read, not a
        step; a guest this host does not run is InstanceNotFound (the driver
        looks only at its own guests)."""
        output = await self.runner.driver.get_console_output(Instance(uuid=instance_uuid))
        return console_tail(output, length)

    # -- guest consoles (1.7) --------------------------------------------------

    async def get_vnc_console(self, context: RequestContext, instance_uuid: str) -> dict[str, Any]:
        """Where the console proxy reaches this guest's VNC console: the
        host's console relay (``host``, ``port``), which connects on to the
        guest once the conductor accepted the user's token. A read, not a
        step: InstanceNotFound for a guest this host does not run,
        VirtOperationNotSupported when it has no VNC server (or the host runs
        no relay)."""
        relay = self.console_relay.address if self.console_relay is not None else None
        if relay is None:
            raise exception.VirtOperationNotSupported(
                driver=type(self.runner.driver).__name__,
                operation="open the VNC console of",
                instance_uuid=instance_uuid,
                reason=f"host {self.runner.host} runs no console relay",
            )
        # Checks the guest is here, running and has a VNC server.
        await self.runner.driver.get_vnc_endpoint(Instance(uuid=instance_uuid))
        return {"host": relay[0], "port": relay[1], "internal_access_path": None}

    # -- guest diagnostics (1.7) ----------------------------------------------

    async def get_instance_diagnostics(
        self, context: RequestContext, instance_uuid: str
    ) -> dict[str, Any]:
        """The guest's counters (``GET /servers/{id}/diagnostics``), in the
        driver-neutral shape. A read, not a step. As Nova, only a running guest
        answers: any other is InstanceInvalidState (the API's 409); a guest
        this host does not run is InstanceNotFound."""
        instance = Instance(uuid=instance_uuid)
        info = await self.runner.driver.get_info(instance)
        if info.state != PowerState.RUNNING:
            raise exception.InstanceInvalidState(
                action="get_diagnostics",
                instance_uuid=instance_uuid,
                attr="power_state",
                state=info.state.name.lower(),
            )
        diags = await self.runner.driver.get_instance_diagnostics(instance)
        return diags.to_dict()

    # -- guests of abandoned tries (1.3) -----------------------------------------

    @step_handler
    async def remove_guest(
        self,
        context: RequestContext,
        instance_uuid: str,
        key: StepKey,
    ) -> None:
        """Remove the guest of a try the conductor gave up on (a ``remove_guest`` task).

        The guest stays if the database places the instance on this host
        (again): the instruction may come late, or twice.
        """

        async def work(ctxt: RequestContext) -> Outcome:
            placed = await Instance.get_by_host(ctxt, self.runner.host)
            if any(i.uuid == instance_uuid for i in placed):
                return Outcome(True, details={"removed": False, "placed_here": True})
            if instance_uuid not in await self.runner.driver.list_instances():
                return Outcome(True, details={"removed": False})
            LOG.warning(
                "Removing the guest of %s from %s: the conductor gave up on it here",
                instance_uuid,
                self.runner.host,
            )
            await self.runner.driver.destroy(ctxt, Instance(uuid=instance_uuid))
            return Outcome(True, details={"removed": True})

        await self.runner.run_step(context, key, work)

    # -- build ---------------------------------------------------------------

    @step_handler
    async def build_and_run_instance(
        self,
        context: RequestContext,
        instance: Instance,
        node: str,
        key: StepKey,
        image: dict[str, Any],
        request: dict[str, Any],
        injected_files: InjectedFiles | None = None,
        placed: bool = False,
    ) -> None:
        """Spawn the guest; ``injected_files`` (compute 1.10) go on its config drive.

        ``placed`` (compute 1.11): the conductor's placement commit already
        moved the instance to spawning on this host (``launched_on``) and
        started this host's event; a conductor of an older release sends no
        ``placed`` and the host saves and records them itself.
        """

        async def work(ctxt: RequestContext) -> Outcome:
            return await self._build(ctxt, instance, node, image, request, injected_files, placed)

        await self.runner.run_step(context, key, work)

    async def _build(
        self,
        ctxt: RequestContext,
        instance: Instance,
        node: str,
        image: dict[str, Any],
        request: dict[str, Any],
        injected_files: InjectedFiles | None = None,
        placed: bool = False,
    ) -> Outcome:
        power = await self.runner.power_state(instance)
        if power is not None and instance.vm_state == _V.ACTIVE:
            # Built before (a repeat after a restart): nothing to do again.
            self.runner.reporter.action(
                ctxt, instance, "compute_build_and_run_instance", "create"
            ).found_done()
            return Outcome(True, details={"already_done": True})
        if instance.vm_state != _V.BUILDING:
            return Outcome(False, f"instance is {instance.vm_state}, not building")
        found_task = instance.task_state
        # A failed spawn hands the instance back for a reschedule when the
        # conductor sent it: placed, or found scheduling or (since issue 14)
        # networking; a repair's repeat finds it spawning and leaves it.
        back = _T.SCHEDULING if placed or found_task in (_T.SCHEDULING, _T.NETWORKING) else None
        action = self.runner.reporter.action(
            ctxt, instance, "compute_build_and_run_instance", "create"
        )
        await action.start(recorded=placed)
        try:
            if placed and found_task != _T.SPAWNING:
                # Placed means spawning: anything else is not this build's row.
                raise exception.InstanceUpdateConflict(
                    instance_uuid=instance.uuid,
                    expected={"task_state": _T.SPAWNING.value},
                    actual={"task_state": found_task},
                )
            if not placed and (power is None or found_task != _T.SPAWNING):
                placement: dict[str, Any] = {"launched_on": self.runner.host}
                if instance.host != self.runner.host:
                    placement["host"] = self.runner.host
                if instance.node != node:
                    placement["node"] = node
                await self.runner.reporter.save_state(
                    ctxt,
                    instance,
                    _V.BUILDING,
                    _T.SPAWNING,
                    expected_task_state=list(states.BUILD_TASK_STATES),
                    **placement,
                )
            if power is None:
                asked = bool(request.get("config_drive"))
                drive = await self.runner.config_drive(ctxt, instance, asked, injected_files)
                await self.runner.driver.spawn(ctxt, instance, image, request, config_drive=drive)
            # Still ours (a build given up meanwhile refuses this save, and the
            # guest is removed); ACTIVE is the conductor's to write, with the
            # task's close (nubes/step_end.py).
            await self.runner.reporter.save_state(
                ctxt,
                instance,
                _V.BUILDING,
                _T.SPAWNING,
                expected_task_state=_T.SPAWNING,
                power_state=PowerState.RUNNING,
                launched_at=utcnow(),
            )
            end = await self.runner.reporter.end_state(
                ctxt, instance, _V.ACTIVE, PowerState.RUNNING
            )
        except Exception as exc:
            await self._undo_build(ctxt, instance, back, exc)
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True, details=end.details())

    async def _undo_build(
        self, ctxt: RequestContext, instance: Instance, back: TaskState | None, exc: Exception
    ) -> None:
        LOG.info("Build of %s failed on %s: %s", instance.uuid, self.runner.host, exc)
        try:
            await self.runner.driver.destroy(ctxt, instance)
        except Exception as cleanup:
            LOG.warning("Could not clean up failed build %s: %s", instance.uuid, cleanup)
        if instance.task_state != _T.SPAWNING or isinstance(exc, exception.InstanceUpdateConflict):
            return
        try:
            await self.runner.reporter.save_state(
                ctxt, instance, _V.BUILDING, back, expected_task_state=_T.SPAWNING
            )
        except Exception as failure:
            LOG.warning(
                "Could not revert instance %s after a failed build: %s", instance.uuid, failure
            )

    # -- delete --------------------------------------------------------------

    @step_handler
    async def terminate_instance(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._terminate(ctxt, instance)

        await self.runner.run_step(context, key, work)

    async def _terminate(self, ctxt: RequestContext, instance: Instance) -> Outcome:
        action = self.runner.reporter.action(ctxt, instance, "compute_terminate_instance", "delete")
        if instance.vm_state == _V.DELETED:
            await self.runner.driver.destroy(ctxt, instance)
            action.found_done()
            return Outcome(True, details={"already_done": True})
        await action.start()
        try:
            if instance.task_state != _T.DELETING:
                await self.runner.reporter.save_state(
                    ctxt, instance, _V(instance.vm_state), _T.DELETING, expected_task_state=None
                )
            await self.runner.driver.destroy(ctxt, instance)
            # Checked and notified as any end, but not saved nor reported: the
            # delete task's close writes it with the row's soft delete
            # (db/api/instances.destroy), whichever of its steps closes it.
            await self.runner.reporter.end_state(ctxt, instance, _V.DELETED, PowerState.NOSTATE)
        except GONE:
            # The row went (another delete finished it): the guest is gone too.
            await self.runner.driver.destroy(ctxt, instance)
            await action.succeed()
            return Outcome(True, details={"already_done": True})
        except Exception as exc:
            # ERROR is written by the commit that closes the delete task
            # (nubes/step_end.py): saved here first, it was a state the
            # conductor's write of it then found moved on, and the task
            # stayed open, swallowing the user's next delete.
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True)

    # -- power ---------------------------------------------------------------

    @step_handler
    async def stop_instance(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._power_action(ctxt, instance, stop=True)

        await self.runner.run_step(context, key, work)

    @step_handler
    async def start_instance(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._power_action(ctxt, instance, stop=False)

        await self.runner.run_step(context, key, work)

    async def _power_action(
        self, ctxt: RequestContext, instance: Instance, *, stop: bool
    ) -> Outcome:
        if stop:
            busy, done_vm, power, event, notify = (
                _T.POWERING_OFF,
                _V.STOPPED,
                PowerState.SHUTDOWN,
                "compute_stop_instance",
                "power_off",
            )
        else:
            busy, done_vm, power, event, notify = (
                _T.POWERING_ON,
                _V.ACTIVE,
                PowerState.RUNNING,
                "compute_start_instance",
                "power_on",
            )
        current = await self.runner.power_state(instance)
        action = self.runner.reporter.action(ctxt, instance, event, notify)
        if instance.vm_state == done_vm and instance.task_state is None and current == power:
            action.found_done()
            return Outcome(True, details={"already_done": True})
        await action.start()
        try:
            if instance.task_state != busy:
                await self.runner.reporter.save_state(
                    ctxt, instance, _V(instance.vm_state), busy, expected_task_state=[None]
                )
            if stop:
                await self.runner.driver.power_off(instance)
            else:
                await self.runner.driver.power_on(ctxt, instance)
            end = await self.runner.reporter.end_state(ctxt, instance, done_vm, power)
        except Exception as exc:
            # The task_state is the conductor's to drop, with the task's close
            # (nubes/step_end.py): a failure ends in that one commit too.
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True, details=end.details())

    # -- snapshots (createImage, createBackup) -----------------------------

    @step_handler
    async def snapshot_instance(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        image_id: str,
        image_type: str,
        grant: str,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._snapshot(ctxt, instance, image_id, image_type, grant)

        await self.runner.run_step(context, key, work)

    async def _snapshot(
        self, ctxt: RequestContext, instance: Instance, image_id: str, image_type: str, grant: str
    ) -> Outcome:
        first = _T.IMAGE_BACKUP if image_type == "backup" else _T.IMAGE_SNAPSHOT
        vm = _V(instance.vm_state)
        action = self.runner.reporter.action(
            ctxt, instance, "compute_snapshot_instance", "snapshot"
        )
        await action.start()
        try:
            disk_format = await upload_guest_disk(
                self.runner,
                ctxt,
                instance,
                image_id,
                grant,
                vm_state=vm,
                pending=_T.IMAGE_PENDING_UPLOAD,
                uploading=_T.IMAGE_UPLOADING,
                started=[first],
            )
            # Idle again in the commit that closes the task (nubes/step_end.py).
            end = await self.runner.reporter.end_state(ctxt, instance, vm)
        except Exception as exc:
            # The image_* task_state is dropped by the commit that closes the
            # task (nubes/step_end.py), a failed one's too.
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True, details={"disk_format": disk_format, **end.details()})

    @step_handler
    async def reboot_instance(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        reboot_type: str,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._reboot(ctxt, instance, reboot_type)

        await self.runner.run_step(context, key, work)

    async def _reboot(self, ctxt: RequestContext, instance: Instance, reboot_type: str) -> Outcome:
        if reboot_type not in ("SOFT", "HARD"):
            return Outcome(False, f"reboot_type must be SOFT or HARD, not {reboot_type!r}")
        hard = reboot_type == "HARD"
        group = states.HARD_REBOOT_TASK_STATES if hard else states.SOFT_REBOOT_TASK_STATES
        first, started = (
            (_T.REBOOTING_HARD, _T.REBOOT_STARTED_HARD)
            if hard
            else (_T.REBOOTING, _T.REBOOT_STARTED)
        )
        action = self.runner.reporter.action(ctxt, instance, "compute_reboot_instance", "reboot")
        await action.start()
        try:
            vm = _V(instance.vm_state)
            if instance.task_state not in group:
                await self.runner.reporter.save_state(
                    ctxt, instance, vm, first, expected_task_state=[None]
                )
            if instance.task_state != started:
                await self.runner.reporter.save_state(
                    ctxt, instance, vm, started, expected_task_state=list(group)
                )
            await self.runner.driver.reboot(ctxt, instance, reboot_type)
            end = await self.runner.reporter.end_state(
                ctxt, instance, _V.ACTIVE, PowerState.RUNNING
            )
        except Exception as exc:
            # ERROR, as Nova leaves a failed reboot, is written by the commit
            # that closes the task (nubes/step_end.py).
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True, details=end.details())
