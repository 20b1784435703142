"""The compute manager: the RPC endpoint a compute host serves.

Every method is a conductor task step (see :mod:`nubes.compute.steps`): it
runs once per ``(task_id, step, attempt)``, saves the instance's state
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

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nubes import exception
from nubes.compute import authz
from nubes.compute.live_migration import LiveMigrationSteps
from nubes.compute.rebuild import RebuildSteps
from nubes.compute.reporting import GONE, Reporter, utcnow
from nubes.compute.resize import ResizeSteps
from nubes.compute.steps import Outcome, StepKey, StepLog, StepReporter
from nubes.compute.virt.driver import ComputeDriver, console_tail
from nubes.context import RequestContext
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState, TaskState, VMState

LOG = logging.getLogger(__name__)

_T = TaskState
_V = VMState

#: Task states a build may find the instance in (the last for a repeat).
BUILD_TASK_STATES: tuple[str | None, ...] = (
    _T.SCHEDULING,
    None,
    _T.BLOCK_DEVICE_MAPPING,
    _T.NETWORKING,
    _T.SPAWNING,
)
#: Backoff (seconds) of a report the bus could not take, and how long it is
#: retried: past that, the task it answers has long ended (deadline).
REPORT_RETRY_MIN = 0.5
REPORT_RETRY_MAX = 5.0
REPORT_RETRY_FOR = 3600.0
SOFT_REBOOT_STATES = (_T.REBOOTING, _T.REBOOT_PENDING, _T.REBOOT_STARTED)
HARD_REBOOT_STATES = (_T.REBOOTING_HARD, _T.REBOOT_PENDING_HARD, _T.REBOOT_STARTED_HARD)


class ComputeManager(ResizeSteps, LiveMigrationSteps, RebuildSteps):
    #: Who may call which method (checked by the RPC server, deny by default).
    RPC_METHOD_RULES = authz.METHOD_RULES
    RPC_API_VERSION = "1.4"
    RPC_EXPECTED_ERRORS = (exception.Conflict, exception.NotFound, exception.Forbidden)

    def __init__(
        self,
        host: str,
        driver: ComputeDriver,
        conductor: StepReporter,
        reporter: Reporter,
        *,
        steps_kept: int = 4096,
    ) -> None:
        self.host = host
        self.driver = driver
        self.conductor = conductor
        self.reporter = reporter
        self.steps = StepLog(steps_kept)
        #: Set once the host's start (node records, repair) is done.
        self.ready = asyncio.Event()

    # -- steps ---------------------------------------------------------------

    async def _report(self, ctxt: RequestContext, key: StepKey, outcome: Outcome) -> None:
        task_id, step, attempt = key
        delay = REPORT_RETRY_MIN
        give_up = asyncio.get_running_loop().time() + REPORT_RETRY_FOR
        while True:
            try:
                await self.conductor.step_finished(
                    ctxt,
                    task_id=task_id,
                    step=step,
                    attempt=attempt,
                    ok=outcome.ok,
                    error=outcome.error,
                    details=outcome.details,
                )
                return
            except exception.TRANSIENT_ERRORS as exc:
                # The bus is away: the report is held and sent when it is
                # back (the conductor records a repeat once), not dropped.
                if asyncio.get_running_loop().time() + delay > give_up:
                    LOG.warning(
                        "Gave up reporting task %s step %s after %.0f s: %s",
                        task_id,
                        step,
                        REPORT_RETRY_FOR,
                        exc,
                    )
                    return
                LOG.warning(
                    "Cannot report task %s step %s now (%s); trying again in %.1f s",
                    task_id,
                    step,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, REPORT_RETRY_MAX)
            except Exception as exc:
                # Refused for good: the conductor's task engine asks again
                # (same step) when a new owner resumes; the outcome is kept.
                LOG.warning("Could not report task %s step %s: %s", task_id, step, exc)
                return

    async def _run_step(
        self,
        context: RequestContext,
        key: StepKey,
        work: Callable[[RequestContext], Awaitable[Outcome]],
    ) -> None:
        # The message's context names its sender as the caller; our own
        # calls to the conductor go out as this host, so that must go.
        context = dataclasses.replace(context, caller=None)
        await self.ready.wait()
        steps = self.steps
        done = steps.outcome(key)
        if done is not None:
            await self._report(context, key, done)
            return
        if key in steps.running:
            return
        steps.running.add(key)
        try:
            try:
                outcome = await work(context)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOG.exception("Task %s step %s failed on %s", key[0], key[1], self.host)
                outcome = Outcome(False, str(exc) or type(exc).__name__)
        finally:
            steps.running.discard(key)
        steps.record(key, outcome)
        await self._report(context, key, outcome)

    async def _power_state(self, instance: Instance) -> PowerState | None:
        """The driver's power state of the instance; None if it does not have it."""
        try:
            return (await self.driver.get_info(instance)).state
        except exception.InstanceNotFound:
            return None

    # -- host queries (1.2) --------------------------------------------------

    async def get_host_uptime(self, context: RequestContext) -> str:
        """The hypervisor's uptime line (``os-hypervisors/{id}/uptime``); not a
        step: it changes nothing, so it answers at once, even during start."""
        return await self.driver.get_host_uptime()

    # -- console log (1.4) ---------------------------------------------------

    async def get_console_output(
        self, context: RequestContext, instance_uuid: str, length: int | None = None
    ) -> str:
        """The last ``length`` lines of the guest's console log (all of what
        the driver keeps when None), for ``os-getConsoleOutput``. A read, not a
        step; a guest this host does not run is InstanceNotFound (the driver
        looks only at its own guests)."""
        output = await self.driver.get_console_output(Instance(uuid=instance_uuid))
        return console_tail(output, length)

    # -- guests of abandoned tries (1.3) -----------------------------------------

    async def remove_guest(
        self,
        context: RequestContext,
        instance_uuid: str,
        task_id: int,
        step: str,
        attempt: int,
    ) -> None:
        """Remove the guest of a try the conductor gave up on (a ``remove_guest`` task).

        The guest stays if the database places the instance on this host
        (again): the instruction may come late, or twice.
        """

        async def work(ctxt: RequestContext) -> Outcome:
            placed = await Instance.get_by_host(ctxt, self.host)
            if any(i.uuid == instance_uuid for i in placed):
                return Outcome(True, details={"removed": False, "placed_here": True})
            if instance_uuid not in await self.driver.list_instances():
                return Outcome(True, details={"removed": False})
            LOG.warning(
                "Removing the guest of %s from %s: the conductor gave up on it here",
                instance_uuid,
                self.host,
            )
            await self.driver.destroy(ctxt, Instance(uuid=instance_uuid))
            return Outcome(True, details={"removed": True})

        await self._run_step(context, (task_id, step, attempt), work)

    # -- build ---------------------------------------------------------------

    async def build_and_run_instance(
        self,
        context: RequestContext,
        instance: Instance,
        node: str,
        task_id: int,
        step: str,
        attempt: int,
        image: dict[str, Any],
        request: dict[str, Any],
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._build(ctxt, instance, node, image, request)

        await self._run_step(context, (task_id, step, attempt), work)

    async def _build(
        self,
        ctxt: RequestContext,
        instance: Instance,
        node: str,
        image: dict[str, Any],
        request: dict[str, Any],
    ) -> Outcome:
        power = await self._power_state(instance)
        if power is not None and instance.vm_state == _V.ACTIVE:
            # Built before (a repeat after a restart): nothing to do again.
            return Outcome(True, details={"already_done": True})
        if instance.vm_state != _V.BUILDING:
            return Outcome(False, f"instance is {instance.vm_state}, not building")
        found_task = instance.task_state
        action = self.reporter.action(ctxt, instance, "compute_build_and_run_instance", "create")
        await action.start()
        try:
            if power is None or found_task != _T.SPAWNING:
                placement: dict[str, Any] = {"launched_on": self.host}
                if instance.host != self.host:
                    placement["host"] = self.host
                if instance.node != node:
                    placement["node"] = node
                await self.reporter.save_state(
                    ctxt,
                    instance,
                    _V.BUILDING,
                    _T.SPAWNING,
                    expected_task_state=list(BUILD_TASK_STATES),
                    **placement,
                )
                if power is None:
                    await self.driver.spawn(ctxt, instance, image, request)
            await self.reporter.save_state(
                ctxt,
                instance,
                _V.ACTIVE,
                None,
                expected_task_state=_T.SPAWNING,
                power_state=PowerState.RUNNING,
                launched_at=utcnow(),
            )
        except Exception as exc:
            await self._undo_build(ctxt, instance, found_task, exc)
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True)

    async def _undo_build(
        self, ctxt: RequestContext, instance: Instance, found_task: Any, exc: Exception
    ) -> None:
        LOG.info("Build of %s failed on %s: %s", instance.uuid, self.host, exc)
        try:
            await self.driver.destroy(ctxt, instance)
        except Exception as cleanup:
            LOG.warning("Could not clean up failed build %s: %s", instance.uuid, cleanup)
        if instance.task_state != _T.SPAWNING or isinstance(exc, exception.InstanceUpdateConflict):
            return
        back = _T.SCHEDULING if found_task == _T.SCHEDULING else None
        try:
            await self.reporter.save_state(
                ctxt, instance, _V.BUILDING, back, expected_task_state=_T.SPAWNING
            )
        except Exception as failure:
            LOG.warning(
                "Could not revert instance %s after a failed build: %s", instance.uuid, failure
            )

    # -- delete --------------------------------------------------------------

    async def terminate_instance(
        self,
        context: RequestContext,
        instance: Instance,
        task_id: int,
        step: str,
        attempt: int,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._terminate(ctxt, instance)

        await self._run_step(context, (task_id, step, attempt), work)

    async def _terminate(self, ctxt: RequestContext, instance: Instance) -> Outcome:
        if instance.vm_state == _V.DELETED:
            await self.driver.destroy(ctxt, instance)
            return Outcome(True, details={"already_done": True})
        action = self.reporter.action(ctxt, instance, "compute_terminate_instance", "delete")
        await action.start()
        try:
            if instance.task_state != _T.DELETING:
                await self.reporter.save_state(
                    ctxt, instance, _V(instance.vm_state), _T.DELETING, expected_task_state=None
                )
            await self.driver.destroy(ctxt, instance)
            await self.reporter.save_state(
                ctxt,
                instance,
                _V.DELETED,
                None,
                expected_task_state=_T.DELETING,
                power_state=PowerState.NOSTATE,
                terminated_at=utcnow(),
            )
        except GONE:
            # The row went (another delete finished it): the guest is gone too.
            await self.driver.destroy(ctxt, instance)
            await action.succeed()
            return Outcome(True, details={"already_done": True})
        except Exception as exc:
            await self._set_error(ctxt, instance)
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True)

    async def _set_error(self, ctxt: RequestContext, instance: Instance) -> None:
        try:
            await self.reporter.save_state(ctxt, instance, _V.ERROR, None, expected_task_state=None)
        except Exception as failure:
            LOG.warning("Could not set instance %s to error: %s", instance.uuid, failure)

    # -- power ---------------------------------------------------------------

    async def stop_instance(
        self,
        context: RequestContext,
        instance: Instance,
        task_id: int,
        step: str,
        attempt: int,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._power_action(ctxt, instance, stop=True)

        await self._run_step(context, (task_id, step, attempt), work)

    async def start_instance(
        self,
        context: RequestContext,
        instance: Instance,
        task_id: int,
        step: str,
        attempt: int,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._power_action(ctxt, instance, stop=False)

        await self._run_step(context, (task_id, step, attempt), work)

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
        current = await self._power_state(instance)
        if instance.vm_state == done_vm and instance.task_state is None and current == power:
            return Outcome(True, details={"already_done": True})
        action = self.reporter.action(ctxt, instance, event, notify)
        await action.start()
        try:
            if instance.task_state != busy:
                await self.reporter.save_state(
                    ctxt, instance, _V(instance.vm_state), busy, expected_task_state=[None]
                )
            if stop:
                await self.driver.power_off(instance)
            else:
                await self.driver.power_on(ctxt, instance)
            await self.reporter.save_state(
                ctxt, instance, done_vm, None, expected_task_state=busy, power_state=power
            )
        except Exception as exc:
            if instance.task_state == busy:
                try:
                    await self.reporter.save_state(
                        ctxt, instance, _V(instance.vm_state), None, expected_task_state=busy
                    )
                except Exception as failure:
                    LOG.warning("Could not revert instance %s: %s", instance.uuid, failure)
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True)

    async def reboot_instance(
        self,
        context: RequestContext,
        instance: Instance,
        task_id: int,
        step: str,
        attempt: int,
        reboot_type: str,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._reboot(ctxt, instance, reboot_type)

        await self._run_step(context, (task_id, step, attempt), work)

    async def _reboot(self, ctxt: RequestContext, instance: Instance, reboot_type: str) -> Outcome:
        if reboot_type not in ("SOFT", "HARD"):
            return Outcome(False, f"reboot_type must be SOFT or HARD, not {reboot_type!r}")
        hard = reboot_type == "HARD"
        states = HARD_REBOOT_STATES if hard else SOFT_REBOOT_STATES
        first, started = (
            (_T.REBOOTING_HARD, _T.REBOOT_STARTED_HARD)
            if hard
            else (_T.REBOOTING, _T.REBOOT_STARTED)
        )
        action = self.reporter.action(ctxt, instance, "compute_reboot_instance", "reboot")
        await action.start()
        try:
            vm = _V(instance.vm_state)
            if instance.task_state not in states:
                await self.reporter.save_state(
                    ctxt, instance, vm, first, expected_task_state=[None]
                )
            if instance.task_state != started:
                await self.reporter.save_state(
                    ctxt, instance, vm, started, expected_task_state=list(states)
                )
            await self.driver.reboot(ctxt, instance, reboot_type)
            await self.reporter.save_state(
                ctxt,
                instance,
                _V.ACTIVE,
                None,
                expected_task_state=started,
                power_state=PowerState.RUNNING,
            )
        except Exception as exc:
            await self._set_error(ctxt, instance)
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True)
