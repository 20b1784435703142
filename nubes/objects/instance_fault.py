"""The InstanceFault object: why an instance last went wrong."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nubes import exception
from nubes.objects import backend, base, fields

if TYPE_CHECKING:
    from nubes.context import RequestContext

#: Longest message the database keeps (Nova truncates the same way).
MAX_MESSAGE_LENGTH = 255

# Set by the database, never by the creator.
_NOT_CREATED = ("id", "created_at", "updated_at", "deleted_at", "deleted")


@base.register
class InstanceFault(base.VersionedObject):
    """The error recorded when an operation on an instance failed.

    ``code`` is the HTTP-style code of the error; ``details`` (a traceback,
    say) is shown to admins only.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    id = fields.Integer()
    instance_uuid = fields.UUID()
    code = fields.Integer()
    message = fields.String(nullable=True)
    details = fields.String(nullable=True)
    host = fields.String(nullable=True)
    created_at = fields.DateTime(nullable=True)
    updated_at = fields.DateTime(nullable=True)
    deleted_at = fields.DateTime(nullable=True)
    deleted = fields.Boolean(default=False)

    @classmethod
    def _from_db(cls, row: dict[str, Any]) -> InstanceFault:
        return backend.from_row(cls, row)

    @base.remotable
    async def create(self, context: RequestContext) -> None:
        """Record this fault; ``id`` and the timestamps come back from the database.

        A message longer than the column is cut, not refused: losing the end
        of an error text beats losing the fault.
        """
        if self.obj_attr_is_set("id"):
            raise exception.ObjectActionError(action="create", reason="already created")
        values = backend.changed_values(self, skip=_NOT_CREATED)
        message = values.get("message")
        if message is not None and len(message) > MAX_MESSAGE_LENGTH:
            values["message"] = message[:MAX_MESSAGE_LENGTH]
        row = await backend.get().instance_fault_create(context, values)
        backend.apply_row(self, row)
        self.obj_reset_changes()
