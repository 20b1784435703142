"""nubes.objects against oslo.versionedobjects, measured in the same run.

The object is nubes's Instance (about 40 fields of every type) with three
nested objects set: flavor, new_flavor and fault. For the backport figure
both sides get one more minor version (1.1) that adds a field to Instance
and to Flavor, and the objects are backported to 1.0.

The ovo classes are built from the nubes field declarations, so both sides
carry the same fields and the same values. Wire bytes are what each stack
really sends: msgpack through :mod:`nubes.objects.codec` for nubes,
``jsonutils.dumps`` of the primitive (what oslo.messaging does) for ovo.

The last line ends with ``ratio R``: wire encode+decode, nubes over ovo.
"""

from __future__ import annotations

import argparse
import datetime
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

with warnings.catch_warnings():
    # ovo pulls in oslo.service, which warns that eventlet is deprecated.
    warnings.simplefilter("ignore")
    from oslo_serialization import jsonutils
    from oslo_utils import versionutils
    from oslo_versionedobjects import base as ovo_base
    from oslo_versionedobjects import fields as ovo_fields

from nubes.objects import codec, fields
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.instance_fault import InstanceFault
from nubes.objects.registry import ObjectRegistry

# Many short rounds, best one kept: on a shared machine a short round is
# likelier to run undisturbed than a long one.
ROUNDS = 25
ROUND_SECONDS = 0.01
QUICK_ROUNDS = 3
QUICK_ROUND_SECONDS = 0.002
WARMUP_SECONDS = 0.02
OLD_VERSION = "1.0"

BENCH = ObjectRegistry()

# -- nubes: the real objects, with one more minor version to backport from --


@BENCH.register
class BenchFlavor(Flavor):
    """1.0: as nubes.objects.flavor; 1.1: added notes."""

    OBJ_NAME = "Flavor"
    VERSION = "1.1"
    notes = fields.String(nullable=True, added_in="1.1")


@BENCH.register
class BenchFault(InstanceFault):
    """1.0: as nubes.objects.instance_fault."""

    OBJ_NAME = "InstanceFault"


_FLAVOR_VERSIONS = {"1.0": "1.0", "1.1": "1.1"}


@BENCH.register
class BenchInstance(Instance):
    """1.0: as nubes.objects.instance; 1.1: added shelve_reason, Flavor 1.1."""

    OBJ_NAME = "Instance"
    VERSION = "1.1"
    shelve_reason = fields.String(nullable=True, added_in="1.1")
    flavor = fields.Object(BenchFlavor, versions=_FLAVOR_VERSIONS)
    old_flavor = fields.Object(BenchFlavor, nullable=True, versions=_FLAVOR_VERSIONS)
    new_flavor = fields.Object(BenchFlavor, nullable=True, versions=_FLAVOR_VERSIONS)
    fault = fields.Object(BenchFault, nullable=True, versions={"1.0": "1.0"})


# -- ovo: the same classes, built from the nubes declarations --


def _ovo_field(field: fields.Field[Any]) -> ovo_fields.Field:
    nullable = field.nullable
    simple = {
        fields.String: ovo_fields.StringField,
        fields.Integer: ovo_fields.IntegerField,
        fields.Float: ovo_fields.FloatField,
        fields.Boolean: ovo_fields.BooleanField,
        fields.UUID: ovo_fields.UUIDField,
        fields.DateTime: ovo_fields.DateTimeField,
    }
    if type(field) in simple:
        return simple[type(field)](nullable=nullable)
    if isinstance(field, fields.Enum):
        return ovo_fields.EnumField(valid_values=list(field.values), nullable=nullable)
    if isinstance(field, fields.Dict):
        return ovo_fields.DictOfStringsField(nullable=nullable)
    if isinstance(field, fields.List):
        return ovo_fields.ListOfStringsField(nullable=nullable)
    if isinstance(field, fields.Object):
        return ovo_fields.ObjectField(field.obj_cls.obj_name(), nullable=nullable)
    raise TypeError(f"no ovo equivalent for {field!r}")


