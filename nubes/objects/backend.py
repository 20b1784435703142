"""Where the remotable methods of objects get their data: the object backend.

Nothing under :mod:`nubes.objects` may import the DB layer (compute imports
objects, and compute must never reach the database), so the bodies of
remotable methods call an :class:`ObjectBackend` instead: one async method
per database operation, taking the request context first and returning plain
dicts (column name -> value), lists of them, or None. A process with database
access (conductor, api, scheduler, all-in-one) installs the implementation
from :mod:`nubes.db.object_backend` at start::

    backend.install(DBObjectBackend(database))

A compute host installs none; its remotable calls go through the indirection
API to the conductor, and a body that runs there anyway fails with
:class:`~nubes.exception.DatabaseAccessForbidden` from :func:`get`.

:func:`apply_row` is the one helper the objects share to load a row.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

import msgspec

from nubes import exception
from nubes.objects.fields import NO_DEFAULT, Field

if TYPE_CHECKING:
    from nubes.context import RequestContext
    from nubes.objects.base import VersionedObject

__all__ = ["ExpectedStates", "ObjectBackend", "Row", "apply_row", "get", "install", "uninstall"]

#: A row as the backend hands it out: column name -> value (aware UTC datetimes,
#: decoded JSON).
Row: TypeAlias = dict[str, Any]
#: Expected states of a compare-and-set: None means "do not check"; otherwise
#: the states allowed, where None in the list means "must be unset (NULL)".
ExpectedStates: TypeAlias = Sequence[str | None] | None

OT = TypeVar("OT", bound="VersionedObject")

#: The compute host the conductor is running the current remotable method
#: for, when its authoriser left the placement check to the write itself:
#: writes that honour it (Instance.save, InstanceActionEvent.event_start and
#: event_finish) then only touch rows placed on that host, checked in the
#: same statement, so check and write cannot race.
placement_scope: ContextVar[str | None] = ContextVar("nubes_placement_scope", default=None)


class ObjectBackend(Protocol):
    """Every database operation the objects' remotable methods need.

    Each runs in one short transaction of its own. Lookups raise the
    resource's NotFound error (InstanceNotFound, ServiceNotFound ...).
    """

    # -- instances ------------------------------------------------------------

    async def instance_get_by_uuid(
        self, context: RequestContext, uuid: str, *, with_fault: bool = False
    ) -> Row:
        """The live instance; with ``with_fault``, its newest fault (a row or
        None) under the key ``fault``."""
        ...

    async def instance_get_all_by_host(
        self, context: RequestContext, host: str, *, allow_stale: bool = False
    ) -> list[Row]: ...

    async def instance_update(
        self,
        context: RequestContext,
        uuid: str,
        values: Mapping[str, Any],
        *,
        expected_vm_state: ExpectedStates = None,
        expected_task_state: ExpectedStates = None,
    ) -> Row:
        """Set ``values`` if the expected states hold; returns ``{"updated_at": ...}``.

        Nothing else is read back: the caller's object already holds what it
        wrote. Raises InstanceUpdateConflict (never overwrites),
        InstanceNotFound, or InstanceNotOnHost when :data:`placement_scope`
        names a host the instance is not placed on.
        """
        ...

    async def instance_fault_create(
        self, context: RequestContext, values: Mapping[str, Any]
    ) -> Row: ...

    # -- what a guest is told (the metadata service, config drive) ------------

    async def instance_metadata_get(self, context: RequestContext, instance_uuid: str) -> Row:
        """The live instance with ``public_key`` and ``ports`` (each with its
        ``network`` and ``fixed_ips`` with their ``subnet``)."""
        ...

    async def instance_metadata_get_by_address(
        self, context: RequestContext, network_id: str, address: str
    ) -> Row:
        """As :meth:`instance_metadata_get`, for the live instance whose port
        holds ``address`` on ``network_id`` (InstanceNotFound when none does)."""
        ...

    async def instance_password_set_by_address(
        self, context: RequestContext, network_id: str, address: str, password: str
    ) -> bool:
        """Store the password of the live instance whose port holds
        ``address`` on ``network_id`` unless it has one (then False)."""
        ...

    # -- flavors --------------------------------------------------------------

    async def flavor_get_by_id(self, context: RequestContext, flavor_id: int) -> Row:
        """The flavor with ``extra_specs`` (a dict)."""
        ...

    async def flavor_get_by_flavor_id(self, context: RequestContext, flavorid: str) -> Row: ...

    # -- compute nodes --------------------------------------------------------

    async def compute_node_get_by_host_and_nodename(
        self, context: RequestContext, host: str, nodename: str
    ) -> Row: ...

    async def compute_node_get_by_uuid(self, context: RequestContext, uuid: str) -> Row: ...

    async def compute_node_create(
        self, context: RequestContext, values: Mapping[str, Any]
    ) -> Row: ...

    async def compute_node_update(
        self, context: RequestContext, node_id: int, values: Mapping[str, Any]
    ) -> Row:
        """Change a node; the new row (its generation is bumped)."""
        ...

    # -- services -------------------------------------------------------------

    async def service_get_by_host_and_binary(
        self, context: RequestContext, host: str, binary: str
    ) -> Row:
        """The service with ``last_seen_at`` and ``report_count`` of its heartbeat
        (None when it never reported)."""
        ...

    async def service_get_all(
        self, context: RequestContext, *, binary: str | None = None
    ) -> list[Row]:
        """Live services with their heartbeat, as above; may be slightly stale."""
        ...

    async def service_get_minimum_version(self, context: RequestContext, binary: str) -> int | None:
        """The lowest ``version`` among the (not deleted) services of ``binary``."""
        ...

    async def service_create(self, context: RequestContext, values: Mapping[str, Any]) -> Row: ...

    async def service_update(
        self, context: RequestContext, service_id: int, values: Mapping[str, Any]
    ) -> Row: ...

    async def service_heartbeat(self, context: RequestContext, service_id: int) -> datetime:
        """Record a report of the service now; the time recorded."""
        ...

    # -- migrations -----------------------------------------------------------

    async def migration_get_by_id(self, context: RequestContext, migration_id: int) -> Row: ...

    async def migration_create(self, context: RequestContext, values: Mapping[str, Any]) -> Row: ...

    async def migration_update(
        self, context: RequestContext, migration_id: int, values: Mapping[str, Any]
    ) -> Row: ...

    async def migration_get_evacuations_from_host(
        self, context: RequestContext, host: str
    ) -> list[Row]:
        """Evacuations from ``host`` that are ``accepted``, ``pre-migrating`` or ``done``."""
        ...

    async def migration_complete_evacuation(
        self, context: RequestContext, migration_id: int
    ) -> Row:
        """Move a ``done`` evacuation to ``completed`` (a repeat finds it completed);
        InvalidMigrationTransition for anything else."""
        ...

    # -- instance actions -----------------------------------------------------

    async def action_start(
        self,
        context: RequestContext,
        *,
        instance_uuid: str,
        action: str,
        request_id: str,
        user_id: str | None,
        project_id: str | None,
    ) -> Row: ...

    async def action_finish(
        self,
        context: RequestContext,
        *,
        instance_uuid: str,
        request_id: str,
        message: str | None = None,
    ) -> Row: ...

    async def action_get_by_request_id(
        self, context: RequestContext, instance_uuid: str, request_id: str
    ) -> Row: ...

    async def actions_get(
        self, context: RequestContext, instance_uuid: str, *, limit: int | None = None
    ) -> list[Row]:
        """An instance's actions, newest first."""
        ...

    async def action_event_start(
        self,
        context: RequestContext,
        *,
        instance_uuid: str,
        request_id: str,
        event: str,
        host: str | None = None,
    ) -> Row: ...

    async def action_event_finish(
        self,
        context: RequestContext,
        *,
        instance_uuid: str,
        request_id: str,
        event: str,
        result: str,
        traceback: str | None = None,
        details: str | None = None,
    ) -> Row: ...

    async def action_events_get(self, context: RequestContext, action_id: int) -> list[Row]: ...


