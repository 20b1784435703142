"""Small pieces the task kinds share: the instance a task works on, notifications."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from nubes import exception
from nubes.conductor.tasks.base import CLAIMED_INSTANCE, Run, UnitWrites, Writes
from nubes.db.api import actions as actions_api
from nubes.db.api import instances as instances_api
from nubes.db.engine import Connection
from nubes.db.group_commit import Dialect, UnitStatement
from nubes.objects.instance import Instance

LOG = logging.getLogger(__name__)


async def load_instance(run: Run, *, claimed: bool = False) -> dict[str, Any] | None:
    """The task's instance row, or None once it is deleted.

    ``claimed``: the row read with the task's claim will do, if there is one
    (taken once: the first step of a run, before it wrote anything).
    """
    assert run.instance_uuid is not None
    if claimed:
        row = run.cache.pop(CLAIMED_INSTANCE, None)
        if row is not None:
            return dict(row)
    try:
        async with run.engine.db.reader() as conn:
            return await instances_api.get_by_uuid(conn, run.instance_uuid)
    except exception.InstanceNotFound:
        return None


def instance_object(row: dict[str, Any]) -> Instance:
    """The row as the object compute hosts are sent."""
    inst = Instance._from_db({k: v for k, v in row.items() if k in Instance.obj_fields})
    return inst


def set_instance(
    run: Run,
    values: dict[str, Any],
    *,
    expected_task_state: Sequence[str | None] | None = None,
    expected_vm_state: Sequence[str | None] | None = None,
) -> Writes:
    """A write of instance fields, compare-and-set on the states, for a commit's transaction."""

    kwargs: dict[str, Any] = {}
    if expected_task_state is not None:
        kwargs["expected_task_state"] = list(expected_task_state)
    if expected_vm_state is not None:
        kwargs["expected_vm_state"] = list(expected_vm_state)

    async def write(conn: Connection) -> None:
        assert run.instance_uuid is not None
        if not await instances_api.try_update(conn, run.instance_uuid, values, **kwargs):
            raise await _diagnose(conn, run.instance_uuid)

    def statements(dialect: Dialect) -> list[UnitStatement]:
        assert run.instance_uuid is not None
        return [instances_api.prepared_update(dialect, run.instance_uuid, values, **kwargs)]

    return UnitWrites(write, statements)


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


def chain(*writes: Writes | None) -> Writes:
    """Several writes as one, in order (a :class:`UnitWrites` if each of them is)."""

    async def write(conn: Connection) -> None:
        for w in writes:
            if w is not None:
                await w(conn)

    parts = [w for w in writes if w is not None]
    if not all(isinstance(w, UnitWrites) for w in parts):
        return write

    def statements(dialect: Dialect) -> list[UnitStatement]:
        return [s for w in parts if isinstance(w, UnitWrites) for s in w.statements(dialect)]

    return UnitWrites(write, statements)


def event_writes(
    run: Run,
    name: str,
    *,
    ok: bool = True,
    details: str | None = None,
    host: str | None = None,
) -> Writes:
    """:meth:`Run.event` as writes for a commit (grouped when the commit can be)."""

    async def write(conn: Connection) -> None:
        await run.event(conn, name, ok=ok, details=details, host=host)

    def statements(dialect: Dialect) -> list[UnitStatement]:
        if run.instance_uuid is None:
            return []
        return actions_api.prepared_event_record(
            dialect,
            instance_uuid=run.instance_uuid,
            request_id=run.request_id,
            event=name,
            host=host or run.engine.host,
            result=actions_api.RESULT_SUCCESS if ok else actions_api.RESULT_ERROR,
            details=details,
        )

    return UnitWrites(write, statements)


def finish_action_writes(run: Run, *, ok: bool = True) -> Writes:
    """:meth:`Run.finish_action` as writes for a commit (grouped when the commit can be)."""

    async def write(conn: Connection) -> None:
        await run.finish_action(conn, ok=ok)

    def statements(dialect: Dialect) -> list[UnitStatement]:
        if run.instance_uuid is None:
            return []
        return [
            actions_api.prepared_action_finish(
                dialect,
                instance_uuid=run.instance_uuid,
                request_id=run.request_id,
                message=None if ok else actions_api.ACTION_ERROR_MESSAGE,
            )
        ]

    return UnitWrites(write, statements)


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
