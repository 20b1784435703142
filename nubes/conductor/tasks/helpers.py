"""Small pieces the task kinds share: the instance a task works on, notifications."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from nubes import exception
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.base import Run, Writes, steps
from nubes.conductor.tasks.payloads import Outcome, TaskPayload
from nubes.conductor.tasks.states import FIRST_STEP, TaskKind
from nubes.context import RequestContext
from nubes.db import group_commit
from nubes.db.api import actions as actions_api
from nubes.db.api import instances as instances_api
from nubes.db.api import tasks as tasks_api
from nubes.db.engine import Connection
from nubes.db.group_commit import CommitPart, Write
from nubes.objects import states
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState, TaskState, VMState
from nubes.step_end import InstanceEnd

LOG = logging.getLogger(__name__)


async def load_instance(run: Run, *, fresh: bool = False) -> dict[str, Any] | None:
    """The task's instance row, or None once it is deleted.

    ``fresh``: the row read in the transaction of the run's claim or last
    commit will do, if there is one (:attr:`Run.fresh_instance`, taken once).
    """
    assert run.instance_uuid is not None
    if fresh:
        row, run.fresh_instance = run.fresh_instance, None
        if row is not None:
            return dict(row)
    # Through the one grouped-read seam: a task reads its instance at each
    # step's send and at its close (the reported end is checked against it),
    # and a read of its own per read cost a transaction each on every build.
    return await group_commit.fetch(
        run.engine.db, run.instance_uuid, instances_api.get_read(run.instance_uuid)
    )


def instance_object(row: dict[str, Any]) -> Instance:
    """The row as the object compute hosts are sent (columns the object has
    no field for are left out by the load itself)."""
    return Instance._from_db(row)


def set_instance(
    run: Run,
    values: dict[str, Any],
    *,
    expected_task_state: Sequence[str | None] | None = None,
    expected_vm_state: Sequence[str | None] | None = None,
) -> Write:
    """A write of instance fields, compare-and-set on the states, for a commit."""

    kwargs: dict[str, Any] = {}
    if expected_task_state is not None:
        kwargs["expected_task_state"] = list(expected_task_state)
    if expected_vm_state is not None:
        kwargs["expected_vm_state"] = list(expected_vm_state)
    uuid = run.instance_uuid
    assert uuid is not None

    async def missed(conn: Connection) -> None:
        raise await _diagnose(conn, uuid)

    return instances_api.update_write(uuid, values, missed=missed, **kwargs)


def reported_end(
    outcome: Outcome, row: Mapping[str, Any] | None, busy: Sequence[TaskState]
) -> InstanceEnd | None:
    """The end state the host reported with a successful step, to write with
    the task's close, checked against the instance ``row`` read for that
    close. None when there is nothing to write: the host reported none (it
    saved the end itself, as a host of an older release does, or had nothing
    to do), the instance is gone, or it is no longer in one of ``busy``
    (saved already, or moved on by someone else: a reset-state). Invalid
    when the end is not a vm_state and power state, or not one the state
    table lets the instance's current state end in."""
    try:
        end = InstanceEnd.from_details(outcome.details)
        if end is None:
            return None
        vm_state = VMState(end.vm_state)
        if end.power_state is not None:
            PowerState(end.power_state)
    except ValueError as exc:
        raise exception.Invalid(reason=f"{outcome.host} reported an end state: {exc}") from None
    if row is None or row["task_state"] not in busy:
        return None
    current = states.as_state(row["vm_state"], row["task_state"])
    if not states.is_allowed(current, (vm_state, None)):
        raise exception.Invalid(
            reason=f"{outcome.host} reported an end state {vm_state} that "
            f"{states.format_state(current)} may not end in"
        )
    return end


def end_writes(run: Run, end: InstanceEnd | None, row: Mapping[str, Any] | None) -> list[Write]:
    """The write of a reported end (:func:`reported_end`, checked against
    ``row``) for the commit that closes the task, so the instance drops its
    task_state in the transaction that ends the task (:mod:`nubes.step_end`).
    Compare-and-set on the row's states: matching nothing is no error, the
    instance was moved on since (a reset-state, or a late save of a host)."""
    if end is None or row is None:
        return []
    values: dict[str, Any] = {"vm_state": end.vm_state, "task_state": None}
    if end.power_state is not None:
        values["power_state"] = end.power_state
    assert run.instance_uuid is not None
    was = (row["vm_state"], row["task_state"])

    async def moved_on(conn: Connection) -> None:
        LOG.info("%r: the instance is no longer %s/%s; its end is not written", run, *was)

    return [
        instances_api.update_write(
            run.instance_uuid,
            values,
            missed=moved_on,
            expected_vm_state=[row["vm_state"]],
            expected_task_state=[row["task_state"]],
        )
    ]


async def _diagnose(conn: Connection, uuid: str) -> Exception:
    try:
        row = await instances_api.get_by_uuid(conn, uuid)
    except exception.InstanceNotFound as exc:
        return exc
    return exception.InstanceUpdateConflict(
        instance_uuid=uuid,
        expected={"task_state": "the task's own"},
        actual={"vm_state": row["vm_state"], "task_state": row["task_state"]},
    )


def chain(*writes: Writes | None) -> list[CommitPart]:
    """Several writes as one, in order."""
    return steps(*writes)


def event_writes(
    run: Run,
    name: str,
    *,
    ok: bool = True,
    details: str | None = None,
    host: str | None = None,
) -> list[Write]:
    """:meth:`Run.event` as writes for a commit."""
    return run.event_writes(name, ok=ok, details=details, host=host)


def finish_action_writes(run: Run, *, ok: bool = True) -> list[Write]:
    """:meth:`Run.finish_action` as writes for a commit."""
    return run.finish_action_writes(ok=ok)


async def notify_error(run: Run, event_type: str, message: str) -> None:
    """An ``*.error`` notification about the task's instance (never fails the task)."""
    try:
        from nubes.notifications.objects import InstanceActionPayload

        row = await load_instance(run)
        if row is None or run.instance_uuid is None:
            return
        inst = instance_object(row)
        payload = InstanceActionPayload.from_instance_and_fault(
            inst, exception.NubesError(message=message)
        )
        await run.engine.notifier.error(run.ctxt, event_type, payload)
    except Exception as exc:
        LOG.warning("%r: could not notify %s: %s", run, event_type, exc)


async def record_system_task(
    conn: Connection,
    uuid: str,
    kind: TaskKind,
    action: str,
    payload: TaskPayload,
    deadline: dt.datetime,
) -> int:
    """A task the conductor starts on its own (a periodic's): the instance
    action under the owner's project with an admin context, and the task at
    its first step; the task's id."""
    instance = await instances_api.get_by_uuid(conn, uuid)
    ctxt = RequestContext(project_id=instance["project_id"], roles=["admin"])
    await actions_api.action_start(
        conn,
        instance_uuid=uuid,
        action=action,
        request_id=ctxt.request_id,
        project_id=ctxt.project_id,
    )
    task = await tasks_api.create(
        conn,
        kind=kind.value,
        instance_uuid=uuid,
        step=FIRST_STEP[kind].value,
        payload=payloads.encode(payload),
        context=ctxt.to_record(),
        deadline=deadline,
    )
    return int(task["id"])
