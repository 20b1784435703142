"""Deleting for good what was soft-deleted long enough: ``[DEFAULT] reclaim_instance_interval``.

Nova's ``_reclaim_queued_deletes``, done by the conductors: with the
interval above 0 a user's delete only soft-deletes a server (SOFT_DELETED,
its guest off, its resources kept; ``restore`` brings it back). Every so
often each conductor's task engine looks for servers soft-deleted (their
last change) longer ago than the interval and starts a ``delete`` task for
each, as the API does for a user's delete: task_state ``deleting``, the
action ``delete`` and the task, in one transaction per server. The
compare-and-set (SOFT_DELETED, no task) and the one active task per
instance make a race with the user's restore or force delete, or with
another conductor's sweep, harmless: the loser's transaction rolls back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING

from nubes import exception
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.payloads import DeletePayload
from nubes.conductor.tasks.states import FIRST_STEP, TaskKind
from nubes.context import RequestContext
from nubes.db.api import actions, tasks
from nubes.db.api import instances as instances_api
from nubes.db.engine import Connection, Database
from nubes.db.types import utcnow
from nubes.objects.states import TaskState, VMState

if TYPE_CHECKING:
    from nubes.conductor.tasks.engine import TaskEngine

LOG = logging.getLogger(__name__)

#: Servers reclaimed per sweep at most (the next sweep takes the rest).
BATCH = 100
#: Longest wait between two sweeps, whatever the interval.
MAX_INTERVAL = 60.0


def interval(reclaim: float, poll_interval: float) -> float:
    """Seconds between sweeps: half the interval, within [poll interval, a minute]."""
    return min(max(reclaim / 2, poll_interval), MAX_INTERVAL)


async def _start_delete(conn: Connection, uuid: str, deadline: dt.datetime) -> int | None:
    """Record the delete of one server; its task id, or None if it is no longer due."""
    moved = await instances_api.try_update(
        conn,
        uuid,
        {"task_state": TaskState.DELETING.value},
        expected_vm_state=[VMState.SOFT_DELETED.value],
        expected_task_state=[None],
    )
    if not moved:
        return None  # restored, force-deleted, or another conductor took it
    instance = await instances_api.get_by_uuid(conn, uuid)
    ctxt = RequestContext(project_id=instance["project_id"], roles=["admin"])
    await actions.action_start(
        conn,
        instance_uuid=uuid,
        action="delete",
        request_id=ctxt.request_id,
        project_id=ctxt.project_id,
    )
    task = await tasks.create(
        conn,
        kind=TaskKind.DELETE.value,
        instance_uuid=uuid,
        step=FIRST_STEP[TaskKind.DELETE].value,
        payload=payloads.encode(DeletePayload()),
        context=ctxt.to_record(),
        deadline=deadline,
    )
    return int(task["id"])


async def reclaim_due(
    db: Database,
    *,
    reclaim: float,
    task_deadline: float,
    now: dt.datetime | None = None,
    limit: int = BATCH,
) -> list[int]:
    """Start deleting every server soft-deleted more than ``reclaim`` seconds
    ago; the ids of the tasks made."""
    now = now or utcnow()
    async with db.reader() as conn:
        due = await instances_api.uuids_soft_deleted_before(
            conn, now - dt.timedelta(seconds=reclaim), limit
        )
    made: list[int] = []
    deadline = now + dt.timedelta(seconds=task_deadline)
    for uuid in due:
        try:
            async with db.writer() as conn:
                task_id = await _start_delete(conn, uuid, deadline)
        except (exception.Conflict, exception.NotFound, exception.Invalid) as exc:
            LOG.debug("instance %s: not reclaimed: %s", uuid, exc)
            continue
        if task_id is not None:
            LOG.info(
                "instance %s soft-deleted over %ss ago: deleting it (task %s)",
                uuid,
                reclaim,
                task_id,
            )
            made.append(task_id)
    return made


async def sweep_forever(engine: TaskEngine) -> None:
    """The engine's periodic sweep: reclaim what is due, then claim those tasks."""
    reclaim = float(engine.conf.reclaim_instance_interval)
    task_deadline = float(engine.conf.conductor.task_deadline)
    pause = interval(reclaim, engine.poll_interval)
    while True:
        await asyncio.sleep(pause)
        try:
            made = await reclaim_due(engine.db, reclaim=reclaim, task_deadline=task_deadline)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOG.warning("could not reclaim soft-deleted instances: %s", exc)
            continue
        if made:
            engine.kick(made)
