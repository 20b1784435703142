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
    #: cold migration and resize (the payload's flavor says which), up to
    #: VERIFY_RESIZE; confirm and revert are tasks of their own
    MIGRATE = "migrate"
    CONFIRM_RESIZE = "confirm_resize"
    REVERT_RESIZE = "revert_resize"
    LIVE_MIGRATE = "live_migrate"
    EVACUATE = "evacuate"
    REBUILD = "rebuild"
    #: tell a host to remove the guest of a try the conductor gave up on
    #: (remove_guest.py); it has no instance of its own: the payload names it
    REMOVE_GUEST = "remove_guest"
    # -- the lifecycle actions of actions.py: one host step each, like power --
    PAUSE = "pause"
    UNPAUSE = "unpause"
    SUSPEND = "suspend"
    RESUME = "resume"
    RESCUE = "rescue"
    UNRESCUE = "unrescue"
    TRIGGER_CRASH_DUMP = "trigger_crash_dump"
    SET_PASSWORD = "set_password"
    #: a delete with ``[DEFAULT] reclaim_instance_interval``: the guest off, kept
    SOFT_DELETE = "soft_delete"
    RESTORE = "restore"
    #: shelve (shelve.py): the host powers the guest off; then, with
    #: ``[DEFAULT] shelved_offload_time = 0``, the offload below
    SHELVE = "shelve"
    #: the host removes the shelved guest; its claim and host are given back
    SHELVE_OFFLOAD = "shelve_offload"
    #: power on where it is (shelved), or schedule and spawn (offloaded)
    UNSHELVE = "unshelve"
    #: createImage and createBackup (snapshot.py): the host uploads the
    #: guest's disk to an image the API recorded
    SNAPSHOT = "snapshot"


#: The kinds whose one step is ``power``: ask the instance's host, and wait.
ONE_HOST_STEP_KINDS: tuple[TaskKind, ...] = (
    TaskKind.STOP,
    TaskKind.START,
    TaskKind.REBOOT,
    TaskKind.PAUSE,
    TaskKind.UNPAUSE,
    TaskKind.SUSPEND,
    TaskKind.RESUME,
    TaskKind.RESCUE,
    TaskKind.UNRESCUE,
    TaskKind.TRIGGER_CRASH_DUMP,
    TaskKind.SET_PASSWORD,
    TaskKind.SOFT_DELETE,
    TaskKind.RESTORE,
)


class Step(enum.StrEnum):
    #: build: ask the scheduler for a host and alternates (claims the first).
    SCHEDULE = "schedule"
    #: build: send the spawn to the chosen host and wait for its report.
    SPAWN = "spawn"
    #: build: the server's ports made (IPAM) before the spawn is sent.
    NETWORKING = "networking"
    #: delete: ask the instance's host to destroy it, and wait.
    TERMINATE = "terminate"
    #: delete: give the host's resources back and remove the instance record.
    RELEASE = "release"
    #: stop, start, reboot and the other :data:`ONE_HOST_STEP_KINDS`: ask
    #: the instance's host, and wait.
    POWER = "power"
    # -- moves (docs/moves.md) --
    #: migrate: source powers off and copies the disks
    MIGRATE_SOURCE = "migrate_source"
    #: migrate: destination builds the guest; the instance then is on it
    FINISH_DEST = "finish_dest"
    #: migrate, live_migrate, evacuate: undo on the destination
    ROLLBACK_DEST = "rollback_dest"
    #: migrate: bring the guest back on the source
    ROLLBACK_SOURCE = "rollback_source"
    #: confirm_resize: the source removes what it kept
    CONFIRM_SOURCE = "confirm_source"
    #: revert_resize: the destination removes the new guest
    REVERT_DEST = "revert_dest"
    #: revert_resize: the source brings the original guest back
    REVERT_SOURCE = "revert_source"
    #: live_migrate: destination check
    CHECK_DEST = "check_dest"
    #: live_migrate: source check
    CHECK_SOURCE = "check_source"
    #: live_migrate: destination prepares (networks, disks)
    PRE_LIVE = "pre_live"
    #: live_migrate: the source copies memory to the destination
    LIVE_MIGRATE = "live_migrate"
    #: live_migrate: the destination adopts the guest
    POST_DEST = "post_dest"
    #: live_migrate: the source removes what is left
    POST_SOURCE = "post_source"
    #: rebuild, evacuate: the guest is created again from an image
    REBUILD = "rebuild"
    #: remove_guest: the host removes the guest, and confirms
    REMOVE_GUEST = "remove_guest"
    #: shelve: the host powers the guest off (instance SHELVED)
    SHELVE = "shelve"
    #: shelve, shelve_offload: the host removes the shelved guest
    OFFLOAD = "offload"
    #: unshelve: the host powers the guest on, or spawns it anew
    UNSHELVE = "unshelve"
    #: snapshot: the host copies the guest's disk and uploads it, and waits
    SNAPSHOT = "snapshot"
    #: snapshot (a backup): the oldest backups beyond the rotation deleted
    ROTATE = "rotate"


#: Not a step: the task ended (succeeded, failed or rolled back).
END = "end"

