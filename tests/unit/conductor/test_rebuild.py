"""The rebuild and evacuate tasks against the state tables: every instance state and
migration status they write is one the tables allow (the runs themselves are in
tests/functional/test_evacuate_rebuild.py)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from nubes import exception
from nubes.conductor.tasks import payloads, rebuild
from nubes.conductor.tasks.payloads import MovePayload
from nubes.conductor.tasks.states import END, STEPS, Step, TaskKind
from nubes.objects.states import (
    MIGRATION_FINAL,
    MigrationStatus,
    TaskState,
    VMState,
    check_migration_status,
    is_allowed,
)

_V, _T, _M = VMState, TaskState, MigrationStatus

#: vm_states the API lets a rebuild or an evacuation start from.
STARTS = (_V.ACTIVE, _V.STOPPED, _V.ERROR)


@pytest.mark.parametrize("vm", STARTS)
def test_the_instance_states_written_are_allowed(vm: VMState) -> None:
    # The API's edge, then the conductor's at the step that asks the host.
    for a, b in itertools.pairwise([(vm, None), (vm, _T.REBUILDING), (vm, _T.REBUILD_SPAWNING)]):
        assert is_allowed(a, b), (a, b)
    spawning = (vm, _T.REBUILD_SPAWNING)
    for on in (True, False):
        end = rebuild.rebuilt(MovePayload(power_on=on))
        assert (end["vm_state"], end["task_state"]) == ((_V.ACTIVE if on else _V.STOPPED), None)
        assert is_allowed(spawning, (end["vm_state"], None))
    assert is_allowed(spawning, (_V.ERROR, None))  # a failed rebuild
    for task in rebuild.REBUILD_TASK_STATES:
        assert is_allowed((vm, task), (vm, None))  # an evacuation rolled back


def test_a_task_never_starts_on_an_instance_the_api_did_not_hand_over() -> None:
    row = {"uuid": "u", "vm_state": "active", "task_state": None}
    with pytest.raises(exception.InvalidInstanceTransition):
        rebuild._spawning(row)
    with pytest.raises(exception.InvalidInstanceTransition):
        rebuild._spawning({**row, "task_state": "migrating"})
    rebuild._spawning({**row, "task_state": "rebuilding"})
    rebuild._spawning({**row, "task_state": "rebuild_spawning"})  # a repeat


def test_the_evacuation_walks_the_migration_table() -> None:
    for path in (
        [_M.ACCEPTED, _M.PRE_MIGRATING, _M.DONE, _M.COMPLETED],  # done, then cleaned up
        [_M.ACCEPTED, _M.FAILED],  # no host
        [_M.ACCEPTED, _M.PRE_MIGRATING, _M.FAILED],  # rolled back
    ):
        for a, b in itertools.pairwise(path):
            check_migration_status("evacuation", a, b)
    # Once done, only the source's clean-up moves it on; failed is final.
    for target in set(_M) - {_M.DONE, _M.COMPLETED}:
        with pytest.raises(exception.InvalidMigrationTransition):
            check_migration_status("evacuation", _M.DONE, target)
    assert _M.FAILED in MIGRATION_FINAL and _M.COMPLETED in MIGRATION_FINAL


def test_the_step_tables_of_both_kinds() -> None:
    assert STEPS[TaskKind.REBUILD] == {Step.REBUILD: frozenset({Step.REBUILD, END})}
    evacuate = STEPS[TaskKind.EVACUATE]
    assert evacuate[Step.SCHEDULE] == {Step.SCHEDULE, Step.REBUILD, END}
    assert evacuate[Step.REBUILD] == {Step.REBUILD, Step.ROLLBACK_DEST, END}
    assert evacuate[Step.ROLLBACK_DEST] == {Step.ROLLBACK_DEST, END}


def test_payload_defaults() -> None:
    def typed(raw: dict[str, Any]) -> MovePayload:
        return payloads.decode(raw, MovePayload)

    assert typed({"image": "img-1"}).image_meta == {"id": "img-1"}
    assert typed({"image": {"id": "i", "properties": {"a": "b"}}}).image_meta == {
        "id": "i",
        "properties": {"a": "b"},
    }
    assert typed({}).powered is True and typed({"power_on": False}).powered is False
