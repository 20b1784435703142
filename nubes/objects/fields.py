"""Field types of versioned objects: what a value may be, and how it gets there.

A field is declared as a class attribute of an object and is also the
descriptor that reads and writes it::

    class Flavor(base.VersionedObject):
        name = fields.String()
        swap = fields.Integer(default=0)
        description = fields.String(nullable=True, added_in="1.1")

Values are kept in canonical form, so that encoding needs no conversion and
equality is plain ``==``: strings are exact ``str``, UUIDs are canonical
lowercase strings, enum values are plain strings, datetimes are aware and in
UTC (``tzinfo is timezone.utc``), containers are fresh ``dict``/``list``
copies, integers fit in 64 bits.

Assignment, and decoding from the wire, coerce only where nothing can be
lost or misread:

=============  ==========================================================
Integer        int subclasses (IntEnum), a whole float (``5.0``), a decimal
               string (``"5"``). Refused: bool, ``5.5``, ``"5.0"``, and
               anything beyond a signed 64-bit integer.
Float          an int that a float holds exactly, a decimal string. NaN and
               infinities are refused: JSON cannot carry them.
Boolean        ``0`` and ``1``. Strings are refused (is ``"no"`` false?).
String         str subclasses (a StrEnum member becomes its value). Numbers
               are refused: a number where text was expected is a bug.
UUID           :class:`uuid.UUID` and any string :class:`uuid.UUID` parses.
DateTime       an aware datetime (converted to UTC) or an ISO 8601 string
               with an offset. A naive datetime is refused: guessing its
               zone would silently shift times.
Enum           a member of the declared values, or an Enum member whose
               value is one.
=============  ==========================================================

Everything else raises :class:`~nubes.exception.ObjectFieldError` naming
object, field (with the key or index inside a container) and value. One
difference on the wire: msgspec's fast path (see :mod:`nubes.objects.schema`)
takes an int for a Float field as msgspec does, exactly only up to 2**53.
"""

from __future__ import annotations

import enum as _enum
import math
import re
import sys
import uuid as _uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from operator import attrgetter
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Generic,
    Literal,
    Self,
    TypeVar,
    overload,
)

import msgspec

from nubes import exception
from nubes.objects.registry import DATA_KEY, quote
from nubes.versions import parse_version

if TYPE_CHECKING:
    from nubes.objects.base import VersionedObject

T_co = TypeVar("T_co", covariant=True)
ObjT = TypeVar("ObjT", bound="VersionedObject")


