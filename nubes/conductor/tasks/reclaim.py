"""The conductors' periodic sweeps over idle instances: reclaiming what was
soft-deleted long enough (``[DEFAULT] reclaim_instance_interval``) and
offloading what was shelved long enough (``[DEFAULT] shelved_offload_time``).

Nova's ``_reclaim_queued_deletes`` and ``_poll_shelved_instances``, done by the
conductors: every so often each conductor's task engine looks for instances
idle in SOFT_DELETED (resp. SHELVED) since longer ago than the option says
and starts a ``delete`` (resp. ``shelve_offload``) task for each, as the API
does for a user's request: the task_state, the action and the task, in one
transaction per instance. The compare-and-set (that vm_state, no task) and
the one active task per instance make a race with the user's restore,
unshelve or delete, or with another conductor's sweep, harmless: the loser's
transaction rolls back and changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from typing import TYPE_CHECKING

from nubes import exception
from nubes.conductor.tasks.helpers import record_system_task
from nubes.conductor.tasks.payloads import DeletePayload, ShelvePayload, TaskPayload
from nubes.conductor.tasks.states import TaskKind
from nubes.db.api import instances as instances_api
from nubes.db.engine import Connection, Database
from nubes.db.types import utcnow
from nubes.objects.states import TaskState, VMState

if TYPE_CHECKING:
    from nubes.conductor.tasks.engine import TaskEngine

LOG = logging.getLogger(__name__)

#: Instances taken per sweep at most (the next sweep takes the rest).
BATCH = 100
#: Longest wait between two sweeps, whatever the option.
MAX_INTERVAL = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Sweep:
    """What one sweep looks for and what it starts."""

    #: The vm_state idle instances are found in.
    vm_state: VMState
    #: The task_state, task and action started for each.
    task_state: TaskState
    kind: TaskKind
    action: str
    payload: type[TaskPayload]


RECLAIM = Sweep(VMState.SOFT_DELETED, TaskState.DELETING, TaskKind.DELETE, "delete", DeletePayload)
OFFLOAD = Sweep(
    VMState.SHELVED,
    TaskState.SHELVING_OFFLOADING,
    TaskKind.SHELVE_OFFLOAD,
    "shelveOffload",
    ShelvePayload,
)


def interval(after: float, poll_interval: float) -> float:
    """Seconds between sweeps: half the option, within [poll interval, a minute]."""
    return min(max(after / 2, poll_interval), MAX_INTERVAL)


async def _start(conn: Connection, sweep: Sweep, uuid: str, deadline: dt.datetime) -> int | None:
    """Record the task of one instance; its id, or None if it is no longer due."""
    moved = await instances_api.try_update(
        conn,
        uuid,
        {"task_state": sweep.task_state.value},
        expected_vm_state=[sweep.vm_state.value],
        expected_task_state=[None],
    )
    if not moved:
        return None  # the user is doing something with it, or another conductor took it
    return await record_system_task(conn, uuid, sweep.kind, sweep.action, sweep.payload(), deadline)


async def start_due(
    db: Database,
    sweep: Sweep,
    *,
    after: float,
    task_deadline: float,
    now: dt.datetime | None = None,
    limit: int = BATCH,
) -> list[int]:
    """Start ``sweep``'s task for every instance idle in its state for more
    than ``after`` seconds; the ids of the tasks made."""
    now = now or utcnow()
    async with db.reader() as conn:
        due = await instances_api.uuids_idle_since(
            conn, sweep.vm_state.value, now - dt.timedelta(seconds=after), limit
        )
    made: list[int] = []
    deadline = now + dt.timedelta(seconds=task_deadline)
    for uuid in due:
        try:
            async with db.writer() as conn:
                task_id = await _start(conn, sweep, uuid, deadline)
        except (exception.Conflict, exception.NotFound, exception.Invalid) as exc:
            LOG.debug("instance %s: no %s: %s", uuid, sweep.kind, exc)
            continue
        if task_id is not None:
            LOG.info(
                "instance %s %s for over %ss: %s (task %s)",
                uuid,
                sweep.vm_state,
                after,
                sweep.kind,
                task_id,
            )
            made.append(task_id)
    return made


async def sweep_forever(engine: TaskEngine, sweep: Sweep, after: float) -> None:
    """The engine's periodic sweep: start what is due, then claim those tasks."""
    task_deadline = float(engine.conf.conductor.task_deadline)
    pause = interval(after, engine.poll_interval)
    while True:
        await asyncio.sleep(pause)
        try:
            made = await start_due(engine.db, sweep, after=after, task_deadline=task_deadline)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOG.warning("could not start %s tasks: %s", sweep.kind, exc)
            continue
        if made:
            engine.kick(made)
