"""The InstanceFault object: why an instance last went wrong."""

from __future__ import annotations

from nubes.objects import base, fields


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
