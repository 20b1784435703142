"""The ComputeNode object: one hypervisor node's inventory and usage."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from nubes import exception
from nubes.objects import backend, base, fields

if TYPE_CHECKING:
    from nubes.context import RequestContext

# Set by the database (or bumped by it, for generation), never by a caller.
_NOT_WRITTEN = ("id", "generation", "created_at", "updated_at", "deleted_at", "deleted")


@base.register
class ComputeNode(base.VersionedObject):
    """A hypervisor node: what it has (``vcpus``, ``memory_mb``, ``local_gb``),
    what is used, and the allocation ratios the scheduler claims against.

    ``generation`` increases with every change of the row, claims included;
    the database sets it. ``cpu_info`` is JSON text, as Nova's drivers
    report it; ``metrics`` holds monitor readings such as
    ``{"cpu.percent": 12.5}`` and ``stats`` free-form counters.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    id = fields.Integer()
    uuid = fields.UUID()
    service_id = fields.Integer(nullable=True)
    host = fields.String()
    hypervisor_hostname = fields.String()
    hypervisor_type = fields.String(nullable=True)
    hypervisor_version = fields.Integer(nullable=True)
    host_ip = fields.String(nullable=True)
    cpu_info = fields.String(nullable=True)

    vcpus = fields.Integer()
    memory_mb = fields.Integer()
    local_gb = fields.Integer()
    vcpus_used = fields.Integer(default=0)
    memory_mb_used = fields.Integer(default=0)
    local_gb_used = fields.Integer(default=0)
    running_vms = fields.Integer(default=0)

    cpu_allocation_ratio = fields.Float()
    ram_allocation_ratio = fields.Float()
    disk_allocation_ratio = fields.Float()

    metrics = fields.Dict(nullable=True)
    stats = fields.Dict(nullable=True)
    generation = fields.Integer()

    created_at = fields.DateTime(nullable=True)
    updated_at = fields.DateTime(nullable=True)
    deleted_at = fields.DateTime(nullable=True)
    deleted = fields.Boolean(default=False)

    # -- rows -----------------------------------------------------------------

    def _apply_db(self, row: dict[str, Any]) -> None:
        backend.apply_row(self, row, skip=("cpu_info",))
        if "cpu_info" in row:
            info = row["cpu_info"]
            self.cpu_info = None if info is None else json.dumps(info, sort_keys=True)
        self.obj_reset_changes()

    @classmethod
    def _from_db(cls, row: dict[str, Any]) -> ComputeNode:
        node = cls()
        node._apply_db(row)
        return node

    def _db_values(self) -> dict[str, Any]:
        values = backend.changed_values(self, skip=_NOT_WRITTEN)
        info = values.get("cpu_info")
        if info is not None:
            try:
                values["cpu_info"] = json.loads(info)
            except ValueError:
                raise exception.ValidationError(field="cpu_info", reason="not JSON") from None
        return values

    # -- remotable methods ------------------------------------------------------

    @base.remotable_classmethod
    async def get_by_host_and_nodename(
        cls: type[ComputeNode], context: RequestContext, host: str, nodename: str
    ) -> ComputeNode:
        """The live node ``nodename`` (its hypervisor_hostname) of ``host``."""
        row = await backend.get().compute_node_get_by_host_and_nodename(context, host, nodename)
        return cls._from_db(row)

    @base.remotable_classmethod
    async def get_by_uuid(
        cls: type[ComputeNode], context: RequestContext, uuid: str
    ) -> ComputeNode:
        return cls._from_db(await backend.get().compute_node_get_by_uuid(context, uuid))

    @base.remotable
    async def create(self, context: RequestContext) -> None:
        """Add this node; ``id``, ``uuid`` (unless set), ``generation``, the
        ratios left unset and the timestamps come back from the database."""
        if self.obj_attr_is_set("id"):
            raise exception.ObjectActionError(action="create", reason="already created")
        self._apply_db(await backend.get().compute_node_create(context, self._db_values()))

    @base.remotable
    async def save(self, context: RequestContext) -> None:
        """Write the changed fields; the new ``generation`` and ``updated_at``
        come back. Only changed fields are written, so usage that claims
        changed meanwhile is not overwritten unless this object changed it."""
        values = self._db_values()
        if not values:
            self.obj_reset_changes()
            return
        self._apply_db(await backend.get().compute_node_update(context, self.id, values))
