"""The states an instance can be in, and which may follow which.

The values are Nova's, so that API responses read the same. An instance's
state is the pair ``(vm_state, task_state)``; :data:`TRANSITIONS` maps each
pair to the pairs that may follow it, and :func:`check_transition` refuses
anything else with :class:`~nubes.exception.InvalidInstanceTransition`.
Staying in the same pair is always allowed (a repeated save).

The table is built from the operations below (the edges each one walks) and
three rules that hold for every state:

* any state but ``deleted`` may go to ``(error, None)`` (an operation failed);
* a state with a task may drop the task, keeping its vm_state (an operation
  was abandoned or reverted);
* any state but ``deleted`` may start a delete: ``(vm_state, deleting)``;
  ``(X, deleting)`` then ends in ``(deleted, None)``.

``deleted`` is terminal.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from nubes import exception


class VMState(enum.StrEnum):
    """Where an instance is in its life, as a user sees it: stable states
    that change only when an operation finishes."""

    ACTIVE = "active"
    BUILDING = "building"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    STOPPED = "stopped"
    RESCUED = "rescued"
    RESIZED = "resized"
    SOFT_DELETED = "soft-delete"
    DELETED = "deleted"
    ERROR = "error"
    SHELVED = "shelved"
    SHELVED_OFFLOADED = "shelved_offloaded"


class TaskState(enum.StrEnum):
    """The operation in progress on an instance, if any (None when idle)."""

    SCHEDULING = "scheduling"
    BLOCK_DEVICE_MAPPING = "block_device_mapping"
    NETWORKING = "networking"
    SPAWNING = "spawning"
    IMAGE_SNAPSHOT = "image_snapshot"
    IMAGE_SNAPSHOT_PENDING = "image_snapshot_pending"
    IMAGE_PENDING_UPLOAD = "image_pending_upload"
    IMAGE_UPLOADING = "image_uploading"
    IMAGE_BACKUP = "image_backup"
    UPDATING_PASSWORD = "updating_password"
    RESIZE_PREP = "resize_prep"
    RESIZE_MIGRATING = "resize_migrating"
    RESIZE_MIGRATED = "resize_migrated"
    RESIZE_FINISH = "resize_finish"
    RESIZE_REVERTING = "resize_reverting"
    RESIZE_CONFIRMING = "resize_confirming"
    REBOOTING = "rebooting"
    REBOOT_PENDING = "reboot_pending"
    REBOOT_STARTED = "reboot_started"
    REBOOTING_HARD = "rebooting_hard"
    REBOOT_PENDING_HARD = "reboot_pending_hard"
    REBOOT_STARTED_HARD = "reboot_started_hard"
    PAUSING = "pausing"
    UNPAUSING = "unpausing"
    SUSPENDING = "suspending"
    RESUMING = "resuming"
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    RESCUING = "rescuing"
    UNRESCUING = "unrescuing"
    REBUILDING = "rebuilding"
    REBUILD_BLOCK_DEVICE_MAPPING = "rebuild_block_device_mapping"
    REBUILD_SPAWNING = "rebuild_spawning"
    MIGRATING = "migrating"
    DELETING = "deleting"
    SOFT_DELETING = "soft-deleting"
    RESTORING = "restoring"
    SHELVING = "shelving"
    SHELVING_IMAGE_PENDING_UPLOAD = "shelving_image_pending_upload"
    SHELVING_IMAGE_UPLOADING = "shelving_image_uploading"
    SHELVING_OFFLOADING = "shelving_offloading"
    UNSHELVING = "unshelving"


class PowerState(enum.IntEnum):
    """What the hypervisor last reported about an instance's power; the
    numbers are Nova's (2 and 5 are retired there)."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


class LockedBy(enum.StrEnum):
    """Who locked an instance against changes."""

    OWNER = "owner"
    ADMIN = "admin"


#: An instance's state: ``(vm_state, task_state)``; task None when idle.
InstanceState = tuple[VMState, TaskState | None]

_V = VMState
_T = TaskState

# -- task-state groups: the one home of "which task states belong to which operation" --