class _NoDefault:
    """The "no default" marker; a class so that ``None`` stays a real default."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()

#: The value of a field that is not set, in an object's storage.
UNSET = msgspec.UNSET

#: Integers must fit a signed 64-bit column and a msgpack int.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)

# What msgspec checks on the decoding fast path (see nubes.objects.schema).
# Each must accept only values that are already canonical for the field.
_WIRE_INT = Annotated[int, msgspec.Meta(ge=INT_MIN, le=INT_MAX)]
_WIRE_FLOAT = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
# msgspec's pattern check costs more than the rest of an object's fields;
# the length is checked here and the form by the finisher (UUID.settled).
_WIRE_UUID = Annotated[str, msgspec.Meta(min_length=36, max_length=36)]
_WIRE_DATETIME = Annotated[datetime, msgspec.Meta(tz=True)]
_WIRE_SCALAR = str | _WIRE_INT | _WIRE_FLOAT | bool | None


class _Refused(Exception):
    """Why a value was refused; the field turns it into ObjectFieldError."""

    def __init__(self, reason: str, where: str = "", value: Any = NO_DEFAULT) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where
        self.value = value


def _unnamed(data: object) -> Any:
    raise TypeError("a field was used outside of an object class")


def _kind(value: object) -> str:
    return type(value).__name__


def field_error(objname: str, field: str, value: object, reason: str) -> exception.ObjectFieldError:
    return exception.ObjectFieldError(
        objname=objname, field=field, value=quote(value), reason=reason
    )


class Field(Generic[T_co]):
    """A typed attribute of an object: its rules, and the descriptor for it.

    ``nullable`` lets the field hold None. ``default`` is what a newly made
    object gets when the constructor is not given the field (containers are
    copied per object). ``added_in`` is the object version that introduced
    the field; backports to older versions drop it.
    """

    __slots__ = ("_added", "_get", "added_in", "default", "name", "nullable")

    #: Holds a dict or list that can be changed in place (tracked by snapshot).
    container: ClassVar[bool] = False
    #: "object" or "objects" when the field holds nested versioned objects.
    nested: ClassVar[str | None] = None

    def __init__(
        self, *, nullable: bool = False, default: Any = NO_DEFAULT, added_in: str | None = None
    ) -> None:
        self.name = ""
        self._get: Callable[[Any], Any] = _unnamed
        self.nullable = nullable
        self.added_in = added_in
        self._added: tuple[int, int] | None = None
        if added_in is not None:
            try:
                self._added = parse_version(added_in)
            except ValueError as bad:
                raise TypeError(f"added_in: {bad}") from None
        self.default = NO_DEFAULT
        if default is not NO_DEFAULT:
            try:
                self.default = self.coerce("<default>", default)
            except exception.ObjectFieldError as bad:
                raise TypeError(f"invalid default for {self.describe()}: {bad}") from None

    def __set_name__(self, owner: type, name: str) -> None:
        if self.name and self.name != name:
            raise TypeError(f"one field object cannot be both {self.name!r} and {name!r}")
        self.name = name
        self._get = attrgetter(name)

    # -- descriptor ---------------------------------------------------------

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: VersionedObject, owner: type | None = None) -> T_co: ...
    def __get__(self, obj: VersionedObject | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self._get(obj._data)
        if value is UNSET:
            return obj._obj_lazy_load(self.name)
        return value

    def __set__(self, obj: VersionedObject, value: Any) -> None:
        setattr(obj._data, self.name, self.coerce(obj._obj_name, value))
        obj._changed.add(self.name)

    # -- rules ----------------------------------------------------------------

    def coerce(self, objname: str, value: Any) -> Any:
        """The canonical form of ``value`` for this field, or ObjectFieldError."""
        if value is None:
            if self.nullable:
                return None
            raise field_error(objname, self.name, value, "the field is not nullable")
        try:
            return self._coerce(value)
        except _Refused as refused:
            shown = value if refused.value is NO_DEFAULT else refused.value
            raise field_error(objname, self.name + refused.where, shown, refused.reason) from None

    def from_primitive(self, objname: str, value: Any) -> Any:
        """Like :meth:`coerce`, for a value decoded from the wire."""
        return self.coerce(objname, value)

    def _coerce(self, value: Any) -> Any:
        raise NotImplementedError

    def _coerce_element(self, value: Any) -> Any:
        """Coerce one element of a container typed by this field."""
        if value is None:
            if self.nullable:
                return None
            raise _Refused("None is not allowed here")
        return self._coerce(value)

    def wire_type(self) -> Any:
        """The type msgspec checks a decoded value against on the fast path
        (None and unset are added by the caller). It must accept only values
        that are already canonical; anything else takes :meth:`from_primitive`."""
        raise NotImplementedError

    @property
    def needs_fixup(self) -> bool:
        """Whether a value that passed :meth:`wire_type` still needs :meth:`fixup`."""
        return False

    def fixup(self, objname: str, value: Any) -> Any:
        return value

    def settled(self, var: str, namespace: dict[str, Any]) -> str | None:
        """Python source true when ``var``, which passed :meth:`wire_type`,
        needs no :meth:`fixup` after all; None means always call it. Names the
        source uses go into ``namespace``."""
        return None

    def default_value(self) -> Any:
        return self.default

    def clone_value(self, value: Any) -> Any:
        return value

    def check_owner(self, owner: type[VersionedObject]) -> None:
        """Refuse a declaration that contradicts the owning class's VERSION."""
        if self._added is not None and (
            self._added[0] != owner._obj_version[0] or self._added > owner._obj_version
        ):
            raise TypeError(
                f"{owner.__qualname__}.{self.name}: added_in {self.added_in} "
                f"does not fit VERSION {owner.VERSION}"
            )

    # -- description, for fingerprints and repr ---------------------------------

    def describe(self) -> str:
        args = self._describe_args()
        if self.nullable:
            args.append("nullable=True")
        if self.default is not NO_DEFAULT:
            args.append(f"default={self.default!r}")
        if self.added_in is not None:
            args.append(f"added_in={self.added_in!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def _describe_args(self) -> list[str]:
        return []

    def __repr__(self) -> str:
        return self.describe()


class String(Field[str]):
    __slots__ = ()

    def _coerce(self, value: Any) -> str:
        if type(value) is str:
            return value
        if isinstance(value, str):
            return str.__str__(value)
        raise _Refused(f"expected a string, got {_kind(value)}")

    def wire_type(self) -> Any:
        return str


class Integer(Field[int]):
    __slots__ = ()

    def _coerce(self, value: Any) -> int:
        if isinstance(value, bool):
            raise _Refused("a bool is not an integer")
        if isinstance(value, int):
            result = int(value)
        elif isinstance(value, float):
            if not value.is_integer():
                raise _Refused("not a whole number")
            result = int(value)
        elif isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
            try:
                result = int(value)
            except ValueError:  # longer than int() reads
                raise _Refused("too many digits") from None
        else:
            raise _Refused(f"expected an integer, got {_kind(value)}")
        if not INT_MIN <= result <= INT_MAX:
            raise _Refused("does not fit in 64 bits")
        return result

    def wire_type(self) -> Any:
        return _WIRE_INT


class Float(Field[float]):
    __slots__ = ()

    def _coerce(self, value: Any) -> float:
        if isinstance(value, bool):
            raise _Refused("a bool is not a number")
        if isinstance(value, int):
            try:
                result = float(value)
            except OverflowError:
                raise _Refused("too large for a float") from None
            if result != value:
                raise _Refused("a float cannot hold this integer exactly")
            return result
        if isinstance(value, float):
            result = float(value)
        elif isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value):
            result = float(value)
        else:
            raise _Refused(f"expected a number, got {_kind(value)}")
        if not math.isfinite(result):
            raise _Refused("not a finite number")
        return result

    def wire_type(self) -> Any:
        return _WIRE_FLOAT


