"""Glance's tasks (``/v2/tasks``): an ``import`` task makes an image from
``input.image_properties`` and fills it from ``input.import_from`` with the
web-download import's code (:func:`nubes.api.image_import.import_image`:
one path for the data, its checks and its quotas).

A task's status is a state machine (:data:`TRANSITIONS`): pending ->
processing -> success or failure. Like an image import, the task runs
within the request that creates it, so the answer (201) already shows how
it ended; clients that poll for the end (Tempest's) find it there at once.
A failed task deletes the image it made: nothing half-imported is left
behind, nor counted against the project's image quotas. Tasks are Glance's
admin API (``tasks_api_access``), and an image's tasks are shown to those
who may see the image (``GET /v2/images/{id}/tasks``).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import uuid
from pathlib import Path
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import image_import, images, policy
from nubes.api.validation import validate
from nubes.api.views import iso_z
from nubes.context import RequestContext
from nubes.db.api import image_tasks as tasks_db
from nubes.db.api import images as images_db
from nubes.db.engine import Database
from nubes.db.types import utcnow

LOG = logging.getLogger(__name__)


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILURE = "failure"


#: Where a task may go from each status; success and failure are final.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.PROCESSING, TaskStatus.FAILURE}),
    TaskStatus.PROCESSING: frozenset({TaskStatus.SUCCESS, TaskStatus.FAILURE}),
    TaskStatus.SUCCESS: frozenset(),
    TaskStatus.FAILURE: frozenset(),
}
#: Glance's ``task_time_to_live``: how long a finished task says it is kept.
TIME_TO_LIVE = dt.timedelta(hours=48)
TYPES = ("import",)

CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": list(TYPES)},
        "input": {
            "type": "object",
            "properties": {
                "import_from": {"type": "string", "minLength": 1, "maxLength": 2048},
                "import_from_format": {"type": "string", "enum": list(images.DISK_FORMATS)},
                "image_properties": {"type": "object"},
            },
            "required": ["import_from", "image_properties"],
            "additionalProperties": False,
        },
    },
    "required": ["type", "input"],
    "additionalProperties": False,
}
LIST_FILTERS = ("type", "status")


def check_transition(start: TaskStatus, end: TaskStatus) -> None:
    if end not in TRANSITIONS[start]:
        raise exception.Conflict(reason=f"a task cannot go from {start} to {end}")


def task_view(row: dict[str, Any], *, full: bool = True) -> dict[str, Any]:
    """Glance's task; a listing leaves out its input, result and message."""
    out: dict[str, Any] = {
        "id": row["id"],
        "type": row["type"],
        "status": row["status"],
        "owner": row["owner"],
        "expires_at": iso_z(row["expires_at"]),
        "created_at": iso_z(row["created_at"]),
        "updated_at": iso_z(row["updated_at"] or row["created_at"]),
        "self": f"/v2/tasks/{row['id']}",
        "schema": "/v2/schemas/task",
    }
    if full:
        out.update(input=row["input"], result=row["result"], message=row["message"] or "")
    return out


def image_task_view(row: dict[str, Any]) -> dict[str, Any]:
    """A task as ``GET /v2/images/{id}/tasks`` lists it (Glance 2.12)."""
    return {
        "id": row["id"],
        "type": row["type"],
        "status": row["status"],
        "owner": row["owner"],
        "image_id": row["image_id"],
        "message": row["message"] or "",
        "result": row["result"],
        "expires_at": iso_z(row["expires_at"]),
        "created_at": iso_z(row["created_at"]),
        "updated_at": iso_z(row["updated_at"] or row["created_at"]),
    }


def _access(ctxt: RequestContext, action: str) -> None:
    policy.authorize(ctxt, action, policy.Rule.ADMIN)


def _image_values(task_input: dict[str, Any]) -> dict[str, Any]:
    """The image an import task makes: its properties, with the format of
    the data it fetches (nubes converts nothing, so the two must agree)."""
    values = dict(task_input["image_properties"])
    images.check_create_body(values)
    source = task_input.get("import_from_format")
    if source is not None:
        target = values.setdefault("disk_format", source)
        if target != source:
            raise exception.Invalid(
                reason=f"cannot convert {source} to {target}: import_from_format must be "
                "the image's disk_format"
            )
    return values


async def _move(
    db: Database, task_id: str, start: TaskStatus, end: TaskStatus, **values: Any
) -> None:
    check_transition(start, end)
    if end in (TaskStatus.SUCCESS, TaskStatus.FAILURE):
        values["expires_at"] = utcnow() + TIME_TO_LIVE
    async with db.writer() as conn:
        await tasks_db.update_status(conn, task_id, start, {"status": end.value, **values})


