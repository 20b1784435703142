"""Confirming or reverting a resize or cold migration (``confirm_resize``, ``revert_resize``).

The instance is RESIZED on the destination with the new flavor; the
migration (``finished``) still holds the source's claim and the source keeps
the powered-off guest (``nubes/conductor/tasks/migrate.py``). The user —
or the conductor once ``[DEFAULT] resize_confirm_window`` passed
(:mod:`.autoconfirm`) — confirms or reverts:

``confirm_resize``
    ``confirm_source`` (``confirm_migration``: the source removes what it
    kept); then, in the commit that ends the task, the migration's claim is
    dropped, the migration ``confirmed``, the instance ACTIVE (STOPPED when
    it was off) with ``old_flavor``/``new_flavor`` cleared.
``revert_resize``
    ``revert_dest`` (``revert_migration_destination``: the destination
    removes the resized guest); then, in one commit, the instance is placed
    back on the source with its old flavor (the snapshot it keeps, so a
    flavor deleted meanwhile does not matter) and the claims go back to the
    source; ``revert_source`` (``finish_revert_migration``) brings the kept
    guest back, and the migration is ``reverted``.

Each step is tried up to :data:`~.migrate.CLEANUP_TRIES` times (a failed
event and a fault per failed try). Giving up — or the deadline — ends with
the instance where its guest is, claims only there, the migration
``error``: a confirm leaves it ACTIVE/STOPPED on the destination (the
source may keep leftovers); a revert leaves it in ERROR on the destination
(before ``revert_source``) or on the source (after).
"""

from __future__ import annotations

import logging

from nubes.conductor.tasks.base import Run, StepDef, Writes, task_kind
from nubes.conductor.tasks.helpers import chain, instance_object, notify_error, set_instance
from nubes.conductor.tasks.migrate import (
    MoveTask,
    finish_action,
    flavor_values,
    move_migration,
    power_state,
    record_event,
    record_fault,
    set_instance_if_ours,
    set_migration_if_any,
)
from nubes.conductor.tasks.moves import (
    answer,
    ask,
    claims_back_to_source,
    drop_source_claim,
    migration_object,
)
from nubes.conductor.tasks.payloads import Awaited, MovePayload, Place
from nubes.conductor.tasks.states import Step, TaskKind
from nubes.db.api.tasks import TaskStatus
from nubes.network import ports as network_ports
from nubes.objects.states import MigrationStatus, PowerState, TaskState, VMState

LOG = logging.getLogger(__name__)

_M = MigrationStatus
_T = TaskState


class _SettleTask(MoveTask):
    """Confirm or revert: what both prepare before asking their first host."""

    async def prepare(self, run: Run) -> MovePayload | None:
        """The payload with the move's hosts and power, or None once the task ended."""
        loaded = await self.load(run)
        if loaded is None:
            return None
        row, mig, _ = loaded
        payload = run.typed(MovePayload)
        power_on = payload.power_on
        payload.migration_uuid = mig["uuid"]
        payload.migration_type = mig["migration_type"]
        payload.source = Place(host=mig["source_compute"], node=mig["source_node"])
        payload.dest = Place(host=row["host"], node=row["node"])
        payload.power_on = bool(
            row["power_state"] == PowerState.RUNNING if power_on is None else power_on
        )
        payload.old_flavor = row["old_flavor"]
        return payload

    @staticmethod
    def settled(run: Run) -> VMState:
        """ACTIVE, or STOPPED when the instance was off: where it was before the move."""
        return VMState.ACTIVE if run.typed(MovePayload).power_on is not False else VMState.STOPPED


@task_kind
class ConfirmResizeTask(_SettleTask):
    kind = TaskKind.CONFIRM_RESIZE
    conductor_event = "conductor_confirm_resize"
    task_states = (_T.RESIZE_CONFIRMING,)
    error_event = "instance.resize_confirm.error"

    def step_defs(self) -> list[StepDef]:
        return [StepDef(Step.CONFIRM_SOURCE, self.confirm_source)]

    async def confirm_source(self, run: Run) -> str | None:
        if not run.awaiting:
            payload = await self.prepare(run)
            if payload is None:
                return None
            source = payload.source_place
            return await ask(
                run, Step.CONFIRM_SOURCE, source.host, node=source.node, payload=payload
            )

        async def send(awaited: Awaited) -> None:
            row, mig = await self.rows(run)
            await self.engine.compute.confirm_migration(
                run.ctxt,
                awaited.host,
                instance_object(row),
                awaited.key(run.id),
                migration=migration_object(mig),
            )

        outcome = await answer(run, send)
        if outcome is None:
            return run.step
        if outcome.ok:
            done = record_event(run, "compute_confirm_resize", host=outcome.host)
            await self.end(run, ok=True, before=done)
            return None
        record = self.failed_try(run, outcome, "compute_confirm_resize")
        retried = await self.again(run, record)
        if retried is not None:
            return retried
        await self.end(
            run,
            ok=False,
            message=f"The source {outcome.host} could not remove what it kept for a "
            f"revert (it may be left there): {outcome.error}",
            before=record,
        )
        return None

    async def end(
        self, run: Run, *, ok: bool, message: str | None = None, before: Writes | None = None
    ) -> None:
        """The instance stays where it runs: the migration's claim is dropped either
        way (a source that could not clean up gets nothing back for it)."""
        payload = run.typed(MovePayload)
        values = {
            "vm_state": self.settled(run),
            "task_state": None,
            "old_flavor": None,
            "new_flavor": None,
        }
        status = _M.CONFIRMED if ok else _M.ERROR
        writes = chain(
            before,
            drop_source_claim(payload.migration_uuid) if payload.migration_uuid else None,
            move_migration(run, {"status": status}, only_from=[_M.CONFIRMING])
            if ok
            else set_migration_if_any(run, {"status": status}),
            set_instance_if_ours(run, values, self.task_states),
            record_fault(run, message) if message else None,
            record_event(run, self.conductor_event, ok=False, details=message) if message else None,
            finish_action(run, ok=ok),
        )
        await run.finish(
            TaskStatus.SUCCEEDED if ok else TaskStatus.FAILED, last_error=message, writes=writes
        )
        if message:
            LOG.info("%r: %s", run, message)
            await notify_error(run, self.error_event, message)

    async def expire(self, run: Run) -> None:
        if run.typed(MovePayload).source is None:
            payload = await self.prepare(run)
            if payload is None:
                return
            run.keep(payload)
        await self.end(run, ok=False, message="The confirm did not finish before its deadline")


