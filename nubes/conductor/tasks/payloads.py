"""Typed, versioned task payloads: what a task carries from one step to the next.

A task row's ``payload`` column holds JSON. The parts every kind shares are
typed here as msgspec structs, and so is each kind's own part where it has
been typed (:class:`BuildPayload`); code reads them through these structs,
never through string keys:

- :class:`Awaited`: the compute step a task waits for (``await``): the step,
  the try sent as ``attempt``, the host (and node) asked, and until when.
  Authorisation of a host's report (``Authorizer.authorize_step_report``)
  compares the report's :class:`StepKey` with it.
- :class:`Outcome`: what the host reported (``outcome``), or the failure
  the conductor concluded (a timeout, a host found down).
- :class:`StepKey`: task id, compute step and try, which name one report.
- :class:`Selection`: one host the scheduler chose (a build's and its
  alternates).

**Versions.** A payload written by this release carries ``"v":
PAYLOAD_VERSION``. Release N (version 1) wrote no ``v`` and the same keys;
:func:`decode` reads both, filling what version 1 could leave out (an
outcome without ``timeout`` or ``details``), so a conductor of this release
adopts and carries on a task that an older conductor started. The JSON
keeps the names and shapes release N reads (``await``, ``try``, ``node``
present even when null), and keys a struct does not know are kept as they
are, so a task written here can still be carried on by a conductor of
release N during a rolling upgrade. Bump :data:`PAYLOAD_VERSION` when a
shape changes, and teach :func:`_upgrade` the older one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from nubes import exception
from nubes.conductor.tasks.states import TaskKind
from nubes.injected_files import InjectedFiles
from nubes.step_key import StepKey

#: The payload version this release writes (1: release N's untyped dicts, no ``v``).
PAYLOAD_VERSION = 2
#: The key of the version in the stored JSON.
VERSION_KEY = "v"


P = TypeVar("P", bound="TaskPayload")

#: Each task kind's payload struct (filled by :func:`payload_of`).
PAYLOADS: dict[TaskKind, type[TaskPayload]] = {}


def payload_of(*kinds: TaskKind) -> Callable[[type[P]], type[P]]:
    """Register the decorated struct as the payload of ``kinds``."""

    def register(cls: type[P]) -> type[P]:
        for kind in kinds:
            if kind in PAYLOADS:
                raise TypeError(f"{kind} has a payload already: {PAYLOADS[kind].__name__}")
            PAYLOADS[kind] = cls
        return cls

    return register


class Awaited(msgspec.Struct, frozen=True, kw_only=True):
    """The compute step a task waits for, from which host, until when (epoch seconds)."""

    step: str
    attempt: int
    host: str
    node: str | None = None
    until: float = 0.0

    def key(self, task_id: int) -> StepKey:
        return StepKey(task_id=task_id, step=self.step, attempt=self.attempt)

    def failure(self, error: str, *, timeout: bool = False) -> Outcome:
        """The failure outcome of this step that the conductor concludes itself."""
        return Outcome(
            step=self.step,
            attempt=self.attempt,
            host=self.host,
            ok=False,
            error=error,
            timeout=timeout,
        )


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """A compute step's result: reported by its host, or concluded by the conductor."""

    step: str
    attempt: int
    host: str | None
    ok: bool
    error: str | None = None
    #: The host did not answer (in time, or it is down): it may still run the step.
    timeout: bool = False
    #: What the host returned (a step's result values).
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The guest's personality files the host read back (a live migration's
    #: source check, conductor 1.8); gone with the outcome at the next step.
    injected_files: InjectedFiles | None = None

    def answers(self, awaited: Awaited) -> bool:
        return self.step == awaited.step and self.attempt == awaited.attempt

    @property
    def failed_text(self) -> str:
        """``host: error``, as failure lists and faults name a failed try."""
        return f"{self.host}: {self.error}"


