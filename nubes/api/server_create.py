"""Creating servers: the instances, their actions and build tasks, in one transaction.

The create half of :class:`nubes.api.servers.ServersAPI` (a mixin of it):
quotas, the server group, tags, the NICs asked for and one build task per
instance, all written under the project's quota lock, then one kick.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import intents, quotas
from nubes.conductor.tasks.payloads import BuildPayload
from nubes.conductor.tasks.states import TaskKind
from nubes.context import RequestContext
from nubes.db.api import groups
from nubes.db.api import instances as instances_api
from nubes.db.api import tags as tags_api
from nubes.db.engine import Connection, Database
from nubes.db.types import utcnow
from nubes.injected_files import InjectedFiles
from nubes.network import ports
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState, TaskState, VMState

#: Most servers one create request may ask for.
MAX_COUNT = 10_000


def _reservation_id() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


class ServerCreation:
    """``create_servers``: what a ``POST /servers`` records."""

    # Set by ServersAPI's constructor (nubes.api.servers).
    db: Database
    conf: cfg.ConfigOpts
    intents: intents.Intents
    build_deadline: float

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
        injected_files: InjectedFiles | None = None,
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
        fault) as their build tasks run. ``injected_files`` (personality,
        checked against their quotas by the caller) travel with each build
        task to its host's config drive; no instance row records them.

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
            injected_files=injected_files or None,
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
                        # 2.90: a hostname given (one server only) instead of the name's.
                        "hostname": hostname or sanitize_hostname(display),
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


#: Longest hostname a guest takes (a DNS label).
_HOSTNAME_MAX = 63


def sanitize_hostname(name: str) -> str:
    """A server's hostname from its name, as Nova makes it: lower case, spaces,
    underscores and dots as dashes, only letters, digits and dashes kept, at most
    63 characters, no dash at either end ("server" if nothing is left). Guests
    set this as their hostname (the metadata service's ``hostname``), and
    Tempest checks the guest's against the name lowered."""
    hostname = re.sub(r"[ _.]", "-", name[:_HOSTNAME_MAX].lower())
    hostname = re.sub(r"[^a-z0-9-]+", "", hostname).strip("-")
    return hostname or "server"
