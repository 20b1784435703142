"""Versioned objects: the base class, remotable methods and the indirection API.

Declaring an object::

    @base.register
    class Flavor(base.VersionedObject):
        \"\"\"A hardware template.

        Version history:

        1.0: Initial version
        \"\"\"

        VERSION = "1.0"

        id = fields.Integer()
        name = fields.String()
        extra_specs = fields.Dict(fields.String(), default={})

        @base.remotable
        async def save(self, context: RequestContext) -> None: ...

        @base.remotable_classmethod
        async def get_by_id(cls: type[Flavor], context: RequestContext, id: int) -> Flavor: ...

An object keeps its fields in one msgspec struct, ``_data`` (see
:mod:`nubes.objects.schema`); an unset field holds ``msgspec.UNSET``, and
reading one calls :meth:`VersionedObject.obj_load_attr`. Assigning coerces
through the field (see :mod:`nubes.objects.fields`) and records the change.

Remotable methods run where the database is. On a host that has none, the
process installs an :class:`IndirectionAPI` (the conductor client) in
``VersionedObject.indirection_api``; calling a remotable method then sends
the object over RPC, runs the method on the conductor, and applies the field
changes that come back. :mod:`nubes.objects.indirection` holds the serving
side and an in-process double.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, ParamSpec, Protocol, Self, TypeVar

import msgspec

from nubes import exception
from nubes.objects import schema
from nubes.objects.fields import NO_DEFAULT, UNSET, Field
from nubes.objects.registry import (
    CHANGES_KEY,
    DATA_KEY,
    ENVELOPE_KEYS,
    NAME_KEY,
    REGISTRY,
    VERSION_KEY,
    ObjectRegistry,
    quote,
    register,
)
from nubes.versions import parse_version

if TYPE_CHECKING:
    from nubes.context import RequestContext

__all__ = [
    "IndirectionAPI",
    "VersionedObject",
    "register",
    "remotable",
    "remotable_classmethod",
    "remotable_methods",
    "run_locally",
    "use_indirection_api",
]

P = ParamSpec("P")
R = TypeVar("R")
OT = TypeVar("OT", bound="VersionedObject")

#: Attribute marking a remotable function with its kind, "instance" or "class".
REMOTABLE_ATTR = "_nubes_remotable"

# True while remotable bodies must run here even if an indirection API is
# installed: on the serving side, and so in an all-in-one process too.
_run_locally: ContextVar[bool] = ContextVar("nubes_objects_run_locally", default=False)


# The indirection API of the service the current task works for. Services
# sharing a process (all-in-one, tests, a fleet of fake hosts) each talk to
# the conductor under their own identity, so the API is per context; the
# class attribute ``VersionedObject.indirection_api`` is the process default.
_indirection: ContextVar[IndirectionAPI | None] = ContextVar(
    "nubes_objects_indirection", default=None
)


def use_indirection_api(api: IndirectionAPI | None) -> None:
    """Send remotable calls made in the current context (and tasks it starts) through ``api``."""
    _indirection.set(api)


def current_indirection_api() -> IndirectionAPI | None:
    """The indirection API remotable calls made here would go through, if any."""
    return _indirection.get() or VersionedObject.indirection_api


def _indirection_api(cls: type[VersionedObject]) -> IndirectionAPI | None:
    if _run_locally.get():
        return None
    return _indirection.get() or cls.indirection_api


@contextlib.contextmanager
def run_locally() -> Iterator[None]:
    """Run remotable methods called inside this block in this process."""
    token = _run_locally.set(True)
    try:
        yield
    finally:
        _run_locally.reset(token)


class IndirectionAPI(Protocol):
    """What a process without database access calls remotable methods through.

    The conductor client implements it; :class:`~nubes.objects.indirection.
    LoopbackIndirectionAPI` is the in-process double.
    """

    async def object_action(
        self,
        context: RequestContext,
        objinst: VersionedObject,
        objmethod: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[dict[str, Any], Any]:
        """Run ``objinst.objmethod(context, *args, **kwargs)`` remotely.

        Returns ``(updates, result)``: ``updates`` maps each field the
        method set or changed to its new value, plus :data:`CHANGES_KEY`
        listing the fields still changed on the serving side afterwards.
        """
        ...

    async def object_class_action_versions(
        self,
        context: RequestContext,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run the class method remotely; objects in the result come back at
        (or below) the versions in ``object_versions``."""
        ...

    async def object_backport_versions(
        self,
        context: RequestContext,
        primitive: dict[str, Any],
        object_versions: dict[str, str],
    ) -> dict[str, Any]:
        """Backport a primitive this process cannot read to ``object_versions``."""
        ...


