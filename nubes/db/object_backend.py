"""The object backend on the database: what remotable methods run against here.

:class:`DBObjectBackend` implements :class:`nubes.objects.backend.ObjectBackend`
with the query API of :mod:`nubes.db.api`. Every operation is one short
transaction: writes in ``writer()`` (retried as a whole on a deadlock, which
Galera reports for a certification conflict), reads in ``reader()``, and
listings that may lag a little (``allow_stale``) on the replica when there
is one. A process with database access installs it at start with
:func:`install`; a compute host never does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nubes import exception
from nubes.db.api import (
    UNSET,
    Row,
    actions,
    compute_nodes,
    flavors,
    instances,
    metadata,
    migrations,
    services,
)
from nubes.db.engine import Connection, Database, get_database
from nubes.db.types import utcnow
from nubes.objects import backend as object_backend
from nubes.objects.states import MigrationStatus, MigrationType

if TYPE_CHECKING:
    from nubes.context import RequestContext
    from nubes.objects.backend import ExpectedStates

__all__ = ["DBObjectBackend", "install"]


def _expected(states: ExpectedStates) -> Any:
    # Objects say "no check" with None (it crosses msgpack); the query API with UNSET.
    return UNSET if states is None else list(states)


class DBObjectBackend:
    """:class:`~nubes.objects.backend.ObjectBackend` on one :class:`Database`."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- instances ------------------------------------------------------------

    async def instance_get_by_uuid(
        self, context: RequestContext, uuid: str, *, with_fault: bool = False
    ) -> Row:
        async with self.database.reader() as conn:
            row = await instances.get_by_uuid(conn, uuid)
            if with_fault:
                faults = await instances.faults_get_by_instance_uuids(conn, [uuid], latest=True)
                row["fault"] = faults[uuid][0] if faults[uuid] else None
        return row

    async def instance_get_all_by_host(
        self, context: RequestContext, host: str, *, allow_stale: bool = False
    ) -> list[Row]:
        async with self.database.reader(allow_stale=allow_stale) as conn:
            return await instances.get_all_by_host(conn, host)

    async def instance_update(
        self,
        context: RequestContext,
        uuid: str,
        values: Mapping[str, Any],
        *,
        expected_vm_state: ExpectedStates = None,
        expected_task_state: ExpectedStates = None,
    ) -> Row:
        # One conditional UPDATE, grouped with concurrent saves into one
        # transaction; scoped to the calling host's instances when the
        # conductor's authoriser asked for it (backend.placement_scope).
        updated_at = await instances.save(
            self.database,
            uuid,
            values,
            expected_vm_state=_expected(expected_vm_state),
            expected_task_state=_expected(expected_task_state),
            placed_on_host=object_backend.placement_scope.get(),
        )
        return {"updated_at": updated_at}

    async def instance_fault_create(
        self, context: RequestContext, values: Mapping[str, Any]
    ) -> Row:
        return await self.database.run_in_writer(instances.fault_create, values)

    # -- what a guest is told ---------------------------------------------------

    async def instance_metadata_get(self, context: RequestContext, instance_uuid: str) -> Row:
        async with self.database.reader() as conn:
            return await metadata.source(conn, instance_uuid)

    async def instance_metadata_get_by_address(
        self, context: RequestContext, network_id: str, address: str
    ) -> Row:
        async with self.database.reader() as conn:
            holder = await metadata.holder_of_address(conn, network_id, address)
            if holder is None:
                raise exception.InstanceNotFound(instance_id=f"{address} on {network_id}")
            return await metadata.source(conn, holder["uuid"])

    async def instance_password_set_by_address(
        self, context: RequestContext, network_id: str, address: str, password: str
    ) -> bool:
        async with self.database.writer() as conn:
            holder = await metadata.holder_of_address(conn, network_id, address)
            if holder is None:
                raise exception.InstanceNotFound(instance_id=f"{address} on {network_id}")
            return await metadata.set_password(conn, holder["uuid"], password, only_if_unset=True)

    # -- flavors --------------------------------------------------------------

    async def flavor_get_by_id(self, context: RequestContext, flavor_id: int) -> Row:
        async with self.database.reader() as conn:
            return await flavors.get_by_id(conn, flavor_id)

    async def flavor_get_by_flavor_id(self, context: RequestContext, flavorid: str) -> Row:
        async with self.database.reader() as conn:
            return await flavors.get_by_flavor_id(conn, flavorid)

    # -- compute nodes --------------------------------------------------------

    async def compute_node_get_by_host_and_nodename(
        self, context: RequestContext, host: str, nodename: str
    ) -> Row:
        async with self.database.reader() as conn:
            return await compute_nodes.get_by_host_and_nodename(conn, host, nodename)

    async def compute_node_get_by_uuid(self, context: RequestContext, uuid: str) -> Row:
        async with self.database.reader() as conn:
            return await compute_nodes.get_by_uuid(conn, uuid)

    async def compute_node_create(self, context: RequestContext, values: Mapping[str, Any]) -> Row:
        return await self.database.run_in_writer(compute_nodes.create, values)

    async def compute_node_update(
        self, context: RequestContext, node_id: int, values: Mapping[str, Any]
    ) -> Row:
        return await self.database.run_in_writer(compute_nodes.update, node_id, values)

    # -- services -------------------------------------------------------------

    async def service_get_by_host_and_binary(
        self, context: RequestContext, host: str, binary: str
    ) -> Row:
        async with self.database.reader() as conn:
            return await services.get_by_host_and_binary(conn, host, binary, with_heartbeat=True)

    async def service_get_all(
        self, context: RequestContext, *, binary: str | None = None
    ) -> list[Row]:
        async with self.database.reader(allow_stale=True) as conn:
            return await services.get_all_with_last_seen(conn, binary=binary)

    async def service_get_minimum_version(self, context: RequestContext, binary: str) -> int | None:
        async with self.database.reader() as conn:
            return await services.minimum_version(conn, binary)

    async def service_create(self, context: RequestContext, values: Mapping[str, Any]) -> Row:
        return await self.database.run_in_writer(services.create, values)

    async def service_update(
        self, context: RequestContext, service_id: int, values: Mapping[str, Any]
    ) -> Row:
        return await self.database.run_in_writer(services.update, service_id, values)

    async def service_heartbeat(self, context: RequestContext, service_id: int) -> dt.datetime:
        now = utcnow()
        await self.database.run_in_writer(_heartbeat, service_id, now)
        return now

    # -- migrations -----------------------------------------------------------

    async def migration_get_by_id(self, context: RequestContext, migration_id: int) -> Row:
        return await migrations.current(self.database, migration_id)

    async def migration_create(self, context: RequestContext, values: Mapping[str, Any]) -> Row:
        return await self.database.run_in_writer(migrations.create, values)

    async def migration_update(
        self, context: RequestContext, migration_id: int, values: Mapping[str, Any]
    ) -> Row:
        return await self.database.run_in_writer(migrations.update, migration_id, values)

    async def migration_get_evacuations_from_host(
        self, context: RequestContext, host: str
    ) -> list[Row]:
        async with self.database.reader() as conn:
            return await migrations.list_from_host(
                conn, host, MigrationType.EVACUATION.value, _OPEN_EVACUATION
            )

    async def migration_complete_evacuation(
        self, context: RequestContext, migration_id: int
    ) -> Row:
        return await self.database.run_in_writer(_complete_evacuation, migration_id)

    # -- instance actions -----------------------------------------------------

    async def action_start(
        self,
        context: RequestContext,
        *,
        instance_uuid: str,
        action: str,
        request_id: str,
        user_id: str | None,
        project_id: str | None,
    ) -> Row:
        async with self.database.writer() as conn:
            return await actions.action_start(
                conn,
                instance_uuid=instance_uuid,
                action=action,
                request_id=request_id,
                user_id=user_id,
                project_id=project_id,
            )

    async def action_finish(
        self,
        context: RequestContext,
        *,
        instance_uuid: str,
        request_id: str,
        message: str | None = None,
    ) -> Row:
        async with self.database.writer() as conn:
            return await actions.action_finish(
                conn, instance_uuid=instance_uuid, request_id=request_id, message=message
            )

    async def action_get_by_request_id(
        self, context: RequestContext, instance_uuid: str, request_id: str
    ) -> Row:
        async with self.database.reader() as conn:
            return await actions.action_get_by_request_id(conn, instance_uuid, request_id)

    async def actions_get(
        self, context: RequestContext, instance_uuid: str, *, limit: int | None = None
    ) -> list[Row]:
        async with self.database.reader() as conn:
            return await actions.actions_get(conn, instance_uuid, limit=limit)

    async def action_event_start(
        self,
        context: RequestContext,
        *,
        instance_uuid: str,
        request_id: str,
        event: str,
        host: str | None = None,
    ) -> Row:
        # Grouped with concurrent writes, and scoped to the calling host's
        # instances in the same statement when the authoriser asked for it.
        return await actions.record_event_start(
            self.database,
            instance_uuid=instance_uuid,
            request_id=request_id,
            event=event,
            host=host,
            placed_on_host=object_backend.placement_scope.get(),
        )

    async def action_event_finish(
        self,
        context: RequestContext,
        *,
        instance_uuid: str,
        request_id: str,
        event: str,
        result: str,
        traceback: str | None = None,
        details: str | None = None,
    ) -> Row:
        return await actions.record_event_finish(
            self.database,
            instance_uuid=instance_uuid,
            request_id=request_id,
            event=event,
            result=result,
            traceback=traceback,
            details=details,
            placed_on_host=object_backend.placement_scope.get(),
        )

    async def action_events_get(self, context: RequestContext, action_id: int) -> list[Row]:
        async with self.database.reader() as conn:
            return await actions.events_get(conn, action_id)


