"""A server's metadata (``/servers/{id}/metadata``): the rules and the writes.

Nova's rules: the owner's members change it while the server is active,
paused, suspended or stopped with no task running (409 otherwise), not while
it is locked (but admins), and never past the project's ``metadata_items``
limit (403). Each change is read, checked and written in one transaction
under the project's quota lock, so two concurrent merges cannot lose one
another's keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import instance_rules, quotas
from nubes.context import RequestContext
from nubes.db.api import instances as instances_api
from nubes.db.api import quotas as quotas_db
from nubes.db.engine import Database
from nubes.objects.states import VMState

#: vm_states in which metadata may change (Nova's server-metadata check), with no task running.
WRITABLE_STATES = frozenset({VMState.ACTIVE, VMState.PAUSED, VMState.SUSPENDED, VMState.STOPPED})


def _check_writable(ctxt: RequestContext, row: Mapping[str, Any], action: str) -> None:
    instance_rules.check_lock(ctxt, row)
    if row["task_state"] is not None:
        attr, state = "task_state", row["task_state"]
    elif row["vm_state"] not in WRITABLE_STATES:
        attr, state = "vm_state", row["vm_state"]
    else:
        return
    raise exception.InstanceInvalidState(
        action=action, instance_uuid=row["uuid"], attr=attr, state=state
    )


async def change(
    db: Database,
    conf: cfg.ConfigOpts,
    ctxt: RequestContext,
    instance_uuid: str,
    *,
    set_items: Mapping[str, str] | None = None,
    replace: bool = False,
    delete_key: str | None = None,
) -> dict[str, str]:
    """Merge ``set_items`` (or make them the whole metadata with ``replace``),
    or delete ``delete_key`` (404 when absent); returns the metadata after."""
    action = "delete metadata" if delete_key is not None else "update metadata"
    async with db.writer() as conn:
        row = await instances_api.get_by_uuid(conn, instance_uuid)
        await quotas_db.lock_project(conn, row["project_id"])
        row = await instances_api.get_by_uuid(conn, instance_uuid)
        _check_writable(ctxt, row, action)
        current: dict[str, str] = dict(row.get("metadata") or {})
        if delete_key is not None:
            if delete_key not in current:
                raise exception.NotFound(message="Metadata item was not found")
            new = {k: v for k, v in current.items() if k != delete_key}
        else:
            new = dict(set_items or {}) if replace else {**current, **(set_items or {})}
            await quotas.check_metadata(conn, conf, project_id=row["project_id"], metadata=new)
        if new != current:
            await instances_api.update(conn, instance_uuid, {"metadata": new})
    return new
