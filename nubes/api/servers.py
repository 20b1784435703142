"""Turning a user's request about servers into database records and conductor tasks.

This is the API service's side of every long operation (no HTTP here: the
REST layer calls these). Each method validates the request against the
instance's state, then writes, **in one transaction**, the instance's new
state, the user-visible action (``create``, ``delete``, ``stop``, ``start``,
``reboot``) and the conductor task that will carry it out; then it tells a
conductor about the task (``ConductorAPI.kick``). If that cast is lost, a
conductor still finds the task at its next poll: the row is the request.

The state table of :mod:`nubes.objects.states` decides which operation may
start from which state; anything else is refused with
:class:`exception.InstanceInvalidState` (409, Nova's "Cannot 'stop' instance ... while
it is in vm_state stopped") before anything is written. One task at a time
per instance (the task table's unique constraint): an operation on an
instance that is busy is refused with a Conflict, except delete, which
cancels what is in progress.

Locks (Nova's ``lock``/``unlock``): a locked instance refuses delete, stop,
start and reboot to anyone but an admin (:class:`exception.InstanceIsLocked`, 409);
``locked_by`` says whether its owner or an admin locked it, and only an
admin may unlock what an admin locked. The rest (rename, reset state) are
single-row updates with no task.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import images as images_api
from nubes.api import instance_rules, intents, quotas
from nubes.conductor.rpcapi import ConductorAPI
from nubes.conductor.tasks.payloads import (
    SHELVED_IMAGE_KEY,
    ActionPayload,
    BuildPayload,
    PowerPayload,
    ShelvePayload,
    SnapshotPayload,
    TaskPayload,
)
from nubes.conductor.tasks.states import TaskKind
from nubes.context import RequestContext
from nubes.db.api import compute_nodes as compute_nodes_api
from nubes.db.api import groups, tasks
from nubes.db.api import images as images_db
from nubes.db.api import instances as instances_api
from nubes.db.api import metadata as metadata_api
from nubes.db.api import tags as tags_api
from nubes.db.engine import Connection, Database
from nubes.db.types import utcnow
from nubes.network import ports
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.states import (
    CRASH_DUMP_STATES,
    SOFT_DELETABLE_STATES,
    LockedBy,
    PowerState,
    TaskState,
    VMState,
)

LOG = logging.getLogger(__name__)

REBOOT_TYPES = ("SOFT", "HARD")
#: Most servers one create request may ask for.
MAX_COUNT = 10_000


#: ``hypervisor_type`` of the libvirt driver's nodes.
LIBVIRT_HYPERVISOR = "QEMU"


async def _hypervisor_type(conn: Connection, row: Mapping[str, Any]) -> str | None:
    """The hypervisor type of the node the instance is on (None: on none)."""
    if not row["host"] or not row["node"]:
        return None
    try:
        node = await compute_nodes_api.get_by_host_and_nodename(conn, row["host"], row["node"])
    except exception.NotFound:
        return None
    return str(node["hypervisor_type"])


#: The vm_states in which a server's tags may change (Nova's os-server-tags check).
TAGGABLE_STATES = frozenset(
    {
        VMState.ACTIVE,
        VMState.PAUSED,
        VMState.SUSPENDED,
        VMState.STOPPED,
        VMState.SHELVED,
        VMState.SHELVED_OFFLOADED,
    }
)

#: What ``os-resetState`` may set (Nova's state map of the admin action).
RESET_STATES = (VMState.ACTIVE, VMState.ERROR)


def _reservation_id() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


class ServersAPI:
    """The API side of server operations: records and tasks, then a kick."""

    def __init__(
        self,
        db: Database,
        conductor: ConductorAPI,
        *,
        conf: cfg.ConfigOpts | None = None,
    ) -> None:
        from nubes import config

        conf = conf if conf is not None else config.CONF
        self.db = db
        self.conductor = conductor
        self.conf = conf
        self.intents = intents.Intents(db, conductor, conf=conf)
        self.build_deadline: float = conf.conductor.build_deadline
        self.task_deadline: float = conf.conductor.task_deadline

    # -- create ----------------------------------------------------------------------

    async def create_servers(
        self,
        ctxt: RequestContext,
        *,
        name: str,
        flavor: Flavor | Mapping[str, Any] | str,
        image: Mapping[str, Any],
        count: int = 1,
        min_count: int | None = None,
        availability_zone: str | None = None,
        scheduler_hints: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        key_name: str | None = None,
        description: str | None = None,
        group: str | None = None,
        user_data: str | None = None,
        config_drive: bool = False,
        system_metadata: Mapping[str, Any] | None = None,
        tags: list[str] | None = None,
        reservation_id: str | None = None,
        network_requests: Sequence[Mapping[str, Any]] = (),
        requested_host: str | None = None,
        requested_node: str | None = None,
        hostname: str | None = None,
    ) -> list[Instance]:
        """Record ``count`` instances (BUILDING/scheduling), their actions and build tasks.

        ``requested_host``/``requested_node`` restrict where the scheduler
        may place them (an admin's choice, still filtered).

        ``flavor`` is a Flavor, a flavor row, or the flavor id users see;
        ``image`` the image's metadata (``id`` and ``properties``). Returns
        the instances as recorded; they become ACTIVE (or ERROR with a
        fault) as their build tasks run.

        Quotas (:mod:`nubes.api.quotas`): as many servers as fit, up to
        ``count``, when that is at least ``min_count`` (default ``count``);
        else 403 and nothing is written. The count, the check and the inserts
        are one transaction under the project's quota lock; ``group``'s new
        members are recorded in it too, within ``server_group_members``.
        """
        min_count = count if min_count is None else min_count
        if not 1 <= min_count <= count <= MAX_COUNT:
            raise exception.Invalid(
                reason=f"count must be between 1 and {MAX_COUNT}, and at least min_count"
            )
        if not name:
            raise exception.Invalid(reason="a server needs a name")
        image_ref = image.get("id")
        if not image_ref:
            raise exception.Invalid(reason="the image has no id")
        reservation = reservation_id or _reservation_id()
        deadline = utcnow() + dt.timedelta(seconds=self.build_deadline)
        hints = {str(k): v for k, v in (scheduler_hints or {}).items()}
        payload_base = BuildPayload(
            image=dict(image),
            hints=hints,
            request={
                "name": name,
                "key_name": key_name,
                "user_data": user_data,
                "config_drive": config_drive,
            },
            group=group or None,
            requested_host=requested_host,
            requested_node=requested_node,
            networked=bool(network_requests),
        )
        project_id = ctxt.project_id or ""
        async with self.db.writer() as conn:
            if group:
                await self._check_group(conn, ctxt, group)
            found = await intents.flavor(conn, flavor)
            snapshot = found.snapshot()
            await quotas.check_metadata(conn, self.conf, project_id=project_id, metadata=metadata)
            count = await quotas.allowed_instances(
                conn,
                self.conf,
                project_id=project_id,
                user_id=ctxt.user_id,
                vcpus=found.vcpus,
                memory_mb=found.memory_mb,
                min_count=min_count,
                max_count=count,
            )
            if group:
                await quotas.check_group_members(
                    conn,
                    self.conf,
                    project_id=project_id,
                    user_id=ctxt.user_id,
                    group_uuid=group,
                    count=count,
                )
            # Every row of the request in one multi-row INSERT per table.
            created = await instances_api.create_many(
                conn,
                [
                    {
                        "project_id": ctxt.project_id,
                        "user_id": ctxt.user_id,
                        "display_name": (display := name if count == 1 else f"{name}-{index + 1}"),
                        "display_description": description,
                        # 2.90: a hostname given (one server only) instead of the name.
                        "hostname": hostname or display,
                        "reservation_id": reservation,
                        "launch_index": index,
                        "key_name": key_name,
                        "image_ref": str(image_ref),
                        "flavor": snapshot,
                        "vcpus": found.vcpus,
                        "memory_mb": found.memory_mb,
                        "root_gb": found.root_gb,
                        "ephemeral_gb": found.ephemeral_gb,
                        "availability_zone": availability_zone,
                        "vm_state": VMState.BUILDING.value,
                        "task_state": TaskState.SCHEDULING.value,
                        "power_state": int(PowerState.NOSTATE),
                        "metadata": dict(metadata or {}),
                        "system_metadata": dict(system_metadata or {}),
                        "user_data": user_data,
                        "config_drive": "True" if config_drive else "",
                    }
                    for index in range(count)
                ],
            )
            await tags_api.add_to_new(conn, [row["uuid"] for row in created], tags or [])
            # The NICs asked for (nubes/network/ports.py): the build task makes the ports.
            await ports.record(conn, [row["uuid"] for row in created], network_requests)
            if group:
                # Members from the start (as Nova): the scheduler places them by
                # where the others are, and show lists them while they build.
                await groups.group_members_add(conn, group, [row["uuid"] for row in created])
            tasks_made = await self.intents.start_many(
                conn,
                ctxt,
                [row["uuid"] for row in created],
                TaskKind.BUILD,
                "create",
                payload_base,
                deadline,
            )
            task_ids = [task["id"] for task in tasks_made]
        await self.intents.kick(ctxt, task_ids)
        return [Instance._from_db(row) for row in created]

    @staticmethod
    async def _check_group(conn: Connection, ctxt: RequestContext, group_uuid: str) -> None:
        """The ``group`` hint names a server group the requester may use (a
        400 otherwise, as Nova's server create)."""
        try:
            row = await groups.group_get_by_uuid(conn, group_uuid)
        except exception.InstanceGroupNotFound:
            row = None
        if row is None or (not ctxt.is_admin and row["project_id"] != ctxt.project_id):
            raise exception.InvalidSchedulerHint(
                hint="group", reason=f"server group {group_uuid} could not be found"
            )

    # -- operations on one server -----------------------------------------------------------

    async def delete_server(
        self, ctxt: RequestContext, instance_uuid: str, *, force: bool = False
    ) -> None:
        """Start deleting a server, whatever it is doing (a build in progress is cancelled).

        With ``[DEFAULT] reclaim_instance_interval`` above 0, a server that has
        run and is idle is only soft-deleted (Nova's ``soft_delete``; one that
        never ran is deleted); ``force`` (``forceDelete``) deletes it anyway.
        """
        if not force and self.conf.reclaim_instance_interval > 0:
            if await self._soft_delete(ctxt, instance_uuid):
                return
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            instance_rules.check_lock(ctxt, row)
            active = await tasks.get_active_for_instance(conn, instance_uuid)
            if active is not None and active["kind"] == TaskKind.DELETE:
                return  # already being deleted
            instance_rules.check_state(
                "delete", row, (VMState(row["vm_state"]), TaskState.DELETING)
            )
            if active is not None:
                # Its conductor finds out at its next write (fenced by the
                # status); what it claimed is released by this delete.
                await tasks.cancel(conn, active["id"], reason="the instance is being deleted")
            await instances_api.update(
                conn,
                instance_uuid,
                {"task_state": TaskState.DELETING.value},
                expected_task_state=row["task_state"],
            )
            task = await self.intents.start(conn, ctxt, instance_uuid, TaskKind.DELETE, "delete")
        await self.intents.kick(ctxt, [task["id"]])

    async def _soft_delete(self, ctxt: RequestContext, instance_uuid: str) -> bool:
        """Soft-delete the server if it can be (it ran, it is idle, on a host);
        False when it must be deleted for good instead."""
        async with self.db.reader() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            # A task still ending (a build's last commit wrote the instance
            # ACTIVE, its task closes next) is an operation in progress, which
            # a soft delete may not start beside: deleted for good, as Nova
            # deletes what it may not soft-delete.
            busy = await tasks.get_active_for_instance(conn, instance_uuid) is not None
        if row["vm_state"] == VMState.SOFT_DELETED:
            return True  # Nova: deleting a soft-deleted server changes nothing
        if (
            busy
            or row["launched_at"] is None
            or row["task_state"] is not None
            or row["vm_state"] not in SOFT_DELETABLE_STATES
            or not row["host"]
        ):
            return False
        await self._power(
            ctxt, instance_uuid, TaskKind.SOFT_DELETE, "delete", TaskState.SOFT_DELETING
        )
        return True

    async def restore_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        """Bring a soft-deleted server back (Nova's ``restore``)."""
        await self._power(ctxt, instance_uuid, TaskKind.RESTORE, "restore", TaskState.RESTORING)

    # -- shelve (conductor/tasks/shelve.py) ----------------------------------------------

    async def shelve_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        """Shelve: the guest off and its disk snapshotted to a new image,
        ``<name>-shelved`` (recorded queued here, as createImage's, in the
        task's transaction; its id goes to system metadata as
        ``shelved_image_id`` once uploaded), SHELVED; with ``[DEFAULT]
        shelved_offload_time = 0`` offloaded in the same task
        (SHELVED_OFFLOADED). Every nubes server is image-backed, so every
        shelve snapshots (Nova skips it for volume-backed servers only)."""
        offload = self.conf.shelved_offload_time == 0
        image_id = str(uuid.uuid4())

        async def record_image(conn: Connection, row: dict[str, Any]) -> None:
            name = f"{row['display_name']}-shelved"
            await images_db.create(
                conn, await _snapshot_record(conn, ctxt, row, image_id, name, None, None)
            )

        await self._power(
            ctxt,
            instance_uuid,
            TaskKind.SHELVE,
            "shelve",
            TaskState.SHELVING,
            ShelvePayload(offload=offload, image_id=image_id),
            record=record_image,
        )

    async def shelve_offload_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self._power(
            ctxt,
            instance_uuid,
            TaskKind.SHELVE_OFFLOAD,
            "shelveOffload",
            TaskState.SHELVING_OFFLOADING,
            ShelvePayload(),
        )

    async def unshelve_server(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        *,
        set_zone: bool = False,
        zone: str | None = None,
        host: str | None = None,
    ) -> None:
        """Unshelve: a shelved server powered on where it is; an offloaded one
        scheduled anew, into ``zone`` when ``set_zone`` (2.77; None unpins it,
        2.91) or onto an admin's ``host`` (2.91), checked by the caller to exist.

        A zone or a host for a server that is not offloaded is Nova's 409.
        Quotas: an offloaded server still counts (usage is counted from the
        instances), so unshelving it needs no new headroom.
        """
        async with self.db.reader() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
        image: dict[str, Any] = {}
        if row["vm_state"] == VMState.SHELVED_OFFLOADED and row["task_state"] is None:
            # What it is spawned from again (read before the transaction).
            image = await self._unshelve_image(ctxt, row)
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            instance_rules.check_lock(ctxt, row)
            instance_rules.check_state(
                "unshelve", row, (VMState(row["vm_state"]), TaskState.UNSHELVING)
            )
            if row["task_state"] is not None:
                raise exception.InstanceInvalidState(
                    action="unshelve",
                    instance_uuid=instance_uuid,
                    attr="task_state",
                    state=row["task_state"],
                )
            offloaded = row["vm_state"] == VMState.SHELVED_OFFLOADED
            if (set_zone or host is not None) and not offloaded:
                raise exception.UnshelveInstanceInvalidState(
                    instance_uuid=instance_uuid, state=row["vm_state"]
                )
            values: dict[str, Any] = {"task_state": TaskState.UNSHELVING.value}
            if set_zone:
                values["availability_zone"] = zone
            payload = ShelvePayload(requested_host=host, image=image if offloaded else {})
            await instances_api.update(
                conn,
                instance_uuid,
                values,
                expected_vm_state=row["vm_state"],
                expected_task_state=None,
            )
            task = await self.intents.start(
                conn, ctxt, instance_uuid, TaskKind.UNSHELVE, "unshelve", payload
            )
        await self.intents.kick(ctxt, [task["id"]])

    async def _unshelve_image(self, ctxt: RequestContext, row: Mapping[str, Any]) -> dict[str, Any]:
        """What an offloaded server spawns from: the snapshot its shelve made
        (read whoever may see it: it was made for this server, perhaps by an
        admin's shelve), else the image it was built from."""
        shelved = (row["system_metadata"] or {}).get(SHELVED_IMAGE_KEY)
        if not shelved:
            return dict(await images_api.get_image(self.db, ctxt, row["image_ref"]))
        try:
            async with self.db.reader() as conn:
                found = await images_db.get(conn, str(shelved))
        except exception.ImageNotFound:
            found = None
        if found is None or found["status"] != "active":
            raise exception.ShelvedImageNotFound(image_id=shelved)
        return dict(found)

    async def stop_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self._power(ctxt, instance_uuid, TaskKind.STOP, "stop", TaskState.POWERING_OFF)

    async def start_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self._power(ctxt, instance_uuid, TaskKind.START, "start", TaskState.POWERING_ON)

    async def reboot_server(
        self, ctxt: RequestContext, instance_uuid: str, reboot_type: str = "SOFT"
    ) -> None:
        if reboot_type not in REBOOT_TYPES:
            raise exception.Invalid(reason=f"reboot type must be SOFT or HARD, not {reboot_type}")
        task_state = TaskState.REBOOTING_HARD if reboot_type == "HARD" else TaskState.REBOOTING
        await self._power(
            ctxt,
            instance_uuid,
            TaskKind.REBOOT,
            "reboot",
            task_state,
            PowerPayload(reboot_type=reboot_type),
        )

    # -- lifecycle actions (one host step each: conductor/tasks/actions.py) -----------

    async def pause_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self._power(ctxt, instance_uuid, TaskKind.PAUSE, "pause", TaskState.PAUSING)

    async def unpause_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self._power(ctxt, instance_uuid, TaskKind.UNPAUSE, "unpause", TaskState.UNPAUSING)

    async def suspend_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self._power(ctxt, instance_uuid, TaskKind.SUSPEND, "suspend", TaskState.SUSPENDING)

    async def resume_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self._power(ctxt, instance_uuid, TaskKind.RESUME, "resume", TaskState.RESUMING)

    async def rescue_server(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        admin_password: str | None,
        rescue_image_ref: str | None = None,
    ) -> None:
        """Boot the server from a rescue image (``rescue_image_ref``, else the
        image it was built from), its own disk attached second.

        Every nubes server is image-backed (no volumes), so Nova's refusal of a
        volume-backed rescue before 2.87 never applies; the image's
        ``hw_rescue_device`` / ``hw_rescue_bus`` (stable rescue) reach the
        driver with the image.
        """
        async with self.db.reader() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
        image_ref = rescue_image_ref or row["image_ref"]
        if not image_ref:
            raise exception.InstanceNotRescuable(
                instance_id=instance_uuid, reason="it has no image to rescue it with"
            )
        image = await images_api.get_active_image(self.db, ctxt, image_ref)
        # What a host makes the rescue disk from (the libvirt driver fetches
        # it, checked against its hash, with the grant the conductor adds).
        rescue_image = {
            "id": image["id"],
            "disk_format": image.get("disk_format"),
            "os_hash_algo": image.get("os_hash_algo"),
            "os_hash_value": image.get("os_hash_value"),
            "properties": dict(image.get("properties") or {}),
        }
        await self._power(
            ctxt,
            instance_uuid,
            TaskKind.RESCUE,
            "rescue",
            TaskState.RESCUING,
            ActionPayload(admin_password=admin_password, rescue_image=rescue_image),
        )

    async def unrescue_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self._power(ctxt, instance_uuid, TaskKind.UNRESCUE, "unrescue", TaskState.UNRESCUING)

    async def change_password(
        self, ctxt: RequestContext, instance_uuid: str, admin_password: str
    ) -> None:
        """Set the guest's administrator password (``changePassword``).

        A libvirt guest takes it through the QEMU guest agent only: a server
        whose image does not say it runs one (``hw_qemu_guest_agent``) is
        refused here, 409, as Nova answers (nothing is recorded).
        """
        async with self.db.reader() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            hypervisor = await _hypervisor_type(conn, row)
        if hypervisor == LIBVIRT_HYPERVISOR:
            agent = str(
                instance_rules.image_properties(row["system_metadata"]).get(
                    "hw_qemu_guest_agent", ""
                )
            ).lower()
            if agent not in ("yes", "true", "1"):
                raise exception.Conflict(reason="QEMU guest agent is not enabled")
        await self._power(
            ctxt,
            instance_uuid,
            TaskKind.SET_PASSWORD,
            "changePassword",
            TaskState.UPDATING_PASSWORD,
            ActionPayload(admin_password=admin_password),
        )

    async def trigger_crash_dump(self, ctxt: RequestContext, instance_uuid: str) -> None:
        """Send the guest an NMI (2.17). Nova sets no task_state for it: the
        instance must be idle, in one of ``CRASH_DUMP_STATES`` and running."""
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            instance_rules.check_lock(ctxt, row)
            if row["vm_state"] not in CRASH_DUMP_STATES or row["task_state"] is not None:
                attr = "task_state" if row["task_state"] is not None else "vm_state"
                raise exception.InstanceInvalidState(
                    action="trigger_crash_dump",
                    instance_uuid=instance_uuid,
                    attr=attr,
                    state=row[attr],
                )
            if row["power_state"] != PowerState.RUNNING or not row["host"]:
                raise exception.InstanceNotRunning(instance_id=instance_uuid)
            task = await self.intents.start(
                conn, ctxt, instance_uuid, TaskKind.TRIGGER_CRASH_DUMP, "trigger_crash_dump"
            )
        await self.intents.kick(ctxt, [task["id"]])

    async def _power(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        kind: TaskKind,
        action: str,
        task_state: TaskState,
        payload: TaskPayload | None = None,
        *,
        record: Callable[[Connection, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        """Start ``kind`` on the instance's host; ``record`` writes what else
        the task needs, in its transaction, once the instance may start it."""
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            _check_host_task(ctxt, row, action, task_state)
            if record is not None:
                await record(conn, row)
            await instances_api.update(
                conn,
                instance_uuid,
                {"task_state": task_state.value},
                expected_vm_state=row["vm_state"],
                expected_task_state=None,
            )
            task = await self.intents.start(conn, ctxt, instance_uuid, kind, action, payload)
        await self.intents.kick(ctxt, [task["id"]])

    # -- snapshots (createImage, createBackup) ----------------------------------------

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
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            _check_host_task(ctxt, row, action, task_state)
            # Nova counts an image's metadata against metadata_items (403 past it).
            await quotas.check_metadata(
                conn, self.conf, project_id=row["project_id"], metadata=metadata
            )
            await images_db.create(
                conn, await _snapshot_record(conn, ctxt, row, image_id, name, metadata, backup_type)
            )
            await instances_api.update(
                conn,
                instance_uuid,
                {"task_state": task_state.value},
                expected_vm_state=row["vm_state"],
                expected_task_state=None,
            )
            payload = SnapshotPayload(
                image_id=image_id,
                image_type="backup" if backup else "snapshot",
                backup_type=backup_type,
                rotation=rotation,
            )
            task = await self.intents.start(
                conn, ctxt, instance_uuid, TaskKind.SNAPSHOT, action, payload
            )
        await self.intents.kick(ctxt, [task["id"]])
        return image_id

    # -- single-row changes (no task) -----------------------------------------------------

    async def update_server(
        self, ctxt: RequestContext, instance_uuid: str, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Rename, describe, set access addresses or disk config; the new row.

        ``values`` may hold ``display_name``, ``display_description`` and
        ``system_metadata`` keys (merged into what the instance has).
        """
        allowed = {"display_name", "display_description", "system_metadata", "hostname"}
        unknown = set(values) - allowed
        if unknown:
            raise exception.Invalid(reason=f"cannot update {', '.join(sorted(unknown))}")
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            data = dict(values)
            if "system_metadata" in data:
                data["system_metadata"] = {
                    **(row["system_metadata"] or {}),
                    **data["system_metadata"],
                }
            if not data:
                return row
            return await instances_api.update(conn, instance_uuid, data)

    # -- tags (os-server-tags, 2.26) ---------------------------------------------------

    @staticmethod
    async def _taggable(conn: Connection, instance_uuid: str, action: str) -> None:
        row = await instances_api.get_by_uuid(conn, instance_uuid)
        if row["vm_state"] not in TAGGABLE_STATES:
            raise exception.InstanceInvalidState(
                action=action, instance_uuid=instance_uuid, attr="vm_state", state=row["vm_state"]
            )

    async def add_tag(self, ctxt: RequestContext, instance_uuid: str, tag: str) -> bool:
        """Tag the server; False when it had the tag already."""
        async with self.db.writer() as conn:
            await self._taggable(conn, instance_uuid, "update tag")
            return await tags_api.add(conn, instance_uuid, tag)

    async def replace_tags(
        self, ctxt: RequestContext, instance_uuid: str, tags: list[str]
    ) -> list[str]:
        """Make ``tags`` the server's only tags; them, sorted."""
        async with self.db.writer() as conn:
            await self._taggable(conn, instance_uuid, "update tags")
            return await tags_api.replace(conn, instance_uuid, tags)

    async def remove_tag(self, ctxt: RequestContext, instance_uuid: str, tag: str) -> None:
        async with self.db.writer() as conn:
            await self._taggable(conn, instance_uuid, "delete tag")
            await tags_api.remove(conn, instance_uuid, tag)

    async def remove_all_tags(self, ctxt: RequestContext, instance_uuid: str) -> None:
        async with self.db.writer() as conn:
            await self._taggable(conn, instance_uuid, "delete tags")
            await tags_api.remove_all(conn, instance_uuid)

    async def lock_server(
        self, ctxt: RequestContext, instance_uuid: str, reason: str | None = None
    ) -> None:
        """Lock against changes by non-admins; ``locked_by`` is owner or admin (as Nova).

        ``reason`` (2.73) is kept in system metadata as Nova keeps it, and
        goes with the lock.
        """
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            locked_by = LockedBy.OWNER if row["project_id"] == ctxt.project_id else LockedBy.ADMIN
            sysmeta = dict(row["system_metadata"] or {})
            sysmeta.pop("locked_reason", None)
            if reason is not None:
                sysmeta["locked_reason"] = reason
            await instances_api.update(
                conn,
                instance_uuid,
                {"locked": True, "locked_by": locked_by.value, "system_metadata": sysmeta},
            )
            await self.intents.instant_action(conn, ctxt, instance_uuid, "lock")

    async def unlock_server(
        self, ctxt: RequestContext, instance_uuid: str, *, may_override: bool
    ) -> None:
        """Unlock; a lock taken by the other side (admin vs owner) needs ``may_override``."""
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            expected = LockedBy.OWNER if row["project_id"] == ctxt.project_id else LockedBy.ADMIN
            if row["locked_by"] and row["locked_by"] != expected.value and not may_override:
                raise exception.PolicyNotAuthorized(
                    action="os_compute_api:os-lock-server:unlock:unlock_override"
                )
            sysmeta = dict(row["system_metadata"] or {})
            sysmeta.pop("locked_reason", None)
            await instances_api.update(
                conn,
                instance_uuid,
                {"locked": False, "locked_by": None, "system_metadata": sysmeta},
            )
            await self.intents.instant_action(conn, ctxt, instance_uuid, "unlock")

    async def clear_password(self, ctxt: RequestContext, instance_uuid: str) -> None:
        """Forget the password the guest posted (``DELETE os-server-password``):
        it may post a new one then. Nova records no instance action for it."""
        async with self.db.writer() as conn:
            await metadata_api.set_password(conn, instance_uuid, "", only_if_unset=False)

    async def reset_state(self, ctxt: RequestContext, instance_uuid: str, state: str) -> None:
        """Admin repair: set vm_state (active or error) and clear task_state, no task.

        Outside the state table on purpose (Nova's ``admin_state_reset``): it
        is how an operator gets an instance out of a state nothing else leaves.
        """
        vm_state = VMState(state)
        if vm_state not in RESET_STATES:
            raise exception.Invalid(reason=f"cannot reset an instance to {state}")
        async with self.db.writer() as conn:
            await instances_api.get_by_uuid(conn, instance_uuid)
            await instances_api.update(
                conn, instance_uuid, {"vm_state": vm_state.value, "task_state": None}
            )
            await self.intents.instant_action(conn, ctxt, instance_uuid, "reset_state")


#: Properties of the server's image a snapshot does not inherit: the ones
#: that describe that image's own data or history (Nova leaves them out too).
_NOT_INHERITED = frozenset(
    {"image_type", "instance_uuid", "user_id", "base_image_ref", "backup_type"}
)


async def _snapshot_record(
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


def _check_host_task(
    ctxt: RequestContext, row: dict[str, Any], action: str, task_state: TaskState
) -> None:
    """May ``action`` start a task on the instance's host: not locked against
    the caller, no task running (a task_state), a vm_state the action starts
    from, and a host to run it on."""
    instance_rules.check_lock(ctxt, row)
    instance_rules.check_state(action, row, (VMState(row["vm_state"]), task_state))
    if row["task_state"] is not None:
        raise exception.InstanceInvalidState(
            action=action,
            instance_uuid=row["uuid"],
            attr="task_state",
            state=row["task_state"],
        )
    if not row["host"]:
        raise exception.Conflict(reason=f"instance {row['uuid']} is not on any host")