#: task_states of an instance a build places, re-places or spawns (None: not begun yet).
BUILD_TASK_STATES: tuple[TaskState | None, ...] = (
    None,
    _T.SCHEDULING,
    _T.BLOCK_DEVICE_MAPPING,
    _T.NETWORKING,
    _T.SPAWNING,
)
SOFT_REBOOT_TASK_STATES: tuple[TaskState, ...] = (
    _T.REBOOTING,
    _T.REBOOT_PENDING,
    _T.REBOOT_STARTED,
)
HARD_REBOOT_TASK_STATES: tuple[TaskState, ...] = (
    _T.REBOOTING_HARD,
    _T.REBOOT_PENDING_HARD,
    _T.REBOOT_STARTED_HARD,
)
#: task_states of an instance being rebuilt or evacuated.
REBUILD_TASK_STATES: tuple[TaskState, ...] = (
    _T.REBUILDING,
    _T.REBUILD_BLOCK_DEVICE_MAPPING,
    _T.REBUILD_SPAWNING,
)
#: task_states of an instance a shelve holds until it is SHELVED (or offloads it).
SHELVE_TASK_STATES: tuple[TaskState, ...] = (
    _T.SHELVING,
    _T.SHELVING_IMAGE_PENDING_UPLOAD,
    _T.SHELVING_IMAGE_UPLOADING,
)
#: task_states of a conductor-driven move (resize, migrations, rebuild, evacuation).
MOVE_TASK_STATES: frozenset[TaskState] = frozenset(
    {
        _T.RESIZE_PREP,
        _T.RESIZE_MIGRATING,
        _T.RESIZE_MIGRATED,
        _T.RESIZE_FINISH,
        _T.RESIZE_REVERTING,
        _T.RESIZE_CONFIRMING,
        _T.MIGRATING,
        *REBUILD_TASK_STATES,
        _T.UNSHELVING,
    }
)


#: vm_states an instance can be rescued from (Nova's rescue check).
RESCUABLE_STATES: tuple[VMState, ...] = (_V.ACTIVE, _V.STOPPED, _V.ERROR)
#: vm_states Nova lets ``trigger_crash_dump`` ask a guest in (no state change).
CRASH_DUMP_STATES: tuple[VMState, ...] = (
    _V.ACTIVE,
    _V.PAUSED,
    _V.RESCUED,
    _V.RESIZED,
    _V.ERROR,
)

#: vm_states a delete may only soft-delete from (with a reclaim interval).
SOFT_DELETABLE_STATES: tuple[VMState, ...] = (
    _V.ACTIVE,
    _V.STOPPED,
    _V.PAUSED,
    _V.SUSPENDED,
    _V.RESCUED,
    _V.ERROR,
)

#: vm_states an instance can be shelved from (Nova's shelve check).
SHELVABLE_STATES: tuple[VMState, ...] = (_V.ACTIVE, _V.STOPPED, _V.PAUSED, _V.SUSPENDED)

#: vm_states an instance can be powered off, rebooted or migrated from.
_RUNNING_LIKE = (_V.ACTIVE, _V.STOPPED)


def _chain(vm_states: Iterable[VMState], *tasks: TaskState | None) -> list[tuple[Any, Any]]:
    """Edges walking ``tasks`` in order, within each of ``vm_states``."""
    edges = []
    for vm in vm_states:
        for a, b in itertools.pairwise(tasks):
            edges.append(((vm, a), (vm, b)))
    return edges