class Boolean(Field[bool]):
    __slots__ = ()

    def _coerce(self, value: Any) -> bool:
        if value is True or value is False:
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Refused(f"expected a bool, got {_kind(value)}")

    def wire_type(self) -> Any:
        return bool


class UUID(Field[str]):
    """A UUID, kept as its canonical lowercase hyphenated string."""

    __slots__ = ()

    def _coerce(self, value: Any) -> str:
        if type(value) is str and _CANONICAL_UUID.fullmatch(value):
            return value
        if isinstance(value, _uuid.UUID):
            return str(value)
        if isinstance(value, str):
            try:
                return str(_uuid.UUID(value))
            except ValueError:
                raise _Refused("not a UUID") from None
        raise _Refused(f"expected a UUID, got {_kind(value)}")

    def wire_type(self) -> Any:
        return _WIRE_UUID

    @property
    def needs_fixup(self) -> bool:
        return True

    def fixup(self, objname: str, value: Any) -> Any:
        return self.coerce(objname, value)

    def settled(self, var: str, namespace: dict[str, Any]) -> str:
        namespace["_uuid_match"] = _CANONICAL_UUID.fullmatch
        return f"_uuid_match({var}) is not None"


class DateTime(Field[datetime]):
    """An aware datetime in UTC.

    msgpack carries it natively (timestamp extension, decoded aware); JSON
    carries an ISO 8601 string, which decoding accepts as well.
    """

    __slots__ = ()

    def _coerce(self, value: Any) -> datetime:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise _Refused("not an ISO 8601 date and time") from None
        elif not isinstance(value, datetime):
            raise _Refused(f"expected a datetime, got {_kind(value)}")
        if value.tzinfo is UTC and type(value) is datetime:
            return value
        if value.utcoffset() is None:
            raise _Refused(
                "a naive datetime has no time zone; pass an aware one "
                "(for example datetime.now(timezone.utc))"
            )
        try:
            utc = value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise _Refused("out of range once converted to UTC") from None
        return datetime(
            utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, UTC
        )

    def wire_type(self) -> Any:
        return _WIRE_DATETIME

    @property
    def needs_fixup(self) -> bool:
        # msgspec passes any aware datetime, e.g. from an ISO string with an
        # offset; such values are converted to UTC after the fast path.
        return True

    def fixup(self, objname: str, value: Any) -> Any:
        return self.coerce(objname, value)

    def settled(self, var: str, namespace: dict[str, Any]) -> str:
        namespace["_UTC"] = UTC
        return f"{var}.tzinfo is _UTC"