_installed: ObjectBackend | None = None


def install(backend: ObjectBackend) -> None:
    """Make ``backend`` the one remotable methods run against in this process."""
    global _installed
    _installed = backend


def uninstall() -> None:
    global _installed
    _installed = None


def _process_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def get() -> ObjectBackend:
    """The installed backend; DatabaseAccessForbidden when there is none."""
    if _installed is None:
        name = _process_name()
        raise exception.DatabaseAccessForbidden(
            f"This process ({name}) has no database access: no object backend is "
            "installed, so remotable object methods must go through the conductor "
            "(install the conductor client as the indirection API).",
            service=name,
        )
    return _installed


def _row_values(
    cls: type[VersionedObject], row: Mapping[str, Any], skip: Iterable[str]
) -> dict[str, Any]:
    """{field: value} of the plain fields of ``cls`` that ``row`` has a column for."""
    skipped = frozenset(skip)
    values: dict[str, Any] = {}
    for name, field in _plain_fields(cls):
        if name in row and name not in skipped:
            value = row[name]
            if name == "deleted":
                value = bool(value)
            elif value is None and not field.nullable:
                # A NULL column the object cannot hold: the row never set it.
                if field.default is NO_DEFAULT:
                    continue
                value = field.default_value()
            values[name] = value
    return values


