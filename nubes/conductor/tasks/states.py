"""The task state machines: which step may follow which, per kind, and the task statuses.

A task's ``step`` column holds one of :class:`Step`; :data:`STEPS` says, per
:class:`TaskKind`, which step may follow each, with :data:`END` standing for
"the task ended" (its status became final). The engine checks every commit
against the table (:func:`check_step`), so a step that tries to jump
somewhere its kind does not allow fails loudly instead of corrupting the
row. ``docs/tasks.md`` describes the same tables in words.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from nubes import exception
from nubes.db.api.tasks import TaskStatus


class TaskKind(enum.StrEnum):
    BUILD = "build"
    DELETE = "delete"
    STOP = "stop"
    START = "start"
    REBOOT = "reboot"


class Step(enum.StrEnum):
    #: build: ask the scheduler for a host and alternates (claims the first).
    SCHEDULE = "schedule"
    #: build: send the spawn to the chosen host and wait for its report.
    SPAWN = "spawn"
    #: delete: ask the instance's host to destroy it, and wait.
    TERMINATE = "terminate"
    #: delete: give the host's resources back and remove the instance record.
    RELEASE = "release"
    #: stop, start, reboot: ask the instance's host, and wait.
    POWER = "power"


#: Not a step: the task ended (succeeded, failed or rolled back).
END = "end"

#: Kind -> step -> the steps that may follow it (END: the task ends there).
#: A step that waits for a compute host may follow itself: it first commits
#: what it is about to ask which host (its try), then asks; a build's spawn
#: does so again for each alternate host (a reschedule).
STEPS: dict[TaskKind, dict[str, frozenset[str]]] = {
    TaskKind.BUILD: {
        Step.SCHEDULE: frozenset({Step.SPAWN, END}),
        Step.SPAWN: frozenset({Step.SPAWN, END}),
    },
    TaskKind.DELETE: {
        Step.TERMINATE: frozenset({Step.TERMINATE, Step.RELEASE, END}),
        Step.RELEASE: frozenset({END}),
    },
    TaskKind.STOP: {Step.POWER: frozenset({Step.POWER, END})},
    TaskKind.START: {Step.POWER: frozenset({Step.POWER, END})},
    TaskKind.REBOOT: {Step.POWER: frozenset({Step.POWER, END})},
}

#: The step each kind of task is created at.
FIRST_STEP: dict[TaskKind, Step] = {
    TaskKind.BUILD: Step.SCHEDULE,
    TaskKind.DELETE: Step.TERMINATE,
    TaskKind.STOP: Step.POWER,
    TaskKind.START: Step.POWER,
    TaskKind.REBOOT: Step.POWER,
}

#: Task status -> the statuses that may follow it. A running task is claimed
#: again (running -> running) when its conductor's lease runs out.
STATUSES: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED}),
    TaskStatus.RUNNING: frozenset(
        {
            TaskStatus.RUNNING,
            TaskStatus.SUCCEEDED,
            TaskStatus.FAILED,
            TaskStatus.ROLLED_BACK,
            TaskStatus.CANCELLED,
        }
    ),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.ROLLED_BACK: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


def check_step(kind: str, current: str | None, target: str) -> None:
    """Refuse a step change the kind's table does not allow (Invalid)."""
    table: Mapping[str, frozenset[str]] = STEPS.get(TaskKind(kind), {})
    if current is None:
        allowed: frozenset[str] = frozenset({FIRST_STEP[TaskKind(kind)]})
    else:
        allowed = table.get(current, frozenset())
    if target not in allowed:
        raise exception.Invalid(reason=f"a {kind} task cannot go from step {current} to {target}")


def check_status(current: TaskStatus, target: TaskStatus) -> None:
    if target not in STATUSES[current]:
        raise exception.Invalid(reason=f"a task cannot go from {current} to {target}")
