"""The query API of the DB layer, one module per resource.

Every function takes an open connection first, so callers choose the
transaction and the routing::

    db = engine.get_database()
    async with db.writer() as conn:                     # primary, one transaction
        inst = await instances.create(conn, {...})
        await tasks.create(conn, kind="build", instance_uuid=inst["uuid"])

    async with db.reader(allow_stale=True) as conn:     # replica when configured
        page = await instances.get_all(conn, filters={"project_id": p}, limit=50)

Rows come back as plain dicts with aware UTC datetimes and decoded JSON.
Errors are from :mod:`nubes.exception` (NotFound subclasses,
InstanceUpdateConflict, DBDuplicateEntry, DBDeadlock, DBConnectionError ...).
"""

from __future__ import annotations

from nubes.db.api import (
    actions,
    compute_nodes,
    flavors,
    groups,
    instances,
    migrations,
    quotas,
    services,
    tasks,
)
from nubes.db.api._common import UNSET, ReadDeleted, Row

__all__ = [
    "UNSET",
    "ReadDeleted",
    "Row",
    "actions",
    "compute_nodes",
    "flavors",
    "groups",
    "instances",
    "migrations",
    "quotas",
    "services",
    "tasks",
]