@functools.cache
def _plain_fields(cls: type[VersionedObject]) -> tuple[tuple[str, Field[Any]], ...]:
    """The fields of ``cls`` a row's columns load (nested objects are the caller's)."""
    children = cls._obj_children
    return tuple((n, f) for n, f in cls._obj_field_map.items() if n not in children)


def _converted(cls: type[VersionedObject], values: dict[str, Any]) -> Any:
    """``values`` as a storage struct of ``cls`` in canonical form, or None.

    A row's values are nearly always canonical already: one strict msgspec
    check of them all (the envelope decoder's fast path) instead of a Python
    coercion per field, which cost more than the query on a build. None
    (something it refused) sends the caller down the coercing path, which
    raises the precise error.
    """
    try:
        loaded = msgspec.convert(values, cls._obj_storage)
    except msgspec.ValidationError:
        return None
    cls._obj_fix(loaded)
    return loaded


def apply_row(obj: VersionedObject, row: Mapping[str, Any], *, skip: Iterable[str] = ()) -> None:
    """Set every plain field of ``obj`` that ``row`` has a column for.

    Nested-object fields and those named in ``skip`` are left to the caller
    (they need converting); ``deleted`` is Nova's soft-delete marker (0, or
    the row's id) and becomes a bool; NULL in a column whose field is not
    nullable gives the field's default (or leaves it alone if it has none).
    Changes are not reset here.
    """
    values = _row_values(type(obj), row, skip)
    loaded = _converted(type(obj), values)
    if loaded is None:
        obj.update(values)
        return
    data = obj._data
    for name in values:
        setattr(data, name, getattr(loaded, name))
    obj._changed.update(values)


def from_row(cls: type[OT], row: Mapping[str, Any], *, skip: Iterable[str] = ()) -> OT:
    """A new object of ``cls`` loaded from ``row`` (see :func:`apply_row`), unchanged."""
    values = _row_values(cls, row, skip)
    loaded = _converted(cls, values)
    if loaded is None:
        obj = cls()
        obj.update(values)
        obj.obj_reset_changes()
        return obj
    # The converted struct becomes the object's storage: nothing copied.
    return cls._obj_unchanged(loaded)


def changed_values(obj: VersionedObject, *, skip: Iterable[str] = ()) -> dict[str, Any]:
    """{field: value} of the changed plain fields of ``obj``, less ``skip``."""
    skipped = set(skip).union(obj._obj_children)
    return {k: v for k, v in obj.obj_get_changes().items() if k not in skipped}
