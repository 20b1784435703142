"""The Instance object: one virtual machine and everything a host needs to run it."""

from __future__ import annotations

from nubes.objects import base, fields
from nubes.objects.flavor import Flavor
from nubes.objects.instance_fault import InstanceFault
from nubes.objects.states import LockedBy, PowerState, TaskState, VMState


@base.register
class Instance(base.VersionedObject):
    """A virtual machine: who owns it, where it runs, its state and resources.

    ``flavor`` is the copy of the flavor it was built or resized with;
    ``old_flavor`` and ``new_flavor`` are set while a resize is in flight.
    ``fault`` is the last failure, if any. ``metadata`` belongs to the user,
    ``system_metadata`` to nubes.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    id = fields.Integer()
    uuid = fields.UUID()
    user_id = fields.String(nullable=True)
    project_id = fields.String(nullable=True)

    image_ref = fields.String(nullable=True)
    hostname = fields.String(nullable=True)
    display_name = fields.String(nullable=True)
    display_description = fields.String(nullable=True)
    key_name = fields.String(nullable=True)
    reservation_id = fields.String(nullable=True)
    launch_index = fields.Integer(nullable=True)

    host = fields.String(nullable=True)
    node = fields.String(nullable=True)
    launched_on = fields.String(nullable=True)
    availability_zone = fields.String(nullable=True)

    vm_state = fields.Enum(VMState, default=VMState.BUILDING)
    task_state = fields.Enum(TaskState, nullable=True, default=None)
    power_state = fields.Integer(default=PowerState.NOSTATE)
    progress = fields.Integer(nullable=True)
    locked = fields.Boolean(default=False)
    locked_by = fields.Enum(LockedBy, nullable=True, default=None)
    shutdown_terminate = fields.Boolean(default=False)

    memory_mb = fields.Integer(nullable=True)
    vcpus = fields.Integer(nullable=True)
    root_gb = fields.Integer(nullable=True)
    ephemeral_gb = fields.Integer(nullable=True)

    launched_at = fields.DateTime(nullable=True)
    terminated_at = fields.DateTime(nullable=True)
    created_at = fields.DateTime(nullable=True)
    updated_at = fields.DateTime(nullable=True)
    deleted_at = fields.DateTime(nullable=True)
    deleted = fields.Boolean(default=False)

    metadata = fields.Dict(fields.String(), default={})
    system_metadata = fields.Dict(fields.String(), default={})
    tags = fields.List(fields.String(), default=[])

    flavor = fields.Object(Flavor, versions={"1.0": "1.0"})
    old_flavor = fields.Object(Flavor, nullable=True, versions={"1.0": "1.0"})
    new_flavor = fields.Object(Flavor, nullable=True, versions={"1.0": "1.0"})
    fault = fields.Object(InstanceFault, nullable=True, versions={"1.0": "1.0"})
