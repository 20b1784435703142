"""The Flavor object: the hardware template an instance is built from."""

from __future__ import annotations

from nubes.objects import base, fields

#: Nova's default network bandwidth weight of a flavor.
DEFAULT_RXTX_FACTOR = 1.0


@base.register
class Flavor(base.VersionedObject):
    """A named set of resources (memory, CPUs, disks) and free-form extra specs.

    ``id`` is the database key; ``flavorid`` is the id users see in the API.
    An instance keeps a copy of its flavor, so changing a flavor later does
    not change the instances built from it.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    id = fields.Integer()
    flavorid = fields.String()
    name = fields.String()
    memory_mb = fields.Integer()
    vcpus = fields.Integer()
    root_gb = fields.Integer()
    ephemeral_gb = fields.Integer(default=0)
    swap = fields.Integer(default=0)
    rxtx_factor = fields.Float(default=DEFAULT_RXTX_FACTOR)
    is_public = fields.Boolean(default=True)
    disabled = fields.Boolean(default=False)
    extra_specs = fields.Dict(fields.String(), default={})
    description = fields.String(nullable=True, default=None)