@task_kind
class RevertResizeTask(_SettleTask):
    kind = TaskKind.REVERT_RESIZE
    conductor_event = "conductor_revert_resize"
    task_states = (_T.RESIZE_REVERTING,)
    error_event = "instance.resize_revert.error"

    def step_defs(self) -> list[StepDef]:
        return [
            StepDef(Step.REVERT_DEST, self.revert_dest),
            StepDef(Step.REVERT_SOURCE, self.revert_source),
        ]

    async def revert_dest(self, run: Run) -> str | None:
        if not run.awaiting:
            payload = await self.prepare(run)
            if payload is None:
                return None
            if not payload.old_flavor:
                run.keep(payload)
                await self.give_up(run, "The instance has no flavor to go back to")
                return None
            dest = payload.dest_place
            return await ask(run, Step.REVERT_DEST, dest.host, node=dest.node, payload=payload)

        async def send(awaited: Awaited) -> None:
            row, mig = await self.rows(run)
            await self.engine.compute.revert_migration_destination(
                run.ctxt,
                awaited.host,
                instance_object(row),
                awaited.key(run.id),
                migration=migration_object(mig),
            )

        outcome = await answer(run, send)
        if outcome is None:
            return run.step
        if not outcome.ok:
            record = self.failed_try(run, outcome, "compute_revert_resize")
            retried = await self.again(run, record)
            if retried is not None:
                return retried
            await self.give_up(
                run,
                f"The destination {outcome.host} could not remove the resized guest: "
                f"{outcome.error}",
                before=record,
            )
            return None
        # The destination's guest is gone: the instance is the source's again,
        # with its old flavor, and so are the claims — one commit.
        payload = run.typed(MovePayload)
        source = payload.source_place
        assert run.instance_uuid is not None
        values = {
            **flavor_values(payload.old_flavor or {}),
            "host": source.host,
            "node": source.node,
        }
        writes = chain(
            claims_back_to_source(run.instance_uuid, payload.migration_uuid or ""),
            set_instance(run, values, expected_task_state=self.task_states),
            # NETWORKING (issue 14): the ports bound to the source again.
            network_ports.bind_writes(run.instance_uuid, source.host),
            record_event(run, "compute_revert_resize", host=outcome.host),
        )
        return await ask(run, Step.REVERT_SOURCE, source.host, node=source.node, writes=writes)

    async def revert_source(self, run: Run) -> str | None:
        outcome = await answer(run, self.send_finish_revert(run, Step.REVERT_SOURCE))
        if outcome is None:
            return run.step
        if not outcome.ok:
            record = self.failed_try(run, outcome, "compute_finish_revert_resize")
            retried = await self.again(run, record)
            if retried is not None:
                return retried
            await self.give_up(
                run,
                f"The source {outcome.host} could not bring the guest back: {outcome.error}",
                before=record,
            )
            return None
        values = {
            "vm_state": self.settled(run),
            "task_state": None,
            "power_state": power_state(bool(run.typed(MovePayload).power_on)),
            "old_flavor": None,
            "new_flavor": None,
        }
        writes = chain(
            move_migration(run, {"status": _M.REVERTED}, only_from=[_M.REVERTING]),
            set_instance(run, values, expected_task_state=self.task_states),
            record_event(run, "compute_finish_revert_resize", host=outcome.host),
            finish_action(run, ok=True),
        )
        await run.finish(TaskStatus.SUCCEEDED, writes=writes)
        return None

    async def give_up(self, run: Run, message: str, *, before: Writes | None = None) -> None:
        """ERROR where the instance is placed now (the destination before
        ``revert_source``, the source after), claims only there."""
        payload = run.typed(MovePayload)
        writes = chain(
            before,
            # Still on the destination: the source's claim is for nothing now.
            # On the source already: the migration holds nothing any more.
            drop_source_claim(payload.migration_uuid) if payload.migration_uuid else None,
            set_migration_if_any(run, {"status": _M.ERROR}),
            set_instance_if_ours(
                run,
                {
                    "vm_state": VMState.ERROR,
                    "task_state": None,
                    "old_flavor": None,
                    "new_flavor": None,
                },
                self.task_states,
            ),
            record_fault(run, message),
            record_event(run, self.conductor_event, ok=False, details=message),
            finish_action(run, ok=False),
        )
        await run.finish(TaskStatus.FAILED, last_error=message, writes=writes)
        LOG.info("%r: %s", run, message)
        await notify_error(run, self.error_event, message)

    async def expire(self, run: Run) -> None:
        if run.typed(MovePayload).source is None:
            payload = await self.prepare(run)
            if payload is None:
                return
            run.keep(payload)
        await self.give_up(run, "The revert did not finish before its deadline")
