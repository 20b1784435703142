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

The class is put together from one module per responsibility: creation
(:mod:`nubes.api.server_create`), snapshots (:mod:`nubes.api.server_snapshots`)
and the changes that start no task (:mod:`nubes.api.server_records`); the
operations on one server that start a task stay here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import images as images_api
from nubes.api import instance_rules, intents
from nubes.api.server_create import ServerCreation
from nubes.api.server_records import ServerRecords
from nubes.api.server_snapshots import ServerSnapshots, snapshot_record
from nubes.conductor.rpcapi import ConductorAPI
from nubes.conductor.tasks.payloads import (
    SHELVED_IMAGE_KEY,
    ActionPayload,
    PowerPayload,
    ShelvePayload,
    without_injected_files,
)
from nubes.conductor.tasks.states import TaskKind
from nubes.context import RequestContext
from nubes.db.api import compute_nodes as compute_nodes_api
from nubes.db.api import images as images_db
from nubes.db.api import instances as instances_api
from nubes.db.api import tasks
from nubes.db.engine import Connection, Database
from nubes.objects.states import (
    CRASH_DUMP_STATES,
    SOFT_DELETABLE_STATES,
    PowerState,
    TaskState,
    VMState,
)

LOG = logging.getLogger(__name__)

REBOOT_TYPES = ("SOFT", "HARD")


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


class ServersAPI(ServerCreation, ServerSnapshots, ServerRecords):
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
                await tasks.cancel(
                    conn,
                    active["id"],
                    reason="the instance is being deleted",
                    # A build's personality files go with it, as a task's end drops them.
                    payload=without_injected_files(active["payload"] or {}),
                )
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
        await self.intents.start_on_host(
            ctxt, instance_uuid, TaskKind.SOFT_DELETE, "delete", TaskState.SOFT_DELETING
        )
        return True

    async def restore_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        """Bring a soft-deleted server back (Nova's ``restore``)."""
        await self.intents.start_on_host(
            ctxt, instance_uuid, TaskKind.RESTORE, "restore", TaskState.RESTORING
        )

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
            record = await snapshot_record(conn, ctxt, row, image_id, name, None, None)
            await images_api.record_image(conn, self.conf, record)

        await self.intents.start_on_host(
            ctxt,
            instance_uuid,
            TaskKind.SHELVE,
            "shelve",
            TaskState.SHELVING,
            ShelvePayload(offload=offload, image_id=image_id),
            record=record_image,
        )

    async def shelve_offload_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self.intents.start_on_host(
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
        await self.intents.start_on_host(
            ctxt, instance_uuid, TaskKind.STOP, "stop", TaskState.POWERING_OFF
        )

    async def start_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self.intents.start_on_host(
            ctxt, instance_uuid, TaskKind.START, "start", TaskState.POWERING_ON
        )

    async def reboot_server(
        self, ctxt: RequestContext, instance_uuid: str, reboot_type: str = "SOFT"
    ) -> None:
        if reboot_type not in REBOOT_TYPES:
            raise exception.Invalid(reason=f"reboot type must be SOFT or HARD, not {reboot_type}")
        task_state = TaskState.REBOOTING_HARD if reboot_type == "HARD" else TaskState.REBOOTING
        await self.intents.start_on_host(
            ctxt,
            instance_uuid,
            TaskKind.REBOOT,
            "reboot",
            task_state,
            PowerPayload(reboot_type=reboot_type),
        )

    # -- lifecycle actions (one host step each: conductor/tasks/actions.py) -----------

    async def pause_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self.intents.start_on_host(
            ctxt, instance_uuid, TaskKind.PAUSE, "pause", TaskState.PAUSING
        )

    async def unpause_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self.intents.start_on_host(
            ctxt, instance_uuid, TaskKind.UNPAUSE, "unpause", TaskState.UNPAUSING
        )

    async def suspend_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self.intents.start_on_host(
            ctxt, instance_uuid, TaskKind.SUSPEND, "suspend", TaskState.SUSPENDING
        )

    async def resume_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self.intents.start_on_host(
            ctxt, instance_uuid, TaskKind.RESUME, "resume", TaskState.RESUMING
        )

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
        await self.intents.start_on_host(
            ctxt,
            instance_uuid,
            TaskKind.RESCUE,
            "rescue",
            TaskState.RESCUING,
            ActionPayload(admin_password=admin_password, rescue_image=rescue_image),
        )

    async def unrescue_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        await self.intents.start_on_host(
            ctxt, instance_uuid, TaskKind.UNRESCUE, "unrescue", TaskState.UNRESCUING
        )

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
        await self.intents.start_on_host(
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