class Enum(Field[str]):
    """One of a fixed set of strings, given as values or as a str Enum class."""

    __slots__ = ("_valid", "values")

    def __init__(
        self,
        values: type[_enum.Enum] | Iterable[str],
        *,
        nullable: bool = False,
        default: Any = NO_DEFAULT,
        added_in: str | None = None,
    ) -> None:
        if isinstance(values, type) and issubclass(values, _enum.Enum):
            listed = tuple(member.value for member in values)
        else:
            listed = tuple(values)
        if not listed or not all(type(v) is str for v in listed) or len(set(listed)) != len(listed):
            raise TypeError(f"Enum values must be distinct strings, got {listed!r}")
        self.values = listed
        self._valid = frozenset(listed)
        super().__init__(nullable=nullable, default=default, added_in=added_in)

    def _coerce(self, value: Any) -> str:
        if isinstance(value, _enum.Enum):
            value = value.value
        if isinstance(value, str):
            if type(value) is not str:
                value = str.__str__(value)
            if value in self._valid:
                return value
            raise _Refused(f"not one of {', '.join(self.values)}")
        raise _Refused(f"expected one of {', '.join(self.values)}, got {_kind(value)}")

    def wire_type(self) -> Any:
        return Literal[self.values]

    def _describe_args(self) -> list[str]:
        return [repr(list(self.values))]


