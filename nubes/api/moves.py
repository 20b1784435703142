"""The API side of the moves: cold migration, resize with its confirm and revert,
live migration, evacuation and rebuild.

Like every operation of :class:`~nubes.api.servers.ServersAPI`, each method
checks the request against the instance (its lock, the state table of
:mod:`nubes.objects.states`, and what the request names: a flavor, a host,
an image), then writes **in one transaction** the instance's new state, the
migration record, the user-visible action (Nova's names: ``migrate``,
``resize``, ``confirmResize``, ``revertResize``, ``live-migration``,
``evacuate``, ``rebuild``) and the conductor task, and kicks a conductor.
What each records, down to the task payload, is the contract in
``docs/moves.md`` ("What the API records"); the conductor tasks carry on
from there.

Refusals are Nova's, with its codes and texts: a bad state or a lock is 409,
a request that cannot work (same flavor, unknown host, inactive image) is
400, an evacuation whose source still runs is 400 ("Compute service of ...
is still in use.", as Nova's evacuate API answers it).

The checks and records every move shares are in :mod:`nubes.api.move_records`,
the rules in :mod:`nubes.api.instance_rules`, the action, task and kick in
:class:`nubes.api.intents.Intents`; errors in :mod:`nubes.exception`.

Aborting or force-completing a live migration starts no task (the live
migration's task is the one active task of the instance): the abort marks
the migration ``cancelling`` in the API's transaction, both record their
action, and both are casts to a conductor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import images as images_api
from nubes.api import instance_rules, intents, quotas
from nubes.api import move_records as records
from nubes.conductor.rpcapi import ConductorAPI
from nubes.conductor.tasks.payloads import MovePayload
from nubes.conductor.tasks.states import TaskKind
from nubes.context import RequestContext
from nubes.db.api import Row, flavors, services
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.engine import Connection, Database
from nubes.injected_files import InjectedFiles
from nubes.objects.flavor import Flavor
from nubes.objects.states import (
    MigrationStatus,
    MigrationType,
    TaskState,
    VMState,
)

LOG = logging.getLogger(__name__)


#: Values a live migration's ``block_migration`` may take ("auto" from 2.25).
BLOCK_MIGRATION_AUTO = "auto"

#: Migration statuses a live migration can be aborted from (docs/moves.md).
ABORTABLE = (MigrationStatus.ACCEPTED, MigrationStatus.PREPARING, MigrationStatus.RUNNING)

#: Instance columns a rebuild may set besides its image, name and metadata.
REBUILD_COLUMNS = frozenset(
    {"display_description", "system_metadata", "key_name", "user_data", "hostname"}
)


class MovesAPI:
    """The move operations of the servers API (records, tasks, then a kick)."""

    def __init__(
        self,
        db: Database,
        conductor: ConductorAPI,
        *,
        conf: cfg.ConfigOpts | None = None,
    ) -> None:
        from nubes import config

        self.conf = conf if conf is not None else config.CONF
        self.db = db
        self.conductor = conductor
        self.intents = intents.Intents(db, conductor, conf=self.conf)

    # -- cold migration and resize ---------------------------------------------------------

    async def migrate_server(
        self, ctxt: RequestContext, instance_uuid: str, host: str | None = None
    ) -> None:
        """Cold-migrate to ``host`` (checked by the scheduler) or wherever it finds room."""
        async with self.db.writer() as conn:
            row = await records.movable(conn, ctxt, instance_uuid, "migrate", TaskState.RESIZE_PREP)
            if host is not None:
                if host == row["host"]:
                    raise exception.CannotMigrateToSameHost()
                await records.check_compute_host(conn, host)
            flavor = dict(row["flavor"] or {})
            migration = await records.create_migration(
                conn, ctxt, row, MigrationType.MIGRATION, dest=host
            )
            await records.set_task(
                conn,
                row,
                TaskState.RESIZE_PREP,
                {"old_flavor": flavor, "new_flavor": flavor, "progress": 0},
            )
            task = await self.intents.start(
                conn,
                ctxt,
                instance_uuid,
                TaskKind.MIGRATE,
                "migrate",
                {
                    "migration_id": migration["id"],
                    "host": host,
                    "flavor": flavor,
                    "power_on": records.running(row),
                },
            )
        await self.intents.kick(ctxt, [task["id"]])

    async def resize_server(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        flavor_ref: str,
        *,
        disk_config: str | None = None,
    ) -> None:
        """Resize to the flavor users know as ``flavor_ref`` (``disk_config``: AUTO or MANUAL)."""
        async with self.db.writer() as conn:
            row = await records.movable(conn, ctxt, instance_uuid, "resize", TaskState.RESIZE_PREP)
            current = dict(row["flavor"] or {})
            try:
                found = await flavors.get_by_flavor_id(conn, flavor_ref)
            except exception.FlavorNotFound:
                raise exception.ResizeFlavorNotFound(flavor_id=flavor_ref) from None
            new = Flavor._from_db(found).snapshot()
            instance_rules.check_disks(current, new)
            if found["id"] == records.snapshot_id(current):
                raise exception.CannotResizeToSameFlavor()
            if found["disabled"]:
                raise exception.ResizeFlavorNotFound(flavor_id=flavor_ref)
            # The owner's quota pays for a larger flavor, whoever asks (Nova).
            await quotas.check_upsize(
                conn,
                self.conf,
                project_id=row["project_id"],
                user_id=row["user_id"],
                cores=int(found["vcpus"]) - int(row["vcpus"] or 0),
                ram=int(found["memory_mb"]) - int(row["memory_mb"] or 0),
            )
            image = await records.instance_image(conn, row)
            if image is not None:
                instance_rules.check_image_fits(image, new)
            migration = await records.create_migration(
                conn, ctxt, row, MigrationType.RESIZE, new_flavor_id=found["id"]
            )
            values: dict[str, Any] = {"old_flavor": current, "new_flavor": new, "progress": 0}
            if disk_config is not None:
                values["system_metadata"] = {
                    **(row["system_metadata"] or {}),
                    "disk_config": disk_config,
                }
            await records.set_task(conn, row, TaskState.RESIZE_PREP, values)
            task = await self.intents.start(
                conn,
                ctxt,
                instance_uuid,
                TaskKind.MIGRATE,
                "resize",
                {"migration_id": migration["id"], "flavor": new, "power_on": records.running(row)},
            )
        await self.intents.kick(ctxt, [task["id"]])

    async def confirm_resize(self, ctxt: RequestContext, instance_uuid: str) -> None:
        """Keep the resized instance; the source drops what it kept."""
        await self._finish_resize(
            ctxt,
            instance_uuid,
            action="confirmResize",
            task_state=TaskState.RESIZE_CONFIRMING,
            status=MigrationStatus.CONFIRMING,
            kind=TaskKind.CONFIRM_RESIZE,
        )

    async def revert_resize(self, ctxt: RequestContext, instance_uuid: str) -> None:
        """Go back to the source and the old flavor."""
        await self._finish_resize(
            ctxt,
            instance_uuid,
            action="revertResize",
            task_state=TaskState.RESIZE_REVERTING,
            status=MigrationStatus.REVERTING,
            kind=TaskKind.REVERT_RESIZE,
        )

    async def _finish_resize(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        *,
        action: str,
        task_state: TaskState,
        status: MigrationStatus,
        kind: TaskKind,
    ) -> None:
        async with self.db.writer() as conn:
            row = await records.movable(conn, ctxt, instance_uuid, action, task_state)
            try:
                migration = await migrations_api.get_by_instance_and_status(
                    conn, instance_uuid, MigrationStatus.FINISHED.value
                )
            except exception.MigrationNotFound:
                raise exception.InstanceNotResized() from None
            if kind is TaskKind.REVERT_RESIZE and not row["old_flavor"]:
                raise exception.OldFlavorNotFound()
            await records.set_migration_status(conn, migration, status)
            await records.set_task(conn, row, task_state, {})
            task = await self.intents.start(
                conn, ctxt, instance_uuid, kind, action, {"migration_id": migration["id"]}
            )
        await self.intents.kick(ctxt, [task["id"]])

    # -- live migration ------------------------------------------------------------------

    async def live_migrate_server(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        host: str | None = None,
        block_migration: bool | str = BLOCK_MIGRATION_AUTO,
        force: bool = False,
    ) -> None:
        """Live-migrate to ``host`` or wherever the scheduler finds room.

        ``force`` is accepted for the API versions that have it, but the
        named host is still checked by the scheduler (docs/moves.md), as
        Nova does from 2.68.
        """
        if not isinstance(block_migration, bool) and block_migration != BLOCK_MIGRATION_AUTO:
            raise exception.Invalid(
                reason=f"block_migration must be true, false or auto, not {block_migration!r}"
            )
        if force and not host:
            raise exception.ForcedWithoutHost()
        async with self.db.writer() as conn:
            row = await records.movable(
                conn, ctxt, instance_uuid, "os-migrateLive", TaskState.MIGRATING
            )
            if host is not None:
                await records.check_compute_host(conn, host)
                if host == row["host"]:
                    raise exception.UnableToMigrateToSelf(instance_id=instance_uuid, host=host)
            migration = await records.create_migration(
                conn, ctxt, row, MigrationType.LIVE_MIGRATION, dest=host
            )
            await records.set_task(conn, row, TaskState.MIGRATING, {"progress": 0})
            task = await self.intents.start(
                conn,
                ctxt,
                instance_uuid,
                TaskKind.LIVE_MIGRATE,
                "live-migration",
                {
                    "migration_id": migration["id"],
                    "host": host,
                    "block_migration": block_migration,
                },
            )
        await self.intents.kick(ctxt, [task["id"]])

    async def abort_live_migration(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        migration_id: int,
        *,
        before_start: bool = True,
    ) -> None:
        """Mark the live migration ``cancelling`` and ask a conductor to stop it.

        ``before_start`` (Nova's 2.65): a queued or preparing migration may be
        aborted too; without it only a running one.
        """
        allowed = ABORTABLE if before_start else (MigrationStatus.RUNNING,)
        async with self.db.writer() as conn:
            migration = await self._live_migration(
                conn, ctxt, instance_uuid, migration_id, "abort live migration", allowed
            )
            await records.set_migration_status(conn, migration, MigrationStatus.CANCELLING)
            # The source host adds its events to this action when the cast reaches it.
            await intents.record_action(conn, ctxt, instance_uuid, "live_migration_cancel")
        try:
            await self.conductor.live_migration_abort(ctxt, instance_uuid, migration_id)
        except exception.NubesError as exc:
            # The migration says cancelling: the task cancels it at its next
            # step even without the cast; only a running copy waits for it.
            LOG.warning("could not ask a conductor to abort migration %s: %s", migration_id, exc)

    async def force_complete_live_migration(
        self, ctxt: RequestContext, instance_uuid: str, migration_id: int
    ) -> None:
        """Ask a conductor to have the source finish a running live migration now."""
        async with self.db.writer() as conn:
            await self._live_migration(
                conn,
                ctxt,
                instance_uuid,
                migration_id,
                "force complete",
                (MigrationStatus.RUNNING,),
            )
            await intents.record_action(conn, ctxt, instance_uuid, "live_migration_force_complete")
        try:
            await self.conductor.live_migration_force_complete(ctxt, instance_uuid, migration_id)
        except exception.NubesError as exc:
            LOG.warning(
                "could not ask a conductor to force migration %s to complete: %s", migration_id, exc
            )

    async def _live_migration(
        self,
        conn: Connection,
        ctxt: RequestContext,
        instance_uuid: str,
        migration_id: int,
        method: str,
        allowed: tuple[MigrationStatus, ...],
    ) -> Row:
        """The instance's live migration ``migration_id``, if it is in one of ``allowed``.

        As Nova: the instance must be ACTIVE and migrating (else 409), the
        migration the instance's (else 404) and in the right status (else 400).
        """
        row = await instances_api.get_by_uuid(conn, instance_uuid)
        instance_rules.check_lock(ctxt, row)
        if (row["vm_state"], row["task_state"]) != (VMState.ACTIVE, TaskState.MIGRATING):
            attr, state = (
                ("vm_state", row["vm_state"])
                if row["vm_state"] != VMState.ACTIVE
                else ("task_state", row["task_state"])
            )
            raise exception.InstanceInvalidState(
                action=method, instance_uuid=instance_uuid, attr=attr, state=state
            )
        try:
            migration = await migrations_api.get_by_id(conn, migration_id)
        except exception.MigrationNotFound:
            migration = None
        if migration is None or migration["instance_uuid"] != instance_uuid:
            raise exception.MigrationNotFoundForInstance(
                migration_id=migration_id, instance_id=instance_uuid
            )
        if (
            migration["migration_type"] != MigrationType.LIVE_MIGRATION
            or migration["status"] not in allowed
        ):
            raise exception.InvalidMigrationState(
                migration_id=migration_id,
                instance_uuid=instance_uuid,
                state=migration["status"],
                method=method,
            )
        return migration

    # -- evacuation and rebuild ---------------------------------------------------------------

    async def evacuate_server(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        host: str | None = None,
        force: bool = False,
        *,
        stopped: bool = False,
    ) -> None:
        """Rebuild the instance elsewhere because its host is down (or forced down).

        As Nova's evacuate: no lock check (an admin operation), and the named
        host is checked before the instance's state. ``force`` needs a host;
        the scheduler still checks it (docs/moves.md). ``stopped`` (Nova's
        2.95): the guest is left shut off on its new host, whatever it was.
        """
        if force and not host:
            raise exception.ForcedWithoutHost()
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            if host is not None:
                try:
                    await services.get_by_host_and_binary(conn, host, "compute")
                except exception.ServiceNotFound:
                    raise exception.EvacuateHostNotFound(host=host) from None
            if host is not None and row["host"] == host:
                raise exception.EvacuateToSameHost()
            instance_rules.check_idle("evacuate", row, TaskState.REBUILDING)
            await records.check_source_down(conn, row["host"], self.conf.service_down_time)
            image = await records.instance_image(conn, row)
            migration = await records.create_migration(
                conn, ctxt, row, MigrationType.EVACUATION, dest=host
            )
            await records.set_task(conn, row, TaskState.REBUILDING, {})
            task = await self.intents.start(
                conn,
                ctxt,
                instance_uuid,
                TaskKind.EVACUATE,
                "evacuate",
                {
                    "migration_id": migration["id"],
                    "host": host,
                    "image": records.image_payload(image or {"id": row["image_ref"]}),
                    "power_on": records.running(row) and not stopped,
                },
            )
        await self.intents.kick(ctxt, [task["id"]])

    async def rebuild_server(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        image_ref: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        injected_files: InjectedFiles | None = None,
    ) -> Row:
        """Create the guest again from ``image_ref`` on its host; the instance as recorded.

        ``metadata`` replaces the instance's (as Nova); ``values`` may set
        the columns of :data:`REBUILD_COLUMNS` (``system_metadata`` is
        merged into what the instance has). ``injected_files`` (personality,
        checked against their quotas by the caller) go on the rebuilt
        guest's config drive; the task carries them, the instance does not.
        """
        extra = dict(values or {})
        unknown = set(extra) - REBUILD_COLUMNS
        if unknown:
            raise exception.Invalid(reason=f"a rebuild cannot set {', '.join(sorted(unknown))}")
        async with self.db.writer() as conn:
            row = await records.movable(conn, ctxt, instance_uuid, "rebuild", TaskState.REBUILDING)
            try:
                image = await images_api.get_active_image(self.db, ctxt, image_ref)
            except exception.ImageNotFound:
                raise exception.RebuildImageNotFound() from None
            instance_rules.check_image_fits(image, row["flavor"] or {})
            changes: dict[str, Any] = {"image_ref": image["id"], "progress": 0, **extra}
            if name is not None:
                changes["display_name"] = name
            if metadata is not None:
                await quotas.check_metadata(
                    conn, self.conf, project_id=row["project_id"], metadata=metadata
                )
                changes["metadata"] = dict(metadata)
            changes["system_metadata"] = instance_rules.with_image_properties(
                {**(row["system_metadata"] or {}), **extra.get("system_metadata", {})}, image
            )
            updated = await records.set_task(conn, row, TaskState.REBUILDING, changes)
            payload = MovePayload(
                image=records.image_payload(image),
                power_on=records.running(row),
                injected_files=injected_files or None,
            )
            task = await self.intents.start(
                conn, ctxt, instance_uuid, TaskKind.REBUILD, "rebuild", payload
            )
        await self.intents.kick(ctxt, [task["id"]])
        return updated
