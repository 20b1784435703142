"""How an API operation on a server hands its work over: the intent, recorded, then a kick.

Every operation that a conductor carries out (boot, delete, power, every
move) ends the same way: in the caller's transaction, the user-visible
action (``os-instance-actions``) and the conductor task, then, after the
commit, a bounded ``kick`` so a conductor starts at once. ``ServersAPI`` and
``MovesAPI`` each hold an :class:`Intents` (composition: neither reaches into
the other), so this is the one place those records are written from the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import instance_rules
from nubes.conductor.rpcapi import ConductorAPI
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.payloads import TaskPayload
from nubes.conductor.tasks.states import FIRST_STEP, TaskKind
from nubes.context import RequestContext
from nubes.db.api import actions, flavors, instances, tasks
from nubes.db.engine import Connection, Database
from nubes.db.types import utcnow
from nubes.objects.flavor import Flavor
from nubes.objects.states import TaskState

LOG = logging.getLogger(__name__)

#: Seconds a request waits for the bus to take a kick; the task is recorded
#: already, so past this the request answers and a conductor's poll finds it.
KICK_TIMEOUT = 1.0


async def record_action(
    conn: Connection,
    ctxt: RequestContext,
    instance_uuid: str,
    action: str,
    *,
    start_time: dt.datetime | None = None,
) -> None:
    """The user-visible action (``os-instance-actions``) of the caller's request.

    Left open: the conductor's task, or for a request that starts no task
    (abort, force complete) the source host as Nova's does, adds its events
    and finishes it.
    """
    await actions.action_start(
        conn,
        instance_uuid=instance_uuid,
        action=action,
        request_id=ctxt.request_id,
        user_id=ctxt.user_id,
        project_id=ctxt.project_id,
        start_time=start_time,
    )


async def flavor(conn: Connection, flavor: Flavor | Mapping[str, Any] | str) -> Flavor:
    """The flavor an operation asks for (an object, a row, or a flavor id), refused if disabled."""
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


class Intents:
    """Records an operation's action and task, and tells a conductor about it."""

    def __init__(self, db: Database, conductor: ConductorAPI, *, conf: cfg.ConfigOpts) -> None:
        self.db = db
        self.conductor = conductor
        self.task_deadline: float = conf.conductor.task_deadline

    async def start(
        self,
        conn: Connection,
        ctxt: RequestContext,
        instance_uuid: str,
        kind: TaskKind,
        action: str,
        payload: TaskPayload | Mapping[str, Any] | None = None,
        deadline: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """The action and the task, in the caller's transaction."""
        await record_action(conn, ctxt, instance_uuid, action)
        if deadline is None:
            deadline = utcnow() + dt.timedelta(seconds=self.task_deadline)
        try:
            return await tasks.create(
                conn,
                kind=kind.value,
                instance_uuid=instance_uuid,
                step=FIRST_STEP[kind].value,
                payload=payloads.new(kind, payload),
                context=ctxt.to_record(),
                deadline=deadline,
            )
        except exception.DBDuplicateEntry:
            raise exception.Conflict(
                reason=f"instance {instance_uuid} has an operation in progress"
            ) from None

    async def start_on_host(
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
        """Start ``kind`` on the instance's host, if it may start
        (:func:`~nubes.api.instance_rules.check_host_task`), and tell a
        conductor; ``record`` writes what else the task needs (an image
        record, a quota check) in the same transaction."""
        async with self.db.writer() as conn:
            row = await instances.get_by_uuid(conn, instance_uuid)
            instance_rules.check_host_task(ctxt, row, action, task_state)
            if record is not None:
                await record(conn, row)
            await instances.update(
                conn,
                instance_uuid,
                {"task_state": task_state.value},
                expected_vm_state=row["vm_state"],
                expected_task_state=None,
            )
            task = await self.start(conn, ctxt, instance_uuid, kind, action, payload)
        await self.kick(ctxt, [task["id"]])

    async def start_many(
        self,
        conn: Connection,
        ctxt: RequestContext,
        instance_uuids: list[str],
        kind: TaskKind,
        action: str,
        payload: TaskPayload,
        deadline: dt.datetime,
    ) -> list[dict[str, Any]]:
        """:meth:`start` for several instances of one request (multi-row INSERTs)."""
        await actions.action_start_many(
            conn,
            instance_uuids,
            action=action,
            request_id=ctxt.request_id,
            user_id=ctxt.user_id,
            project_id=ctxt.project_id,
        )
        try:
            return await tasks.create_many(
                conn,
                instance_uuids,
                kind=kind.value,
                step=FIRST_STEP[kind].value,
                payload=payloads.new(kind, payload),
                context=ctxt.to_record(),
                deadline=deadline,
            )
        except exception.DBDuplicateEntry:
            raise exception.Conflict(reason="an instance has an operation in progress") from None

    async def instant_action(
        self, conn: Connection, ctxt: RequestContext, instance_uuid: str, action: str
    ) -> None:
        """An action that is done as soon as it is recorded (lock, unlock, reset state)."""
        now = utcnow()
        await record_action(conn, ctxt, instance_uuid, action, start_time=now)
        await actions.action_finish(
            conn, instance_uuid=instance_uuid, request_id=ctxt.request_id, finish_time=now
        )

    async def kick(self, ctxt: RequestContext, task_ids: list[int]) -> None:
        try:
            # Bounded: with the broker away a cast waits for it to come back,
            # and the request must not (the task is durable in the database).
            async with asyncio.timeout(KICK_TIMEOUT):
                await self.conductor.kick(ctxt, task_ids)
        except TimeoutError:
            LOG.warning(
                "could not tell a conductor about tasks %s within %.1f s (the bus is away); "
                "a conductor's poll finds them",
                task_ids,
                KICK_TIMEOUT,
            )
        except exception.NubesError as exc:
            # The tasks are recorded: a conductor's poll finds them anyway.
            LOG.warning("could not tell a conductor about tasks %s: %s", task_ids, exc)
