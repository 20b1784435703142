"""Backports: each older minor, recursively, as an older process reads them."""

from __future__ import annotations

from typing import Any

import pytest

from nubes import exception
from nubes.objects import base, codec, fields, indirection
from nubes.objects.registry import CHANGES_KEY, DATA_KEY, VERSION_KEY, ObjectRegistry
from tests.unit.objects.fakes import NEW, OLD, Gadget, OldGadget, gadget


@pytest.mark.parametrize(
    ("target", "dropped", "main_version", "main_fields"),
    [
        ("1.2", set(), "1.1", {"name", "size", "colour"}),
        ("1.1", {"parts"}, "1.0", {"name", "size"}),
        ("1.0", {"parts", "label"}, "1.0", {"name", "size"}),
    ],
)
def test_each_older_minor_drops_later_fields_and_backports_children(
    target: str, dropped: set[str], main_version: str, main_fields: set[str]
) -> None:
    primitive = gadget().obj_to_primitive(target_version=target)
    assert primitive[VERSION_KEY] == target
    data = primitive[DATA_KEY]
    assert set(Gadget.obj_fields) - set(data) == dropped
    assert data["main"][VERSION_KEY] == main_version
    assert set(data["main"][DATA_KEY]) == main_fields
    for part in data.get("parts", []):
        assert part[VERSION_KEY] == "1.1"


def test_the_older_process_reads_the_backport() -> None:
    primitive = gadget().obj_to_primitive(target_version="1.0")
    old = OLD.obj_from_primitive(codec.decode_builtins(codec.encode(primitive)))
    assert type(old) is OldGadget
    assert old.main.name == "wheel" and old.main.size == 3


def test_backport_keeps_only_changes_that_survive() -> None:
    obj = gadget()
    obj.label = "x"
    obj.id = 9
    obj.main.colour = "pink"
    primitive = obj.obj_to_primitive(target_version="1.0")
    assert primitive[CHANGES_KEY] == ["id"]
    assert CHANGES_KEY not in primitive[DATA_KEY]["main"]
    obj.obj_reset_changes(["id"])
    assert CHANGES_KEY not in obj.obj_to_primitive(target_version="1.0")


def test_backport_leaves_the_object_alone() -> None:
    obj = gadget()
    obj.obj_to_primitive(target_version="1.0")
    assert obj.label == "seven" and obj.main.colour == "red"


@pytest.mark.parametrize("target", ["2.0", "0.1", "1.3", "one"])
def test_unreachable_targets_are_refused(target: str) -> None:
    with pytest.raises(exception.IncompatibleObjectVersion) as caught:
        gadget().obj_to_primitive(target_version=target)
    assert caught.value.kwargs["supported"] == "1.2"


class Renamed(base.VersionedObject):
    """1.0: Initial version, with size in GiB
    1.1: size is in MiB
    """

    VERSION = "1.1"

    size = fields.Integer()

    def obj_make_compatible(self, primitive: dict[str, Any], target_version: str) -> None:
        super().obj_make_compatible(primitive, target_version)
        if target_version == "1.0" and "size" in primitive:
            primitive["size"] //= 1024


def test_a_class_can_convert_a_field_for_older_versions() -> None:
    assert Renamed(size=4096).obj_to_primitive(target_version="1.0")[DATA_KEY] == {"size": 4}


def test_versioned_enc_hook_encodes_at_the_peer_versions() -> None:
    data = codec.encode([gadget()], {"Gadget": "1.0", "Part": "1.0"})
    (old,) = codec.decode(data, OLD)
    assert type(old) is OldGadget
    # A peer that runs a newer version than ours reads ours unchanged.
    (same,) = codec.decode(codec.encode([gadget()], {"Gadget": "1.5"}), NEW)
    assert type(same) is Gadget and same.obj_attr_is_set("parts")
    with pytest.raises(exception.IncompatibleObjectVersion):
        codec.encode([gadget()], {"Gadget": "2.0"})


def test_backport_primitive_decodes_and_encodes_at_the_requested_version() -> None:
    backported = indirection.backport_primitive(
        gadget().obj_to_primitive(), {"Gadget": "1.1", "Part": "1.0"}, NEW
    )
    assert backported[VERSION_KEY] == "1.1"
    with pytest.raises(exception.MalformedObject, match=r"no version for Gadget"):
        indirection.backport_primitive(gadget().obj_to_primitive(), {"Part": "1.0"}, NEW)


def test_list_children_backport_per_parent_version() -> None:
    registry = ObjectRegistry()

    @registry.register
    class Leaf(base.VersionedObject):
        """1.0: Initial version
        1.1: Added b
        """

        VERSION = "1.1"
        a = fields.Integer()
        b = fields.Integer(added_in="1.1")

    @registry.register
    class Tree(base.VersionedObject):
        """1.0: Initial version
        1.1: Leaf 1.1
        """

        VERSION = "1.1"
        leaves = fields.ListOfObjects(Leaf, versions={"1.0": "1.0", "1.1": "1.1"})

    tree = Tree(leaves=[Leaf(a=1, b=2), Leaf(a=3, b=4)])
    old = tree.obj_to_primitive(target_version="1.0")
    assert [leaf[DATA_KEY] for leaf in old[DATA_KEY]["leaves"]] == [{"a": 1}, {"a": 3}]
    assert [leaf[VERSION_KEY] for leaf in old[DATA_KEY]["leaves"]] == ["1.0", "1.0"]
    assert Tree.obj_from_primitive(old).leaves[1].a == 3
