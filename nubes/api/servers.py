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
:class:`~nubes.exception.InvalidInstanceTransition` (409) before anything is
written. One task at a time per instance (the task table's unique
constraint): an operation on an instance that is busy is refused with a
Conflict, except delete, which cancels what is in progress.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.conductor.rpcapi import ConductorAPI
from nubes.conductor.tasks.states import FIRST_STEP, TaskKind
from nubes.context import RequestContext
from nubes.db.api import actions, flavors, tasks
from nubes.db.api import instances as instances_api
from nubes.db.engine import Database
from nubes.db.types import utcnow
from nubes.objects import states
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState, TaskState, VMState

LOG = logging.getLogger(__name__)

REBOOT_TYPES = ("SOFT", "HARD")
#: Most servers one create request may ask for.
MAX_COUNT = 10_000


def _reservation_id() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


def _context_record(ctxt: RequestContext) -> dict[str, Any]:
    """The request context a task resumes with (never a caller identity)."""
    data = ctxt.to_dict()
    data["caller"] = None
    return data


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
        self.build_deadline: float = conf.conductor.build_deadline
        self.task_deadline: float = conf.conductor.task_deadline

    # -- create ----------------------------------------------------------------------

    async def _flavor(
        self, conn: AsyncConnection, flavor: Flavor | Mapping[str, Any] | str
    ) -> Flavor:
        if isinstance(flavor, Flavor):
            return flavor
        if isinstance(flavor, str):
            row = await flavors.get_by_flavor_id(conn, flavor)
        else:
            row = dict(flavor)
        found = Flavor._from_db(row)
        if found.obj_attr_is_set("disabled") and found.disabled:
            raise exception.Invalid(reason=f"flavor {found.flavorid} is disabled")
        return found

    async def create_servers(
        self,
        ctxt: RequestContext,
        *,
        name: str,
        flavor: Flavor | Mapping[str, Any] | str,
        image: Mapping[str, Any],
        count: int = 1,
        availability_zone: str | None = None,
        scheduler_hints: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        key_name: str | None = None,
        description: str | None = None,
        group: str | None = None,
        user_data: str | None = None,
    ) -> list[Instance]:
        """Record ``count`` instances (BUILDING/scheduling), their actions and build tasks.

        ``flavor`` is a Flavor, a flavor row, or the flavor id users see;
        ``image`` the image's metadata (``id`` and ``properties``). Returns
        the instances as recorded; they become ACTIVE (or ERROR with a
        fault) as their build tasks run.
        """
        if not 1 <= count <= MAX_COUNT:
            raise exception.Invalid(reason=f"count must be between 1 and {MAX_COUNT}")
        if not name:
            raise exception.Invalid(reason="a server needs a name")
        image_ref = image.get("id")
        if not image_ref:
            raise exception.Invalid(reason="the image has no id")
        reservation = _reservation_id()
        deadline = utcnow() + dt.timedelta(seconds=self.build_deadline)
        hints = {str(k): v for k, v in (scheduler_hints or {}).items()}
        payload_base: dict[str, Any] = {
            "image": dict(image),
            "hints": hints,
            "request": {"name": name, "key_name": key_name, "user_data": user_data},
        }
        if group:
            payload_base["group"] = group
        created: list[dict[str, Any]] = []
        task_ids: list[int] = []
        async with self.db.writer() as conn:
            found = await self._flavor(conn, flavor)
            snapshot = found.snapshot()
            for index in range(count):
                display = name if count == 1 else f"{name}-{index + 1}"
                row = await instances_api.create(
                    conn,
                    {
                        "project_id": ctxt.project_id,
                        "user_id": ctxt.user_id,
                        "display_name": display,
                        "display_description": description,
                        "hostname": display,
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
                        "system_metadata": {},
                        "user_data": user_data,
                    },
                )
                task = await self._start(
                    conn, ctxt, row["uuid"], TaskKind.BUILD, "create", payload_base, deadline
                )
                created.append(row)
                task_ids.append(task["id"])
        await self._kick(ctxt, task_ids)
        return [Instance._from_db(row) for row in created]

    # -- operations on one server -----------------------------------------------------------

    async def delete_server(self, ctxt: RequestContext, instance_uuid: str) -> None:
        """Start deleting a server, whatever it is doing (a build in progress is cancelled)."""
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            active = await tasks.get_active_for_instance(conn, instance_uuid)
            if active is not None and active["kind"] == TaskKind.DELETE:
                return  # already being deleted
            current = states.as_state(row["vm_state"], row["task_state"])
            target = (current[0], TaskState.DELETING)
            states.check_transition(current, target, instance_uuid)
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
            task = await self._start(conn, ctxt, instance_uuid, TaskKind.DELETE, "delete")
        await self._kick(ctxt, [task["id"]])

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
            {"reboot_type": reboot_type},
        )

    async def _power(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        kind: TaskKind,
        action: str,
        task_state: TaskState,
        payload: dict[str, Any] | None = None,
    ) -> None:
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            if row["task_state"] is not None:
                raise exception.Conflict(
                    reason=f"instance {instance_uuid} is busy ({row['task_state']})"
                )
            current = states.as_state(row["vm_state"], None)
            states.check_transition(current, (current[0], task_state), instance_uuid)
            if not row["host"]:
                raise exception.Conflict(reason=f"instance {instance_uuid} is not on any host")
            await instances_api.update(
                conn,
                instance_uuid,
                {"task_state": task_state.value},
                expected_vm_state=row["vm_state"],
                expected_task_state=None,
            )
            task = await self._start(conn, ctxt, instance_uuid, kind, action, payload)
        await self._kick(ctxt, [task["id"]])

    # -- common ----------------------------------------------------------------------------

    async def _start(
        self,
        conn: AsyncConnection,
        ctxt: RequestContext,
        instance_uuid: str,
        kind: TaskKind,
        action: str,
        payload: dict[str, Any] | None = None,
        deadline: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """The action and the task, in the caller's transaction."""
        await actions.action_start(
            conn,
            instance_uuid=instance_uuid,
            action=action,
            request_id=ctxt.request_id,
            user_id=ctxt.user_id,
            project_id=ctxt.project_id,
        )
        if deadline is None:
            deadline = utcnow() + dt.timedelta(seconds=self.task_deadline)
        try:
            return await tasks.create(
                conn,
                kind=kind.value,
                instance_uuid=instance_uuid,
                step=FIRST_STEP[kind].value,
                payload=dict(payload or {}),
                context=_context_record(ctxt),
                deadline=deadline,
            )
        except exception.DBDuplicateEntry:
            raise exception.Conflict(
                reason=f"instance {instance_uuid} has an operation in progress"
            ) from None

    async def _kick(self, ctxt: RequestContext, task_ids: list[int]) -> None:
        try:
            await self.conductor.kick(ctxt, task_ids)
        except exception.NubesError as exc:
            # The tasks are recorded: a conductor's poll finds them anyway.
            LOG.warning("could not tell a conductor about tasks %s: %s", task_ids, exc)