#: Operation name -> the edges it walks (besides the rules in the docstring).
OPERATIONS: dict[str, list[tuple[InstanceState, InstanceState]]] = {
    "build": [
        *_chain(
            [_V.BUILDING],
            _T.SCHEDULING,
            _T.BLOCK_DEVICE_MAPPING,
            _T.NETWORKING,
            _T.SPAWNING,
        ),
        ((_V.BUILDING, _T.SCHEDULING), (_V.BUILDING, _T.SPAWNING)),
        ((_V.BUILDING, _T.SCHEDULING), (_V.BUILDING, _T.NETWORKING)),
        ((_V.BUILDING, None), (_V.BUILDING, _T.SCHEDULING)),
        ((_V.BUILDING, None), (_V.BUILDING, _T.BLOCK_DEVICE_MAPPING)),
        ((_V.BUILDING, None), (_V.BUILDING, _T.NETWORKING)),
        ((_V.BUILDING, None), (_V.BUILDING, _T.SPAWNING)),
        ((_V.BUILDING, _T.SPAWNING), (_V.ACTIVE, None)),
        # A reschedule hands the instance back to the scheduler.
        ((_V.BUILDING, _T.SPAWNING), (_V.BUILDING, _T.SCHEDULING)),
        ((_V.BUILDING, _T.NETWORKING), (_V.BUILDING, _T.SCHEDULING)),
    ],
    "stop": [
        *_chain([_V.ACTIVE, _V.ERROR, _V.RESCUED], None, _T.POWERING_OFF),
        ((_V.ACTIVE, _T.POWERING_OFF), (_V.STOPPED, None)),
        ((_V.ERROR, _T.POWERING_OFF), (_V.STOPPED, None)),
        ((_V.RESCUED, _T.POWERING_OFF), (_V.STOPPED, None)),
    ],
    "start": [
        *_chain([_V.STOPPED], None, _T.POWERING_ON),
        ((_V.STOPPED, _T.POWERING_ON), (_V.ACTIVE, None)),
    ],
    "reboot": [
        *_chain([_V.ACTIVE], None, _T.REBOOTING, _T.REBOOT_PENDING, _T.REBOOT_STARTED),
        ((_V.ACTIVE, _T.REBOOTING), (_V.ACTIVE, _T.REBOOT_STARTED)),
        *_chain(
            [_V.ACTIVE, _V.STOPPED, _V.PAUSED, _V.SUSPENDED, _V.ERROR],
            None,
            _T.REBOOTING_HARD,
            _T.REBOOT_PENDING_HARD,
            _T.REBOOT_STARTED_HARD,
        ),
        *[
            ((vm, _T.REBOOTING_HARD), (vm, _T.REBOOT_STARTED_HARD))
            for vm in (_V.ACTIVE, _V.STOPPED, _V.PAUSED, _V.SUSPENDED, _V.ERROR)
        ],
        # A soft reboot that does not work (or was cut off) becomes a hard one.
        *[
            ((_V.ACTIVE, task), (_V.ACTIVE, _T.REBOOTING_HARD))
            for task in (_T.REBOOTING, _T.REBOOT_PENDING, _T.REBOOT_STARTED)
        ],
        *[
            ((vm, task), (_V.ACTIVE, None))
            for vm in (_V.ACTIVE, _V.STOPPED, _V.PAUSED, _V.SUSPENDED, _V.ERROR)
            for task in (_T.REBOOT_STARTED_HARD, _T.REBOOTING_HARD, _T.REBOOT_PENDING_HARD)
        ],
        ((_V.ACTIVE, _T.REBOOT_STARTED), (_V.ACTIVE, None)),
    ],
    "resize": [
        *_chain(
            _RUNNING_LIKE,
            None,
            _T.RESIZE_PREP,
            _T.RESIZE_MIGRATING,
            _T.RESIZE_MIGRATED,
            _T.RESIZE_FINISH,
        ),
        *[((vm, _T.RESIZE_FINISH), (_V.RESIZED, None)) for vm in _RUNNING_LIKE],
        *_chain([_V.RESIZED], None, _T.RESIZE_CONFIRMING),
        *_chain([_V.RESIZED], None, _T.RESIZE_REVERTING),
        *[
            ((_V.RESIZED, task), (vm, None))
            for task in (_T.RESIZE_CONFIRMING, _T.RESIZE_REVERTING)
            for vm in _RUNNING_LIKE
        ],
    ],
    # A cold migration is a resize to the same flavor: the same edges.
    # Confirm and revert start from (resized, None) and end where the
    # instance was before the move (active, or stopped when it was off).
    "live_migrate": [
        *_chain([_V.ACTIVE, _V.PAUSED], None, _T.MIGRATING),
        ((_V.PAUSED, _T.MIGRATING), (_V.PAUSED, None)),
    ],
    # Rebuild on the same host, or on another one (evacuate): the guest is
    # created again from an image; a stopped instance stays stopped.
    "rebuild": [
        *_chain(
            [_V.ACTIVE, _V.STOPPED, _V.ERROR],
            None,
            _T.REBUILDING,
            _T.REBUILD_BLOCK_DEVICE_MAPPING,
            _T.REBUILD_SPAWNING,
        ),
        *[
            ((vm, _T.REBUILDING), (vm, _T.REBUILD_SPAWNING))
            for vm in (_V.ACTIVE, _V.STOPPED, _V.ERROR)
        ],
        *[
            ((vm, _T.REBUILD_SPAWNING), (end, None))
            for vm in (_V.ACTIVE, _V.STOPPED, _V.ERROR)
            for end in (_V.ACTIVE, _V.STOPPED)
        ],
    ],
    # Pause (the guest's vCPUs stop, its memory stays) and back.
    "pause": [
        *_chain([_V.ACTIVE], None, _T.PAUSING),
        ((_V.ACTIVE, _T.PAUSING), (_V.PAUSED, None)),
    ],
    "unpause": [
        *_chain([_V.PAUSED], None, _T.UNPAUSING),
        ((_V.PAUSED, _T.UNPAUSING), (_V.ACTIVE, None)),
    ],
    # Suspend (the guest's memory saved to disk, nothing runs) and back.
    "suspend": [
        *_chain([_V.ACTIVE], None, _T.SUSPENDING),
        ((_V.ACTIVE, _T.SUSPENDING), (_V.SUSPENDED, None)),
    ],
    "resume": [
        *_chain([_V.SUSPENDED], None, _T.RESUMING),
        ((_V.SUSPENDED, _T.RESUMING), (_V.ACTIVE, None)),
    ],
    # Rescue boots the guest from a rescue image (its own disk attached
    # second); Nova rescues active, stopped and errored instances.
    "rescue": [
        *_chain(RESCUABLE_STATES, None, _T.RESCUING),
        *[((vm, _T.RESCUING), (_V.RESCUED, None)) for vm in RESCUABLE_STATES],
    ],
    "unrescue": [
        *_chain([_V.RESCUED], None, _T.UNRESCUING),
        ((_V.RESCUED, _T.UNRESCUING), (_V.ACTIVE, None)),
    ],
    # changePassword: the task_state is dropped when it is done (a rule
    # of the docstring), the vm_state never changes.
    "set_password": _chain([_V.ACTIVE], None, _T.UPDATING_PASSWORD),
    # Soft delete ([DEFAULT] reclaim_instance_interval): the guest off, the
    # instance kept until restored, force-deleted or reclaimed.
    "soft_delete": [
        *_chain(SOFT_DELETABLE_STATES, None, _T.SOFT_DELETING),
        *[((vm, _T.SOFT_DELETING), (_V.SOFT_DELETED, None)) for vm in SOFT_DELETABLE_STATES],
    ],
    "restore": [
        *_chain([_V.SOFT_DELETED], None, _T.RESTORING),
        ((_V.SOFT_DELETED, _T.RESTORING), (_V.ACTIVE, None)),
    ],
    # Shelve: the guest powered off, its disk snapshotted to the shelved
    # image (uploaded as createImage's is, Nova's shelving_image_* states),
    # then SHELVED, still on its host; then offloaded (SHELVED_OFFLOADED: no
    # guest, no host, no claim), at once with ``[DEFAULT]
    # shelved_offload_time = 0``.
    "shelve": [
        *_chain(
            SHELVABLE_STATES,
            None,
            _T.SHELVING,
            _T.SHELVING_IMAGE_PENDING_UPLOAD,
            _T.SHELVING_IMAGE_UPLOADING,
        ),
        *[
            ((vm, task), (_V.SHELVED, end))
            for vm in SHELVABLE_STATES
            for task in (_T.SHELVING, _T.SHELVING_IMAGE_UPLOADING)
            for end in (None, _T.SHELVING_OFFLOADING)
        ],
        *_chain([_V.SHELVED], None, _T.SHELVING_OFFLOADING),
        ((_V.SHELVED, _T.SHELVING_OFFLOADING), (_V.SHELVED_OFFLOADED, None)),
    ],
    # Unshelve: powered on where it is, or scheduled and spawned anew.
    "unshelve": [
        *_chain([_V.SHELVED, _V.SHELVED_OFFLOADED], None, _T.UNSHELVING),
        ((_V.SHELVED, _T.UNSHELVING), (_V.ACTIVE, None)),
        ((_V.SHELVED_OFFLOADED, _T.UNSHELVING), (_V.ACTIVE, None)),
    ],
    # createImage and createBackup: the guest's disk copied and uploaded; the
    # instance stays as it was (Nova allows active, stopped, paused and
    # suspended servers). A backup starts at image_backup, a snapshot at
    # image_snapshot; both then walk the same upload states.
    "snapshot": [
        *_chain(
            [_V.ACTIVE, _V.STOPPED, _V.PAUSED, _V.SUSPENDED],
            None,
            _T.IMAGE_SNAPSHOT,
            _T.IMAGE_PENDING_UPLOAD,
            _T.IMAGE_UPLOADING,
        ),
        *_chain(
            [_V.ACTIVE, _V.STOPPED, _V.PAUSED, _V.SUSPENDED],
            None,
            _T.IMAGE_BACKUP,
            _T.IMAGE_PENDING_UPLOAD,
        ),
    ],
    # The guest shut itself down (found by a compute host's power sync).
    "power_sync": [((_V.ACTIVE, None), (_V.STOPPED, None))],
    # Another service saw the guest's power change (os-server-external-events
    # power-update, 2.76) while no operation ran.
    "power_update": [
        ((_V.ACTIVE, None), (_V.STOPPED, None)),
        ((_V.STOPPED, None), (_V.ACTIVE, None)),
    ],
}


