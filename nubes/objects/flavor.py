"""The Flavor object: the hardware template an instance is built from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nubes.objects import backend, base, fields
from nubes.objects.registry import DATA_KEY

if TYPE_CHECKING:
    from nubes.context import RequestContext

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

    @classmethod
    def _from_db(cls, row: dict[str, Any]) -> Flavor:
        return backend.from_row(cls, row)

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> Flavor:
        """The flavor an instance keeps, from its JSON column (see :meth:`snapshot`)."""
        if DATA_KEY in snapshot:  # an object envelope, should one have been stored
            return cls.obj_from_primitive(snapshot)
        return backend.from_row(cls, snapshot)

    def snapshot(self) -> dict[str, Any]:
        """The fields that are set, as the JSON an instance's flavor columns hold."""
        data: dict[str, Any] = self.obj_to_primitive()[DATA_KEY]
        return data

    @base.remotable_classmethod
    async def get_by_id(cls: type[Flavor], context: RequestContext, id: int) -> Flavor:
        """The flavor with database id ``id``, with its extra specs."""
        return cls._from_db(await backend.get().flavor_get_by_id(context, id))

    @base.remotable_classmethod
    async def get_by_flavor_id(
        cls: type[Flavor], context: RequestContext, flavor_id: str
    ) -> Flavor:
        """The flavor users know as ``flavor_id``, with its extra specs."""
        return cls._from_db(await backend.get().flavor_get_by_flavor_id(context, flavor_id))
