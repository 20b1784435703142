"""The Instance object: one virtual machine and everything a host needs to run it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nubes import exception
from nubes.objects import backend, base, fields
from nubes.objects.flavor import Flavor
from nubes.objects.instance_fault import InstanceFault
from nubes.objects.states import LockedBy, PowerState, TaskState, VMState

if TYPE_CHECKING:
    from nubes.context import RequestContext

#: Fields stored as a JSON snapshot of a Flavor.
FLAVOR_FIELDS = ("flavor", "old_flavor", "new_flavor")
#: What :meth:`Instance.get_by_uuid` can load beyond the instance's own row.
OPTIONAL_ATTRS = frozenset({"fault"})

# Never written by save(): the key, what only the database sets, the fault
# (recorded with InstanceFault.create) and the tags (a table of their own,
# written through the servers API only).
_NOT_SAVED = ("id", "uuid", "created_at", "deleted", "deleted_at", "fault", "tags")

#: An expected state: one state, several (None among them means "unset"), or
#: None for "do not check".
Expected = str | Sequence[str | None] | None


def _expected(name: str, expected: Any) -> list[str | None] | None:
    """The expected states as a list of plain strings or None (msgpack-able)."""
    if expected is None:
        return None
    items = [expected] if isinstance(expected, str) else expected
    if not isinstance(items, (list, tuple)) or not all(
        item is None or isinstance(item, str) for item in items
    ):
        raise exception.ValidationError(
            field=name, reason="expected a state, a list of states (None for unset) or None"
        )
    return [None if item is None else str.__str__(item) for item in items]


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

    # -- rows -----------------------------------------------------------------

    def _apply_db(self, row: dict[str, Any], *, nested: bool = True) -> None:
        """Load ``row`` into this object, the flavor snapshots too when ``nested``,
        and the fault when the row carries one; then nothing is changed."""
        backend.apply_row(self, row)
        self._apply_nested(row, nested=nested)

    def _apply_nested(self, row: dict[str, Any], *, nested: bool) -> None:
        """The nested objects of :meth:`_apply_db`; then nothing is changed."""
        if nested:
            for name in FLAVOR_FIELDS:
                if name in row:
                    snapshot = row[name]
                    setattr(
                        self, name, None if snapshot is None else Flavor.from_snapshot(snapshot)
                    )
        if "fault" in row:
            fault = row["fault"]
            self.fault = None if fault is None else InstanceFault._from_db(fault)
        self.obj_reset_changes(recursive=True)

    @classmethod
    def _from_db(cls, row: dict[str, Any]) -> Instance:
        instance = backend.from_row(cls, row)
        instance._apply_nested(row, nested=True)
        return instance

    @staticmethod
    def _check_attrs(expected_attrs: Sequence[str] | None) -> bool:
        unknown = set(expected_attrs or ()) - OPTIONAL_ATTRS
        if unknown:
            raise exception.ValidationError(
                field="expected_attrs", reason=f"cannot load {', '.join(sorted(unknown))}"
            )
        return "fault" in (expected_attrs or ())

    # -- remotable methods ------------------------------------------------------

    @base.remotable_classmethod
    async def get_by_uuid(
        cls: type[Instance],
        context: RequestContext,
        uuid: str,
        expected_attrs: list[str] | None = None,
    ) -> Instance:
        """The live instance ``uuid``; ``expected_attrs=["fault"]`` loads its
        newest fault too (``fault`` is left unset otherwise)."""
        with_fault = cls._check_attrs(expected_attrs)
        row = await backend.get().instance_get_by_uuid(context, uuid, with_fault=with_fault)
        return cls._from_db(row)

    @base.remotable_classmethod
    async def get_by_host(
        cls: type[Instance], context: RequestContext, host: str, allow_stale: bool = False
    ) -> list[Instance]:
        """The live instances whose ``host`` is ``host``, by id; ``allow_stale``
        lets the read go to a replica."""
        rows = await backend.get().instance_get_all_by_host(context, host, allow_stale=allow_stale)
        return [cls._from_db(row) for row in rows]

    @base.remotable
    async def save(
        self,
        context: RequestContext,
        expected_vm_state: Expected = None,
        expected_task_state: Expected = None,
    ) -> None:
        """Write the changed fields in one compare-and-set.

        ``expected_vm_state`` and ``expected_task_state`` are a state or a list
        of states the row must be in for the write to happen; put None in the
        list to expect no task (``expected_task_state=[None]``, as in Nova).
        None (the default) skips the check. When the row is in another state,
        nothing is written and InstanceUpdateConflict is raised.

        Afterwards the object holds the new ``updated_at`` and no changes;
        columns it did not change are not read back (``refresh`` does). ``id``,
        ``uuid``, ``created_at``, ``deleted``, ``deleted_at`` and ``fault`` are
        never written.
        """
        expected_vm = _expected("expected_vm_state", expected_vm_state)
        expected_task = _expected("expected_task_state", expected_task_state)
        changes = self.obj_what_changed().difference(_NOT_SAVED)
        if not changes and expected_vm is None and expected_task is None:
            self.obj_reset_changes(recursive=True)
            return
        data = self._data
        values: dict[str, Any] = {}
        for name in changes:
            value = getattr(data, name)
            if name in FLAVOR_FIELDS and value is not None:
                value = value.snapshot()
            values[name] = value
        row = await backend.get().instance_update(
            context,
            self.uuid,
            values,
            expected_vm_state=expected_vm,
            expected_task_state=expected_task,
        )
        self.updated_at = row["updated_at"]
        self.obj_reset_changes(recursive=True)

    @base.remotable
    async def refresh(self, context: RequestContext) -> None:
        """Reload every field from the database (the fault too, if it is set)."""
        with_fault = self.obj_attr_is_set("fault")
        row = await backend.get().instance_get_by_uuid(context, self.uuid, with_fault=with_fault)
        self._apply_db(row)