def _ovo_class(cls: type[Any]) -> type[Any]:
    ovo_fields_map = {name: _ovo_field(f) for name, f in cls._obj_field_map.items()}
    added = [(name, f.added_in) for name, f in cls._obj_field_map.items() if f.added_in]
    relationships = {
        name: list(f.versions.items())
        for name, f in cls._obj_field_map.items()
        if isinstance(f, fields.Object)
    }

    def obj_make_compatible(self: Any, primitive: dict[str, Any], target_version: str) -> None:
        ovo_base.VersionedObject.obj_make_compatible(self, primitive, target_version)
        target = versionutils.convert_version_to_tuple(target_version)
        for name, version in added:
            if target < versionutils.convert_version_to_tuple(version):
                primitive.pop(name, None)

    new = type(
        cls.obj_name(),
        (ovo_base.VersionedObject,),
        {
            "VERSION": cls.VERSION,
            "fields": ovo_fields_map,
            "obj_relationships": relationships,
            "obj_make_compatible": obj_make_compatible,
        },
    )
    return ovo_base.VersionedObjectRegistry.register(new)


OvoFlavor = _ovo_class(BenchFlavor)
OvoFault = _ovo_class(BenchFault)
OvoInstance = _ovo_class(BenchInstance)


# -- the data --


def _values() -> dict[str, Any]:
    now = datetime.datetime(2024, 5, 17, 9, 30, 12, 345678, tzinfo=datetime.UTC)
    instance_uuid = str(uuid.UUID(int=0x1234_5678_9ABC))

    def flavor(n: int) -> dict[str, Any]:
        return {
            "id": n,
            "flavorid": f"m1.{n}",
            "name": f"m1.size{n}",
            "memory_mb": 2048 * n,
            "vcpus": 2 * n,
            "root_gb": 20 * n,
            "ephemeral_gb": 0,
            "swap": 512,
            "rxtx_factor": 1.0,
            "is_public": True,
            "disabled": False,
            "extra_specs": {"hw:cpu_policy": "dedicated", "hw:mem_page_size": "large"},
            "description": "general purpose",
            "notes": "benchmark",
        }

    return {
        "id": 4242,
        "uuid": instance_uuid,
        "user_id": "f3c1a9e0d7b34b7f9a1e5c2d8b6f4a10",
        "project_id": "9d2b7c1e4f6a4e8b8c3d5f7a9b1c2d3e",
        "image_ref": str(uuid.UUID(int=0xDEADBEEF)),
        "hostname": "web-01",
        "display_name": "web-01",
        "display_description": "front end",
        "key_name": "deploy",
        "reservation_id": "r-3k5j7h9g",
        "launch_index": 0,
        "host": "compute-17",
        "node": "compute-17.example.org",
        "launched_on": "compute-17",
        "availability_zone": "az1",
        "vm_state": "active",
        "task_state": "resize_migrating",
        "power_state": 1,
        "progress": 40,
        "locked": False,
        "locked_by": None,
        "shutdown_terminate": False,
        "memory_mb": 4096,
        "vcpus": 4,
        "root_gb": 40,
        "ephemeral_gb": 0,
        "launched_at": now,
        "terminated_at": None,
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
        "deleted": False,
        "metadata": {"role": "web", "tier": "frontend", "owner": "team-a"},
        "system_metadata": {"image_min_disk": "20", "image_os_type": "linux"},
        "tags": ["prod", "web"],
        "shelve_reason": None,
        "flavor": flavor(1),
        "old_flavor": None,
        "new_flavor": flavor(2),
        "fault": {
            "id": 7,
            "instance_uuid": instance_uuid,
            "code": 500,
            "message": "Resize failed on the source host",
            "details": "Traceback (most recent call last): ...",
            "host": "compute-17",
            "created_at": now,
            "updated_at": None,
            "deleted_at": None,
            "deleted": False,
        },
    }


def _build(values: dict[str, Any], classes: dict[str, type[Any]]) -> Any:
    nested = {"flavor": "Flavor", "old_flavor": "Flavor", "new_flavor": "Flavor", "fault": "Fault"}
    kwargs = {}
    for name, value in values.items():
        if name in nested and value is not None:
            value = classes[nested[name]](**value)
            value.obj_reset_changes()
        kwargs[name] = value
    obj = classes["Instance"](**kwargs)
    obj.obj_reset_changes()
    return obj


# -- measuring --


