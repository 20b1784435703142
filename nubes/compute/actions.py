"""A compute host's lifecycle action steps: pause, unpause, suspend, resume,
rescue, unrescue, trigger_crash_dump, set_admin_password, soft_delete_instance
and restore_instance (compute RPC 1.6).

An RPC endpoint of its own beside
:class:`~nubes.compute.manager.ComputeManager`, sharing its
:class:`~nubes.compute.steps.StepRunner`. Each step walks one edge pair of the
state table (``objects/states.py``: ``pause`` ... ``set_password``): the
transitional task_state (unless the conductor's API set it already), the
driver call, then the end state with the power state the driver reports
(a libvirt guest suspended by managed save reads as shut down, as in Nova),
reported with the step for the conductor to write with the task's close
(:mod:`nubes.step_end`).
Each records its ``compute_<action>`` event and sends ``instance.<action>``
start/end (error) notifications; a failure records a fault and leaves the
task_state to the conductor, which drops it (a rescue leaves the instance in
ERROR, as Nova's does) in the commit that closes the task.

A repeated step (its host restarted mid-way) finds the instance already in
its end state with the driver agreeing, and reports success at once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nubes.compute.steps import ComputeEndpoint, Outcome, StepRunner, step_handler
from nubes.context import RequestContext
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState, TaskState, VMState
from nubes.step_key import StepKey

LOG = logging.getLogger(__name__)

_T = TaskState
_V = VMState


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """What one action does to an instance's state."""

    #: The transitional task_state (None: the action sets none).
    busy: TaskState | None
    #: The vm_state it ends in (None: unchanged).
    done: VMState | None
    #: The power state that means it is done (for a repeated step).
    power: PowerState | None
    #: Its instance-action event and notification names.
    event: str
    notify: str


PAUSE = Change(_T.PAUSING, _V.PAUSED, PowerState.PAUSED, "compute_pause_instance", "pause")
UNPAUSE = Change(_T.UNPAUSING, _V.ACTIVE, PowerState.RUNNING, "compute_unpause_instance", "unpause")
SUSPEND = Change(_T.SUSPENDING, _V.SUSPENDED, None, "compute_suspend_instance", "suspend")
RESUME = Change(_T.RESUMING, _V.ACTIVE, PowerState.RUNNING, "compute_resume_instance", "resume")
RESCUE = Change(_T.RESCUING, _V.RESCUED, PowerState.RUNNING, "compute_rescue_instance", "rescue")
UNRESCUE = Change(
    _T.UNRESCUING, _V.ACTIVE, PowerState.RUNNING, "compute_unrescue_instance", "unrescue"
)
CRASH_DUMP = Change(None, None, None, "compute_trigger_crash_dump", "trigger_crash_dump")
SOFT_DELETE = Change(
    _T.SOFT_DELETING,
    _V.SOFT_DELETED,
    PowerState.SHUTDOWN,
    "compute_soft_delete_instance",
    "soft_delete",
)
RESTORE = Change(_T.RESTORING, _V.ACTIVE, PowerState.RUNNING, "compute_restore_instance", "restore")
SET_PASSWORD = Change(
    _T.UPDATING_PASSWORD, None, None, "compute_set_admin_password", "set_admin_password"
)


class ActionSteps(ComputeEndpoint):
    """The lifecycle action steps of one host."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner

    @step_handler
    async def pause_instance(
        self, context: RequestContext, instance: Instance, key: StepKey
    ) -> None:
        await self._step(context, key, instance, PAUSE, self.runner.driver.pause)

    @step_handler
    async def unpause_instance(
        self, context: RequestContext, instance: Instance, key: StepKey
    ) -> None:
        await self._step(context, key, instance, UNPAUSE, self.runner.driver.unpause)

    @step_handler
    async def suspend_instance(
        self, context: RequestContext, instance: Instance, key: StepKey
    ) -> None:
        await self._step(context, key, instance, SUSPEND, self.runner.driver.suspend)

    @step_handler
    async def resume_instance(
        self, context: RequestContext, instance: Instance, key: StepKey
    ) -> None:
        await self._step(context, key, instance, RESUME, self.runner.driver.resume)

    @step_handler
    async def rescue_instance(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        rescue_image: dict[str, Any],
        admin_password: str | None = None,
    ) -> None:
        async def rescue(inst: Instance) -> None:
            await self.runner.driver.rescue(inst, rescue_image, admin_password)

        await self._step(context, key, instance, RESCUE, rescue)

    @step_handler
    async def unrescue_instance(
        self, context: RequestContext, instance: Instance, key: StepKey
    ) -> None:
        await self._step(context, key, instance, UNRESCUE, self.runner.driver.unrescue)

    @step_handler
    async def trigger_crash_dump(
        self, context: RequestContext, instance: Instance, key: StepKey
    ) -> None:
        await self._step(context, key, instance, CRASH_DUMP, self.runner.driver.trigger_crash_dump)

    @step_handler
    async def soft_delete_instance(
        self, context: RequestContext, instance: Instance, key: StepKey
    ) -> None:
        """Power the guest off; it stays (Nova's soft delete of a driver
        without one of its own)."""

        async def power_off(inst: Instance) -> None:
            await self.runner.driver.power_off(inst)

        await self._step(context, key, instance, SOFT_DELETE, power_off)

    @step_handler
    async def restore_instance(
        self, context: RequestContext, instance: Instance, key: StepKey
    ) -> None:
        async def power_on(inst: Instance) -> None:
            await self.runner.driver.power_on(context, inst)

        await self._step(context, key, instance, RESTORE, power_on)

    @step_handler
    async def set_admin_password(
        self, context: RequestContext, instance: Instance, key: StepKey, new_pass: str
    ) -> None:
        async def change(inst: Instance) -> None:
            await self.runner.driver.set_admin_password(inst, new_pass)

        await self._step(context, key, instance, SET_PASSWORD, change)

    async def _step(
        self,
        context: RequestContext,
        key: StepKey,
        instance: Instance,
        change: Change,
        do: Callable[[Instance], Awaitable[None]],
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._act(ctxt, instance, change, do)

        await self.runner.run_step(context, key, work)

    async def _act(
        self,
        ctxt: RequestContext,
        instance: Instance,
        change: Change,
        do: Callable[[Instance], Awaitable[None]],
    ) -> Outcome:
        reporter = self.runner.reporter
        if change.done is not None and instance.vm_state == change.done:
            if instance.task_state is None and (
                change.power is None or await self.runner.power_state(instance) == change.power
            ):
                return Outcome(True, details={"already_done": True})
        start_vm = _V(instance.vm_state)
        action = reporter.action(ctxt, instance, change.event, change.notify)
        await action.start()
        try:
            if change.busy is not None and instance.task_state != change.busy:
                await reporter.save_state(
                    ctxt, instance, start_vm, change.busy, expected_task_state=[None]
                )
            await do(instance)
            end = None
            if change.busy is not None:
                power = await self.runner.power_state(instance)
                end = await reporter.end_state(ctxt, instance, change.done or start_vm, power)
        except Exception as exc:
            # The task_state is dropped (ERROR after a failed rescue, as
            # Nova's) by the commit that closes the task (nubes/step_end.py).
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True, details=None if end is None else end.details())
