"""The msgspec types behind each object class: its storage and its envelope.

An object keeps its fields in one instance of a per-class ``msgspec.Struct``
(every field defaulting to ``msgspec.UNSET``, which is what "not set" means).
That makes encoding a C-level walk of the struct, and lets decoding check a
whole envelope, nested objects included, with one ``msgspec.convert`` call
against the class's envelope type, instead of a Python call per field.

That check is strict: each field's :meth:`~nubes.objects.fields.Field.wire_type`
accepts only values already in canonical form, and unknown fields are
refused. Whatever it does not accept (a value that needs coercing, a junk
primitive, a version this process cannot read) is handed to the slow path in
:mod:`nubes.objects.base`, which coerces field by field and raises the
precise nubes error. So the fast path decides nothing on its own except
"this is certainly fine".
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from nubes.objects.registry import CHANGES_KEY, DATA_KEY, NAME_KEY, VERSION_KEY

if TYPE_CHECKING:
    from nubes.objects.base import VersionedObject

UNSET = msgspec.UNSET
_Unset = msgspec.UnsetType

_ENVELOPE_NAMES = {
    "name": NAME_KEY,
    "version": VERSION_KEY,
    "data": DATA_KEY,
    "changes": CHANGES_KEY,
}


def build_storage(cls: type[VersionedObject]) -> type[msgspec.Struct]:
    """The struct that holds one object's fields; unset fields are UNSET."""
    members: list[tuple[str, Any, Any]] = []
    for name, field in cls._obj_field_map.items():
        wire = field.wire_type()
        if field.nullable:
            wire = wire | None
        members.append((name, wire | _Unset, UNSET))
    return msgspec.defstruct(
        f"{cls.__name__}Data",
        members,
        forbid_unknown_fields=True,
        module=cls.__module__,
    )


def build_envelope(cls: type[VersionedObject]) -> type[msgspec.Struct]:
    """The struct an envelope of ``cls`` converts into on the fast path."""
    return msgspec.defstruct(
        f"{cls.__name__}Envelope",
        [
            ("name", Literal[cls._obj_name]),
            ("version", str),
            ("data", cls._obj_storage),
            ("changes", list[str] | _Unset, UNSET),
        ],
        rename=_ENVELOPE_NAMES,
        forbid_unknown_fields=True,
        module=cls.__module__,
    )


def _fixup_lines(cls: type[VersionedObject], namespace: dict[str, Any], indent: str) -> list[str]:
    """Source moving each plain field of ``data`` that passed the strict check
    but is not canonical yet (a datetime in another offset, a UUID in another
    form) to its canonical form."""
    lines: list[str] = []
    for index, (name, field) in enumerate(cls._obj_field_map.items()):
        if field.nested or not field.needs_fixup:
            continue
        fixup = f"fixup_{index}"
        namespace[fixup] = partial(field.fixup, cls._obj_name)
        settled = field.settled("v", namespace)
        unsettled = "" if settled is None else f" and not ({settled})"
        lines += [
            f"{indent}v = data.{name}",
            f"{indent}if v is not UNSET and v is not None{unsettled}:",
            f"{indent}    data.{name} = {fixup}(v)",
        ]
    return lines


def build_fixer(cls: type[VersionedObject]) -> Callable[[Any], None]:
    """The function completing, in place, a storage struct of ``cls`` whose
    plain fields passed the strict check (a database row converted in one
    call, see ``backend.apply_row``): the fixups the finisher applies."""
    namespace: dict[str, Any] = {"UNSET": UNSET}
    lines = ["def fix(data):", *_fixup_lines(cls, namespace, "    "), "    return None"]
    exec(compile("\n".join(lines), f"<nubes fixer for {cls.__qualname__}>", "exec"), namespace)
    fixer: Callable[[Any], None] = namespace["fix"]
    return fixer


def build_finisher(cls: type[VersionedObject]) -> Callable[[Any], VersionedObject]:
    """The function completing an envelope struct that passed the fast path
    into an object: nested envelopes become objects, datetimes with another
    offset move to UTC, and the version and changes are checked.

    It is compiled per class because it runs once per decoded object and a
    generic loop of getattr calls cost more than the msgspec check itself.
    """
    namespace: dict[str, Any] = {
        "UNSET": UNSET,
        "cls": cls,
        "new": object.__new__,
        "check_older": cls._obj_check_older,
        "check_changes": cls._obj_check_changes,
    }
    lines = [
        "def finish(envelope):",
        "    data = envelope.data",
        f"    if envelope.version != {cls.VERSION!r}:",
        "        check_older(envelope.version, data)",
    ]
    for index, (name, field) in enumerate(cls._obj_field_map.items()):
        if field.nested:
            child = f"child_{index}"
            namespace[child] = field.obj_cls._obj_finish  # type: ignore[attr-defined]
            converted = (
                f"[{child}(item) for item in v]" if field.nested == "objects" else f"{child}(v)"
            )
            lines += [
                f"    v = data.{name}",
                "    if v is not UNSET and v is not None:",
                f"        data.{name} = {converted}",
            ]
    lines += _fixup_lines(cls, namespace, "    ")
    lines += [
        "    obj = new(cls)",
        "    obj._data = data",
        "    obj._orig = None",
        "    changes = envelope.changes",
        "    obj._changed = set() if changes is UNSET else check_changes(data, changes)",
        "    return obj",
    ]
    exec(compile("\n".join(lines), f"<nubes finisher for {cls.__qualname__}>", "exec"), namespace)
    finisher: Callable[[Any], VersionedObject] = namespace["finish"]
    return finisher