class _ObjectMeta(type):
    """Gives every object class ``__slots__`` (so a mistyped attribute raises
    instead of being silently stored) and its field tables and msgspec types."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> _ObjectMeta:
        namespace.setdefault("__slots__", ())
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        _prepare(cls)
        return cls


def _prepare(cls: Any) -> None:
    try:
        cls._obj_version = parse_version(cls.VERSION)
    except ValueError as bad:
        raise TypeError(f"{cls.__qualname__}.VERSION: {bad}") from None
    cls._obj_name = cls.__dict__.get("OBJ_NAME") or cls.__name__
    field_map: dict[str, Field[Any]] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, Field):
                field_map[attr] = value
            elif attr in field_map:
                del field_map[attr]  # a subclass replaced the field with something else
    for field in field_map.values():
        field.check_owner(cls)
    cls._obj_field_map = field_map
    cls.obj_fields = tuple(field_map)
    items = field_map.items()
    cls._obj_defaults = tuple((n, f) for n, f in items if f.default is not NO_DEFAULT)
    cls._obj_added = tuple((n, f._added) for n, f in items if f._added is not None)
    cls._obj_children = tuple(n for n, f in items if f.nested)
    cls._obj_child_classes = tuple(
        (n, f.obj_cls, f.nested == "objects")  # type: ignore[attr-defined]
        for n, f in items
        if f.nested
    )
    cls._obj_mutable = tuple(n for n, f in items if f.container or f.nested)
    tree = {cls._obj_name: cls.VERSION}
    for _, child, _ in cls._obj_child_classes:
        for name, version in child._obj_tree.items():
            tree.setdefault(name, version)
    cls._obj_tree = tree
    cls._obj_storage = schema.build_storage(cls)
    cls._obj_envelope = schema.build_envelope(cls)
    cls._obj_finish = staticmethod(schema.build_finisher(cls))
    cls._obj_fix = staticmethod(schema.build_fixer(cls))


def _wire_hook(obj: Any) -> Any:
    if isinstance(obj, VersionedObject):
        return obj.obj_to_wire()
    raise NotImplementedError(f"cannot encode a {type(obj).__qualname__}")


#: Types obj_to_primitive keeps as they are: msgpack carries datetimes natively.
_KEPT_TYPES = (datetime,)


class VersionedObject(metaclass=_ObjectMeta):
    """Base of every object that crosses a process boundary.

    Subclasses set ``VERSION`` ("major.minor", with the history in the
    docstring), declare fields as class attributes, and register with
    :func:`register`. ``OBJ_NAME`` overrides the name on the wire (the class
    name by default).
    """

    __slots__ = ("_changed", "_data", "_orig")

    VERSION: ClassVar[str] = "1.0"
    OBJ_NAME: ClassVar[str | None] = None

    #: Set in a process without database access: remotable methods go
    #: through it instead of running here.
    indirection_api: ClassVar[IndirectionAPI | None] = None

    #: Field names in declaration order (inherited ones first).
    obj_fields: ClassVar[tuple[str, ...]]

    # Filled in for each class by the metaclass.
    _obj_registry: ClassVar[ObjectRegistry | None] = None
    _obj_name: ClassVar[str]
    _obj_version: ClassVar[tuple[int, int]]
    _obj_field_map: ClassVar[dict[str, Field[Any]]]
    _obj_defaults: ClassVar[tuple[tuple[str, Field[Any]], ...]]
    _obj_added: ClassVar[tuple[tuple[str, tuple[int, int]], ...]]
    _obj_children: ClassVar[tuple[str, ...]]
    _obj_child_classes: ClassVar[tuple[tuple[str, type[VersionedObject], bool], ...]]
    _obj_mutable: ClassVar[tuple[str, ...]]
    _obj_tree: ClassVar[dict[str, str]]
    _obj_storage: ClassVar[type[msgspec.Struct]]
    _obj_envelope: ClassVar[type[msgspec.Struct]]
    #: Completes an envelope struct that passed msgspec's check into an object.
    _obj_finish: ClassVar[Callable[[Any], Any]]
    #: Completes a storage struct whose plain fields passed msgspec's check.
    _obj_fix: ClassVar[Callable[[Any], None]]

    #: The fields; unset ones hold msgspec.UNSET.
    _data: Any
    _changed: set[str]
    # Snapshots of containers handed out by attribute reads, to find changes
    # made in place; None until the first such read.
    _orig: dict[str, Any] | None

    def __init__(self, **values: Any) -> None:
        self._data = self._obj_storage()
        self._changed = set()
        self._orig = None
        if values:
            self.update(values)
        data = self._data
        for name, field in self._obj_defaults:
            if getattr(data, name) is UNSET:
                setattr(data, name, field.default_value())
                self._changed.add(name)

    @classmethod
    def _obj_unchanged(cls, data: Any) -> Self:
        """An object holding ``data`` (a storage struct of canonical values),
        its unset fields given their defaults, with no changes: what
        ``cls(**values)`` followed by ``obj_reset_changes()`` makes, without
        coercing each value again."""
        for name, field in cls._obj_defaults:
            if getattr(data, name) is UNSET:
                setattr(data, name, field.default_value())
        obj = cls.__new__(cls)
        obj._data = data
        obj._changed = set()
        obj._orig = None
        return obj

    # -- identity and versions ------------------------------------------------

    @classmethod
    def obj_name(cls) -> str:
        return cls._obj_name

    @classmethod
    def obj_registry(cls) -> ObjectRegistry:
        """The registry this class decodes through: the one it joined first."""
        return REGISTRY if cls._obj_registry is None else cls._obj_registry

    @classmethod
    def obj_tree_versions(cls) -> dict[str, str]:
        """{object name: version} for this class and every nested class."""
        return dict(cls._obj_tree)

    @classmethod
    def obj_check_readable(cls, version: object) -> tuple[int, int]:
        """Parse ``version`` and refuse it unless this class can read it."""
        try:
            parsed = parse_version(version)
        except ValueError as bad:
            raise exception.MalformedObject(reason=f"{cls._obj_name}: {bad}") from None
        if parsed[0] != cls._obj_version[0] or parsed[1] > cls._obj_version[1]:
            raise exception.IncompatibleObjectVersion(
                objname=cls._obj_name, objver=version, supported=cls.VERSION
            )
        return parsed

    # -- fields ---------------------------------------------------------------

    def _obj_unknown(self, name: object) -> exception.UnknownObjectField:
        return exception.UnknownObjectField(
            objname=self._obj_name, objver=self.VERSION, field=quote(name)
        )

    def _obj_set_fields(self) -> list[str]:
        data = self._data
        return [name for name in self.obj_fields if getattr(data, name) is not UNSET]

    def obj_attr_is_set(self, name: str) -> bool:
        if name not in self._obj_field_map:
            raise self._obj_unknown(name)
        return getattr(self._data, name) is not UNSET

    def obj_load_attr(self, name: str) -> None:
        """Load unset field ``name``; subclasses that can must override this.

        The override sets the field (by assignment); the base class then
        does not count it as a change. It runs synchronously inside an
        attribute read, so it cannot await: load what needs I/O beforehand.
        """
        raise exception.ObjectLoadError(
            objname=self._obj_name,
            field=name,
            reason=f"it is not set, and {type(self).__name__} does not lazy-load fields",
        )

    def _obj_lazy_load(self, name: str) -> Any:
        before = set(self._obj_set_fields())
        self.obj_load_attr(name)
        value = getattr(self._data, name)
        if value is UNSET:
            raise exception.ObjectLoadError(
                objname=self._obj_name,
                field=name,
                reason=f"{type(self).__name__}.obj_load_attr returned without setting it",
            )
        # A loaded value is what the source holds, not an edit to save back.
        self._changed.difference_update(set(self._obj_set_fields()) - before)
        return value

    def _obj_watch(self, name: str, value: Any) -> None:
        orig = self._orig
        if orig is None:
            self._orig = {name: value.copy()}
        elif name not in orig:
            orig[name] = value.copy()

    def update(self, values: Mapping[str, Any]) -> None:
        """Assign several fields, each coerced and recorded as changed."""
        field_map = self._obj_field_map
        for name, value in values.items():
            field = field_map.get(name)
            if field is None:
                raise self._obj_unknown(name)
            field.__set__(self, value)

    def obj_set_defaults(self, *names: str) -> None:
        """Give the named fields (all that have one, by default) their
        default value, where they are not set yet."""
        field_map = self._obj_field_map
        data = self._data
        for name in names or [n for n, _ in self._obj_defaults]:
            field = field_map.get(name)
            if field is None:
                raise self._obj_unknown(name)
            if field.default is NO_DEFAULT:
                raise exception.ObjectActionError(
                    action="obj_set_defaults", reason=f"{self._obj_name}.{name} has no default"
                )
            if getattr(data, name) is UNSET:
                setattr(data, name, field.default_value())
                self._changed.add(name)

    # -- change tracking ------------------------------------------------------

    def _obj_own_changes(self) -> set[str]:
        """Changes to this object's own fields, not counting those inside
        nested objects (which their own envelopes carry)."""
        changed = set(self._changed)
        orig = self._orig
        if orig:
            data = self._data
            for name, snapshot in orig.items():
                if name not in changed and getattr(data, name) != snapshot:
                    changed.add(name)
        return changed

    def obj_what_changed(self) -> set[str]:
        """Fields set or changed since the object was loaded or last reset,
        including containers changed in place and nested objects that changed."""
        changed = self._obj_own_changes()
        data = self._data
        for name in self._obj_children:
            if name not in changed:
                value = getattr(data, name)
                if value is not UNSET and value is not None:
                    items = value if type(value) is list else (value,)
                    if any(item.obj_what_changed() for item in items):
                        changed.add(name)
        return changed

    def obj_get_changes(self) -> dict[str, Any]:
        """{field: current value} for every changed field."""
        changed = self.obj_what_changed()
        data = self._data
        return {name: getattr(data, name) for name in self.obj_fields if name in changed}

    def obj_reset_changes(
        self, fields: Iterable[str] | None = None, recursive: bool = False
    ) -> None:
        """Forget the changes to ``fields`` (all by default); with
        ``recursive``, those of the nested objects in them too."""
        if fields is None:
            names: Iterable[str] = self.obj_fields
            self._changed.clear()
        else:
            names = list(fields)
            for name in names:
                if name not in self._obj_field_map:
                    raise self._obj_unknown(name)
            self._changed.difference_update(names)
        self._obj_resnapshot(names)
        if recursive:
            data = self._data
            for name in names:
                if name in self._obj_children:
                    value = getattr(data, name)
                    if value is not UNSET and value is not None:
                        for item in value if type(value) is list else (value,):
                            item.obj_reset_changes(recursive=True)

    def _obj_resnapshot(self, names: Iterable[str]) -> None:
        orig = self._orig
        if orig:
            data = self._data
            for name in names:
                if name in orig:
                    value = getattr(data, name)
                    if value is None:
                        del orig[name]
                    else:
                        orig[name] = value.copy()

    # -- copies -----------------------------------------------------------------

    def obj_clone(self) -> Self:
        """A deep copy: own containers and nested objects, same changes."""
        cls = type(self)
        clone = cls.__new__(cls)
        data = self._data.__copy__()
        field_map = self._obj_field_map
        for name in self._obj_mutable:
            value = getattr(data, name)
            if value is not UNSET and value is not None:
                setattr(data, name, field_map[name].clone_value(value))
        clone._data = data
        clone._changed = set(self._changed)
        orig = self._orig
        if orig:
            orig = dict(orig)
            for name, _, many in self._obj_child_classes:
                if many and name in orig:
                    # The snapshot holds the original items; point it at their
                    # clones so that cloning is not itself a change.
                    pairs = zip(getattr(self._data, name), getattr(data, name), strict=True)
                    clones = {id(a): b for a, b in pairs}
                    orig[name] = [clones.get(id(item), item) for item in orig[name]]
        clone._orig = orig
        return clone

    def __repr__(self) -> str:
        data = self._data
        shown = ", ".join(
            f"{name}={getattr(data, name)!r}"
            for name in self.obj_fields
            if getattr(data, name) is not UNSET
        )
        return f"{self._obj_name}({shown})"

    # -- primitives -------------------------------------------------------------

    def obj_to_primitive(self, target_version: str | None = None) -> dict[str, Any]:
        """The envelope of this object as builtins, sharing nothing with it.

        Datetimes stay datetime objects (msgpack carries them natively and
        msgspec's JSON encoder writes ISO 8601); everything else is a str,
        int, float, bool, None, list or dict. ``target_version`` backports
        to an older minor through :meth:`obj_make_compatible`.

        ``nubes_object.changes`` lists the fields changed on this object
        itself; a change inside a nested object travels in that object's
        envelope, and :meth:`obj_what_changed` on the decoded copy reports
        the parent field as changed again.
        """
        primitive: dict[str, Any] = msgspec.to_builtins(
            self.obj_to_wire(), builtin_types=_KEPT_TYPES, enc_hook=_wire_hook
        )
        if target_version is not None and target_version != self.VERSION:
            self._obj_backport(primitive, target_version)
        return primitive

    def obj_to_wire(self) -> dict[str, Any]:
        """The envelope for a msgspec encoder that serialises it at once.

        Its data is this object's own storage struct, and nested objects are
        left for the encoder's hook (see :func:`nubes.objects.codec.enc_hook`),
        so encoding copies nothing. Use :meth:`obj_to_primitive` for anything
        kept.
        """
        primitive = {NAME_KEY: self._obj_name, VERSION_KEY: self.VERSION, DATA_KEY: self._data}
        if self._changed or self._orig:
            changes = self._obj_own_changes()
            if changes:
                primitive[CHANGES_KEY] = sorted(changes)
        return primitive

    @classmethod
    def obj_from_primitive(cls, primitive: Any) -> Self:
        """Rebuild an object from an envelope; see :meth:`ObjectRegistry.obj_from_primitive`.

        Called on a subclass, the envelope must hold that class (or one of
        its subclasses).
        """
        obj = cls.obj_registry().obj_from_primitive(primitive)
        if not isinstance(obj, cls):
            raise exception.MalformedObject(
                reason=f"expected a {cls._obj_name} object, got a {obj.obj_name()}"
            )
        return obj

    @classmethod
    def _obj_decode(cls, primitive: dict[str, Any]) -> Self:
        """An envelope naming this class, to an object."""
        try:
            envelope = msgspec.convert(primitive, cls._obj_envelope)
        except msgspec.ValidationError:
            return cls._obj_decode_slow(primitive)
        return cls._obj_finish(envelope)

    @classmethod
    def _obj_decode_slow(cls, primitive: dict[str, Any]) -> Self:
        """Decode field by field, coercing, or raise the precise error."""
        extra = primitive.keys() - ENVELOPE_KEYS
        if extra:
            raise exception.MalformedObject(
                reason=f"unexpected envelope keys {', '.join(sorted(map(quote, extra)))}"
            )
        if VERSION_KEY not in primitive or DATA_KEY not in primitive:
            raise exception.MalformedObject(
                reason=f"an envelope needs {VERSION_KEY!r} and {DATA_KEY!r}"
            )
        version, data = primitive[VERSION_KEY], primitive[DATA_KEY]
        cls.obj_check_readable(version)
        if type(data) is not dict:
            raise exception.MalformedObject(
                reason=f"the data of a {cls._obj_name} is a dict, not {type(data).__name__}"
            )
        field_map = cls._obj_field_map
        unknown = data.keys() - field_map.keys()
        if unknown:
            raise exception.UnknownObjectField(
                objname=cls._obj_name,
                objver=cls.VERSION,
                field=", ".join(sorted(map(quote, unknown))),
            )
        storage = cls._obj_storage(
            **{name: field_map[name].from_primitive(cls._obj_name, v) for name, v in data.items()}
        )
        if version != cls.VERSION:
            cls._obj_check_older(version, storage)
        changes = primitive.get(CHANGES_KEY, UNSET)
        if changes is not UNSET and (
            type(changes) is not list or not all(type(name) is str for name in changes)
        ):
            raise exception.MalformedObject(
                reason=f"the changes of a {cls._obj_name} must be a list of field names"
            )
        obj = cls.__new__(cls)
        obj._data = storage
        obj._orig = None
        obj._changed = set() if changes is UNSET else cls._obj_check_changes(storage, changes)
        return obj

    @classmethod
    def _obj_check_older(cls, version: str, data: Any) -> None:
        """Refuse an older-version envelope carrying fields added since."""
        parsed = cls.obj_check_readable(version)
        for name, added in cls._obj_added:
            if added > parsed and getattr(data, name) is not UNSET:
                raise exception.UnknownObjectField(
                    objname=cls._obj_name, objver=version, field=name
                )

    @classmethod
    def _obj_check_changes(cls, data: Any, changes: list[str]) -> set[str]:
        changed = set(changes)
        field_map = cls._obj_field_map
        for name in changed:
            if name not in field_map or getattr(data, name) is UNSET:
                raise exception.MalformedObject(
                    reason=f"the changes of a {cls._obj_name} name {quote(name)}, "
                    "which it does not set"
                )
        return changed

    # -- backports --------------------------------------------------------------

    def _obj_backport(self, primitive: dict[str, Any], target_version: str) -> None:
        try:
            target = parse_version(target_version)
        except ValueError:
            target = (-1, -1)
        if target[0] != self._obj_version[0] or target > self._obj_version:
            raise exception.IncompatibleObjectVersion(
                objname=self._obj_name, objver=quote(target_version), supported=self.VERSION
            )
        if target == self._obj_version:
            return
        data = primitive[DATA_KEY]
        self.obj_make_compatible(data, target_version)
        primitive[VERSION_KEY] = target_version
        changes = primitive.get(CHANGES_KEY)
        if changes is not None:
            kept = [name for name in changes if name in data]
            if kept:
                primitive[CHANGES_KEY] = kept
            else:
                del primitive[CHANGES_KEY]

    def obj_make_compatible(self, primitive: dict[str, Any], target_version: str) -> None:
        """Rewrite ``primitive`` (this object's data) into ``target_version``.

        The default drops fields added after the target and backports each
        nested object to the version its field's ``versions`` names for the
        target. A class that changed a field's meaning overrides this,
        calls ``super()`` and converts that field.
        """
        target = parse_version(target_version)
        for name, added in self._obj_added:
            if added > target:
                primitive.pop(name, None)
        field_map = self._obj_field_map
        data = self._data
        for name in self._obj_children:
            nested = primitive.get(name)
            value = getattr(data, name)
            if nested is None or value is UNSET or value is None:
                continue
            child_version = field_map[name].child_version_for(target)  # type: ignore[attr-defined]
            if type(value) is list:
                for item, item_primitive in zip(value, nested, strict=True):
                    item._obj_backport(item_primitive, child_version)
            else:
                value._obj_backport(nested, child_version)

    # -- remote calls -----------------------------------------------------------

    def _obj_apply_updates(self, updates: Any) -> None:
        """Take the field values a remote method call sent back."""
        if type(updates) is not dict:
            raise exception.MalformedObject(reason="object_action updates must be a dict")
        changes = updates.get(CHANGES_KEY, [])
        if type(changes) is not list or not all(type(name) is str for name in changes):
            raise exception.MalformedObject(reason="object_action changes must be field names")
        field_map = self._obj_field_map
        values = {}
        for name, value in updates.items():
            if name != CHANGES_KEY:
                field = field_map.get(name)
                if field is None:
                    raise self._obj_unknown(name)
                values[name] = field.coerce(self._obj_name, value)
        data = self._data
        for name, value in values.items():
            setattr(data, name, value)
        for name in changes:
            if name not in field_map or getattr(data, name) is UNSET:
                raise self._obj_unknown(name)
        # The serving side ran on a copy with our changes; what it left
        # changed is what is still changed here.
        self._changed = set(changes)
        self._obj_resnapshot(self.obj_fields)


def remotable(
    fn: Callable[Concatenate[OT, RequestContext, P], Awaitable[R]],
) -> Callable[Concatenate[OT, RequestContext, P], Coroutine[Any, Any, R]]:
    """Decorate an ``async def method(self, context, ...)`` that must run
    where the database is (see :class:`IndirectionAPI`)."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"remotable {fn.__qualname__} must be an async def")
    method = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: OT, context: RequestContext, /, *args: P.args, **kwargs: P.kwargs) -> R:
        api = _indirection_api(type(self))
        if api is None:
            return await fn(self, context, *args, **kwargs)
        updates, result = await api.object_action(context, self, method, args, kwargs)
        self._obj_apply_updates(updates)
        return result

    setattr(wrapper, REMOTABLE_ATTR, "instance")
    return wrapper


def remotable_classmethod(
    fn: Callable[Concatenate[Any, RequestContext, P], Awaitable[R]],
) -> classmethod[Any, Concatenate[RequestContext, P], Coroutine[Any, Any, R]]:
    """Decorate an ``async def method(cls, context, ...)`` that must run
    where the database is; it becomes a classmethod."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"remotable_classmethod {fn.__qualname__} must be an async def")
    method = fn.__name__

    @functools.wraps(fn)
    async def wrapper(
        cls: type[VersionedObject], context: RequestContext, /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        api = _indirection_api(cls)
        if api is None:
            return await fn(cls, context, *args, **kwargs)
        return await api.object_class_action_versions(
            context, cls._obj_name, method, cls.obj_tree_versions(), args, kwargs
        )

    setattr(wrapper, REMOTABLE_ATTR, "class")
    return classmethod(wrapper)


def remotable_methods(cls: type[VersionedObject]) -> dict[str, tuple[str, Callable[..., Any]]]:
    """{method name: (kind, undecorated function)} for a class's remotables."""
    # Classes do not change after definition, and the conductor asks this on
    # every call it serves: walk the MRO once per class.
    cached = _REMOTABLES.get(cls)
    if cached is None:
        cached = _REMOTABLES[cls] = _find_remotables(cls)
    return cached


_REMOTABLES: dict[type, dict[str, tuple[str, Callable[..., Any]]]] = {}


@functools.lru_cache(maxsize=1024)
def remotable_signature(cls: type[VersionedObject], method: str) -> inspect.Signature | None:
    """The signature of a remotable method's undecorated function, cached."""
    found = remotable_methods(cls).get(method)
    return inspect.signature(found[1]) if found is not None else None


@dataclass(frozen=True, slots=True)
class _Binding:
    """How arguments map to a remotable method's parameters, when that is simple:
    no ``*args``/``**kwargs`` and no positional-only parameter after the two
    the call supplies (self or cls, and the context)."""

    positional: tuple[str, ...]
    names: frozenset[str]
    required: frozenset[str]


@functools.lru_cache(maxsize=1024)
def _binding(cls: type[VersionedObject], method: str) -> _Binding | None:
    signature = remotable_signature(cls, method)
    if signature is None:
        return None
    params = list(signature.parameters.values())[2:]
    kinds = {p.kind for p in params}
    if kinds - {inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY}:
        return None
    return _Binding(
        positional=tuple(
            p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ),
        names=frozenset(p.name for p in params),
        required=frozenset(p.name for p in params if p.default is inspect.Parameter.empty),
    )


def bind_remotable(
    cls: type[VersionedObject], method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """{parameter: argument} for a call of remotable ``method`` of ``cls``
    with ``args``/``kwargs`` (after self and the context); TypeError, as
    ``inspect.Signature.bind`` raises it, when they do not fit or the method
    is not remotable.

    The conductor binds every object call a host makes (to authorise it, and
    to refuse a bad one before it runs): a simple signature is bound here
    without inspect's general machinery, and anything else, an error
    included, by ``Signature.bind`` itself, so its result and message are
    the same either way.
    """
    plan = _binding(cls, method)
    if plan is not None and len(args) <= len(plan.positional):
        bound = dict(zip(plan.positional, args, strict=False))
        names = plan.names
        for name, value in kwargs.items():
            if name in bound or name not in names:
                break
            bound[name] = value
        else:
            if plan.required <= bound.keys():
                return bound
    signature = remotable_signature(cls, method)
    if signature is None:
        raise TypeError(f"{cls._obj_name}.{method} is not remotable")
    return dict(list(signature.bind(None, None, *args, **kwargs).arguments.items())[2:])


def _find_remotables(cls: type[VersionedObject]) -> dict[str, tuple[str, Callable[..., Any]]]:
    found: dict[str, tuple[str, Callable[..., Any]]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            func = value.__func__ if isinstance(value, classmethod) else value
            kind = getattr(func, REMOTABLE_ATTR, None)
            if kind is not None:
                found[name] = (kind, inspect.unwrap(func))
            else:
                found.pop(name, None)
    return found