def _build_table(
    operations: Mapping[str, list[tuple[InstanceState, InstanceState]]],
) -> dict[InstanceState, frozenset[InstanceState]]:
    states: list[InstanceState] = [(vm, task) for vm in VMState for task in (None, *TaskState)]
    table: dict[InstanceState, set[InstanceState]] = {s: set() for s in states}
    for edges in operations.values():
        for a, b in edges:
            table[a].add(b)
    for vm, task in states:
        if vm is VMState.DELETED:
            continue
        allowed = table[(vm, task)]
        allowed.add((VMState.ERROR, None))
        if task is not None:
            allowed.add((vm, None))
        if task is not TaskState.DELETING:
            allowed.add((vm, TaskState.DELETING))
        else:
            allowed.add((VMState.DELETED, None))
    for state, allowed in table.items():
        allowed.discard(state)
    return {s: frozenset(allowed) for s, allowed in table.items()}


#: State -> the states that may follow it (staying put is allowed besides).
TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = _build_table(OPERATIONS)


def as_state(vm_state: str, task_state: str | None) -> InstanceState:
    """The pair as enums (the object fields hold plain strings too)."""
    return VMState(vm_state), None if task_state is None else TaskState(task_state)


def format_state(state: InstanceState) -> str:
    vm, task = state
    return f"{vm.value}/{task.value if task is not None else None}"


