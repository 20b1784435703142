"""Objects themselves: declaration, change tracking, lazy loading, copies."""

from __future__ import annotations

import pytest

import nubes.objects  # noqa: F401  (every object class registered)
from nubes import exception
from nubes.objects import base, fields
from nubes.objects.registry import REGISTRY, ObjectRegistry
from tests.unit.objects.fakes import NEW, UUID1, Gadget, Part, gadget

# -- declaration ------------------------------------------------------------------


def test_fields_are_listed_in_declaration_order_parents_first() -> None:
    class Child(Part):
        extra = fields.Boolean(nullable=True, added_in="1.1")

    assert Part.obj_fields == ("name", "size", "colour")
    assert Child.obj_fields == ("name", "size", "colour", "extra")


def test_a_subclass_can_drop_a_field_by_shadowing_it() -> None:
    class NoColour(Part):
        colour = None  # type: ignore[assignment]

    assert NoColour.obj_fields == ("name", "size")


def test_objects_have_no_instance_dict_so_typos_raise() -> None:
    part = Part(name="a")
    with pytest.raises(AttributeError):
        part.colur = "red"  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", ["1", "1.x", "01.0", "1.0.0", ""])
def test_version_must_be_major_dot_minor(version: str) -> None:
    with pytest.raises(TypeError, match=r"VERSION"):
        type("Bad", (base.VersionedObject,), {"VERSION": version})


def test_added_in_must_not_pass_version() -> None:
    with pytest.raises(TypeError, match=r"added_in 1.3 does not fit VERSION 1.2"):
        type(
            "Bad", (base.VersionedObject,), {"VERSION": "1.2", "x": fields.Integer(added_in="1.3")}
        )
    with pytest.raises(TypeError, match=r"does not fit"):
        type(
            "Bad", (base.VersionedObject,), {"VERSION": "2.1", "x": fields.Integer(added_in="1.0")}
        )


def test_nested_versions_must_start_where_the_field_appeared() -> None:
    with pytest.raises(TypeError, match=r"must start at 1.1"):
        type(
            "Bad",
            (base.VersionedObject,),
            {
                "VERSION": "1.2",
                "p": fields.Object(Part, added_in="1.1", versions={"1.0": "1.1"}),
            },
        )
    with pytest.raises(TypeError, match=r"not pass VERSION 1.0"):
        type(
            "Bad",
            (base.VersionedObject,),
            {"VERSION": "1.0", "p": fields.Object(Part, versions={"1.0": "1.0", "1.1": "1.1"})},
        )


def test_one_field_object_cannot_serve_two_names() -> None:
    shared = fields.Integer()
    with pytest.raises((TypeError, RuntimeError)):
        type("Bad", (base.VersionedObject,), {"a": shared, "b": shared})


def test_constructor_refuses_unknown_fields() -> None:
    with pytest.raises(exception.UnknownObjectField, match=r"Part 1.1 has no field 'wheels'"):
        Part(name="a", wheels=4)


# -- reading, setting, lazy loading ----------------------------------------------


def test_unset_field_read_raises_a_clear_load_error() -> None:
    part = Part(name="a")
    assert not part.obj_attr_is_set("colour")
    with pytest.raises(exception.ObjectLoadError) as caught:
        _ = part.colour
    assert caught.value.kwargs == {
        "objname": "Part",
        "field": "colour",
        "reason": "it is not set, and Part does not lazy-load fields",
    }


def test_obj_attr_is_set_refuses_unknown_names() -> None:
    with pytest.raises(exception.UnknownObjectField):
        Part(name="a").obj_attr_is_set("nope")


class Lazy(Part):
    __slots__ = ("loads",)

    def obj_load_attr(self, name: str) -> None:
        self.loads = getattr(self, "loads", 0) + 1
        if name == "colour":
            self.colour = "loaded"
            self.size = 99  # loaders may fill more than they were asked for


class Forgetful(Part):
    def obj_load_attr(self, name: str) -> None:
        pass


LAZY = ObjectRegistry()
LAZY.register(Lazy)


def test_lazy_load_sets_the_field_without_counting_it_as_a_change() -> None:
    lazy = Lazy.obj_from_primitive(
        {
            "nubes_object.name": "Lazy",
            "nubes_object.version": "1.1",
            "nubes_object.data": {"name": "a"},
        }
    )
    assert not lazy.obj_attr_is_set("size")
    assert lazy.colour == "loaded"
    assert lazy.colour == "loaded"
    assert lazy.loads == 1
    assert lazy.size == 99
    assert lazy.obj_what_changed() == set()


def test_lazy_load_that_sets_nothing_is_an_error() -> None:
    with pytest.raises(exception.ObjectLoadError, match=r"returned without setting it"):
        _ = Forgetful(name="a").colour


def test_update_and_obj_get_changes() -> None:
    part = Part(name="a")
    part.obj_reset_changes()
    part.update({"size": "4", "colour": "red"})
    assert part.obj_get_changes() == {"size": 4, "colour": "red"}
    with pytest.raises(exception.UnknownObjectField):
        part.update({"weight": 1})


def test_obj_set_defaults() -> None:
    part = Part.obj_from_primitive(
        {
            "nubes_object.name": "Part",
            "nubes_object.version": "1.1",
            "nubes_object.data": {"name": "a"},
        }
    )
    part.obj_set_defaults("size")
    assert part.size == 1
    assert part.obj_what_changed() == {"size"}
    with pytest.raises(exception.ObjectActionError, match=r"Part.name has no default"):
        part.obj_set_defaults("name")
    part.size = 5
    part.obj_set_defaults()
    assert part.size == 5  # only unset fields get their default


