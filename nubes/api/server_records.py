"""Single-row changes to a server: no task, no host involved.

The part of :class:`nubes.api.servers.ServersAPI` (a mixin of it) that
changes only the instance's own records: rename and the other ``PUT``
fields (the zone pin of 2.104 among them), tags, lock and unlock, the
posted password, an admin's state reset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import instance_rules, intents
from nubes.context import RequestContext
from nubes.db.api import instances as instances_api
from nubes.db.api import metadata as metadata_api
from nubes.db.api import tags as tags_api
from nubes.db.engine import Connection, Database
from nubes.objects.states import LockedBy, VMState

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


class ServerRecords:
    """The changes of a server's records that start no task."""

    # Set by ServersAPI's constructor (nubes.api.servers).
    db: Database
    conf: cfg.ConfigOpts
    intents: intents.Intents

    async def update_server(
        self,
        ctxt: RequestContext,
        instance_uuid: str,
        values: Mapping[str, Any],
        *,
        pin: tuple[str | None, str] | None = None,
    ) -> dict[str, Any]:
        """Rename, describe, set access addresses or disk config; the new row.

        ``values`` may hold ``display_name``, ``display_description`` and
        ``system_metadata`` keys (merged into what the instance has).
        ``pin``: (the zone to pin the instance to or None to unpin, the zone
        it is in now), held against its pin when written (2.104).
        """
        allowed = {"display_name", "display_description", "system_metadata", "hostname"}
        unknown = set(values) - allowed
        if unknown:
            raise exception.Invalid(reason=f"cannot update {', '.join(sorted(unknown))}")
        async with self.db.writer() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            data = dict(values)
            if pin is not None:
                zone = instance_rules.pinned_zone(row, *pin)
                if zone != row["availability_zone"]:
                    data["availability_zone"] = zone
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
