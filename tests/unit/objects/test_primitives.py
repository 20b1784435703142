"""Primitives and bytes: round trips, and everything decoding must refuse."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

import msgspec
import pytest

from nubes import exception
from nubes.objects import codec
from nubes.objects.registry import CHANGES_KEY, DATA_KEY, NAME_KEY, VERSION_KEY
from tests.unit.objects.fakes import NEW, OLD, UUID1, UUID2, Everything, Gadget, Part, gadget

PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))


def envelope(name: Any, version: Any, data: Any, **extra: Any) -> dict[str, Any]:
    return {NAME_KEY: name, VERSION_KEY: version, DATA_KEY: data, **extra}


def same(a: Any, b: Any) -> bool:
    return a.obj_to_primitive() == b.obj_to_primitive()


# -- round trips ----------------------------------------------------------------------


def test_primitive_shape() -> None:
    obj = gadget()
    obj.label = "x"
    primitive = obj.obj_to_primitive()
    assert set(primitive) == {NAME_KEY, VERSION_KEY, DATA_KEY, CHANGES_KEY}
    assert primitive[NAME_KEY] == "Gadget" and primitive[VERSION_KEY] == "1.2"
    assert primitive[CHANGES_KEY] == ["label"]
    data = primitive[DATA_KEY]
    assert isinstance(data["created_at"], datetime.datetime)
    assert data["main"] == {
        NAME_KEY: "Part",
        VERSION_KEY: "1.1",
        DATA_KEY: {"name": "wheel", "size": 3, "colour": "red"},
    }
    assert CHANGES_KEY not in gadget().obj_to_primitive(), "no changes, no key"


def test_primitive_shares_nothing_with_the_object() -> None:
    obj = gadget()
    primitive = obj.obj_to_primitive()
    primitive[DATA_KEY]["settings"]["zz"] = "1"
    primitive[DATA_KEY]["parts"].clear()
    assert obj.settings == {"a": "1"} and len(obj.parts) == 2
    decoded = Gadget.obj_from_primitive(gadget().obj_to_primitive())
    assert decoded.obj_what_changed() == set()


def test_unset_fields_stay_unset() -> None:
    part = Part.obj_from_primitive(Part(name="a").obj_to_primitive())
    assert not part.obj_attr_is_set("colour")


@pytest.mark.parametrize(
    "through",
    [
        pytest.param(
            lambda v: NEW.obj_from_primitive(copy.deepcopy(v.obj_to_primitive())), id="primitive"
        ),
        pytest.param(lambda v: codec.decode(codec.encode(v), NEW), id="msgpack"),
        pytest.param(lambda v: codec.json_decode(codec.json_encode(v), NEW), id="json"),
        pytest.param(
            lambda v: NEW.obj_from_primitive(
                json.loads(json.dumps(msgspec.to_builtins(v.obj_to_primitive())))
            ),
            id="stdlib-json",
        ),
    ],
)
def test_round_trip_keeps_values_and_changes(through: Any) -> None:
    obj = gadget()
    obj.label = "changed"
    obj.settings["b"] = "2"
    obj.main.size = 4
    obj.parts[0].colour = "green"
    back = through(obj)
    assert type(back) is Gadget
    assert same(back, obj)
    assert back.created_at.tzinfo is datetime.UTC
    assert back.obj_what_changed() == {"label", "settings", "main", "parts"}
    assert back.main.obj_what_changed() == {"size"}
    assert back.parts[0].obj_what_changed() == {"colour"}
    assert back.parts[1].obj_what_changed() == set()


def test_everything_round_trips_through_msgpack_and_json() -> None:
    obj = Everything(
        text="t",
        count=-3,
        ratio=0.5,
        flag=False,
        ident=UUID2,
        when=datetime.datetime(2030, 1, 1, tzinfo=PLUS_TWO),
        state="on",
        specs={"a": "b"},
        anything={"n": 1, "f": 1.5, "b": True, "z": None, "s": "x"},
        stamps={"t": datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)},
        names=["a"],
        mixed=[1, "x", None],
        idents=[UUID1],
        part=Part(name="p"),
        parts=[Part(name="q", colour=None)],
        required=1,
    )
    for back in (
        codec.decode(codec.encode(obj), NEW),
        codec.json_decode(codec.json_encode(obj), NEW),
    ):
        assert same(back, obj)
        assert back.when.tzinfo is datetime.UTC
        assert back.stamps["t"].tzinfo is datetime.UTC


def test_codec_handles_objects_anywhere_in_a_structure() -> None:
    value = {"args": [gadget(), {"inner": Part(name="x")}], "n": 1, "none": None}
    back = codec.decode(codec.encode(value), NEW)
    assert type(back["args"][0]) is Gadget
    assert type(back["args"][1]["inner"]) is Part
    assert back["n"] == 1 and back["none"] is None


def test_msgspec_encode_with_the_enc_hook_directly() -> None:
    data = msgspec.msgpack.encode([gadget()], enc_hook=codec.enc_hook)
    (back,) = codec.decode_entity(msgspec.msgpack.decode(data), NEW)
    assert same(back, gadget())
    with pytest.raises(NotImplementedError, match=r"cannot encode a object"):
        codec.encode(object())


def test_datetimes_with_an_offset_decode_to_utc() -> None:
    primitive = gadget().obj_to_primitive()
    primitive[DATA_KEY]["created_at"] = "2024-01-02T05:04:05+02:00"
    back = Gadget.obj_from_primitive(primitive)
    assert back.created_at == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert back.created_at.tzinfo is datetime.UTC


def test_values_needing_coercion_take_the_slow_path_and_are_fixed() -> None:
    primitive = gadget().obj_to_primitive()
    primitive[DATA_KEY]["id"] = "7"
    primitive[DATA_KEY]["uuid"] = UUID1.upper()
    primitive[DATA_KEY]["main"][DATA_KEY]["size"] = 3.0
    back = Gadget.obj_from_primitive(primitive)
    assert back.id == 7 and back.uuid == UUID1 and back.main.size == 3
    assert same(back, gadget())


def test_upper_case_uuid_of_canonical_length_is_fixed_on_the_fast_path() -> None:
    primitive = gadget(uuid=UUID2).obj_to_primitive()
    primitive[DATA_KEY]["uuid"] = UUID2.upper()
    assert Gadget.obj_from_primitive(primitive).uuid == UUID2


def test_decoding_on_a_subclass_checks_the_class() -> None:
    assert type(Part.obj_from_primitive(Part(name="a").obj_to_primitive())) is Part
    with pytest.raises(exception.MalformedObject, match=r"expected a Gadget object, got a Part"):
        Gadget.obj_from_primitive(Part(name="a").obj_to_primitive())


# -- versions ------------------------------------------------------------------------------


def test_older_minor_is_read_with_later_fields_unset() -> None:
    old = OLD.get("Gadget")(id=1, main=OLD.get("Part")(name="w"))
    back = NEW.obj_from_primitive(old.obj_to_primitive())
    assert type(back) is Gadget
    assert not back.obj_attr_is_set("label") and not back.obj_attr_is_set("parts")
    assert back.main.name == "w" and not back.main.obj_attr_is_set("colour")


def test_newer_minor_is_refused_with_what_the_caller_needs_to_ask_a_backport() -> None:
    with pytest.raises(exception.IncompatibleObjectVersion) as caught:
        OLD.obj_from_primitive(gadget().obj_to_primitive())
    assert caught.value.kwargs == {"objname": "Gadget", "objver": "1.2", "supported": "1.0"}


def test_newer_minor_of_a_nested_object_is_refused_too() -> None:
    primitive = gadget().obj_to_primitive(target_version="1.0")
    primitive[DATA_KEY]["main"][VERSION_KEY] = "1.1"
    with pytest.raises(exception.IncompatibleObjectVersion) as caught:
        OLD.obj_from_primitive(primitive)
    assert caught.value.kwargs["objname"] == "Part"


@pytest.mark.parametrize("version", ["2.0", "0.9", "2.2"])
def test_other_majors_are_refused(version: str) -> None:
    primitive = envelope("Part", version, {"name": "a"})
    with pytest.raises(exception.IncompatibleObjectVersion):
        NEW.obj_from_primitive(primitive)


def test_an_older_version_carrying_a_later_field_is_refused() -> None:
    primitive = envelope("Gadget", "1.0", {"id": 1, "label": "x"})
    with pytest.raises(exception.UnknownObjectField, match=r"Gadget 1.0 has no field label"):
        NEW.obj_from_primitive(primitive)
    primitive = envelope("Gadget", "1.1", {"id": 1, "label": 5})
    with pytest.raises(exception.ObjectFieldError, match=r"Gadget.label"):
        NEW.obj_from_primitive(primitive)


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("primitive", "error", "text"),
    [
        ([], exception.MalformedObject, "not list"),
        ({DATA_KEY: {}}, exception.MalformedObject, "not an object name"),
        (envelope("Gear", "1.0", {}), exception.UnknownObject, "Unknown object 'Gear'"),
        ({NAME_KEY: 5, VERSION_KEY: "1.0", DATA_KEY: {}}, exception.MalformedObject, "5"),
        ({NAME_KEY: "Part", DATA_KEY: {}}, exception.MalformedObject, "needs"),
        (envelope("Part", 1.0, {}), exception.MalformedObject, "not a 'major.minor'"),
        (envelope("Part", "1.0", []), exception.MalformedObject, "is a dict, not list"),
        (envelope("Part", "1.0", {}, extra=1), exception.MalformedObject, "'extra'"),
        (
            envelope("Part", "1.1", {"name": "a", "wheels": 4}),
            exception.UnknownObjectField,
            "no field 'wheels'",
        ),
        (envelope("Part", "1.1", {"name": 4}), exception.ObjectFieldError, "Part.name"),
        (envelope("Part", "1.1", {"name": None}), exception.ObjectFieldError, "not nullable"),
        (
            envelope("Part", "1.1", {"name": "a"}, **{CHANGES_KEY: "name"}),
            exception.MalformedObject,
            "list of field names",
        ),
        (
            envelope("Part", "1.1", {"name": "a"}, **{CHANGES_KEY: ["size"]}),
            exception.MalformedObject,
            "'size', which it does not set",
        ),
        (
            envelope("Part", "1.1", {"name": "a"}, **{CHANGES_KEY: ["__class__"]}),
            exception.MalformedObject,
            "which it does not set",
        ),
        (
            envelope("Gadget", "1.2", {"id": 1, "main": {"name": "x"}}),
            exception.ObjectFieldError,
            "Gadget.main",
        ),
        (
            envelope("Gadget", "1.2", {"id": 1, "main": envelope("Gadget", "1.2", {"id": 2})}),
            exception.ObjectFieldError,
            "expected a Part object",
        ),
        (
            envelope("Gadget", "1.2", {"id": 1, "parts": {"a": 1}}),
            exception.ObjectFieldError,
            "Gadget.parts",
        ),
        (
            envelope("Gadget", "1.2", {"id": 1, "parts": [5]}),
            exception.ObjectFieldError,
            "Gadget.parts[0]",
        ),
        (
            envelope("Gadget", "1.2", {"id": 1, "created_at": "2024-01-01T00:00:00"}),
            exception.ObjectFieldError,
            "naive datetime",
        ),
        (
            envelope("Gadget", "1.2", {"id": 1, "settings": {"a": 1}}),
            exception.ObjectFieldError,
            "Gadget.settings['a']",
        ),
    ],
)
def test_bad_primitives_are_refused(primitive: Any, error: type[Exception], text: str) -> None:
    with pytest.raises(error) as caught:
        NEW.obj_from_primitive(primitive)
    assert text in str(caught.value)


def test_bad_bytes_are_refused() -> None:
    with pytest.raises(exception.MalformedMessage, match=r"undecodable msgpack"):
        codec.decode(b"\xc1", NEW)
    with pytest.raises(exception.MalformedMessage, match=r"extension type 5"):
        codec.decode(b"\xd4\x05\x00", NEW)
    with pytest.raises(exception.MalformedMessage, match=r"undecodable JSON"):
        codec.json_decode(b"{", NEW)


def test_deep_nesting_is_refused_without_recursion_errors() -> None:
    deep: Any = []
    for _ in range(codec.MAX_NESTING + 5):
        deep = [deep]
    with pytest.raises(exception.MalformedMessage, match=r"nested deeper"):
        codec.decode(codec.encode(deep), NEW)
    very_deep = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(exception.MalformedMessage):
        codec.decode(very_deep, NEW)


def test_structures_without_objects_come_back_as_they_went() -> None:
    value = {"a": [1, 2.5, "x", None, True, {"b": b"raw"}]}
    assert codec.decode(codec.encode(value), NEW) == value
