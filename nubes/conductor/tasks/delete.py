"""The delete task: terminate on the instance's host, release its claim, remove the record.

Steps (see ``docs/tasks.md``):

``terminate``
    With no host (never scheduled, or a build that failed), go straight to
    ``release``. Otherwise commit the try (host, until when), send
    ``terminate_instance`` carrying task id, step and try, and wait for the
    host's report. On success, a resized instance (its resize awaiting a
    confirm) goes to ``confirm_source``, anything else to ``release``. A
    failure, or no report in time, ends the task FAILED
    with the instance in ERROR and a fault: its resources stay claimed,
    since the host may still run it; the user may delete again.
``confirm_source``
    As Nova, deleting a resized instance confirms its resize: the source
    (``confirm_migration``) drops the guest it kept for a revert. A failure
    is recorded as a failed event and the delete goes on.
``release``
    Give back every claim the instance and its migrations hold
    (``SchedulerAPI.release``, idempotent) and soft-delete the instance
    with its migrations and group memberships; the ``delete`` action ends.
    A BUILDING instance is deleted the same way: the API cancelled its build
    task in the transaction that started the delete, so the build stops at
    its next write and whatever it had claimed is released here.
"""

from __future__ import annotations

from typing import Any

from nubes import exception
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.base import Run, StepDef, Task, Writes, run_writes, task_kind
from nubes.conductor.tasks.helpers import (
    chain,
    instance_object,
    load_instance,
    notify_error,
    set_instance,
)
from nubes.conductor.tasks.moves import answer, ask, load_migration, migration_object
from nubes.conductor.tasks.payloads import SHELVED_IMAGE_KEY, Awaited, DeletePayload, expect_report
from nubes.conductor.tasks.snapshot import delete_image
from nubes.conductor.tasks.states import Step, TaskKind
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection
from nubes.network import ports as network_ports
from nubes.objects.states import MigrationStatus, TaskState, VMState


@task_kind
class DeleteTask(Task):
    kind = TaskKind.DELETE

    def step_defs(self) -> list[StepDef]:
        return [
            StepDef(Step.TERMINATE, self.terminate),
            StepDef(Step.CONFIRM_SOURCE, self.confirm_source),
            StepDef(Step.RELEASE, self.release),
        ]

    async def terminate(self, run: Run) -> str | None:
        row: dict[str, Any] | None = None
        if not run.awaiting:
            row = await load_instance(run)
            if row is None:
                await run.finish(TaskStatus.SUCCEEDED, writes=self._end_action(run))
                return None
            if not row["host"]:
                return await run.commit(Step.RELEASE)
            payload = expect_report(
                run.payload,
                step=Step.TERMINATE,
                attempt=1,
                host=row["host"],
                node=row["node"],
                timeout=self.engine.compute_step_timeout,
            )
            await run.commit(Step.TERMINATE, payload=payload)
            # On to the report with the row just read (a resumed run reads it anew).
        awaited = run.awaited()

        async def send() -> None:
            instance = row or await load_instance(run)
            if instance is None:
                raise exception.InstanceNotFound(instance_id=run.instance_uuid)
            await self.engine.compute.terminate_instance(
                run.ctxt,
                awaited.host,
                instance_object(instance),
                awaited.key(run.id),
            )

        outcome = await run.wait_for_report(send)
        if outcome is None:
            return run.step
        if outcome.ok:
            return await self.after_terminate(run)
        await self.fail(run, f"Deleting on {outcome.host} failed: {outcome.error}")
        return None

    async def after_terminate(self, run: Run) -> str:
        """``confirm_source`` when a resize awaits its confirm, else ``release``."""
        assert run.instance_uuid is not None
        async with self.engine.db.reader() as conn:
            moves = await migrations_api.list_by_instance(
                conn, run.instance_uuid, statuses=[MigrationStatus.FINISHED]
            )
        if not moves:
            return await run.commit(Step.RELEASE)
        mig = moves[-1]
        payload = run.typed(DeletePayload)
        payload.migration_id = mig["id"]
        return await ask(
            run,
            Step.CONFIRM_SOURCE,
            mig["source_compute"],
            node=mig["source_node"],
            payload=payloads.encode(payload, run.payload),
        )

    async def confirm_source(self, run: Run) -> str | None:
        """The source of a resize awaiting its confirm drops the guest it kept for a revert.

        As Nova, deleting a resized instance confirms the resize first. If
        the source cannot, the delete goes on (its claim is released below)
        and the failure is recorded: the source may keep leftovers.
        """

        async def send(awaited: Awaited) -> None:
            row = await load_instance(run)
            if row is None:
                raise exception.InstanceNotFound(instance_id=run.instance_uuid)
            await self.engine.compute.confirm_migration(
                run.ctxt,
                awaited.host,
                instance_object(row),
                awaited.key(run.id),
                migration=migration_object(await load_migration(run)),
            )

        outcome = await answer(run, send)
        if outcome is None:
            return run.step
        if outcome.ok:
            return await run.commit(Step.RELEASE)
        why = f"{outcome.host} could not remove the resize's source guest: {outcome.error}"

        async def record(conn: Connection) -> None:
            await run.event(conn, "compute_confirm_resize", ok=False, details=why)

        return await run.commit(Step.RELEASE, writes=record)

    async def release(self, run: Run) -> None:
        if run.instance_uuid is not None:
            await self.engine.scheduler.release(run.ctxt, run.instance_uuid)
            # A move the delete cut short leaves the source's resources with
            # its migration (docs/moves.md, claims): they go too.
            async with self.engine.db.reader() as conn:
                moves = await migrations_api.list_by_instance(conn, run.instance_uuid)
            for migration in moves:
                await self.engine.scheduler.release(run.ctxt, migration["uuid"])
            # A shelved server's snapshot goes with it, as Nova's delete of a
            # shelved server deletes it (a repeat finds it gone).
            row = await load_instance(run)
            shelved = ((row or {}).get("system_metadata") or {}).get(SHELVED_IMAGE_KEY)
            if shelved:
                await delete_image(self.engine, str(shelved))

        async def destroy(conn: Connection) -> None:
            assert run.instance_uuid is not None
            try:
                await instances_api.destroy(conn, run.instance_uuid)
            except exception.InstanceNotFound:
                pass  # a repeated release step

        # NETWORKING (issue 14): the server's ports freed with it.
        release = network_ports.release_writes(run.instance_uuid or "")
        await run.finish(
            TaskStatus.SUCCEEDED, writes=chain(release, destroy, self._end_action(run))
        )

    @staticmethod
    def _end_action(run: Run) -> Writes:
        async def end(conn: Connection) -> None:
            await run.finish_action(conn)

        return end

    async def fail(self, run: Run, message: str) -> None:
        async def history(conn: Connection) -> None:
            await run.fault(conn, message)
            await run.event(conn, "conductor_delete_failed", ok=False, details=message)
            await run.finish_action(conn, ok=False)

        async def error(conn: Connection) -> None:
            write = set_instance(
                run,
                {"vm_state": VMState.ERROR, "task_state": None},
                expected_task_state=[TaskState.DELETING],
            )
            try:
                await run_writes(conn, write)
            except exception.InstanceUpdateConflict:
                # Moved on already: a host of an older release saved ERROR
                # itself before its report. The task closes all the same.
                pass

        writes = chain(error, history)
        await run.finish(TaskStatus.FAILED, last_error=message, writes=writes)
        await notify_error(run, "instance.delete.error", message)

    async def expire(self, run: Run) -> None:
        await self.fail(run, "The delete did not finish before its deadline")
