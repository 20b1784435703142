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
    "live_migrate": _chain([_V.ACTIVE, _V.PAUSED], None, _T.MIGRATING),
    # The guest shut itself down (found by a compute host's power sync).
    "power_sync": [((_V.ACTIVE, None), (_V.STOPPED, None))],
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
