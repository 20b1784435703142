"""How a live migration ends: moved to the destination, or rolled back to the source."""

from __future__ import annotations

import logging

from nubes import exception
from nubes.conductor.tasks import moves
from nubes.conductor.tasks.base import (
    Run,
    Writes,
    run_writes,
)
from nubes.conductor.tasks.helpers import chain, instance_object, load_instance, notify_error
from nubes.conductor.tasks.live_migrate_view import instance_write, live_payload
from nubes.conductor.tasks.payloads import (
    LiveRollback,
    Outcome,
)
from nubes.conductor.tasks.states import Step
from nubes.db.api import migrations as migrations_api
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection
from nubes.objects.states import (
    MIGRATION_TRANSITIONS,
    MigrationStatus,
    MigrationType,
    VMState,
)

LOG = logging.getLogger(__name__)

_M = MigrationStatus

#: Tries of a step that cleans up (post_dest, post_source, rollback_dest)
#: before the task gives up on it and ends with what it has.
CLEANUP_TRIES = 3
#: The conductor's event of the move (Nova's name), recorded when it ends.
EVENT = "conductor_live_migrate_instance"
ERROR_NOTIFICATION = "instance.live_migration.error"
ABORT_NOTIFICATION = "instance.live_migration_abort.end"
#: Statuses the task may end a migration from (it ends in a final one).
_OPEN = (_M.ACCEPTED, _M.PREPARING, _M.RUNNING, _M.CANCELLING)
_LIVE = MigrationType.LIVE_MIGRATION.value


def failed(what: str, outcome: Outcome) -> str:
    return f"The {what} on {outcome.host} failed: {outcome.error}"


def end_migration(run: Run, preferred: MigrationStatus, fallback: MigrationStatus) -> Writes:
    """The migration's final status: ``preferred`` if its table allows it from
    where the migration is now, else ``fallback`` (a migration already final
    is left alone).

    As a description a grouped commit can carry: the common case, one
    UPDATE to ``preferred`` required to find the live migration in an open
    status that may go there; anything else runs the write below, which
    reads where the migration is and decides.
    """

    async def write(conn: Connection) -> None:
        row = await migrations_api.get_by_id(conn, moves.migration_id(run))
        if row["status"] not in _OPEN:
            return
        table = MIGRATION_TRANSITIONS[MigrationType(row["migration_type"])]
        allowed = table[MigrationStatus(row["status"])]
        target = preferred if preferred in allowed else fallback
        await run_writes(conn, moves.set_migration(run, {"status": target}, only_from=_OPEN))

    return moves.set_migration(
        run, {"status": preferred}, only_from=_OPEN, migration_type=_LIVE, missed=write
    )


async def end_moved(run: Run, status: TaskStatus | None = None) -> None:
    """End with the instance on the destination: the migration's claim dropped.

    Errors of the clean-up steps leave the migration ``error`` with a
    fault; a destination that never adopted the guest leaves the
    instance ``error`` there (as Nova does).
    """
    payload = live_payload(run)
    errors = payload.errors
    adopted = all(e.step != Step.POST_DEST for e in errors)
    vm_state = payload.vm_state if adopted else VMState.ERROR
    message = "; ".join(e.error for e in errors)

    async def fault(conn: Connection) -> None:
        await run.fault(conn, message)

    # Descriptions all (a fault only when something failed): the end commits
    # grouped with other tasks' where the database runs units.
    writes = chain(
        moves.drop_source_claim(payload.migration_uuid or ""),
        end_migration(run, _M.ERROR if errors else _M.COMPLETED, _M.ERROR),
        instance_write(run, {"vm_state": vm_state, "task_state": None, "progress": 100}),
        fault if errors else None,
        run.event_writes(EVENT, ok=not errors, details=message or None),
        run.finish_action_writes(ok=not errors),
    )
    final = status or (TaskStatus.FAILED if errors else TaskStatus.SUCCEEDED)
    await run.finish(final, last_error=message or None, writes=writes, payload=payload)
    if errors:
        await notify_error(run, ERROR_NOTIFICATION, message)
    LOG.info("%r: live migration done (%s)", run, message or "completed")


async def to_rollback(
    run: Run,
    message: str,
    *,
    cancelled: bool = False,
    expired: bool = False,
    writes: Writes | None = None,
) -> str:
    """Commit ``rollback_dest``: asking the destination to undo its preparation,
    if it was asked to prepare."""
    payload = live_payload(run)
    payload.rollback = LiveRollback(
        error=message, cancelled=cancelled, expired=expired, since=run.step
    )
    LOG.info("%r: rolling back: %s", run, message)
    if payload.prepared:
        dest = payload.dest_place
        return await moves.ask(
            run, Step.ROLLBACK_DEST, dest.host, node=dest.node, payload=payload, writes=writes
        )
    payload.awaiting = payload.outcome = None
    return await run.commit(Step.ROLLBACK_DEST, payload=payload, writes=writes)


def note_leftover(run: Run, text: str) -> None:
    payload = live_payload(run)
    rollback = payload.rollback or LiveRollback(error=text)
    rollback.details = "; ".join(filter(None, [rollback.details, text]))
    payload.rollback = rollback
    run.keep(payload)


async def give_up(run: Run, message: str, *, cancelled: bool = False) -> None:
    """End at ``schedule`` (nothing asked of any host yet)."""
    payload = live_payload(run)
    payload.rollback = LiveRollback(error=message, cancelled=cancelled, since=run.step)
    run.keep(payload)
    await end_rolled_back(run)


async def end_rolled_back(run: Run) -> None:
    """End with the instance on the source as it was and the claims back there."""
    payload = live_payload(run)
    rollback = payload.rollback
    if rollback is None:
        raise exception.Invalid(reason=f"{run!r} ends rolled back without a reason")
    cancelled, message = rollback.cancelled, rollback.error
    if rollback.expired:
        status = TaskStatus.ROLLED_BACK
    else:
        status = TaskStatus.CANCELLED if cancelled else TaskStatus.FAILED
    details = "\n".join(filter(None, [message, rollback.details]))

    async def history(conn: Connection) -> None:
        await run.fault(conn, message, details=details)
        await run.event(conn, EVENT, ok=False, details=details)
        await run.finish_action(conn, ok=False)

    writes = chain(
        moves.claims_back_to_source(run.instance_uuid or "", payload.migration_uuid or ""),
        end_migration(run, _M.CANCELLED if cancelled else _M.FAILED, _M.FAILED),
        instance_write(
            run,
            {
                "vm_state": payload.vm_state or VMState.ACTIVE,
                "task_state": None,
                "progress": None,
            },
        ),
        history,
    )
    await run.finish(status, last_error=message, writes=writes, payload=payload)
    LOG.info("%r: live migration %s: %s", run, status, message)
    if cancelled:
        await notify_info(run, ABORT_NOTIFICATION)
    else:
        await notify_error(run, ERROR_NOTIFICATION, message)


async def notify_info(run: Run, event_type: str) -> None:
    """An info notification about the task's instance (never fails the task)."""
    try:
        from nubes.notifications.objects import InstanceActionPayload

        row = await load_instance(run)
        if row is None:
            return
        payload = InstanceActionPayload.from_instance_and_fault(instance_object(row), None)
        await run.engine.notifier.info(run.ctxt, event_type, payload)
    except Exception as exc:
        LOG.warning("%r: could not notify %s: %s", run, event_type, exc)