async def create_task(
    db: Database,
    conf: cfg.ConfigOpts,
    ctxt: RequestContext,
    body: Any,
    *,
    image_dir: Path,
    size_cap: int,
    allowed_hosts: list[str],
) -> dict[str, Any]:
    """``POST /v2/tasks``: check the input (400 before anything is
    written), make the image (within image_count_total, 413 otherwise),
    record the task, run the import and record how it ended."""
    _access(ctxt, "add_task")
    validate(body, CREATE_SCHEMA)
    task_input = body["input"]
    image_import.check_uri(task_input["import_from"], allowed_hosts)
    values = _image_values(task_input)
    # Protected only once it holds its data: a failed task deletes the image.
    protect = bool(values.pop("protected", False))
    image = await images.create_image(db, conf, ctxt, values)
    task_id = str(uuid.uuid4())
    async with db.writer() as conn:
        await tasks_db.create(
            conn,
            {
                "id": task_id,
                "type": body["type"],
                "status": TaskStatus.PENDING.value,
                "owner": ctxt.project_id or "",
                "image_id": image["id"],
                "input": task_input,
            },
        )
    await _move(db, task_id, TaskStatus.PENDING, TaskStatus.PROCESSING)
    method = {"name": "web-download", "uri": task_input["import_from"]}
    try:
        await image_import.import_image(
            db,
            ctxt,
            image["id"],
            {"method": method},
            conf=conf,
            image_dir=image_dir,
            size_cap=size_cap,
            allowed_hosts=allowed_hosts,
        )
    except exception.NubesError as exc:
        LOG.info("Import task %s failed: %s", task_id, exc)
        await _fail(db, ctxt, task_id, image["id"], image_dir, str(exc))
    except BaseException:
        # Not an error of the input (a bug, the request cancelled): the task
        # still ends, so none is left processing with no one to finish it.
        LOG.exception("Import task %s failed", task_id)
        await _fail(db, ctxt, task_id, image["id"], image_dir, "Internal error.")
        raise
    else:
        if protect:
            async with db.writer() as conn:
                await images_db.update_fields(conn, image["id"], {"protected": True})
        result = {"image_id": image["id"]}
        await _move(db, task_id, TaskStatus.PROCESSING, TaskStatus.SUCCESS, result=result)
    return await get_task(db, ctxt, task_id)


async def _fail(
    db: Database, ctxt: RequestContext, task_id: str, image_id: str, image_dir: Path, message: str
) -> None:
    await image_import.delete_image(db, ctxt, image_id, image_dir=image_dir)
    await _move(db, task_id, TaskStatus.PROCESSING, TaskStatus.FAILURE, message=message)


async def get_task(db: Database, ctxt: RequestContext, task_id: str) -> dict[str, Any]:
    _access(ctxt, "get_task")
    async with db.reader() as conn:
        row = await tasks_db.get(conn, task_id)
    if row is None:
        raise exception.NotFound(reason=f"Task with the given ID {task_id} could not be found")
    return row


async def list_tasks(
    db: Database,
    ctxt: RequestContext,
    *,
    filters: dict[str, str],
    sort_key: str,
    sort_dir: str,
    limit: int,
    marker: str | None,
) -> list[dict[str, Any]]:
    _access(ctxt, "get_tasks")
    if sort_dir not in ("asc", "desc"):
        raise exception.Invalid(reason=f"Invalid sort direction: {sort_dir}")
    status = filters.get("status")
    if status is not None and status not in set(TaskStatus):
        raise exception.Invalid(reason=f"Invalid status value: {status}")
    if filters.get("type", "import") not in TYPES:
        raise exception.Invalid(reason=f"Invalid type value: {filters['type']}")
    async with db.reader() as conn:
        return await tasks_db.get_all(
            conn, filters=filters, sort_key=sort_key, sort_dir=sort_dir, limit=limit, marker=marker
        )


async def tasks_of_image(db: Database, ctxt: RequestContext, image_id: str) -> list[dict[str, Any]]:
    """``GET /v2/images/{id}/tasks``: the import tasks that made the image,
    for whoever may see it (404 as anywhere else for others). An image
    uploaded with ``PUT .../file`` (a snapshot, a backup) or imported with
    ``/import`` (run within its request) has none; clients (Tempest's
    snapshot tests) poll this until no task is pending."""
    await images.get_image(db, ctxt, image_id)
    async with db.reader() as conn:
        return await tasks_db.get_all(conn, image_id=image_id, sort_dir="asc")