# -- change tracking --------------------------------------------------------------


def test_assignments_are_changes_until_reset() -> None:
    obj = gadget()
    assert obj.obj_what_changed() == set()
    obj.label = "new"
    obj.id = 8
    assert obj.obj_what_changed() == {"label", "id"}
    obj.obj_reset_changes(["label"])
    assert obj.obj_what_changed() == {"id"}
    obj.obj_reset_changes()
    assert obj.obj_what_changed() == set()


def test_assigning_the_same_value_still_counts() -> None:
    obj = gadget()
    obj.label = obj.label
    assert obj.obj_what_changed() == {"label"}


def test_nested_changes_show_on_the_parent() -> None:
    obj = gadget()
    obj.main.size = 10
    assert obj.obj_what_changed() == {"main"}
    obj.obj_reset_changes()
    assert obj.obj_what_changed() == {"main"}, "a shallow reset leaves the child's changes"
    obj.obj_reset_changes(recursive=True)
    assert obj.obj_what_changed() == set()
    obj.parts[1].colour = "green"
    assert obj.obj_what_changed() == {"parts"}
    obj.obj_reset_changes(["parts"], recursive=True)
    assert obj.main.obj_what_changed() == set()
    assert obj.obj_what_changed() == set()


def test_containers_changed_in_place_are_changes() -> None:
    obj = gadget()
    obj.settings["b"] = "2"
    assert obj.obj_what_changed() == {"settings"}
    obj.obj_reset_changes()
    assert obj.obj_what_changed() == set()
    settings = obj.settings
    obj.obj_reset_changes()
    settings["c"] = "3"  # through a reference taken before the reset
    assert obj.obj_what_changed() == {"settings"}
    assert obj.obj_get_changes() == {"settings": {"a": "1", "b": "2", "c": "3"}}


def test_lists_of_objects_changed_in_place_are_changes() -> None:
    obj = gadget()
    obj.parts.append(Part(name="extra"))
    assert obj.obj_what_changed() == {"parts"}
    obj.obj_reset_changes(recursive=True)
    obj.parts.pop()
    assert obj.obj_what_changed() == {"parts"}


def test_reset_refuses_unknown_names() -> None:
    with pytest.raises(exception.UnknownObjectField):
        gadget().obj_reset_changes(["nope"])


# -- copies and repr ------------------------------------------------------------------


def test_clone_is_deep_and_keeps_changes() -> None:
    obj = gadget()
    obj.label = "changed"
    _ = obj.parts  # snapshot the list, so the clone must remap it
    clone = obj.obj_clone()
    assert clone.obj_what_changed() == {"label"}
    assert clone.main is not obj.main and clone.main.name == obj.main.name
    assert clone.parts[0] is not obj.parts[0]
    clone.settings["x"] = "y"
    clone.parts[0].size = 50
    assert "x" not in obj.settings
    assert obj.parts[0].size == 1
    assert obj.obj_what_changed() == {"label"}
    assert clone.obj_what_changed() == {"label", "settings", "parts"}


def test_repr_shows_set_fields_only() -> None:
    part = Part(name="a")
    assert repr(part) == "Part(name='a', size=1)"
    assert repr(Gadget(id=1, uuid=UUID1)).startswith(f"Gadget(id=1, uuid='{UUID1}', settings={{}}")


# -- registry ----------------------------------------------------------------------------


def test_registry_refuses_a_second_class_for_a_name() -> None:
    registry = ObjectRegistry()
    registry.register(Part)
    registry.register(Part)  # the same class again is harmless
    assert Part.obj_from_primitive(Part(name="a").obj_to_primitive()).name == "a"
    assert Part._obj_registry is NEW, "joining a second registry must not move its home"

    class Other(base.VersionedObject):
        OBJ_NAME = "Part"

    with pytest.raises(TypeError, match=r"already registered"):
        registry.register(Other)


def test_registry_lookups() -> None:
    registry = ObjectRegistry()
    registry.register(Part)
    assert "Part" in registry and len(registry) == 1 and list(registry) == ["Part"]
    assert registry.get("Part") is Part
    assert registry.lookup("Part", "1.0") is Part
    assert registry.versions() == {"Part": "1.1"}
    assert registry.runs("Part", "1.1")
    assert not registry.runs("Part", "1.0") and not registry.runs("Gear", "1.1")
    with pytest.raises(exception.UnknownObject, match=r"Unknown object 'Gear'"):
        registry.get("Gear")
    with pytest.raises(exception.IncompatibleObjectVersion) as caught:
        registry.lookup("Part", "1.2")
    assert caught.value.kwargs == {"objname": "Part", "objver": "1.2", "supported": "1.1"}
    with pytest.raises(exception.IncompatibleObjectVersion):
        registry.lookup("Part", "2.0")
    with pytest.raises(exception.MalformedObject):
        registry.lookup("Part", "latest")


def test_tree_versions_cover_nested_classes() -> None:
    assert Gadget.obj_tree_versions() == {"Gadget": "1.2", "Part": "1.1"}
    assert gadget().obj_tree_versions() == {"Gadget": "1.2", "Part": "1.1"}


def test_storage_structs_hold_the_fields_in_obj_fields_order() -> None:
    """serve_object_action pairs a struct's values with obj_fields by position."""
    for name in REGISTRY:
        cls = REGISTRY.get(name)
        assert cls._obj_storage.__struct_fields__ == cls.obj_fields, name
