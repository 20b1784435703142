"""The Service object: one running nubes service on a host, and whether it is up."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from nubes import exception, liveness
from nubes.objects import backend, base, fields

if TYPE_CHECKING:
    from nubes.context import RequestContext

# Never written by create() or save(): what the database sets, and the
# heartbeat's columns (only heartbeat() writes those, to their own table).
_NOT_WRITTEN = (
    "id",
    "created_at",
    "updated_at",
    "deleted_at",
    "deleted",
    "report_count",
    "last_seen_up",
)


@base.register
class Service(base.VersionedObject):
    """A nubes-<binary> running on ``host``.

    ``version`` is the service's object/RPC version level, from which the
    oldest running service caps what others send. ``last_seen_up`` and
    ``report_count`` come from the service's heartbeat row, which only
    :meth:`heartbeat` writes (``save`` never does).

    Version history:

    1.0: Initial version
    1.1: get_minimum_version (a compute host's ``[upgrade_levels] conductor = auto``)
    """

    VERSION = "1.1"

    id = fields.Integer()
    uuid = fields.UUID()
    host = fields.String()
    binary = fields.String()
    topic = fields.String(nullable=True)
    version = fields.Integer(default=0)
    disabled = fields.Boolean(default=False)
    disabled_reason = fields.String(nullable=True)
    forced_down = fields.Boolean(default=False)
    report_count = fields.Integer(default=0)
    last_seen_up = fields.DateTime(nullable=True, default=None)

    created_at = fields.DateTime(nullable=True)
    updated_at = fields.DateTime(nullable=True)
    deleted_at = fields.DateTime(nullable=True)
    deleted = fields.Boolean(default=False)

    # -- rows -----------------------------------------------------------------

    def _apply_db(self, row: dict[str, Any]) -> None:
        backend.apply_row(self, row, skip=("report_count",))
        if "last_seen_at" in row:
            self.last_seen_up = row["last_seen_at"]
        if "report_count" in row:
            self.report_count = row["report_count"] or 0
        self.obj_reset_changes()

    @classmethod
    def _from_db(cls, row: dict[str, Any]) -> Service:
        service = cls()
        service._apply_db(row)
        return service

    # -- remotable methods ------------------------------------------------------

    @base.remotable_classmethod
    async def get_by_host_and_binary(
        cls: type[Service], context: RequestContext, host: str, binary: str
    ) -> Service:
        """The live service; ServiceNotFound if there is none."""
        row = await backend.get().service_get_by_host_and_binary(context, host, binary)
        return cls._from_db(row)

    @base.remotable_classmethod
    async def get_all(
        cls: type[Service], context: RequestContext, binary: str | None = None
    ) -> list[Service]:
        """Every live service (of ``binary``), by id; may be slightly stale."""
        rows = await backend.get().service_get_all(context, binary=binary)
        return [cls._from_db(row) for row in rows]

    @base.remotable_classmethod
    async def get_minimum_version(
        cls: type[Service], context: RequestContext, binary: str
    ) -> int | None:
        """The lowest code version among the services of ``binary`` (None: none
        registered); what ``[upgrade_levels] <api> = auto`` caps by."""
        return await backend.get().service_get_minimum_version(context, binary)

    @base.remotable
    async def create(self, context: RequestContext) -> None:
        """Register this service; DBDuplicateEntry if host+binary has a live one."""
        if self.obj_attr_is_set("id"):
            raise exception.ObjectActionError(action="create", reason="already created")
        values = backend.changed_values(self, skip=_NOT_WRITTEN)
        self._apply_db(await backend.get().service_create(context, values))

    @base.remotable
    async def save(self, context: RequestContext) -> None:
        """Write the changed fields of the service row. ``uuid``, ``host`` and
        ``binary`` cannot change (the database refuses them); the heartbeat
        fields are not written here (see :meth:`heartbeat`)."""
        values = backend.changed_values(self, skip=_NOT_WRITTEN)
        if not values:
            self.obj_reset_changes()
            return
        self._apply_db(await backend.get().service_update(context, self.id, values))

    @base.remotable
    async def heartbeat(self, context: RequestContext) -> None:
        """Report that this service is alive: one small upsert of its heartbeat
        row (the service row is not touched). Sets ``last_seen_up``."""
        self.last_seen_up = await backend.get().service_heartbeat(context, self.id)
        self.obj_reset_changes(["last_seen_up"])

    # -- liveness ---------------------------------------------------------------

    def is_up(self, service_down_time: int, now: datetime | None = None) -> bool:
        """Whether the service reported within ``service_down_time`` seconds
        (the rule of :mod:`nubes.liveness`)."""
        return liveness.is_up(
            forced_down=self.obj_attr_is_set("forced_down") and bool(self.forced_down),
            last_seen=self.last_seen_up if self.obj_attr_is_set("last_seen_up") else None,
            created_at=self.created_at if self.obj_attr_is_set("created_at") else None,
            down_time=service_down_time,
            now=now,
        )
