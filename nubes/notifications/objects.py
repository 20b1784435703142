"""Notification payloads: versioned objects, so consumers can tell what they read.

Each payload carries its name and version in the envelope
(``nubes_object.name``, ``nubes_object.version``); a consumer that knows
version 1.0 of a payload can read every 1.x, as with any nubes object.
"""

from __future__ import annotations

import traceback as tb
from typing import Any, Self

from nubes.objects import base, fields
from nubes.objects.states import PowerState, TaskState, VMState


def _field(obj: base.VersionedObject, name: str) -> Any:
    return getattr(obj, name) if obj.obj_attr_is_set(name) else None


@base.register
class ExceptionPayload(base.VersionedObject):
    """The error an operation failed with.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    exception = fields.String()
    exception_message = fields.String()
    module_name = fields.String(nullable=True)
    function_name = fields.String(nullable=True)
    traceback = fields.String(nullable=True)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ExceptionPayload:
        frames = tb.extract_tb(exc.__traceback__) if exc.__traceback__ else []
        last = frames[-1] if frames else None
        return cls(
            exception=type(exc).__name__,
            exception_message=str(exc),
            module_name=type(exc).__module__,
            function_name=last.name if last else None,
            traceback="".join(tb.format_exception(exc))[-4000:] if frames else None,
        )


@base.register
class InstancePayload(base.VersionedObject):
    """An instance as notifications show it.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    uuid = fields.UUID()
    user_id = fields.String(nullable=True)
    tenant_id = fields.String(nullable=True)
    display_name = fields.String(nullable=True)
    host = fields.String(nullable=True)
    node = fields.String(nullable=True)
    availability_zone = fields.String(nullable=True)
    image_uuid = fields.String(nullable=True)
    flavor_name = fields.String(nullable=True)
    vcpus = fields.Integer(nullable=True)
    memory_mb = fields.Integer(nullable=True)
    root_gb = fields.Integer(nullable=True)
    state = fields.Enum(VMState, nullable=True)
    task_state = fields.Enum(TaskState, nullable=True)
    power_state = fields.String(nullable=True)
    launched_at = fields.DateTime(nullable=True)
    terminated_at = fields.DateTime(nullable=True)

    def populate(self, instance: base.VersionedObject) -> None:
        flavor = _field(instance, "flavor")
        power = _field(instance, "power_state")
        try:
            power_name = None if power is None else PowerState(power).name.lower()
        except ValueError:
            power_name = str(power)
        self.update(
            {
                "uuid": instance.uuid,  # type: ignore[attr-defined]
                "user_id": _field(instance, "user_id"),
                "tenant_id": _field(instance, "project_id"),
                "display_name": _field(instance, "display_name"),
                "host": _field(instance, "host"),
                "node": _field(instance, "node"),
                "availability_zone": _field(instance, "availability_zone"),
                "image_uuid": _field(instance, "image_ref"),
                "flavor_name": None if flavor is None else _field(flavor, "name"),
                "vcpus": _field(instance, "vcpus"),
                "memory_mb": _field(instance, "memory_mb"),
                "root_gb": _field(instance, "root_gb"),
                "state": _field(instance, "vm_state"),
                "task_state": _field(instance, "task_state"),
                "power_state": power_name,
                "launched_at": _field(instance, "launched_at"),
                "terminated_at": _field(instance, "terminated_at"),
            }
        )

    @classmethod
    def from_instance(cls, instance: base.VersionedObject) -> Self:
        payload = cls()
        payload.populate(instance)
        return payload


@base.register
class InstanceActionPayload(InstancePayload):
    """An instance and, for ``*.error`` events, why the action failed.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    fault = fields.Object(ExceptionPayload, nullable=True, versions={"1.0": "1.0"})

    @classmethod
    def from_instance_and_fault(
        cls, instance: base.VersionedObject, exc: BaseException | None = None
    ) -> InstanceActionPayload:
        payload = cls()
        payload.populate(instance)
        payload.fault = None if exc is None else ExceptionPayload.from_exception(exc)
        return payload


@base.register
class InstanceUpdatePayload(InstancePayload):
    """An instance whose state changed, with the state it left.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    old_state = fields.Enum(VMState, nullable=True)
    old_task_state = fields.Enum(TaskState, nullable=True)


@base.register
class ServiceStatusPayload(base.VersionedObject):
    """A service's row, as ``service.update`` shows it.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    host = fields.String()
    binary = fields.String()
    topic = fields.String(nullable=True)
    version = fields.Integer(nullable=True)
    disabled = fields.Boolean(default=False)
    disabled_reason = fields.String(nullable=True)
    forced_down = fields.Boolean(default=False)
    last_seen_up = fields.DateTime(nullable=True)
    report_count = fields.Integer(nullable=True)
    uuid = fields.UUID(nullable=True)

    @classmethod
    def from_service(cls, service: base.VersionedObject) -> ServiceStatusPayload:
        names = (
            "host",
            "binary",
            "topic",
            "version",
            "disabled",
            "disabled_reason",
            "forced_down",
            "last_seen_up",
            "report_count",
            "uuid",
        )
        return cls(**{n: _field(service, n) for n in names if _field(service, n) is not None})
