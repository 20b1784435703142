"""nubes's own objects: Flavor, InstanceFault, Instance and the state enums."""

from __future__ import annotations

import datetime
import enum
import uuid

import pytest

from nubes import exception
from nubes.objects import codec
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.instance_fault import InstanceFault
from nubes.objects.registry import REGISTRY
from nubes.objects.states import LockedBy, PowerState, TaskState, VMState

NOW = datetime.datetime(2024, 6, 1, 8, 0, tzinfo=datetime.UTC)


def flavor(**overrides: object) -> Flavor:
    values: dict[str, object] = {
        "id": 1,
        "flavorid": "m1.small",
        "name": "m1.small",
        "memory_mb": 2048,
        "vcpus": 1,
        "root_gb": 20,
    }
    values.update(overrides)
    return Flavor(**values)


def test_flavor_defaults() -> None:
    small = flavor()
    assert (small.ephemeral_gb, small.swap, small.rxtx_factor) == (0, 0, 1.0)
    assert small.is_public and not small.disabled
    assert small.extra_specs == {} and small.description is None


def test_instance_defaults_and_states() -> None:
    instance = Instance(id=1, uuid=uuid.uuid4(), flavor=flavor())
    assert instance.vm_state == VMState.BUILDING
    assert instance.task_state is None
    assert instance.power_state == PowerState.NOSTATE
    assert instance.metadata == {} and instance.tags == []
    instance.task_state = TaskState.SPAWNING
    instance.locked_by = LockedBy.ADMIN
    assert instance.task_state == "spawning" and type(instance.task_state) is str
    with pytest.raises(exception.ObjectFieldError, match=r"Instance.vm_state"):
        instance.vm_state = "flying"
    with pytest.raises(exception.ObjectFieldError, match=r"Instance.flavor"):
        instance.flavor = InstanceFault(id=1, instance_uuid=uuid.uuid4(), code=500)


def test_instance_round_trip_with_nested_objects() -> None:
    instance_uuid = str(uuid.uuid4())
    instance = Instance(
        id=1,
        uuid=instance_uuid,
        vm_state=VMState.ACTIVE,
        task_state=TaskState.RESIZE_MIGRATING,
        power_state=PowerState.RUNNING,
        launched_at=NOW,
        metadata={"k": "v"},
        flavor=flavor(),
        new_flavor=flavor(id=2, flavorid="m1.large", memory_mb=8192),
        old_flavor=None,
        fault=InstanceFault(id=3, instance_uuid=instance_uuid, code=500, created_at=NOW),
    )
    instance.obj_reset_changes(recursive=True)
    instance.new_flavor.extra_specs["hw:cpu_policy"] = "dedicated"
    for back in (
        codec.decode(codec.encode(instance)),
        codec.json_decode(codec.json_encode(instance)),
    ):
        assert type(back) is Instance
        assert back.obj_to_primitive() == instance.obj_to_primitive()
        assert back.obj_what_changed() == {"new_flavor"}
        assert back.old_flavor is None


def test_tree_versions() -> None:
    assert Instance.obj_tree_versions() == {
        "Instance": Instance.VERSION,
        "Flavor": Flavor.VERSION,
        "InstanceFault": InstanceFault.VERSION,
    }


def test_all_nubes_objects_are_registered() -> None:
    assert {"Flavor", "Instance", "InstanceFault"} <= set(REGISTRY)


@pytest.mark.parametrize("states", [VMState, TaskState, LockedBy])
def test_state_values_are_distinct_strings(states: type[enum.Enum]) -> None:
    values = [member.value for member in states]
    assert len(values) == len(set(values))
    assert all(isinstance(value, str) for value in values)


def test_power_states_keep_nova_numbers() -> None:
    assert [int(state) for state in PowerState] == [0, 1, 3, 4, 6, 7]
