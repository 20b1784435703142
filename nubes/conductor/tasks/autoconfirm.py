"""Confirming resizes nobody confirmed: ``[DEFAULT] resize_confirm_window``.

Nova's ``_poll_unconfirmed_resizes``, done by the conductors: every so often
each conductor's task engine looks for migrations that have been
``finished`` (the instance RESIZED, waiting for its user) for longer than
the window and starts a ``confirm_resize`` task for each, as the API does
for a user's confirm: instance task_state ``resize_confirming``, migration
``confirming``, action ``confirmResize`` and the task, in one transaction
per migration. The instance's compare-and-set (RESIZED, no task) and the one
active task per instance make a race with the user's own confirm or revert,
or with another conductor's sweep, harmless: the loser's transaction rolls
back and changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING

from nubes import exception
from nubes.conductor.tasks.helpers import record_system_task
from nubes.conductor.tasks.payloads import MovePayload
from nubes.conductor.tasks.states import TaskKind
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.engine import Connection, Database
from nubes.db.types import utcnow
from nubes.objects.states import (
    MigrationStatus,
    MigrationType,
    TaskState,
    VMState,
    check_migration_status,
)

if TYPE_CHECKING:
    from nubes.conductor.tasks.engine import TaskEngine

LOG = logging.getLogger(__name__)

#: Migrations confirmed per sweep at most (the next sweep takes the rest).
BATCH = 100
#: The action the confirm is recorded as (the API's name for a user's confirm).
ACTION = "confirmResize"
#: Longest wait between two sweeps, whatever the window.
MAX_INTERVAL = 60.0


def interval(window: float, poll_interval: float) -> float:
    """Seconds between sweeps: half the window, within [poll interval, a minute]."""
    return min(max(window / 2, poll_interval), MAX_INTERVAL)


async def _start_confirm(conn: Connection, migration_id: int, deadline: dt.datetime) -> int | None:
    """Record the confirm of one migration; its task id, or None if it is no longer due."""
    row = await migrations_api.get_by_id(conn, migration_id)
    if row["status"] != MigrationStatus.FINISHED:
        return None
    uuid = row["instance_uuid"]
    moved = await instances_api.try_update(
        conn,
        uuid,
        {"task_state": TaskState.RESIZE_CONFIRMING.value},
        expected_vm_state=[VMState.RESIZED.value],
        expected_task_state=[None],
    )
    if not moved:
        return None  # the user is doing something with it, or it is gone
    check_migration_status(
        row["migration_type"], row["status"], MigrationStatus.CONFIRMING, row["id"]
    )
    await migrations_api.update(conn, row["id"], {"status": MigrationStatus.CONFIRMING.value})
    return await record_system_task(
        conn, uuid, TaskKind.CONFIRM_RESIZE, ACTION, MovePayload(migration_id=row["id"]), deadline
    )


async def confirm_due(
    db: Database,
    *,
    window: float,
    task_deadline: float,
    now: dt.datetime | None = None,
    limit: int = BATCH,
) -> list[int]:
    """Start confirming every migration finished more than ``window`` seconds
    ago; the ids of the tasks made."""
    now = now or utcnow()
    async with db.reader() as conn:
        due = await migrations_api.ids_finished_before(
            conn,
            now - dt.timedelta(seconds=window),
            [MigrationType.MIGRATION.value, MigrationType.RESIZE.value],
            limit,
        )
    made: list[int] = []
    deadline = now + dt.timedelta(seconds=task_deadline)
    for migration_id in due:
        try:
            async with db.writer() as conn:
                task_id = await _start_confirm(conn, migration_id, deadline)
        except (exception.Conflict, exception.NotFound, exception.Invalid) as exc:
            # Another confirm (the user's, another conductor's) got there first.
            LOG.debug("migration %s: not confirmed automatically: %s", migration_id, exc)
            continue
        if task_id is not None:
            LOG.info(
                "migration %s unconfirmed for %ss: confirming it (task %s)",
                migration_id,
                window,
                task_id,
            )
            made.append(task_id)
    return made


async def sweep_forever(engine: TaskEngine) -> None:
    """The engine's periodic sweep: confirm what is due, then claim those tasks."""
    window = float(engine.conf.resize_confirm_window)
    task_deadline = float(engine.conf.conductor.task_deadline)
    pause = interval(window, engine.poll_interval)
    while True:
        await asyncio.sleep(pause)
        try:
            made = await confirm_due(engine.db, window=window, task_deadline=task_deadline)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOG.warning("could not confirm unconfirmed resizes: %s", exc)
            continue
        if made:
            engine.kick(made)
