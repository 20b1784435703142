"""Whatever a compromised peer sends, decoding answers with a nubes error or
an object that is fully valid (it encodes and decodes back to itself)."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nubes import exception
from nubes.objects import codec
from nubes.objects.base import VersionedObject
from nubes.objects.registry import CHANGES_KEY, DATA_KEY, NAME_KEY, VERSION_KEY
from tests.unit.objects.fakes import NEW, UUID1, Everything, Gadget, Part, gadget

EXAMPLES = 300

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=10),
    st.sampled_from([UUID1, UUID1.upper(), "on", "off", "2024-01-01T00:00:00+02:00", "7"]),
    st.datetimes(timezones=st.sampled_from([datetime.UTC, None])),
)
field_names = st.sampled_from(
    sorted({*Gadget.obj_fields, *Part.obj_fields, *Everything.obj_fields, "junk", "__class__"})
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), field_names), inner, max_size=4),
    ),
    max_leaves=12,
)


def envelopes(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    values = junk if depth == 0 else st.one_of(junk, st.deferred(lambda: envelopes(depth - 1)))
    return st.fixed_dictionaries(
        {
            NAME_KEY: st.one_of(st.sampled_from(["Gadget", "Part", "Everything", "Gear"]), junk),
            VERSION_KEY: st.one_of(st.sampled_from(["1.0", "1.1", "1.2", "1.3", "2.0"]), junk),
            DATA_KEY: st.one_of(st.dictionaries(field_names, values, max_size=8), junk),
        },
        optional={CHANGES_KEY: st.one_of(st.lists(field_names, max_size=3), junk), "x": junk},
    )


def mutate(primitive: Any, path: list[int], replacement: Any) -> Any:
    """Replace one leaf of a valid primitive, chosen by ``path``."""
    if not path:
        return replacement
    if isinstance(primitive, dict) and primitive:
        keys = sorted(primitive, key=repr)
        key = keys[path[0] % len(keys)]
        return {**primitive, key: mutate(primitive[key], path[1:], replacement)}
    if isinstance(primitive, list) and primitive:
        index = path[0] % len(primitive)
        return [
            *primitive[:index],
            mutate(primitive[index], path[1:], replacement),
            *primitive[index + 1 :],
        ]
    return replacement


@contextlib.contextmanager
def slow_path_only() -> Iterator[None]:
    """Decode without msgspec's fast path, field by field."""
    fast = VersionedObject.__dict__["_obj_decode"]
    VersionedObject._obj_decode = classmethod(  # type: ignore[method-assign,assignment]
        lambda cls, primitive: cls._obj_decode_slow(primitive)
    )
    try:
        yield
    finally:
        VersionedObject._obj_decode = fast  # type: ignore[method-assign]


def decode_both_ways(value: Any) -> tuple[Any, Any]:
    """(result, error) of the fast and of the slow path."""
    outcomes: list[Any] = []
    for slow in (False, True):
        with slow_path_only() if slow else contextlib.nullcontext():
            try:
                outcomes.append(NEW.obj_from_primitive(value))
            except exception.NubesError as error:
                outcomes.append(error)
    return outcomes[0], outcomes[1]


def check(value: Any) -> None:
    obj, slow = decode_both_ways(value)
    if isinstance(obj, exception.NubesError):
        return
    # The fast path only ever says "certainly fine": the slow path agrees.
    assert isinstance(obj, VersionedObject)
    assert isinstance(slow, VersionedObject), slow
    primitive = obj.obj_to_primitive()
    assert slow.obj_to_primitive() == primitive
    assert codec.decode(codec.encode(obj), NEW).obj_to_primitive() == primitive
    assert codec.json_decode(codec.json_encode(obj), NEW).obj_to_primitive() == primitive


JUNK_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@JUNK_SETTINGS
@given(junk)
def test_random_structures(value: Any) -> None:
    check(value)


@JUNK_SETTINGS
@given(envelopes())
def test_random_envelopes(value: dict[str, Any]) -> None:
    check(value)


@JUNK_SETTINGS
@given(st.lists(st.integers(min_value=0, max_value=50), max_size=6), junk)
def test_valid_primitives_with_one_leaf_replaced(path: list[int], replacement: Any) -> None:
    obj = gadget()
    obj.label = "changed"
    check(mutate(obj.obj_to_primitive(), path, replacement))


@JUNK_SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    for decode in (codec.decode, codec.json_decode):
        try:
            decode(data, NEW)
        except exception.NubesError:
            pass


@JUNK_SETTINGS
@given(junk)
def test_random_structures_through_decode_entity(value: Any) -> None:
    try:
        data = codec.encode(value)
    except OverflowError:
        assume(False)  # ints msgpack cannot carry never reach a decoder
    try:
        codec.decode_entity(codec.decode_builtins(data), NEW)
    except exception.NubesError:
        pass
