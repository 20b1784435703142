"""Snapshots of a server's disk (``createImage``, ``createBackup``).

The snapshot part of :class:`nubes.api.servers.ServersAPI` (a mixin of it):
the queued image record, as Nova makes it from the server's image, and the
task whose host uploads the disk into it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import images, intents, quotas
from nubes.conductor.tasks.payloads import SnapshotPayload
from nubes.conductor.tasks.states import TaskKind
from nubes.context import RequestContext
from nubes.db.api import images as images_db
from nubes.db.engine import Connection, Database
from nubes.db.types import utcnow
from nubes.objects.states import TaskState


class ServerSnapshots:
    """``snapshot_server``: the image record and its upload task."""

    # Set by ServersAPI's constructor (nubes.api.servers).
    db: Database
    conf: cfg.ConfigOpts
    intents: intents.Intents

    async def snapshot_server(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        name: str,
        metadata: Mapping[str, str] | None = None,
        *,
        backup_type: str | None = None,
        rotation: int | None = None,
    ) -> str:
        """Record a queued image of the server's disk and the task whose host
        uploads it; the image's id. A backup (``backup_type`` given) keeps
        ``rotation`` backups of that type, as Nova's createBackup."""
        backup = backup_type is not None
        if backup and (rotation is None or rotation < 0):
            raise exception.Invalid(reason="rotation must be an integer of 0 or more")
        action = "createBackup" if backup else "createImage"
        task_state = TaskState.IMAGE_BACKUP if backup else TaskState.IMAGE_SNAPSHOT
        image_id = str(uuid.uuid4())

        async def record_image(conn: Connection, row: dict[str, Any]) -> None:
            # Nova counts an image's metadata against metadata_items (403 past it).
            await quotas.check_metadata(
                conn, self.conf, project_id=row["project_id"], metadata=metadata
            )
            record = await snapshot_record(conn, ctxt, row, image_id, name, metadata, backup_type)
            await images.record_image(conn, self.conf, record)

        payload = SnapshotPayload(
            image_id=image_id,
            image_type="backup" if backup else "snapshot",
            backup_type=backup_type,
            rotation=rotation,
        )
        await self.intents.start_on_host(
            ctxt, instance_uuid, TaskKind.SNAPSHOT, action, task_state, payload, record=record_image
        )
        return image_id


#: Properties of the server's image a snapshot does not inherit: the ones
#: that describe that image's own data or history (Nova leaves them out too).
_NOT_INHERITED = frozenset(
    {"image_type", "instance_uuid", "user_id", "base_image_ref", "backup_type"}
)


async def snapshot_record(
    conn: Connection,
    ctxt: RequestContext,
    row: Mapping[str, Any],
    image_id: str,
    name: str,
    metadata: Mapping[str, str] | None,
    backup_type: str | None,
) -> dict[str, Any]:
    """The queued image of a createImage or createBackup, as Nova makes it:
    the server's image's formats, minimums and properties, then Nova's
    snapshot properties, then the request's metadata."""
    base: dict[str, Any] = {}
    if row["image_ref"]:
        try:
            base = await images_db.get(conn, row["image_ref"])
        except exception.ImageNotFound:
            base = {}  # deleted since the boot: the snapshot stands alone
    properties = {
        k: v for k, v in (base.get("properties") or {}).items() if k not in _NOT_INHERITED
    }
    properties.update(
        image_type="backup" if backup_type is not None else "snapshot",
        instance_uuid=row["uuid"],
        user_id=ctxt.user_id,
    )
    if row["image_ref"]:
        properties["base_image_ref"] = row["image_ref"]
    if backup_type is not None:
        properties["backup_type"] = backup_type
    properties.update(metadata or {})
    return {
        "id": image_id,
        "name": name,
        "owner": ctxt.project_id,
        "status": "queued",
        "visibility": "private",
        "protected": False,
        "os_hidden": False,
        "disk_format": base.get("disk_format"),
        "container_format": base.get("container_format"),
        "min_disk": max(int(base.get("min_disk") or 0), int(row["root_gb"] or 0)),
        "min_ram": int(base.get("min_ram") or 0),
        "tags": [],
        "properties": properties,
        "created_at": utcnow(),
    }