class Selection(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One host the scheduler chose, as a build keeps it (its claim's resources).

    Fields the scheduler did not set are left out, as release N stored them
    (its ``Selection(**kept)`` takes only set fields).
    """

    host: str
    nodename: str
    instance_uuid: str | None = None
    compute_node_uuid: str | None = None
    vcpus: int | None = None
    memory_mb: int | None = None
    disk_gb: int | None = None
    policy: str | None = None


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """A host that a build tried, and why it failed there."""

    host: str | None
    error: str | None


class SchedulingRequest(msgspec.Struct, kw_only=True):
    """What the scheduler is asked besides the instance: a build's, kept for its moves."""

    image: dict[str, Any] = msgspec.field(default_factory=dict)
    hints: dict[str, Any] = msgspec.field(default_factory=dict)
    group: str | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None) -> SchedulingRequest:
        try:
            return msgspec.convert(dict(raw or {}), cls, strict=False)
        except msgspec.ValidationError as exc:
            raise exception.Invalid(reason=f"not a scheduling request: {exc}") from exc


class TaskPayload(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What every kind's payload has: its version, the awaited step and its outcome.

    Fields at their defaults are left out of the stored JSON, as release N
    left out what it had not set (it reads them with ``.get``).
    """

    v: int = PAYLOAD_VERSION
    awaiting: Awaited | None = msgspec.field(default=None, name="await")
    outcome: Outcome | None = None
    #: Where the task takes its instance (a build's host, a move's destination):
    #: the only host and node a compute host may set the instance to (authz.py).
    dest_host: str | None = None
    dest_node: str | None = None

    def reported(self) -> Outcome | None:
        """The outcome recorded for what the payload awaits, if it came."""
        if self.awaiting is None or self.outcome is None:
            return None
        return self.outcome if self.outcome.answers(self.awaiting) else None


@payload_of(TaskKind.BUILD)
class BuildPayload(TaskPayload, kw_only=True):
    """A build: what the API asked, the hosts chosen, and the try under way."""

    image: dict[str, Any] = msgspec.field(default_factory=dict)
    hints: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The server's name, key name and user data.
    request: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The personality files (API up to 2.56) every try's host writes on the
    #: guest's config drive. Kept for the task's life only: a reschedule sends
    #: them again; the instance never records them (as Nova).
    injected_files: InjectedFiles | None = None
    group: str | None = None
    #: Compute API 2.74: the host and node an admin asked for. The scheduler
    #: still checks them; this build's only (its later moves choose afresh).
    requested_host: str | None = None
    requested_node: str | None = None
    #: Whether the server asked for NICs. A build without any skips the
    #: networking step: no ports to make, none to bind. A payload written
    #: before this field reads as True (the step runs and finds nothing).
    networked: bool = True
    selections: list[Selection] = msgspec.field(default_factory=list)
    #: 1-based index into ``selections`` of the host tried now.
    tries: int = msgspec.field(default=0, name="try")
    failures: list[Failure] = msgspec.field(default_factory=list)
    #: Whether this try's placement wrote what the host otherwise saves
    #: itself (task_state spawning, ``launched_on``, its event's start):
    #: sent to it as build_and_run_instance's ``placed`` (compute 1.11).
    #: Decided once per try, so a repeated send says what that commit did.
    placed: bool = False

    @property
    def scheduling(self) -> SchedulingRequest:
        return SchedulingRequest(image=self.image, hints=self.hints, group=self.group)

    @property
    def selection(self) -> Selection:
        """The host of the try under way."""
        return self.selections[self.tries - 1]


@payload_of(TaskKind.STOP, TaskKind.START, TaskKind.REBOOT)
class PowerPayload(TaskPayload, kw_only=True):
    """stop, start, reboot: the reboot's type."""

    reboot_type: str = "SOFT"


@payload_of(
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
class ActionPayload(TaskPayload, kw_only=True):
    """The lifecycle actions of ``actions.py``: what rescue and changePassword carry.

    The password is the guest's new one (rescue: the rescue boot's); it is
    kept only while the task runs (the step clears it from the row when it
    sends it), since the host needs it once.
    """

    admin_password: str | None = None
    #: rescue: the image to boot from (the instance's own when none was named)
    rescue_image: dict[str, Any] = msgspec.field(default_factory=dict)


@payload_of(TaskKind.SHELVE, TaskKind.SHELVE_OFFLOAD, TaskKind.UNSHELVE)
class ShelvePayload(TaskPayload, kw_only=True):
    """shelve: whether the offload follows at once, and the queued image the
    API recorded for the guest's disk (``<name>-shelved``; None: no
    snapshot); unshelve of an offloaded server: the image it spawns from (the
    shelved snapshot when there is one) and the host an admin named (2.91)."""

    offload: bool = False
    image_id: str | None = None
    image: dict[str, Any] = msgspec.field(default_factory=dict)
    requested_host: str | None = None


#: The system metadata key naming a shelved server's snapshot (Nova's).
SHELVED_IMAGE_KEY = "shelved_image_id"
#: Every system metadata key a shelve records, which an unshelve drops (Nova's).
SHELVED_KEYS = ("shelved_at", "shelved_host", SHELVED_IMAGE_KEY)


@payload_of(TaskKind.SNAPSHOT)
class SnapshotPayload(TaskPayload, kw_only=True):
    """createImage and createBackup: the image the API recorded (queued) for
    the host to upload to, and for a backup its type and rotation (how many
    backups of that type the server keeps)."""

    image_id: str
    image_type: str = "snapshot"
    backup_type: str | None = None
    rotation: int | None = None


@payload_of(TaskKind.DELETE)
class DeletePayload(TaskPayload, kw_only=True):
    """delete: the resize whose source guest is removed too (its migration's id)."""

    migration_id: int | None = None


class Place(msgspec.Struct, frozen=True, kw_only=True):
    """A host and node a move goes from or to."""

    host: str
    node: str | None = None


@payload_of(
    TaskKind.MIGRATE,
    TaskKind.CONFIRM_RESIZE,
    TaskKind.REVERT_RESIZE,
    TaskKind.EVACUATE,
    TaskKind.REBUILD,
)
class MovePayload(TaskPayload, kw_only=True):
    """The moves (migrate, resize, confirm, revert, evacuate): where from and to,
    the migration, and the rollback's progress. ``docs/moves.md`` has the contract."""

    migration_id: int | None = None
    migration_uuid: str | None = None
    migration_type: str | None = None
    #: The destination the request named (None: the scheduler picks).
    host: str | None = None
    source: Place | None = None
    dest: Place | None = None
    #: The flavor the instance ends with (a resize's new one); confirm and
    #: revert keep both.
    flavor: dict[str, Any] | None = None
    old_flavor: dict[str, Any] | None = None
    new_flavor: dict[str, Any] | None = None
    #: Whether the guest runs when the move ends (None: as the instance was).
    power_on: bool | None = None
    request: SchedulingRequest | None = None
    #: rebuild, evacuate: the image the guest is built again from (its id alone,
    #: or with its properties).
    image: dict[str, Any] | str | None = None
    #: rebuild: the personality files the host writes on the guest's config drive.
    injected_files: InjectedFiles | None = None
    #: The last try sent of each compute step (moves.ask).
    tries: dict[str, int] = msgspec.field(default_factory=dict)
    #: Why the move is rolled back.
    error: str | None = None
    #: The rollback started because the deadline passed.
    expired: bool = False
    #: What the destination could not remove.
    leftover: str | None = None
    #: migrate: what the source's disks became, for the destination.
    disk_info: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def image_meta(self) -> dict[str, Any]:
        """The image the guest is rebuilt from, as the driver takes it."""
        if isinstance(self.image, str):
            return {"id": self.image}
        return dict(self.image or {})

    @property
    def powered(self) -> bool:
        """Whether the guest runs when the move ends (running unless recorded otherwise)."""
        return True if self.power_on is None else self.power_on

    def tried(self, step: str, default: int = 0) -> int:
        return int(self.tries.get(step, default))

    @property
    def source_place(self) -> Place:
        if self.source is None:
            raise exception.Invalid(reason="the move's payload names no source")
        return self.source

    @property
    def target_flavor(self) -> dict[str, Any]:
        """The flavor the instance ends with (Invalid before the move recorded it)."""
        if self.flavor is None:
            raise exception.Invalid(reason="the move's payload names no flavor")
        return self.flavor

    @property
    def dest_place(self) -> Place:
        if self.dest is None:
            raise exception.Invalid(reason="the move's payload names no destination")
        return self.dest


class LiveRollback(msgspec.Struct, kw_only=True):
    """Why a live migration is rolled back, and what its clean-up left."""

    error: str
    cancelled: bool = False
    expired: bool = False
    #: The step the rollback started from.
    since: str | None = msgspec.field(default=None, name="from")
    details: str | None = None


class StepError(msgspec.Struct, frozen=True, kw_only=True):
    """A clean-up step of a finished live migration that failed."""

    step: str
    error: str


@payload_of(TaskKind.LIVE_MIGRATE)
class LiveMigratePayload(MovePayload, kw_only=True):
    """A live migration: the checks' and preparation's data, and how it ends."""

    #: What the request asked: True, False or "auto" (docs/moves.md).
    block_migration: bool | str = "auto"
    #: Whether it is a block migration, decided at scheduling (None before).
    block: bool | None = None
    #: The instance's vm_state before the move (what it returns to).
    vm_state: str | None = None
    dest_check_data: dict[str, Any] | None = None
    migrate_data: dict[str, Any] | None = None
    #: The destination was asked to prepare: a rollback must ask it to undo.
    prepared: bool = False
    rollback: LiveRollback | None = None
    errors: list[StepError] = msgspec.field(default_factory=list)


@payload_of(TaskKind.REMOVE_GUEST)
class RemoveGuestPayload(TaskPayload, kw_only=True):
    """A remove_guest task: which host is to remove which instance's guest, and why."""

    host: str
    instance_uuid: str
    reason: str | None = None
    #: The task that gave up on the guest.
    for_task: int | None = None


def _upgrade(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` in the shape of :data:`PAYLOAD_VERSION` (version 1 had the same keys;
    its outcomes may lack ``timeout`` and ``details``, which the defaults fill)."""
    data = dict(raw)
    version = data.get(VERSION_KEY, 1)
    if not isinstance(version, int) or version > PAYLOAD_VERSION:
        raise exception.Invalid(reason=f"task payload version {version!r} is not known here")
    data[VERSION_KEY] = PAYLOAD_VERSION
    return data


def decode(raw: Mapping[str, Any] | None, kind: type[P]) -> P:
    """The payload ``raw`` (as stored, any version up to ours) as ``kind``.

    Raises :class:`~nubes.exception.Invalid` when it does not fit.
    """
    try:
        return msgspec.convert(_upgrade(raw or {}), kind, strict=False)
    except msgspec.ValidationError as exc:
        raise exception.Invalid(reason=f"task payload is not a {kind.__name__}: {exc}") from exc


def new(kind: str, payload: TaskPayload | Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored form of a new ``kind`` task's payload, checked against its struct.

    A mapping (what a caller that does not build the struct hands in) is
    read as the kind's struct first: a key of the wrong type is refused
    (:class:`~nubes.exception.Invalid`) before any task is written. It is
    stored as given (docs/moves.md spells the API's payloads out), versioned.
    """
    cls = PAYLOADS[TaskKind(kind)]
    if isinstance(payload, TaskPayload):
        if not isinstance(payload, cls):
            raise exception.Invalid(reason=f"a {kind} task takes a {cls.__name__}")
        return encode(payload)
    raw = dict(payload or {})
    decode(raw, cls)  # refuses what does not fit
    return {**raw, VERSION_KEY: PAYLOAD_VERSION}


def encode(payload: TaskPayload, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``payload`` as stored: JSON-ready, over the keys of ``base`` it does not know.

    Keeping ``base``'s other keys lets one kind's struct carry keys it does
    not type (a newer release's, or what another part of the kind writes).
    """
    data: dict[str, Any] = dict(base or {})
    for name in payload.__struct_encode_fields__:
        data.pop(name, None)  # the struct's own: absent when at its default
    data.update(msgspec.to_builtins(payload))
    data[VERSION_KEY] = payload.v
    return data


#: The stored key of a build's or rebuild's personality files.
INJECTED_FILES_KEY = "injected_files"
#: The stored key of the outcome a host reported for the step awaited.
OUTCOME_KEY = "outcome"


def without_injected_files(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """``raw`` without its personality files, the payload's own or those a
    host's report recorded in its outcome (a live migration's source check:
    a task may end before the step that reads them); None when it has none
    (the common case, key lookups: ``encode`` leaves the keys out when empty)."""
    outcome = raw.get(OUTCOME_KEY)
    reported = isinstance(outcome, Mapping) and INJECTED_FILES_KEY in outcome
    if INJECTED_FILES_KEY not in raw and not reported:
        return None
    kept = {k: v for k, v in raw.items() if k != INJECTED_FILES_KEY}
    if reported:
        assert isinstance(outcome, Mapping)
        kept[OUTCOME_KEY] = {k: v for k, v in outcome.items() if k != INJECTED_FILES_KEY}
    return kept


def awaiting(raw: Mapping[str, Any] | None) -> Awaited | None:
    """The step the stored payload ``raw`` awaits (None when it awaits none)."""
    return decode(raw, TaskPayload).awaiting


def reported(raw: Mapping[str, Any] | None) -> Outcome | None:
    """The outcome recorded in ``raw`` for what it awaits, if it came."""
    return decode(raw, TaskPayload).reported()


def expect_report(
    raw: Mapping[str, Any],
    *,
    step: str,
    attempt: int,
    host: str,
    timeout: float,
    node: str | None = None,
) -> dict[str, Any]:
    """``raw`` awaiting ``host``'s report of compute step ``step``, try ``attempt``."""
    typed = decode(raw, TaskPayload)
    typed.awaiting = Awaited(
        step=str(step), attempt=attempt, host=host, node=node, until=time.time() + timeout
    )
    typed.outcome = None
    return encode(typed, raw)


def awaiting_none(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` awaiting no report (and with no outcome)."""
    typed = decode(raw, TaskPayload)
    typed.awaiting = None
    typed.outcome = None
    return encode(typed, raw)


def with_outcome(raw: Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
    """``raw`` with ``outcome`` recorded."""
    typed = decode(raw, TaskPayload)
    typed.outcome = outcome
    return encode(typed, raw)