def _best_rate(fn: Callable[[], Any], rounds: int, round_seconds: float) -> float:
    """Operations per second in the fastest of ``rounds`` rounds, each sized
    to take about ``round_seconds`` after a warm-up."""
    iterations, start = 0, time.perf_counter()
    while time.perf_counter() - start < WARMUP_SECONDS:
        fn()
        iterations += 1
    per_round = max(1, int(iterations * round_seconds / WARMUP_SECONDS))
    loop = range(per_round)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in loop:
            fn()
        best = min(best, time.perf_counter() - start)
    return per_round / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (CI smoke test)")
    args = parser.parse_args()
    rounds, seconds = (QUICK_ROUNDS, QUICK_ROUND_SECONDS) if args.quick else (ROUNDS, ROUND_SECONDS)

    values = _values()
    ours = _build(values, {"Instance": BenchInstance, "Flavor": BenchFlavor, "Fault": BenchFault})
    theirs = _build(values, {"Instance": OvoInstance, "Flavor": OvoFlavor, "Fault": OvoFault})

    our_primitive = ours.obj_to_primitive()
    our_wire = codec.encode(ours)
    their_primitive = theirs.obj_to_primitive()
    their_wire = jsonutils.dumps(their_primitive)

    # Both sides must really round-trip and backport before they are timed.
    assert codec.decode(our_wire, BENCH).obj_to_primitive() == our_primitive
    assert BENCH.obj_from_primitive(our_primitive).obj_to_primitive() == our_primitive
    assert (
        ovo_base.VersionedObject.obj_from_primitive(jsonutils.loads(their_wire)).obj_to_primitive()
        == their_primitive
    )
    our_old = ours.obj_to_primitive(target_version=OLD_VERSION)
    their_old = theirs.obj_to_primitive(target_version=OLD_VERSION)
    for old, data, version in (
        (our_old, "nubes_object.data", "nubes_object.version"),
        (their_old, "versioned_object.data", "versioned_object.version"),
    ):
        assert "shelve_reason" not in old[data] and "notes" not in old[data]["flavor"][data]
        assert old[version] == OLD_VERSION and old[data]["flavor"][version] == OLD_VERSION

    def ovo_decode_primitive() -> Any:
        return ovo_base.VersionedObject.obj_from_primitive(their_primitive)

    def ovo_encode_wire() -> Any:
        return jsonutils.dumps(theirs.obj_to_primitive())

    def ovo_decode_wire() -> Any:
        return ovo_base.VersionedObject.obj_from_primitive(jsonutils.loads(their_wire))

    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("primitive encode", ours.obj_to_primitive, theirs.obj_to_primitive),
        ("primitive decode", lambda: BENCH.obj_from_primitive(our_primitive), ovo_decode_primitive),
        (
            "primitive encode+decode",
            lambda: BENCH.obj_from_primitive(ours.obj_to_primitive()),
            lambda: ovo_base.VersionedObject.obj_from_primitive(theirs.obj_to_primitive()),
        ),
        ("wire encode", lambda: codec.encode(ours), ovo_encode_wire),
        ("wire decode", lambda: codec.decode(our_wire, BENCH), ovo_decode_wire),
        (
            f"backport {BenchInstance.VERSION} -> {OLD_VERSION}",
            lambda: ours.obj_to_primitive(target_version=OLD_VERSION),
            lambda: theirs.obj_to_primitive(target_version=OLD_VERSION),
        ),
        (
            "wire encode+decode",
            lambda: codec.decode(codec.encode(ours), BENCH),
            lambda: ovo_base.VersionedObject.obj_from_primitive(
                jsonutils.loads(jsonutils.dumps(theirs.obj_to_primitive()))
            ),
        ),
    ]

    nested = sum(1 for n in BenchInstance._obj_children if values[n] is not None)
    print(
        f"Instance: {len(BenchInstance.obj_fields)} fields, {nested} nested objects; "
        f"best of {rounds} rounds of {seconds * 1000:g} ms"
    )
    print(f"wire bytes: nubes msgpack {len(our_wire)}, ovo json {len(their_wire)}")
    print(f"{'':28}{'nubes ops/s':>14}{'ovo ops/s':>14}{'ratio':>9}")
    ratio = 0.0
    for label, our_fn, their_fn in cases:
        our_rate = _best_rate(our_fn, rounds, seconds)
        their_rate = _best_rate(their_fn, rounds, seconds)
        ratio = our_rate / their_rate
        print(f"{label:28}{our_rate:14,.0f}{their_rate:14,.0f}{ratio:9.1f}")
    print(
        f"wire encode+decode: nubes {our_rate:,.0f} ops/s, "
        f"ovo {their_rate:,.0f} ops/s, ratio {ratio:.1f}"
    )


if __name__ == "__main__":
    main()
