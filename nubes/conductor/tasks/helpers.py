"""Small pieces the task kinds share: the instance a task works on, notifications."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.conductor.tasks.base import Run, Writes
from nubes.db.api import instances as instances_api
from nubes.objects.instance import Instance

LOG = logging.getLogger(__name__)


async def load_instance(run: Run) -> dict[str, Any] | None:
    """The task's instance row, or None once it is deleted."""
    assert run.instance_uuid is not None
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

    async def write(conn: AsyncConnection) -> None:
        assert run.instance_uuid is not None
        kwargs: dict[str, Any] = {}
        if expected_task_state is not None:
            kwargs["expected_task_state"] = list(expected_task_state)
        if expected_vm_state is not None:
            kwargs["expected_vm_state"] = list(expected_vm_state)
        if not await instances_api.try_update(conn, run.instance_uuid, values, **kwargs):
            raise await _diagnose(conn, run.instance_uuid)

    return write


async def _diagnose(conn: AsyncConnection, uuid: str) -> Exception:
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
    """Several writes as one, in order."""

    async def write(conn: AsyncConnection) -> None:
        for w in writes:
            if w is not None:
                await w(conn)

    return write


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