#: Kind -> step -> the steps that may follow it (END: the task ends there).
#: A step that waits for a compute host may follow itself: it first commits
#: what it is about to ask which host (its try), then asks; a build's spawn
#: does so again for each alternate host (a reschedule).
STEPS: dict[TaskKind, dict[str, frozenset[str]]] = {
    TaskKind.BUILD: {
        # Straight to spawn when the server asked for no NICs.
        Step.SCHEDULE: frozenset({Step.NETWORKING, Step.SPAWN, END}),
        Step.NETWORKING: frozenset({Step.SPAWN, END}),
        Step.SPAWN: frozenset({Step.SPAWN, END}),
    },
    TaskKind.DELETE: {
        Step.TERMINATE: frozenset({Step.TERMINATE, Step.CONFIRM_SOURCE, Step.RELEASE, END}),
        Step.CONFIRM_SOURCE: frozenset({Step.CONFIRM_SOURCE, Step.RELEASE}),
        Step.RELEASE: frozenset({END}),
    },
    **{kind: {Step.POWER: frozenset({Step.POWER, END})} for kind in ONE_HOST_STEP_KINDS},
    TaskKind.MIGRATE: {
        # schedule -> schedule: the source claim handed to the migration,
        # committed before the scheduler is asked (migrate.py)
        Step.SCHEDULE: frozenset({Step.SCHEDULE, Step.MIGRATE_SOURCE, END}),
        Step.MIGRATE_SOURCE: frozenset(
            {Step.MIGRATE_SOURCE, Step.FINISH_DEST, Step.ROLLBACK_SOURCE}
        ),
        Step.FINISH_DEST: frozenset({Step.FINISH_DEST, Step.ROLLBACK_DEST, END}),
        # rollback_dest -> end: the rollback's own deadline passed as well
        Step.ROLLBACK_DEST: frozenset({Step.ROLLBACK_DEST, Step.ROLLBACK_SOURCE, END}),
        Step.ROLLBACK_SOURCE: frozenset({Step.ROLLBACK_SOURCE, END}),
    },
    TaskKind.CONFIRM_RESIZE: {Step.CONFIRM_SOURCE: frozenset({Step.CONFIRM_SOURCE, END})},
    TaskKind.REVERT_RESIZE: {
        Step.REVERT_DEST: frozenset({Step.REVERT_DEST, Step.REVERT_SOURCE, END}),
        Step.REVERT_SOURCE: frozenset({Step.REVERT_SOURCE, END}),
    },
    TaskKind.LIVE_MIGRATE: {
        # schedule -> schedule: the source claim handed to the migration,
        # committed before the scheduler is asked (live_migrate.py)
        Step.SCHEDULE: frozenset({Step.SCHEDULE, Step.CHECK_DEST, END}),
        Step.CHECK_DEST: frozenset({Step.CHECK_DEST, Step.CHECK_SOURCE, Step.ROLLBACK_DEST}),
        Step.CHECK_SOURCE: frozenset({Step.CHECK_SOURCE, Step.PRE_LIVE, Step.ROLLBACK_DEST}),
        Step.PRE_LIVE: frozenset({Step.PRE_LIVE, Step.LIVE_MIGRATE, Step.ROLLBACK_DEST}),
        Step.LIVE_MIGRATE: frozenset({Step.LIVE_MIGRATE, Step.POST_DEST, Step.ROLLBACK_DEST}),
        Step.POST_DEST: frozenset({Step.POST_DEST, Step.POST_SOURCE}),
        Step.POST_SOURCE: frozenset({Step.POST_SOURCE, END}),
        Step.ROLLBACK_DEST: frozenset({Step.ROLLBACK_DEST, END}),
    },
    TaskKind.EVACUATE: {
        # schedule follows itself once: the source claim handed to the
        # migration is committed before the scheduler is asked.
        Step.SCHEDULE: frozenset({Step.SCHEDULE, Step.REBUILD, END}),
        Step.REBUILD: frozenset({Step.REBUILD, Step.ROLLBACK_DEST, END}),
        Step.ROLLBACK_DEST: frozenset({Step.ROLLBACK_DEST, END}),
    },
    TaskKind.REBUILD: {Step.REBUILD: frozenset({Step.REBUILD, END})},
    TaskKind.REMOVE_GUEST: {Step.REMOVE_GUEST: frozenset({Step.REMOVE_GUEST, END})},
    TaskKind.SHELVE: {
        Step.SHELVE: frozenset({Step.SHELVE, Step.OFFLOAD, END}),
        Step.OFFLOAD: frozenset({Step.OFFLOAD, Step.RELEASE, END}),
        Step.RELEASE: frozenset({END}),
    },
    TaskKind.SHELVE_OFFLOAD: {
        Step.OFFLOAD: frozenset({Step.OFFLOAD, Step.RELEASE, END}),
        Step.RELEASE: frozenset({END}),
    },
    TaskKind.UNSHELVE: {
        Step.SCHEDULE: frozenset({Step.UNSHELVE, END}),
        Step.UNSHELVE: frozenset({Step.UNSHELVE, END}),
    },
    TaskKind.SNAPSHOT: {
        Step.SNAPSHOT: frozenset({Step.SNAPSHOT, Step.ROTATE, END}),
        Step.ROTATE: frozenset({END}),
    },
}

#: The step each kind of task is created at.
FIRST_STEP: dict[TaskKind, Step] = {
    TaskKind.BUILD: Step.SCHEDULE,
    TaskKind.DELETE: Step.TERMINATE,
    **{kind: Step.POWER for kind in ONE_HOST_STEP_KINDS},
    TaskKind.MIGRATE: Step.SCHEDULE,
    TaskKind.CONFIRM_RESIZE: Step.CONFIRM_SOURCE,
    TaskKind.REVERT_RESIZE: Step.REVERT_DEST,
    TaskKind.LIVE_MIGRATE: Step.SCHEDULE,
    TaskKind.EVACUATE: Step.SCHEDULE,
    TaskKind.REBUILD: Step.REBUILD,
    TaskKind.REMOVE_GUEST: Step.REMOVE_GUEST,
    TaskKind.SHELVE: Step.SHELVE,
    TaskKind.SHELVE_OFFLOAD: Step.OFFLOAD,
    TaskKind.UNSHELVE: Step.SCHEDULE,
    TaskKind.SNAPSHOT: Step.SNAPSHOT,
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
