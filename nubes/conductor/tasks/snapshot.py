"""createImage and createBackup: the instance's host uploads its guest's disk to one image.

The API records the image (queued, with Nova's properties) and the task;
the task has two steps (see ``docs/tasks.md``):

- ``snapshot``: commit the try (host, until when), then send the host
  ``snapshot_instance`` with an upload grant for that one image
  (:func:`nubes.grants.issue_upload`, signed for the instance's host only):
  the host copies the guest's disk, walks the instance through
  image_pending_upload and image_uploading, and uploads the copy to the
  image API, which takes the image queued -> saving -> active. The host
  reports, with the instance's end (its vm_state, task_state None), which
  the commit that closes the task writes (:mod:`nubes.step_end`).
- ``rotate`` (a backup with a rotation): the oldest backups of the same
  server and ``backup_type`` beyond ``rotation`` are deleted, as Nova's
  ``_rotate_backups`` does; the instance stays in image_uploading until the
  task closes.

A failure, no report in time or the deadline deletes the image (Nova
deletes a snapshot whose upload failed), drops the image_* task_state the
instance is still in, and records a fault, an instance-action event and an
``instance.snapshot.error`` notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from nubes import config, exception, grants
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
from nubes.conductor.tasks.payloads import SnapshotPayload, expect_report
from nubes.conductor.tasks.states import Step, TaskKind
from nubes.db.api import images as images_db
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection
from nubes.objects.states import TaskState

if TYPE_CHECKING:
    from nubes.conductor.tasks.engine import TaskEngine

LOG = logging.getLogger(__name__)

#: The task_states a snapshot or backup holds the instance in.
SNAPSHOT_TASK_STATES = (
    TaskState.IMAGE_SNAPSHOT,
    TaskState.IMAGE_BACKUP,
    TaskState.IMAGE_PENDING_UPLOAD,
    TaskState.IMAGE_UPLOADING,
)


@task_kind
class SnapshotTask(Task):
    kind = TaskKind.SNAPSHOT

    def step_defs(self) -> list[StepDef]:
        return [
            StepDef(Step.SNAPSHOT, self.snapshot, self.revert),
            StepDef(Step.ROTATE, self.rotate),
        ]

    async def snapshot(self, run: Run) -> str | None:
        payload = run.typed(SnapshotPayload)
        row: dict[str, Any] | None = None
        if not run.awaiting:
            row = await load_instance(run)
            if row is None:
                await delete_image(self.engine, payload.image_id)
                await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
                return None
            if not row["host"]:
                await self.fail(run, "The instance is not on any host")
                return None
            waiting = expect_report(
                run.payload,
                step=Step.SNAPSHOT,
                attempt=1,
                host=row["host"],
                node=row["node"],
                timeout=self.engine.compute_step_timeout,
            )
            return await run.commit(Step.SNAPSHOT, payload=waiting)
        awaited = run.awaited()

        async def send() -> None:
            # The row just read, on to the report (a resumed run reads it anew).
            instance = row or await load_instance(run)
            if instance is None:
                raise exception.InstanceNotFound(instance_id=run.instance_uuid)
            grant = upload_grant(self.engine, payload.image_id, awaited.host)
            await self.engine.compute.snapshot_instance(
                run.ctxt,
                awaited.host,
                instance_object(instance),
                awaited.key(run.id),
                image_id=payload.image_id,
                image_type=payload.image_type,
                grant=grant,
            )

        outcome = await run.wait_for_report(send)
        if outcome is None:
            return run.step
        if not outcome.ok:
            await self.fail(run, f"snapshot on {outcome.host} failed: {outcome.error}")
            return None
        try:
            reported_end(outcome, await load_instance(run), SNAPSHOT_TASK_STATES)
        except exception.Invalid as exc:
            await self.fail(run, f"snapshot on {outcome.host}: {exc}")
            return None
        await record_disk_format(self.engine, payload.image_id, outcome.details)
        if payload.image_type == "backup" and payload.rotation is not None:
            return await run.commit(Step.ROTATE)
        await self.succeed(run)
        return None

    async def succeed(self, run: Run) -> None:
        """End the task with the instance idle again, as its host reported it,
        in one commit (:mod:`nubes.step_end`)."""
        outcome = payloads.reported(run.payload)
        row = await load_instance(run)
        try:
            end = None if outcome is None else reported_end(outcome, row, SNAPSHOT_TASK_STATES)
        except exception.Invalid:
            end = None  # read and checked before the rotation: moved on since
        await run.finish(
            TaskStatus.SUCCEEDED,
            writes=chain(end_writes(run, end, row), run.finish_action_writes()),
        )

    async def rotate(self, run: Run) -> str | None:
        """Delete the oldest backups of this server and backup type beyond
        the rotation (idempotent: a repeat finds fewer to delete)."""
        payload = run.typed(SnapshotPayload)
        assert payload.rotation is not None and run.instance_uuid is not None
        # A rotation comes only with a backup, which always has a type.
        assert payload.backup_type is not None
        async with self.engine.db.reader() as conn:
            # The API made the backup owned by the requester's project, as
            # Glance does the image Nova creates: earlier backups are there.
            backups = await images_db.get_all(
                conn,
                all_visible=True,
                filters={"owner": run.ctxt.project_id},
                properties={
                    "image_type": "backup",
                    "instance_uuid": run.instance_uuid,
                    "backup_type": payload.backup_type,
                },
            )
        # Newest first; on a tie of created_at the image this task made
        # counts as the newest (it is kept).
        backups.sort(key=lambda r: (r["created_at"], r["id"] == payload.image_id), reverse=True)
        for row in backups[payload.rotation :]:
            LOG.info("%r: rotating out backup %s", run, row["id"])
            await delete_image(self.engine, row["id"])
        await self.succeed(run)
        return None

    async def revert(self, run: Run) -> None:
        """Drop the image_* task_state (if it is still ours) and the image."""
        assert run.instance_uuid is not None
        await delete_image(self.engine, run.typed(SnapshotPayload).image_id)
        write = set_instance(run, {"task_state": None}, expected_task_state=SNAPSHOT_TASK_STATES)
        try:
            async with self.engine.db.writer() as conn:
                await run_writes(conn, write)
        except (exception.InstanceUpdateConflict, exception.InstanceNotFound):
            pass  # the host finished it, or someone else moved it on

    async def fail(self, run: Run, message: str, *, status: TaskStatus = TaskStatus.FAILED) -> None:
        await delete_image(self.engine, run.typed(SnapshotPayload).image_id)

        async def history(conn: Connection) -> None:
            await run.fault(conn, message)
            await run.event(conn, "conductor_snapshot_failed", ok=False, details=message)
            await run.finish_action(conn, ok=False)

        async def revert(conn: Connection) -> None:
            write = set_instance(
                run, {"task_state": None}, expected_task_state=SNAPSHOT_TASK_STATES
            )
            try:
                await run_writes(conn, write)
            except exception.InstanceUpdateConflict:
                pass  # the host already cleared it

        await run.finish(status, last_error=message, writes=chain(revert, history))
        await notify_error(run, "instance.snapshot.error", message)

    async def expire(self, run: Run) -> None:
        await self.fail(
            run,
            "The snapshot did not finish before its deadline",
            status=TaskStatus.ROLLED_BACK,
        )


def upload_grant(engine: TaskEngine, image_id: str, host: str) -> str:
    """The grant with which ``host`` uploads the data of ``image_id``.

    Need-to-know: a grant to write this one image, for this host, for as long
    as an image grant lasts; nothing else of the image API.
    """
    conf = engine.conf
    return grants.issue_upload(conf.image_grant_secret, image_id, host, conf.image_grant_ttl)


async def record_disk_format(
    engine: TaskEngine, image_id: str, details: dict[str, Any] | None
) -> None:
    """The uploaded image's disk format, as the host's report says: the
    driver's (qcow2 from libvirt, raw from the fake), what a boot from the
    image reads it as. An image gone meanwhile is left gone."""
    disk_format = (details or {}).get("disk_format")
    if not disk_format:
        return
    async with engine.db.writer() as conn:
        with contextlib.suppress(exception.ImageNotFound):
            await images_db.update_fields(
                conn, image_id, {"disk_format": str(disk_format), "container_format": "bare"}
            )


async def delete_image(engine: TaskEngine, image_id: str) -> None:
    """An image a task made, record and data, gone (already gone is fine):
    a snapshot whose upload failed, an unshelved server's snapshot."""
    async with engine.db.writer() as conn:
        with contextlib.suppress(exception.ImageNotFound):
            await images_db.destroy(conn, image_id)
    path = config.image_data_dir(engine.conf) / image_id
    with contextlib.suppress(FileNotFoundError):
        await asyncio.to_thread(path.unlink)
