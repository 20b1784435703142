"""The Migration object: an instance moving between hosts (or resizing in place)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nubes import exception
from nubes.objects import backend, base, fields

if TYPE_CHECKING:
    from nubes.context import RequestContext

#: Nova's kinds of migration.
MIGRATION_TYPES = ("migration", "resize", "live-migration", "evacuation")

_NOT_WRITTEN = ("id", "created_at", "updated_at", "deleted_at", "deleted")


@base.register
class Migration(base.VersionedObject):
    """A move of ``instance_uuid`` from ``source_compute``/``source_node`` to
    ``dest_compute``/``dest_node``. ``status`` follows the migration state
    machine; the ``memory_*`` and ``disk_*`` counters report a live
    migration's progress in bytes.

    Version history:

    1.0: Initial version
    1.1: old_instance_type_id, new_instance_type_id
    1.2: get_evacuations_from_host, complete_evacuation
    """

    VERSION = "1.2"

    id = fields.Integer()
    uuid = fields.UUID()
    instance_uuid = fields.UUID(nullable=True)
    source_compute = fields.String(nullable=True)
    dest_compute = fields.String(nullable=True)
    source_node = fields.String(nullable=True)
    dest_node = fields.String(nullable=True)
    dest_host = fields.String(nullable=True)
    status = fields.String(nullable=True)
    migration_type = fields.Enum(MIGRATION_TYPES, nullable=True)
    old_instance_type_id = fields.Integer(nullable=True, added_in="1.1")
    new_instance_type_id = fields.Integer(nullable=True, added_in="1.1")
    hidden = fields.Boolean(default=False)
    project_id = fields.String(nullable=True)
    user_id = fields.String(nullable=True)

    memory_total = fields.Integer(nullable=True)
    memory_processed = fields.Integer(nullable=True)
    memory_remaining = fields.Integer(nullable=True)
    disk_total = fields.Integer(nullable=True)
    disk_processed = fields.Integer(nullable=True)
    disk_remaining = fields.Integer(nullable=True)

    created_at = fields.DateTime(nullable=True)
    updated_at = fields.DateTime(nullable=True)
    deleted_at = fields.DateTime(nullable=True)
    deleted = fields.Boolean(default=False)

    def _apply_db(self, row: dict[str, Any]) -> None:
        backend.apply_row(self, row)
        self.obj_reset_changes()

    @classmethod
    def _from_db(cls, row: dict[str, Any]) -> Migration:
        return backend.from_row(cls, row)

    @base.remotable_classmethod
    async def get_by_id(cls: type[Migration], context: RequestContext, id: int) -> Migration:
        return cls._from_db(await backend.get().migration_get_by_id(context, id))

    @base.remotable_classmethod
    async def get_evacuations_from_host(
        cls: type[Migration], context: RequestContext, host: str
    ) -> list[Migration]:
        """The open evacuations whose source is ``host``, by id: ``accepted`` and
        ``pre-migrating`` (the instance is being rebuilt elsewhere) and ``done``
        (it runs elsewhere; ``host`` is to remove what is left of it)."""
        rows = await backend.get().migration_get_evacuations_from_host(context, host)
        return [cls._from_db(row) for row in rows]

    @base.remotable
    async def complete_evacuation(self, context: RequestContext) -> None:
        """``done`` -> ``completed``: the source host removed the evacuated
        instance's remains. Nothing else is written; a migration that is not
        a ``done`` evacuation is refused (InvalidMigrationTransition)."""
        self._apply_db(await backend.get().migration_complete_evacuation(context, self.id))

    @base.remotable
    async def create(self, context: RequestContext) -> None:
        """Record this migration; ``id``, ``uuid`` (unless set) and the
        timestamps come back from the database."""
        if self.obj_attr_is_set("id"):
            raise exception.ObjectActionError(action="create", reason="already created")
        values = backend.changed_values(self, skip=_NOT_WRITTEN)
        self._apply_db(await backend.get().migration_create(context, values))

    @base.remotable
    async def save(self, context: RequestContext) -> None:
        """Write the changed fields (``uuid`` cannot change)."""
        values = backend.changed_values(self, skip=_NOT_WRITTEN)
        if not values:
            self.obj_reset_changes()
            return
        self._apply_db(await backend.get().migration_update(context, self.id, values))
