"""Object classes for the tests, in registries of their own.

``NEW`` is a process running Gadget 1.2 and Part 1.1; ``OLD`` is a process
still at Gadget 1.0 and Part 1.0, for the rolling-upgrade cases. Neither is
the process-wide REGISTRY, so the fingerprint test sees only nubes's objects.
"""

from __future__ import annotations

from typing import Any

from nubes.context import RequestContext
from nubes.objects import base, fields
from nubes.objects.registry import ObjectRegistry

NEW = ObjectRegistry()
OLD = ObjectRegistry()

UUID1 = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
UUID2 = "6fa459ea-ee8a-4ca4-894e-db77e160355e"


@NEW.register
class Part(base.VersionedObject):
    """A component.

    1.0: Initial version
    1.1: Added colour
    """

    VERSION = "1.1"

    name = fields.String()
    size = fields.Integer(default=1)
    colour = fields.String(nullable=True, added_in="1.1")


@NEW.register
class Gadget(base.VersionedObject):
    """A thing with parts.

    1.0: Initial version
    1.1: Added label
    1.2: Added parts; main is Part 1.1
    """

    VERSION = "1.2"

    id = fields.Integer()
    uuid = fields.UUID(nullable=True)
    label = fields.String(nullable=True, added_in="1.1")
    created_at = fields.DateTime(nullable=True)
    settings = fields.Dict(fields.String(), default={})
    main = fields.Object(Part, nullable=True, versions={"1.0": "1.0", "1.2": "1.1"})
    parts = fields.ListOfObjects(Part, added_in="1.2", versions={"1.2": "1.1"})

    @base.remotable
    async def relabel(self, context: RequestContext, label: str, *, loud: bool = False) -> str:
        old = self.label if self.obj_attr_is_set("label") else None
        self.label = label.upper() if loud else label
        return f"was {old}"

    @base.remotable
    async def save(self, context: RequestContext) -> None:
        """What a DB-backed save does to the object: writes, then forgets changes."""
        self.obj_reset_changes(recursive=True)

    @base.remotable
    async def grow_main(self, context: RequestContext) -> None:
        self.main.size += 1

    @base.remotable
    async def whoami(self, context: RequestContext) -> dict[str, Any]:
        return {"user": context.user_id, "request": context.request_id}

    @base.remotable_classmethod
    async def build(
        cls: type[Gadget], context: RequestContext, id: int, with_part: bool = True
    ) -> Gadget:
        gadget = cls(id=id)
        if with_part:
            gadget.main = Part(name="wheel", colour="red")
            gadget.parts = [Part(name="spoke", colour="blue")]
        gadget.obj_reset_changes(recursive=True)
        return gadget

    async def not_remote(self, context: RequestContext) -> None:
        """A coroutine without the decorator: must never be callable remotely."""


@OLD.register
class OldPart(base.VersionedObject):
    """1.0: Initial version"""

    OBJ_NAME = "Part"
    VERSION = "1.0"

    name = fields.String()
    size = fields.Integer(default=1)


@OLD.register
class OldGadget(base.VersionedObject):
    """1.0: Initial version"""

    OBJ_NAME = "Gadget"
    VERSION = "1.0"

    id = fields.Integer()
    uuid = fields.UUID(nullable=True)
    created_at = fields.DateTime(nullable=True)
    settings = fields.Dict(fields.String(), default={})
    main = fields.Object(OldPart, nullable=True, versions={"1.0": "1.0"})


@NEW.register
class Everything(base.VersionedObject):
    """One field of every kind, for the coercion tests.

    1.0: Initial version
    """

    text = fields.String(nullable=True)
    count = fields.Integer(nullable=True)
    ratio = fields.Float(nullable=True)
    flag = fields.Boolean(nullable=True)
    ident = fields.UUID(nullable=True)
    when = fields.DateTime(nullable=True)
    state = fields.Enum(("on", "off"), nullable=True)
    specs = fields.Dict(fields.String(), nullable=True)
    anything = fields.Dict(nullable=True)
    stamps = fields.Dict(fields.DateTime(), nullable=True)
    names = fields.List(fields.String(), nullable=True)
    mixed = fields.List(nullable=True)
    idents = fields.List(fields.UUID(), nullable=True)
    part = fields.Object(Part, nullable=True, versions={"1.0": "1.1"})
    parts = fields.ListOfObjects(Part, nullable=True, versions={"1.0": "1.1"})
    required = fields.Integer()


def gadget(**overrides: Any) -> Gadget:
    """A fully set Gadget with no pending changes, as if just loaded."""
    import datetime

    values: dict[str, Any] = {
        "id": 7,
        "uuid": UUID1,
        "label": "seven",
        "created_at": datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.UTC),
        "settings": {"a": "1"},
        "main": Part(name="wheel", size=3, colour="red"),
        "parts": [Part(name="spoke", size=1, colour="blue"), Part(name="hub", size=2)],
    }
    values.update(overrides)
    obj = Gadget(**values)
    obj.obj_reset_changes(recursive=True)
    return obj
