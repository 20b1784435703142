"""Which object classes this process knows, by name, and the versions it reads.

A registry maps each object name to the one class this process runs for it.
It reads a primitive of that name at the class's version or any older minor
of the same major (fields added later are simply absent); a newer minor or
another major is refused with :class:`~nubes.exception.IncompatibleObjectVersion`
so the caller can ask the conductor for a backport.

The process-wide registry is :data:`REGISTRY` and :func:`register` adds to
it. Tests that need an "older" and a "newer" process side by side make their
own :class:`ObjectRegistry` instances.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from nubes import exception

if TYPE_CHECKING:
    from nubes.objects.base import VersionedObject

#: Keys of the envelope an object travels in.
NAME_KEY = "nubes_object.name"
VERSION_KEY = "nubes_object.version"
DATA_KEY = "nubes_object.data"
CHANGES_KEY = "nubes_object.changes"
ENVELOPE_KEYS = frozenset((NAME_KEY, VERSION_KEY, DATA_KEY, CHANGES_KEY))

#: How much of a foreign value an error message quotes.
MAX_QUOTED_CHARS = 80

ClassT = TypeVar("ClassT", bound="type[VersionedObject]")


def quote(value: object) -> str:
    """A bounded repr of a value that may have come from an untrusted peer."""
    text = repr(value)
    if len(text) > MAX_QUOTED_CHARS:
        text = text[: MAX_QUOTED_CHARS - 3] + "..."
    return text


class ObjectRegistry:
    """Object classes by name, and the decoding of envelopes into them."""

    def __init__(self) -> None:
        self._classes: dict[str, type[VersionedObject]] = {}

    def register(self, cls: ClassT) -> ClassT:
        """Class decorator: make ``cls`` the class for its ``obj_name()``."""
        name = cls.obj_name()
        known = self._classes.get(name)
        if known is not None and known is not cls:
            raise TypeError(
                f"object name {name!r} is already registered by "
                f"{known.__module__}.{known.__qualname__}"
            )
        self._classes[name] = cls
        # Nested objects decode through their class's registry: the first
        # one it joined, which a later registration elsewhere must not move.
        if "_obj_registry" not in vars(cls):
            cls._obj_registry = self
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._classes))

    def __len__(self) -> int:
        return len(self._classes)

    def get(self, name: str) -> type[VersionedObject]:
        """The class registered for ``name``; UnknownObject if there is none."""
        cls = self._classes.get(name)
        if cls is None:
            raise exception.UnknownObject(objname=quote(name))
        return cls

    def lookup(self, name: str, version: str) -> type[VersionedObject]:
        """The class that can read ``name`` at ``version``, or a clear refusal."""
        cls = self.get(name)
        cls.obj_check_readable(version)
        return cls

    def versions(self) -> dict[str, str]:
        """Every object this process knows, with the version it runs."""
        return {name: self._classes[name].VERSION for name in sorted(self._classes)}

    def runs(self, name: str, version: str) -> bool:
        """Whether this process runs object ``name`` at exactly ``version``.

        What :meth:`versions` would say of one object, without building the
        whole table: the conductor asks it of every object in every reply.
        """
        cls = self._classes.get(name)
        return cls is not None and cls.VERSION == version

    def obj_from_primitive(self, primitive: Any) -> VersionedObject:
        """Rebuild an object from its envelope, validating every field.

        Refuses a malformed envelope (MalformedObject), an unknown name
        (UnknownObject), a version this process cannot read
        (IncompatibleObjectVersion) and any field that is unknown or does
        not fit its type (ObjectFieldError).
        """
        if type(primitive) is not dict:
            raise exception.MalformedObject(
                reason=f"an object envelope is a dict, not {type(primitive).__name__}"
            )
        name = primitive.get(NAME_KEY)
        if type(name) is not str:
            raise exception.MalformedObject(
                reason=f"the envelope's {NAME_KEY!r} is {quote(name)}, not an object name"
            )
        cls = self._classes.get(name)
        if cls is None:
            raise exception.UnknownObject(objname=quote(name))
        return cls._obj_decode(primitive)


#: The registry of this process.
REGISTRY = ObjectRegistry()

#: Class decorator registering an object in :data:`REGISTRY`.
register = REGISTRY.register