def is_allowed(current: InstanceState, target: InstanceState) -> bool:
    return current == target or target in TRANSITIONS.get(current, frozenset())


def check_transition(
    current: InstanceState, target: InstanceState, instance_uuid: str | None = None
) -> None:
    """Refuse a change the table does not allow, with InvalidInstanceTransition."""
    if not is_allowed(current, target):
        raise exception.InvalidInstanceTransition(
            instance_uuid=instance_uuid or "?",
            current=format_state(current),
            target=format_state(target),
        )


# --- migrations -------------------------------------------------------------------------


class MigrationType(enum.StrEnum):
    """What kind of move a migration record describes (Nova's names)."""

    MIGRATION = "migration"  #: cold migration: same flavor, another host
    RESIZE = "resize"  #: new flavor (maybe the same host)
    LIVE_MIGRATION = "live-migration"
    EVACUATION = "evacuation"  #: rebuilt elsewhere because its host is down


class MigrationStatus(enum.StrEnum):
    """A migration record's status; the values are Nova's, as the API shows them."""

    #: live migration and evacuation: recorded by the API, not started yet
    ACCEPTED = "accepted"
    #: cold migration and resize: recorded, destination being chosen;
    #: evacuation: destination chosen, rebuild in progress
    PRE_MIGRATING = "pre-migrating"
    #: cold migration and resize: the source is powering off and copying
    MIGRATING = "migrating"
    #: cold migration and resize: the destination is building the guest
    POST_MIGRATING = "post-migrating"
    #: cold migration and resize: waiting for the user to confirm or revert
    FINISHED = "finished"
    CONFIRMING = "confirming"
    CONFIRMED = "confirmed"
    REVERTING = "reverting"
    REVERTED = "reverted"
    #: live migration: checks and pre-live-migration on the destination
    PREPARING = "preparing"
    #: live migration: memory is being copied
    RUNNING = "running"
    #: live migration: an abort was asked for
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    #: evacuation: the instance runs on the destination; the source host
    #: removes its remains when it comes back (then ``completed``)
    DONE = "done"
    #: live migration and evacuation: it did not happen, rolled back
    FAILED = "failed"
    #: any move: failed and rolled back (or could not be)
    ERROR = "error"


