"""Each field type: what it takes, what it makes of it, and what it refuses."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Any

import pytest

from nubes import exception
from nubes.objects import fields
from nubes.objects.states import PowerState, VMState
from tests.unit.objects.fakes import UUID1, Everything, Part

UTC = datetime.UTC
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))


class Colour(enum.StrEnum):
    ON = "on"
    OFF = "off"


def assign(field: str, value: Any) -> Any:
    obj = Everything()
    setattr(obj, field, value)
    return getattr(obj, field)


def refused(field: str, value: Any) -> exception.ObjectFieldError:
    with pytest.raises(exception.ObjectFieldError) as caught:
        assign(field, value)
    return caught.value


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("text", "hello", "hello"),
        ("text", VMState.ACTIVE, "active"),
        ("count", 5, 5),
        ("count", PowerState.RUNNING, 1),
        ("count", 5.0, 5),
        ("count", "-12", -12),
        ("count", 2**63 - 1, 2**63 - 1),
        ("ratio", 1.5, 1.5),
        ("ratio", 2, 2.0),
        ("ratio", "0.25", 0.25),
        ("ratio", "1e3", 1000.0),
        ("flag", True, True),
        ("flag", 0, False),
        ("flag", 1, True),
        ("ident", UUID1, UUID1),
        ("ident", UUID1.upper(), UUID1),
        ("ident", uuid.UUID(UUID1), UUID1),
        ("ident", UUID1.replace("-", ""), UUID1),
        ("ident", "{" + UUID1 + "}", UUID1),
        ("state", "on", "on"),
        ("state", Colour.OFF, "off"),
        ("specs", {"a": "b"}, {"a": "b"}),
        ("anything", {"a": 1, "b": None, "c": 1.5, "d": True, "e": "x"}, None),
        ("names", ("a", "b"), ["a", "b"]),
        ("mixed", [1, "a", None, 2.5, False], None),
        ("idents", [UUID1.upper()], [UUID1]),
    ],
)
def test_accepted_values_are_made_canonical(field: str, value: Any, expected: Any) -> None:
    result = assign(field, value)
    assert result == (value if expected is None else expected)
    if isinstance(result, str):
        assert type(result) is str
    if field == "count":
        assert type(result) is int
    if field == "ratio":
        assert type(result) is float


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("text", 5, "expected a string, got int"),
        ("text", b"bytes", "expected a string, got bytes"),
        ("count", True, "a bool is not an integer"),
        ("count", 5.5, "not a whole number"),
        ("count", "5.0", "expected an integer, got str"),
        ("count", "٣", "expected an integer, got str"),
        ("count", 2**63, "does not fit in 64 bits"),
        ("count", float("nan"), "not a whole number"),
        ("count", "9" * 5000, "too many digits"),
        ("ratio", float("inf"), "not a finite number"),
        ("ratio", float("nan"), "not a finite number"),
        ("ratio", "nan", "expected a number, got str"),
        ("ratio", 2**53 + 1, "a float cannot hold this integer exactly"),
        ("ratio", 10**400, "too large for a float"),
        ("ratio", False, "a bool is not a number"),
        ("flag", "false", "expected a bool, got str"),
        ("flag", 2, "expected a bool, got int"),
        ("ident", "not-a-uuid", "not a UUID"),
        ("ident", 12, "expected a UUID, got int"),
        ("state", "sideways", "not one of on, off"),
        ("state", 1, "expected one of on, off, got int"),
        ("specs", ["a"], "expected a dict, got list"),
        ("names", "ab", "expected a list, got str"),
        ("names", {"a", "b"}, "expected a list, got set"),
        ("part", {"name": "x"}, "expected a Part object, got dict"),
        ("parts", [Part(name="a"), "b"], "expected a Part object, got str"),
        ("required", None, "the field is not nullable"),
    ],
)
def test_refusals_name_object_field_value_and_reason(field: str, value: Any, reason: str) -> None:
    error = refused(field, value)
    assert error.kwargs["objname"] == "Everything"
    assert error.kwargs["field"].startswith(field)
    assert reason in error.message
    assert error.message.startswith(f"Everything.{field}")
    assert error.code == 400


def test_refused_value_is_quoted_and_bounded() -> None:
    error = refused("text", 10**200)
    assert len(error.kwargs["value"]) <= 80
    assert error.kwargs["value"].endswith("...")


@pytest.mark.parametrize(
    ("field", "value", "where", "shown"),
    [
        ("specs", {"a": "b", "c": 5}, "specs['c']", "5"),
        ("specs", {1: "b"}, "specs[1]", "1"),
        ("anything", {"a": [1]}, "anything['a']", "[1]"),
        ("anything", {"a": float("nan")}, "anything['a']", "nan"),
        ("names", ["a", None], "names[1]", "None"),
        ("mixed", [1, {"a": 1}], "mixed[1]", "{'a': 1}"),
        ("idents", [UUID1, "zzz"], "idents[1]", "'zzz'"),
        ("stamps", {"t": datetime.datetime(2024, 1, 1)}, "stamps['t']", "datetime"),
    ],
)
def test_container_refusals_point_at_the_element(
    field: str, value: Any, where: str, shown: str
) -> None:
    error = refused(field, value)
    assert error.kwargs["field"] == where
    assert shown in error.kwargs["value"]


def test_datetimes_are_aware_utc() -> None:
    moment = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=PLUS_TWO)
    result = assign("when", moment)
    assert result == moment
    assert result.tzinfo is UTC
    assert result.hour == 10
    assert assign("when", "2024-05-01T12:00:00+02:00") == moment
    assert assign("when", "2024-05-01T10:00:00Z").tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [datetime.datetime(2024, 5, 1, 12, 0), "2024-05-01T12:00:00", "2024-05-01"],
)
def test_naive_datetimes_are_refused(value: Any) -> None:
    error = refused("when", value)
    assert "naive datetime" in error.message
    assert "timezone.utc" in error.message


@pytest.mark.parametrize("value", ["yesterday", datetime.date(2024, 1, 1), 1700000000])
def test_non_datetimes_are_refused(value: Any) -> None:
    refused("when", value)


def test_datetime_out_of_range_once_in_utc_is_refused() -> None:
    edge = datetime.datetime(1, 1, 1, 0, 0, tzinfo=PLUS_TWO)
    assert "out of range" in refused("when", edge).message


def test_containers_are_copied_on_assignment() -> None:
    source = {"a": "b"}
    obj = Everything(specs=source)
    source["a"] = "changed"
    assert obj.specs == {"a": "b"}


def test_nullable_fields_take_none_and_others_refuse_it() -> None:
    obj = Everything(text=None, required=1)
    assert obj.text is None
    with pytest.raises(exception.ObjectFieldError, match=r"not nullable"):
        obj.required = None


def test_defaults_apply_to_new_objects_and_are_not_shared() -> None:
    first = Part(name="a")
    assert first.size == 1
    assert first.obj_what_changed() == {"name", "size"}

    class Holder(Everything):
        bag = fields.Dict(default={"k": "v"})

    one, two = Holder(required=1), Holder(required=2)
    one.bag["k"] = "changed"
    assert two.bag == {"k": "v"}


def test_bad_defaults_are_refused_when_the_field_is_declared() -> None:
    with pytest.raises(TypeError, match=r"invalid default"):
        fields.Integer(default="many")
    with pytest.raises(TypeError, match=r"invalid default"):
        fields.String(default=None)


def test_enum_values_must_be_distinct_strings() -> None:
    with pytest.raises(TypeError):
        fields.Enum(())
    with pytest.raises(TypeError):
        fields.Enum(("a", "a"))
    with pytest.raises(TypeError):
        fields.Enum(PowerState)  # int values
    assert fields.Enum(Colour).values == ("on", "off")


def test_container_elements_must_be_scalar_fields() -> None:
    with pytest.raises(TypeError, match=r"scalar"):
        fields.List(fields.List())
    with pytest.raises(TypeError, match=r"scalar"):
        fields.Dict(fields.Object(Part, versions={"1.0": "1.1"}))


def test_object_field_versions_must_reach_the_child_version() -> None:
    with pytest.raises(TypeError, match=r"out of date"):
        fields.Object(Part, versions={"1.0": "1.0"})
    with pytest.raises(TypeError, match=r"at least one"):
        fields.Object(Part, versions={})
    with pytest.raises(TypeError, match=r"not a 'major.minor'"):
        fields.Object(Part, versions={"one": "1.1"})


def test_describe_covers_every_property() -> None:
    field = fields.Enum(("a", "b"), nullable=True, default="a", added_in="1.3")
    assert field.describe() == "Enum(['a', 'b'], nullable=True, default='a', added_in='1.3')"
    nested = fields.Object(Part, versions={"1.0": "1.0", "1.4": "1.1"})
    assert nested.describe() == "Object(Part, versions={'1.0': '1.0', '1.4': '1.1'})"
    assert fields.Dict(fields.String()).describe() == "Dict(String())"


def test_field_read_on_the_class_is_the_field() -> None:
    assert isinstance(Everything.text, fields.String)
    assert Everything.text.name == "text"
