"""What every move of a server checks and records on the API side, in the caller's
transaction: may the instance move now, its task state set by compare-and-set,
its migration record (created, or moved to a new status by the status table),
the image it runs, the hosts a move names.

:mod:`nubes.api.moves` holds the operations (migrate, resize, confirm, revert,
live migrate, abort, force complete, evacuate, rebuild) and calls these; the
rules themselves (lock, state, image fits, disks) are in
:mod:`nubes.api.instance_rules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nubes import exception, liveness
from nubes.api import instance_rules
from nubes.context import RequestContext
from nubes.db.api import Row, compute_nodes, services
from nubes.db.api import images as images_db
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.engine import Connection
from nubes.objects import states
from nubes.objects.states import (
    MIGRATION_FIRST_STATUS,
    MigrationStatus,
    MigrationType,
    TaskState,
    VMState,
)


def snapshot_id(snapshot: Mapping[str, Any] | None) -> int | None:
    value = (snapshot or {}).get("id")
    return value if isinstance(value, int) else None


def image_payload(image: Mapping[str, Any]) -> dict[str, Any]:
    """The image as a build's task payload carries it (id and properties)."""
    return {"id": image["id"], "properties": dict(image.get("properties") or {})}


async def movable(
    conn: Connection,
    ctxt: RequestContext,
    instance_uuid: str,
    action: str,
    task_state: TaskState,
) -> Row:
    """The instance, if it is unlocked (or the caller an admin) and may start ``action``."""
    row = await instances_api.get_by_uuid(conn, instance_uuid)
    instance_rules.check_lock(ctxt, row)
    instance_rules.check_idle(action, row, task_state)
    return row


async def set_task(
    conn: Connection, row: Row, task_state: TaskState, values: Mapping[str, Any]
) -> Row:
    # Compare-and-set: a concurrent operation that got there first wins.
    return await instances_api.update(
        conn,
        row["uuid"],
        {"task_state": task_state.value, **values},
        expected_vm_state=row["vm_state"],
        expected_task_state=None,
    )


async def check_compute_host(conn: Connection, host: str) -> None:
    if not await compute_nodes.get_all(conn, host=host):
        raise exception.MoveHostNotFound(host=host)


async def check_source_down(conn: Connection, host: str, down_time: float) -> None:
    """Evacuate only from a host whose compute service is down or forced down
    (``nubes.liveness``, with ``[DEFAULT] service_down_time``)."""
    try:
        service = await services.get_by_host_and_binary(conn, host, "compute", with_heartbeat=True)
    except exception.ServiceNotFound:
        return  # no service on record: nothing runs there
    if liveness.row_is_up(service, down_time):
        raise exception.ComputeServiceInUse(host=host)


async def instance_image(conn: Connection, row: Row) -> Row | None:
    """The image the instance runs, if it is still registered."""
    if not row["image_ref"]:
        return None
    try:
        return await images_db.get(conn, row["image_ref"])
    except exception.ImageNotFound:
        return None


async def create_migration(
    conn: Connection,
    ctxt: RequestContext,
    row: Row,
    kind: MigrationType,
    *,
    dest: str | None = None,
    new_flavor_id: int | None = None,
) -> Row:
    flavor_id = snapshot_id(row["flavor"])
    return await migrations_api.create(
        conn,
        {
            "instance_uuid": row["uuid"],
            "source_compute": row["host"],
            "source_node": row["node"],
            "dest_compute": dest,
            "status": MIGRATION_FIRST_STATUS[kind].value,
            "migration_type": kind.value,
            "old_instance_type_id": flavor_id,
            "new_instance_type_id": flavor_id if new_flavor_id is None else new_flavor_id,
            # Who asked for the move (Nova's migration user and project).
            "user_id": ctxt.user_id,
            "project_id": ctxt.project_id,
        },
    )


async def set_migration_status(conn: Connection, migration: Row, status: MigrationStatus) -> None:
    states.check_migration_status(
        migration["migration_type"], migration["status"], status.value, migration["id"]
    )
    # Conditional on the status read: a conductor's step may commit a
    # new one (running, completed ...) between that read and this write.
    updated = await migrations_api.update_status(
        conn, migration["id"], migration["status"], status.value
    )
    if updated is None:
        raise exception.Conflict(
            reason=f"migration {migration['id']} changed status meanwhile; try again"
        )


def running(row: Row) -> bool:
    """docs/moves.md's ``power_on``: the move leaves the instance running unless
    it was STOPPED. As in Nova, which powers a rebuilt or evacuated guest off
    again only when it was stopped: one rebuilt from ERROR ends ACTIVE."""
    return bool(row["vm_state"] != VMState.STOPPED)
