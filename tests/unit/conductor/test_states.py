"""The task step and status tables: walked, and enforced."""

from __future__ import annotations

from collections import deque

import pytest

from nubes import exception
from nubes.conductor.tasks import engine as engine_mod
from nubes.conductor.tasks.states import (
    END,
    FIRST_STEP,
    STATUSES,
    STEPS,
    Step,
    TaskKind,
    check_status,
    check_step,
)
from nubes.db.api.tasks import FINAL_STATUSES, TaskStatus


def _reachable(graph: dict[str, frozenset[str]], start: str) -> set[str]:
    seen, todo = {start}, deque([start])
    while todo:
        for nxt in graph.get(todo.popleft(), frozenset()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("kind", list(TaskKind))
def test_every_step_is_reachable_and_every_step_can_end(kind: TaskKind) -> None:
    table = STEPS[kind]
    assert set(_reachable(table, FIRST_STEP[kind])) == {*table, END}
    for step in table:
        assert END in _reachable(table, step), f"{kind}: {step} cannot end"


@pytest.mark.parametrize("kind", list(TaskKind))
def test_walk_every_edge_and_refuse_every_other(kind: TaskKind) -> None:
    table = STEPS[kind]
    check_step(kind, None, FIRST_STEP[kind])
    for current in table:
        for target in [*Step, END]:
            if target in table[current]:
                check_step(kind, current, target)
            else:
                with pytest.raises(exception.Invalid):
                    check_step(kind, current, target)
    for other in set(Step) - {FIRST_STEP[kind]}:
        with pytest.raises(exception.Invalid):
            check_step(kind, None, other)


def test_each_engine_kind_implements_exactly_its_steps() -> None:
    assert set(engine_mod.KINDS) == set(TaskKind)
    assert all(cls.kind == kind for kind, cls in engine_mod.KINDS.items())


def test_status_table() -> None:
    assert set(STATUSES) == set(TaskStatus)
    for final in FINAL_STATUSES:
        assert STATUSES[final] == frozenset()
        for target in TaskStatus:
            with pytest.raises(exception.Invalid):
                check_status(final, target)
    # Every status is reachable from pending; every active one can end.
    graph = {s.value: frozenset(t.value for t in ts) for s, ts in STATUSES.items()}
    assert _reachable(graph, TaskStatus.PENDING) == {s.value for s in TaskStatus}
    check_status(TaskStatus.RUNNING, TaskStatus.RUNNING)  # a takeover
    with pytest.raises(exception.Invalid):
        check_status(TaskStatus.PENDING, TaskStatus.SUCCEEDED)