def _primitive_scalar(value: Any) -> Any:
    """Check an element of an untyped container: str, int, float, bool or None."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if INT_MIN <= value <= INT_MAX:
            return value
        raise _Refused("does not fit in 64 bits")
    if kind is float:
        if math.isfinite(value):
            return value
        raise _Refused("not a finite number")
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _primitive_scalar(int(value))
    raise _Refused(f"expected a string, number, bool or None, got {_kind(value)}")


class _Container(Field[T_co]):
    """A dict or list field: in-place changes are found by comparing with a
    snapshot taken when the value is first read through the attribute."""

    __slots__ = ()
    container = True

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: VersionedObject, owner: type | None = None) -> T_co: ...
    def __get__(self, obj: VersionedObject | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self._get(obj._data)
        if value is UNSET:
            value = obj._obj_lazy_load(self.name)
        if value is not None:
            obj._obj_watch(self.name, value)
        return value

    def _element_wire_type(self, element: Field[Any] | None) -> Any:
        if element is None:
            return _WIRE_SCALAR
        return element.wire_type() | None if element.nullable else element.wire_type()

    def _element_needs_fixup(self, element: Field[Any] | None) -> bool:
        return element is not None and element.needs_fixup

    def fixup(self, objname: str, value: Any) -> Any:
        return self.coerce(objname, value)

    def default_value(self) -> Any:
        return self.clone_value(self.default)

    def clone_value(self, value: Any) -> Any:
        return None if value is None else value.copy()


def _element_field(element: Field[Any] | None) -> Field[Any] | None:
    if element is not None and (element.container or element.nested or element.added_in):
        raise TypeError(f"container elements must be plain scalar fields, not {element!r}")
    return element


class Dict(_Container[dict[str, Any]]):
    """A dict with string keys; values typed by ``values`` or any primitive."""

    __slots__ = ("values",)

    def __init__(
        self,
        values: Field[Any] | None = None,
        *,
        nullable: bool = False,
        default: Any = NO_DEFAULT,
        added_in: str | None = None,
    ) -> None:
        self.values = _element_field(values)
        super().__init__(nullable=nullable, default=default, added_in=added_in)

    def _coerce(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _Refused(f"expected a dict, got {_kind(value)}")
        element = self.values
        check = _primitive_scalar if element is None else element._coerce_element
        result: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise _Refused("keys must be strings", f"[{quote(key)}]", key)
                key = str.__str__(key)
            try:
                result[key] = check(item)
            except _Refused as refused:
                raise _Refused(refused.reason, f"[{key!r}]", item) from None
        return result

    def wire_type(self) -> Any:
        return dict[str, self._element_wire_type(self.values)]  # type: ignore[misc]

    @property
    def needs_fixup(self) -> bool:
        return self._element_needs_fixup(self.values)

    def _describe_args(self) -> list[str]:
        return [] if self.values is None else [self.values.describe()]


class List(_Container[list[Any]]):
    """A list; elements typed by ``elements`` or any primitive."""

    __slots__ = ("elements",)

    def __init__(
        self,
        elements: Field[Any] | None = None,
        *,
        nullable: bool = False,
        default: Any = NO_DEFAULT,
        added_in: str | None = None,
    ) -> None:
        self.elements = _element_field(elements)
        super().__init__(nullable=nullable, default=default, added_in=added_in)

    def _coerce(self, value: Any) -> list[Any]:
        # A str or set is iterable too, but taking one for a list is a bug.
        if not isinstance(value, list | tuple):
            raise _Refused(f"expected a list, got {_kind(value)}")
        element = self.elements
        check = _primitive_scalar if element is None else element._coerce_element
        result = []
        for index, item in enumerate(value):
            try:
                result.append(check(item))
            except _Refused as refused:
                raise _Refused(refused.reason, f"[{index}]", item) from None
        return result

    def wire_type(self) -> Any:
        return list[self._element_wire_type(self.elements)]  # type: ignore[misc]

    @property
    def needs_fixup(self) -> bool:
        return self._element_needs_fixup(self.elements)

    def _describe_args(self) -> list[str]:
        return [] if self.elements is None else [self.elements.describe()]


class _Nested(Field[T_co]):
    """What Object and ListOfObjects share: the child class, and the child
    version each version of the owner carries."""

    __slots__ = ("_child_versions", "obj_cls")

    obj_cls: type[VersionedObject]
    #: (owner version, child version) pairs, oldest owner version first.
    _child_versions: tuple[tuple[tuple[int, int], str], ...]

    def __init__(
        self,
        obj_cls: type[VersionedObject],
        *,
        versions: Mapping[str, str],
        nullable: bool = False,
        added_in: str | None = None,
    ) -> None:
        self.obj_cls = obj_cls
        try:
            pairs = sorted((parse_version(p), c) for p, c in versions.items())
            children = [parse_version(c) for _, c in pairs]
        except ValueError as bad:
            raise TypeError(f"versions of {obj_cls.__name__}: {bad}") from None
        if not pairs:
            raise TypeError(f"versions of {obj_cls.__name__}: give at least one pair")
        if children != sorted(children) or children[-1] != obj_cls._obj_version:
            raise TypeError(
                f"versions of {obj_cls.__name__} must rise to its VERSION "
                f"{obj_cls.VERSION} (the owner's mapping is out of date): {dict(versions)}"
            )
        self._child_versions = tuple(pairs)
        super().__init__(nullable=nullable, added_in=added_in)

    @property
    def versions(self) -> dict[str, str]:
        """{owner version: child version}, as declared."""
        return {f"{owner[0]}.{owner[1]}": child for owner, child in self._child_versions}

    def child_version_for(self, owner_version: tuple[int, int]) -> str:
        """The child version that ``owner_version`` of the owner carries."""
        for owner, child in reversed(self._child_versions):
            if owner <= owner_version:
                return child
        return self._child_versions[0][1]

    def check_owner(self, owner: type[VersionedObject]) -> None:
        super().check_owner(owner)
        first = self._child_versions[0][0]
        expected = self._added or (owner._obj_version[0], 0)
        if first != expected or self._child_versions[-1][0] > owner._obj_version:
            raise TypeError(
                f"{owner.__qualname__}.{self.name}: versions must start at "
                f"{expected[0]}.{expected[1]} (when the field appeared) and not pass "
                f"VERSION {owner.VERSION}"
            )

    def _describe_args(self) -> list[str]:
        return [self.obj_cls.obj_name(), f"versions={self.versions!r}"]

    def _decode_one(self, objname: str, value: Any, where: str) -> Any:
        if type(value) is not dict or DATA_KEY not in value:
            raise field_error(
                objname,
                self.name + where,
                value,
                f"expected a {self.obj_cls.obj_name()} object envelope",
            )
        obj = self.obj_cls.obj_registry().obj_from_primitive(value)
        if not isinstance(obj, self.obj_cls):
            raise field_error(
                objname,
                self.name + where,
                obj.obj_name(),
                f"expected a {self.obj_cls.obj_name()} object",
            )
        return obj


class Object(_Nested[ObjT]):
    """A nested object of class ``obj_cls``.

    ``versions`` maps each version of the owner that changed the child's
    version to the child version it carries, e.g. ``{"1.0": "1.0", "1.3":
    "1.1"}``: backporting the owner to 1.2 backports this child to 1.0. It
    starts at the version the field appeared in and ends at the child's
    current VERSION, which is checked when the class is made.
    """

    __slots__ = ()
    nested = "object"

    def __init__(
        self,
        obj_cls: type[ObjT],
        *,
        versions: Mapping[str, str],
        nullable: bool = False,
        added_in: str | None = None,
    ) -> None:
        super().__init__(obj_cls, versions=versions, nullable=nullable, added_in=added_in)

    def _coerce(self, value: Any) -> ObjT:
        if isinstance(value, self.obj_cls):
            return value  # type: ignore[return-value]
        raise _Refused(f"expected a {self.obj_cls.obj_name()} object, got {_kind(value)}")

    def from_primitive(self, objname: str, value: Any) -> Any:
        if value is None:
            return self.coerce(objname, value)
        return self._decode_one(objname, value, "")

    def wire_type(self) -> Any:
        return self.obj_cls._obj_envelope

    def clone_value(self, value: Any) -> Any:
        return None if value is None else value.obj_clone()


class ListOfObjects(_Nested[list[ObjT]], _Container[list[ObjT]]):
    """A list of nested objects of class ``obj_cls``; ``versions`` as for Object."""

    __slots__ = ()
    nested = "objects"

    def __init__(
        self,
        obj_cls: type[ObjT],
        *,
        versions: Mapping[str, str],
        nullable: bool = False,
        added_in: str | None = None,
    ) -> None:
        super().__init__(obj_cls, versions=versions, nullable=nullable, added_in=added_in)

    def _coerce(self, value: Any) -> list[ObjT]:
        if not isinstance(value, list | tuple):
            raise _Refused(f"expected a list of {self.obj_cls.obj_name()}, got {_kind(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, self.obj_cls):
                raise _Refused(
                    f"expected a {self.obj_cls.obj_name()} object, got {_kind(item)}",
                    f"[{index}]",
                    item,
                )
        return list(value)

    def from_primitive(self, objname: str, value: Any) -> Any:
        if value is None:
            return self.coerce(objname, value)
        if type(value) is not list:
            raise field_error(objname, self.name, value, "expected a list of object envelopes")
        return [self._decode_one(objname, item, f"[{i}]") for i, item in enumerate(value)]

    def wire_type(self) -> Any:
        return list[self.obj_cls._obj_envelope]  # type: ignore[name-defined]

    def clone_value(self, value: Any) -> Any:
        return None if value is None else [item.obj_clone() for item in value]
