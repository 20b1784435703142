"""The instance state table: every allowed transition accepted, every other refused."""

from __future__ import annotations

import itertools

import pytest

from nubes import exception
from nubes.objects import states
from nubes.objects.states import TaskState, VMState, check_transition

ALL = [(vm, task) for vm in VMState for task in (None, *TaskState)]


def test_every_state_is_in_the_table():
    assert set(states.TRANSITIONS) == set(ALL)


def test_walk_the_whole_table():
    accepted = refused = 0
    for current in ALL:
        allowed = states.TRANSITIONS[current]
        for target in ALL:
            if target in allowed or target == current:
                check_transition(current, target)
                accepted += 1
            else:
                with pytest.raises(exception.InvalidInstanceTransition):
                    check_transition(current, target, "u-1")
                refused += 1
    assert accepted and refused
    assert accepted + refused == len(ALL) ** 2


def test_every_operation_edge_is_allowed():
    for name, edges in states.OPERATIONS.items():
        for a, b in edges:
            assert states.is_allowed(a, b), (name, a, b)


def test_deleted_is_terminal_and_error_reachable():
    assert states.TRANSITIONS[(VMState.DELETED, None)] == frozenset()
    for current in ALL:
        if current[0] is not VMState.DELETED:
            assert states.is_allowed(current, (VMState.ERROR, None))


def test_the_error_is_typed_and_names_both_states():
    with pytest.raises(exception.InvalidInstanceTransition) as info:
        check_transition((VMState.BUILDING, TaskState.SPAWNING), (VMState.STOPPED, None), "abc")
    assert isinstance(info.value, exception.Conflict)
    assert info.value.code == 409
    assert "abc" in str(info.value)
    assert "building/spawning" in str(info.value) and "stopped/None" in str(info.value)


def test_build_path():
    path = [
        (VMState.BUILDING, TaskState.SCHEDULING),
        (VMState.BUILDING, TaskState.SPAWNING),
        (VMState.ACTIVE, None),
        (VMState.ACTIVE, TaskState.POWERING_OFF),
        (VMState.STOPPED, None),
        (VMState.STOPPED, TaskState.DELETING),
        (VMState.DELETED, None),
    ]
    for a, b in itertools.pairwise(path):
        check_transition(a, b)


@pytest.mark.parametrize(
    ("group", "operations"),
    [
        (states.BUILD_TASK_STATES, ["build"]),
        (states.SOFT_REBOOT_TASK_STATES, ["reboot"]),
        (states.HARD_REBOOT_TASK_STATES, ["reboot"]),
        (states.REBUILD_TASK_STATES, ["rebuild"]),
        (states.SHELVE_TASK_STATES, ["shelve"]),
        (states.MOVE_TASK_STATES - {TaskState.UNSHELVING}, ["resize", "live_migrate", "rebuild"]),
    ],
)
def test_each_task_state_group_is_what_its_operations_walk(group, operations):
    """The groups (one home: nubes.objects.states) name task states their operations'
    edges in the table really pass through, so a group cannot drift from the table."""
    walked = {state[1] for op in operations for edge in states.OPERATIONS[op] for state in edge}
    assert set(group) <= walked