#: Evacuations a source host still has to know about: in progress, or done
#: with the remains on it to remove.
_OPEN_EVACUATION = (
    MigrationStatus.ACCEPTED.value,
    MigrationStatus.PRE_MIGRATING.value,
    MigrationStatus.DONE.value,
)


async def _complete_evacuation(conn: Connection, migration_id: int) -> Row:
    # Conditional on being a done evacuation, in the UPDATE itself: nothing
    # read before can have changed under it.
    row = await migrations.update_if(
        conn,
        migration_id,
        {"status": MigrationStatus.COMPLETED.value},
        migration_type=MigrationType.EVACUATION.value,
        status=MigrationStatus.DONE.value,
    )
    if row is not None:
        return row
    current = await migrations.get_by_id(conn, migration_id)
    if (
        current["migration_type"] == MigrationType.EVACUATION
        and current["status"] == MigrationStatus.COMPLETED
    ):
        return current  # a repeat
    raise exception.InvalidMigrationTransition(
        migration_id=migration_id,
        migration_type=current["migration_type"],
        current=current["status"],
        target=MigrationStatus.COMPLETED.value,
    )


async def _heartbeat(conn: Connection, service_id: int, now: dt.datetime) -> None:
    await services.heartbeat(conn, service_id, now=now)


def install(database: Database | None = None) -> DBObjectBackend:
    """Run this process's remotable methods against ``database`` (the
    process-wide one by default)."""
    db_backend = DBObjectBackend(database if database is not None else get_database())
    object_backend.install(db_backend)
    return db_backend