_M = MigrationStatus

#: Statuses after which a migration holds no resources anywhere and no task
#: works on it (``done`` waits only for the source host's cleanup).
MIGRATION_FINAL: frozenset[MigrationStatus] = frozenset(
    {_M.CONFIRMED, _M.REVERTED, _M.CANCELLED, _M.COMPLETED, _M.DONE, _M.FAILED, _M.ERROR}
)

#: Migration type -> status -> the statuses that may follow it. ``error``
#: may follow every status that is not final (the rule below the table).
_MIGRATION_FLOWS: dict[MigrationType, dict[MigrationStatus, set[MigrationStatus]]] = {
    MigrationType.MIGRATION: {
        _M.PRE_MIGRATING: {_M.MIGRATING},
        _M.MIGRATING: {_M.POST_MIGRATING},
        _M.POST_MIGRATING: {_M.FINISHED},
        _M.FINISHED: {_M.CONFIRMING, _M.REVERTING},
        _M.CONFIRMING: {_M.CONFIRMED},
        _M.REVERTING: {_M.REVERTED},
    },
    MigrationType.LIVE_MIGRATION: {
        # The API's abort marks an accepted, preparing or running live
        # migration ``cancelling`` (docs/moves.md); its task then ends it.
        _M.ACCEPTED: {_M.PREPARING, _M.CANCELLING, _M.CANCELLED, _M.FAILED},
        _M.PREPARING: {_M.RUNNING, _M.CANCELLING, _M.CANCELLED, _M.FAILED},
        _M.RUNNING: {_M.COMPLETED, _M.CANCELLING, _M.FAILED},
        _M.CANCELLING: {_M.CANCELLED, _M.COMPLETED, _M.FAILED},
    },
    MigrationType.EVACUATION: {
        _M.ACCEPTED: {_M.PRE_MIGRATING, _M.FAILED},
        _M.PRE_MIGRATING: {_M.DONE, _M.FAILED},
        _M.DONE: {_M.COMPLETED},
    },
}
_MIGRATION_FLOWS[MigrationType.RESIZE] = _MIGRATION_FLOWS[MigrationType.MIGRATION]


def _migration_table() -> dict[MigrationType, dict[MigrationStatus, frozenset[MigrationStatus]]]:
    tables = {}
    for kind, flow in _MIGRATION_FLOWS.items():
        table: dict[MigrationStatus, frozenset[MigrationStatus]] = {}
        for status in MigrationStatus:
            allowed = set(flow.get(status, ()))
            if status not in MIGRATION_FINAL:
                allowed.add(_M.ERROR)
            table[status] = frozenset(allowed)
        tables[kind] = table
    return tables


#: Migration type -> status -> the statuses that may follow it.
MIGRATION_TRANSITIONS = _migration_table()

#: The status a new migration of each type is recorded with.
MIGRATION_FIRST_STATUS: dict[MigrationType, MigrationStatus] = {
    MigrationType.MIGRATION: _M.PRE_MIGRATING,
    MigrationType.RESIZE: _M.PRE_MIGRATING,
    MigrationType.LIVE_MIGRATION: _M.ACCEPTED,
    MigrationType.EVACUATION: _M.ACCEPTED,
}


def check_migration_status(
    migration_type: str, current: str, target: str, migration_id: Any = None
) -> None:
    """Refuse a status change the migration type's table does not allow
    (InvalidMigrationTransition); staying put is allowed (a repeated step)."""
    if current == target:
        return
    table = MIGRATION_TRANSITIONS.get(MigrationType(migration_type), {})
    if MigrationStatus(target) not in table.get(MigrationStatus(current), frozenset()):
        raise exception.InvalidMigrationTransition(
            migration_id=migration_id if migration_id is not None else "?",
            migration_type=migration_type,
            current=current,
            target=target,
        )
