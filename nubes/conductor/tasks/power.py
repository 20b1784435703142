"""Stop, start, and soft or hard reboot: one step on the instance's host.

Each is a task with one step, ``power`` (see ``docs/tasks.md``): commit
the try (host, until when), send the host's method carrying task id, step
and try, wait for its report. The host reports the instance's end state
(STOPPED, ACTIVE ..., its power state) with the step, and the commit that
closes the task writes it (task_state None): the instance is idle exactly
when its task is closed (:mod:`nubes.step_end`). A failure, no report in time or
the deadline rolls back what the API set: the transitional task_state is
dropped (a failed reboot leaves the instance in ERROR, as in Nova), with a
fault and an ``instance.<action>.error`` notification.
"""

from __future__ import annotations

from typing import Any, ClassVar

from nubes import exception
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.base import Run, StepDef, Task, run_writes, task_kind
from nubes.conductor.tasks.helpers import (
    chain,
    end_writes,
    instance_object,
    load_instance,
    notify_error,
    reported_end,
    set_instance,
)
from nubes.conductor.tasks.payloads import Outcome, PowerPayload, TaskPayload, expect_report
from nubes.conductor.tasks.states import Step, TaskKind
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection
from nubes.objects.states import TaskState, VMState

_REBOOT_STATES = (
    TaskState.REBOOTING,
    TaskState.REBOOT_PENDING,
    TaskState.REBOOT_STARTED,
    TaskState.REBOOTING_HARD,
    TaskState.REBOOT_PENDING_HARD,
    TaskState.REBOOT_STARTED_HARD,
)


class PowerTask(Task):
    #: The ComputeAPI method that does it.
    method: ClassVar[str]
    #: task_states the instance is in while this runs (set by the API, then compute).
    task_states: ClassVar[tuple[TaskState, ...]]
    #: Notification event of a failure.
    error_event: ClassVar[str]
    #: vm_state a failure leaves (None: unchanged).
    error_vm_state: ClassVar[VMState | None] = None

    def step_defs(self) -> list[StepDef]:
        return [StepDef(Step.POWER, self.power, self.revert)]

    def extra_args(self, run: Run) -> dict[str, Any]:
        return {}

    def final_payload(self, run: Run) -> TaskPayload | None:
        """The payload the task ends with (None: as it is); a kind whose
        payload holds a secret the host needed once drops it here."""
        return None

    async def power(self, run: Run) -> str | None:
        row: dict[str, Any] | None = None
        if not run.awaiting:
            row = await load_instance(run)
            if row is None:
                await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
                return None
            if not row["host"]:
                await self.fail(run, "The instance is not on any host")
                return None
            payload = expect_report(
                run.payload,
                step=Step.POWER,
                attempt=1,
                host=row["host"],
                node=row["node"],
                timeout=self.engine.compute_step_timeout,
            )
            await run.commit(Step.POWER, payload=payload)
            # On to the report with the row just read (a resumed run reads it anew).
        awaited = run.awaited()

        async def send() -> None:
            instance = row or await load_instance(run)
            if instance is None:
                raise exception.InstanceNotFound(instance_id=run.instance_uuid)
            method = getattr(self.engine.compute, self.method)
            await method(
                run.ctxt,
                awaited.host,
                instance_object(instance),
                awaited.key(run.id),
                **self.extra_args(run),
            )

        outcome = await run.wait_for_report(send)
        if outcome is None:
            return run.step
        if outcome.ok:
            await self.succeed(run, outcome)
            return None
        await self.fail(run, f"{self.kind} on {outcome.host} failed: {outcome.error}")
        return None

    async def succeed(self, run: Run, outcome: Outcome) -> None:
        """End the task with the instance's end as its host reported it, in one
        commit (:mod:`nubes.step_end`): the instance is idle exactly when the
        task is closed."""
        row = await load_instance(run)
        try:
            end = reported_end(outcome, row, self.task_states)
        except exception.Invalid as exc:
            await self.fail(run, f"{self.kind} on {outcome.host}: {exc}")
            return
        await run.finish(
            TaskStatus.SUCCEEDED,
            writes=chain(end_writes(run, end, row), run.finish_action_writes()),
            payload=self.final_payload(run),
        )

    def _revert_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {"task_state": None}
        if self.error_vm_state is not None:
            values["vm_state"] = self.error_vm_state
        return values

    async def revert(self, run: Run) -> None:
        """Drop the transitional task_state (if it is still ours)."""
        assert run.instance_uuid is not None
        if not self.task_states:
            return  # a kind that sets no task_state (trigger_crash_dump)
        write = set_instance(run, self._revert_values(), expected_task_state=self.task_states)
        try:
            async with self.engine.db.writer() as conn:
                await run_writes(conn, write)
        except (exception.InstanceUpdateConflict, exception.InstanceNotFound):
            pass  # compute finished it, or someone else moved it on

    async def fail(self, run: Run, message: str, *, status: TaskStatus = TaskStatus.FAILED) -> None:
        async def history(conn: Connection) -> None:
            await run.fault(conn, message)
            await run.event(conn, f"conductor_{self.kind}_failed", ok=False, details=message)
            await run.finish_action(conn, ok=False)

        async def revert(conn: Connection) -> None:
            if not self.task_states:
                return
            write = set_instance(run, self._revert_values(), expected_task_state=self.task_states)
            try:
                await run_writes(conn, write)
            except exception.InstanceUpdateConflict:
                pass  # compute already moved it on

        await run.finish(
            status,
            last_error=message,
            writes=chain(revert, history),
            payload=self.final_payload(run),
        )
        await notify_error(run, self.error_event, message)

    async def expire(self, run: Run) -> None:
        outcome = payloads.reported(run.payload)
        if outcome is not None and outcome.ok:
            # The host did it and said so before the deadline; only the
            # task's close (which writes the instance's end) is late.
            await self.succeed(run, outcome)
            return
        await self.fail(
            run,
            f"The {self.kind} did not finish before its deadline",
            status=TaskStatus.ROLLED_BACK,
        )


@task_kind
class StopTask(PowerTask):
    kind = TaskKind.STOP
    method = "stop_instance"
    task_states = (TaskState.POWERING_OFF,)
    error_event = "instance.power_off.error"


@task_kind
class StartTask(PowerTask):
    kind = TaskKind.START
    method = "start_instance"
    task_states = (TaskState.POWERING_ON,)
    error_event = "instance.power_on.error"


@task_kind
class RebootTask(PowerTask):
    kind = TaskKind.REBOOT
    method = "reboot_instance"
    task_states = _REBOOT_STATES
    error_event = "instance.reboot.error"
    error_vm_state = VMState.ERROR

    def extra_args(self, run: Run) -> dict[str, Any]:
        return {"reboot_type": run.typed(PowerPayload).reboot_type}
