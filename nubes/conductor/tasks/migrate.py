"""Cold migration and resize: the ``migrate`` task, and what the move tasks of a resize share.

The contract is ``docs/moves.md``; the steps are in ``docs/tasks.md``:

``schedule``
    Hands the source's claim to the migration (committed first, so that a
    repeat of the step finds the destination it claimed, never the source),
    then asks the scheduler for a host for the new flavor: never the source
    unless a resize may stay there (``[DEFAULT] allow_resize_to_same_host``),
    only the named host when one was named (its filters still apply). No
    host: the claims go back, the migration is ``error``, the instance is as
    it was, with a fault naming why.
``migrate_source``
    The source powers off and copies the disks (``migrate_disk_and_power_off``),
    and reports the personality files on its guest's config drive (they live
    nowhere else, and Nova's copy of ``disk.config`` keeps them): kept in the
    payload for the destination only, dropped at a rollback or the end.
``finish_dest``
    The destination builds the guest (``finish_migration``, with those files
    for its drive); then, in the
    commit that ends the task, the instance is placed there, RESIZED, with
    the new flavor, and the migration is ``finished``.
``rollback_dest``, ``rollback_source``
    A failure at the source rolls back with ``rollback_source``
    (``finish_revert_migration``), one at the destination with
    ``rollback_dest`` (``revert_migration_destination``) first. The task
    ends with the claims back on the source, the migration ``error``, the
    instance on the source as it was before (ERROR if the source could not
    bring the guest back), a fault, failed events and
    ``instance.resize.error`` / ``instance.migrate.error``.

Cleanup steps (the rollbacks here; confirm and revert in
:mod:`.confirm_revert`) are tried up to :data:`CLEANUP_TRIES` times, each
failed try leaving a failed event and a fault.

Deadline: the task rolls back from the step it is at, with a deadline of its
own for the rollback (the engine never waits for a host past a deadline),
and ends ``rolled_back``; if that passes too, it gives up: ERROR on the
source, claims there.

The conductor writes every state of a move; the compute steps do driver work
only (``nubes/compute/resize.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from nubes import exception, grants
from nubes.conductor.tasks import build
from nubes.conductor.tasks.base import Run, StepDef, Task, Writes, run_writes, task_kind
from nubes.conductor.tasks.helpers import (
    chain,
    event_writes,
    finish_action_writes,
    instance_object,
    notify_error,
    set_instance,
)
from nubes.conductor.tasks.moves import (
    answer,
    ask,
    claims_back_to_source,
    extend_deadline,
    hand_source_claim_to_migration,
    migration_id,
    migration_object,
    scheduling_request,
    set_migration,
)
from nubes.conductor.tasks.payloads import (
    Awaited,
    MovePayload,
    Outcome,
    Place,
    SchedulingRequest,
)
from nubes.conductor.tasks.states import Step, TaskKind
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection
from nubes.network import ports as network_ports
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.request_spec import RequestSpec
from nubes.objects.states import (
    MIGRATION_FINAL,
    MigrationStatus,
    MigrationType,
    PowerState,
    TaskState,
    VMState,
)

LOG = logging.getLogger(__name__)

_M = MigrationStatus
_T = TaskState

#: Tries of a step that cleans up (rollback, confirm, revert) before giving up.
CLEANUP_TRIES = 3
#: task_states of an instance while a migrate task works on it.
MIGRATE_TASK_STATES = (
    _T.RESIZE_PREP,
    _T.RESIZE_MIGRATING,
    _T.RESIZE_MIGRATED,
    _T.RESIZE_FINISH,
)
#: Statuses a migration may still leave (for ``error``).
NOT_FINAL = tuple(s.value for s in MigrationStatus if s not in MIGRATION_FINAL)


def flavor_values(snapshot: dict[str, Any]) -> dict[str, Any]:
    """An instance's flavor columns for a flavor snapshot."""
    flavor = Flavor.from_snapshot(snapshot)
    return {
        "flavor": snapshot,
        "vcpus": flavor.vcpus,
        "memory_mb": flavor.memory_mb,
        "root_gb": flavor.root_gb,
        "ephemeral_gb": flavor.ephemeral_gb,
    }


def power_state(power_on: bool) -> int:
    return int(PowerState.RUNNING if power_on else PowerState.SHUTDOWN)


def with_flavor(row: dict[str, Any], snapshot: dict[str, Any]) -> Instance:
    """The instance as a host is to build or remove it: sized for ``snapshot``."""
    return instance_object({**row, **flavor_values(snapshot)})


async def original_request(
    run: Run, row: dict[str, Any], conn: Connection | None = None
) -> dict[str, Any]:
    """What the instance was built with and is scheduled with again: image,
    hints and server group (from its build task; the image id alone if none).

    Read in ``conn`` when given, else in a transaction of its own.
    """
    if conn is None:
        async with run.engine.db.reader() as own:
            return await original_request(run, row, own)
    assert run.instance_uuid is not None
    return await scheduling_request(conn, run.instance_uuid, row["image_ref"])


def record_event(
    run: Run, name: str, *, ok: bool = True, host: str | None = None, details: str | None = None
) -> Writes:
    """:meth:`Run.event` for a commit (grouped when the commit can be)."""
    return event_writes(run, name, ok=ok, host=host, details=details)


def record_fault(run: Run, message: str, details: str | None = None) -> Writes:
    async def write(conn: Connection) -> None:
        await run.fault(conn, message, details=details)

    return write


def finish_action(run: Run, *, ok: bool) -> Writes:
    """:meth:`Run.finish_action` for a commit (grouped when the commit can be)."""
    return finish_action_writes(run, ok=ok)


def move_migration(run: Run, values: dict[str, Any], *, only_from: list[MigrationStatus]) -> Writes:
    """:func:`~.moves.set_migration` of a step that moves the migration on: grouped
    when the commit can be, once the payload names the migration's type."""
    return set_migration(
        run, values, only_from=only_from, migration_type=run.typed(MovePayload).migration_type
    )


def set_migration_if_any(run: Run, values: dict[str, Any]) -> Writes:
    """The migration to ``values`` unless it is final already (or gone): for a
    task that ends whatever happened to its migration."""
    write = set_migration(run, values, only_from=NOT_FINAL)

    async def tolerant(conn: Connection) -> None:
        try:
            await run_writes(conn, write)
        except (
            exception.MigrationNotFound,
            exception.Invalid,
            exception.InvalidMigrationTransition,
        ) as exc:
            LOG.warning("%r: no migration to mark %s: %s", run, values.get("status"), exc)

    return tolerant


def set_instance_if_ours(
    run: Run, values: dict[str, Any], expected: tuple[str | None, ...]
) -> Writes:
    """:func:`set_instance` that leaves an instance someone else moved on alone
    (an admin's reset): a task that ends must end even then."""
    write = set_instance(run, values, expected_task_state=expected)

    async def tolerant(conn: Connection) -> None:
        try:
            await run_writes(conn, write)
        except exception.InstanceUpdateConflict as exc:
            LOG.warning("%r: the instance moved on without it: %s", run, exc)

    return tolerant


class MoveTask(Task):
    """What migrate, confirm_resize and revert_resize share."""

    #: Notification of a failure.
    error_event: ClassVar[str]
    #: Event of the conductor's own failure records (deadline, giving up).
    conductor_event: ClassVar[str]
    #: task_states the instance is in while this kind works on it.
    task_states: ClassVar[tuple[str | None, ...]]

    async def load(
        self, run: Run, *, request: bool = False
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None] | None:
        """The instance, the migration and (with ``request``) the instance's
        :func:`original_request`, read in one transaction; None once the task
        ended without them."""
        assert run.instance_uuid is not None
        row: dict[str, Any] | None = None
        mig: dict[str, Any] | None = None
        original: dict[str, Any] | None = None
        problem: Exception | None = None
        async with run.engine.db.reader() as conn:
            try:
                row = await instances_api.get_by_uuid(conn, run.instance_uuid)
            except exception.InstanceNotFound:
                row = None
            if row is not None:
                try:
                    mig = await migrations_api.get_by_id(conn, migration_id(run))
                except (exception.MigrationNotFound, exception.Invalid) as exc:
                    problem = exc
                if mig is not None and request:
                    original = await original_request(run, row, conn)
        if row is None:
            await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
            return None
        if mig is None:
            await self.abandon(run, f"The move has no migration record: {problem}")
            return None
        return row, mig, original

    async def abandon(self, run: Run, message: str) -> None:
        """End without touching any host or claim: nothing was started."""
        writes = chain(
            set_instance_if_ours(run, {"task_state": None}, self.task_states),
            record_fault(run, message),
            record_event(run, self.conductor_event, ok=False, details=message),
            finish_action(run, ok=False),
        )
        await run.finish(TaskStatus.FAILED, last_error=message, writes=writes)
        await notify_error(run, self.error_event, message)

    @staticmethod
    async def rows(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
        """The instance and the migration, read together (InstanceNotFound,
        MigrationNotFound): what a step sends its host."""
        assert run.instance_uuid is not None
        async with run.engine.db.reader() as conn:
            row = await instances_api.get_by_uuid(conn, run.instance_uuid)
            mig = await migrations_api.get_by_id(conn, migration_id(run))
        return row, mig

    def send_finish_revert(self, run: Run, step: Step) -> Callable[[Awaited], Awaitable[None]]:
        """The send of a step asking the source to bring its kept guest back
        (``finish_revert_migration``): a rollback's or a revert's."""

        async def send(awaited: Awaited) -> None:
            row, mig = await self.rows(run)
            await self.engine.compute.finish_revert_migration(
                run.ctxt,
                awaited.host,
                instance_object(row),
                awaited.key(run.id),
                migration=migration_object(mig),
                power_on=bool(run.typed(MovePayload).power_on),
            )

        return send

    @staticmethod
    def failed_try(run: Run, outcome: Outcome, event: str) -> Writes:
        """The records of a cleanup step's failed try: a failed event and a fault."""
        tries = run.typed(MovePayload).tried(run.step, 1)
        message = (
            f"{event} on {outcome.host} failed (try {tries} of {CLEANUP_TRIES}): {outcome.error}"
        )
        LOG.info("%r: %s", run, message)
        return chain(
            record_event(run, event, ok=False, host=outcome.host, details=outcome.error),
            record_fault(run, message, outcome.error),
        )

    @staticmethod
    async def again(run: Run, record: Writes) -> str | None:
        """Ask the awaited host for the same step once more, committed with
        ``record``; None (nothing committed) when no try is left."""
        if run.typed(MovePayload).tried(run.step, 1) >= CLEANUP_TRIES:
            return None
        awaited = run.awaited()
        return await ask(run, run.step, awaited.host, node=awaited.node, writes=record)


# -- migrate -------------------------------------------------------------------------------


@task_kind
class MigrateTask(MoveTask):
    kind = TaskKind.MIGRATE
    conductor_event = "conductor_migrate_server"
    task_states = MIGRATE_TASK_STATES
    error_event = "instance.migrate.error"

    def step_defs(self) -> list[StepDef]:
        return [
            StepDef(Step.SCHEDULE, self.schedule),
            StepDef(Step.MIGRATE_SOURCE, self.migrate_source),
            StepDef(Step.FINISH_DEST, self.finish_dest),
            StepDef(Step.ROLLBACK_DEST, self.rollback_dest),
            StepDef(Step.ROLLBACK_SOURCE, self.rollback_source),
        ]

    @staticmethod
    def _resize(run: Run) -> bool:
        return run.typed(MovePayload).migration_type == MigrationType.RESIZE

    def _notification(self, run: Run) -> str:
        return "instance.resize.error" if self._resize(run) else self.error_event

    def _what(self, run: Run) -> str:
        return "Resize" if self._resize(run) else "Migration"

    # -- schedule ------------------------------------------------------------------------

    async def schedule(self, run: Run) -> str | None:
        first = run.typed(MovePayload).source is None
        loaded = await self.load(run, request=first)
        if loaded is None:
            return None
        row, mig, original = loaded
        if first:
            return await self._hand_over(run, row, mig, original)
        try:
            chosen = await self.engine.scheduler.select_destinations(
                run.ctxt, self._request_spec(run, row, mig), [row["uuid"]], False
            )
        except (exception.NoValidHost, exception.InvalidSchedulerHint) as exc:
            named = run.typed(MovePayload).host
            message = f"Host {named} cannot take the instance: {exc}" if named else str(exc)
            await self.fail(run, message, restored=True, event=self.conductor_event)
            return None
        sel = chosen[0][0]
        payload = run.typed(MovePayload)
        source = payload.source_place
        payload.dest = Place(host=sel.host, node=sel.nodename)
        writes = chain(
            move_migration(
                run,
                {
                    "status": _M.MIGRATING,
                    "dest_compute": sel.host,
                    "dest_node": sel.nodename,
                    "dest_host": sel.host,
                },
                only_from=[_M.PRE_MIGRATING],
            ),
            set_instance(
                run,
                {"task_state": _T.RESIZE_MIGRATING},
                expected_task_state=(_T.RESIZE_PREP, _T.RESIZE_MIGRATING),
            ),
            record_event(run, self.conductor_event, details=f"{source.host} -> {sel.host}"),
        )
        return await ask(
            run,
            Step.MIGRATE_SOURCE,
            source.host,
            node=source.node,
            payload=payload,
            writes=writes,
        )

    async def _hand_over(
        self,
        run: Run,
        row: dict[str, Any],
        mig: dict[str, Any],
        original: dict[str, Any] | None,
    ) -> str:
        """Record where the move starts from, and hand the source claim to the migration."""
        payload = run.typed(MovePayload)
        power_on = payload.power_on
        payload.migration_uuid = mig["uuid"]
        payload.migration_type = mig["migration_type"]
        payload.source = Place(
            host=mig["source_compute"] or row["host"], node=mig["source_node"] or row["node"]
        )
        payload.flavor = payload.flavor or row["new_flavor"] or row["flavor"]
        payload.power_on = bool(row["vm_state"] == VMState.ACTIVE if power_on is None else power_on)
        # Read with the instance (load): what the scheduler is asked.
        payload.request = SchedulingRequest.of(original or await original_request(run, row))
        return await run.commit(
            Step.SCHEDULE,
            payload=payload,
            writes=hand_source_claim_to_migration(row["uuid"], mig["uuid"]),
        )

    def _request_spec(self, run: Run, row: dict[str, Any], mig: dict[str, Any]) -> RequestSpec:
        payload = run.typed(MovePayload)
        spec = build.request_spec(
            {**row, "flavor": payload.target_flavor}, payload.request or SchedulingRequest()
        )
        stay = self.engine.conf.allow_resize_to_same_host and self._resize(run)
        if not stay:
            spec.ignore_hosts = [payload.source_place.host]
        if payload.host:
            spec.requested_destination = payload.host
        return spec

    # -- the source ----------------------------------------------------------------------

    async def migrate_source(self, run: Run) -> str | None:
        async def send(awaited: Awaited) -> None:
            row, mig = await self.rows(run)
            await self.engine.compute.migrate_disk_and_power_off(
                run.ctxt,
                awaited.host,
                instance_object(row),
                awaited.key(run.id),
                migration=migration_object(mig),
                flavor=Flavor.from_snapshot(run.typed(MovePayload).target_flavor),
                dest_host=run.typed(MovePayload).dest_place.host,
            )

        outcome = await answer(run, send)
        if outcome is None:
            return run.step  # the deadline passed: drive() expires the task
        if not outcome.ok:
            return await self._roll_back(
                run, Step.ROLLBACK_SOURCE, outcome, "compute_resize_instance"
            )
        payload = run.typed(MovePayload)
        payload.disk_info = dict(outcome.details.get("disk_info") or {})
        # The personality files on the source's drive (conductor 1.8, asked
        # for with compute 1.13), for the destination's: until the task ends.
        payload.injected_files = outcome.injected_files
        writes = chain(
            move_migration(run, {"status": _M.POST_MIGRATING}, only_from=[_M.MIGRATING]),
            set_instance(
                run,
                {"task_state": _T.RESIZE_MIGRATED},
                expected_task_state=(_T.RESIZE_MIGRATING, _T.RESIZE_MIGRATED),
            ),
            record_event(run, "compute_resize_instance", host=outcome.host),
        )
        return await run.commit(Step.FINISH_DEST, payload=payload, writes=writes)

    # -- the destination -----------------------------------------------------------------

    async def finish_dest(self, run: Run) -> str | None:
        payload = run.typed(MovePayload)
        dest = payload.dest_place
        if run.awaiting is None or run.awaiting.step != Step.FINISH_DEST:
            # Committed on its own: the source's part is recorded before the
            # destination is asked (and the task_state walks its table).
            finishing = set_instance(
                run,
                {"task_state": _T.RESIZE_FINISH},
                expected_task_state=(_T.RESIZE_MIGRATED, _T.RESIZE_FINISH),
            )
            # NETWORKING (issue 14): the ports bound to the destination before
            # it builds the guest (Nova's migrate_instance_finish); fail()
            # binds them back to the source.
            bind = network_ports.bind_writes(run.instance_uuid or "", dest.host)
            return await ask(
                run, Step.FINISH_DEST, dest.host, node=dest.node, writes=chain(finishing, bind)
            )

        conf = self.engine.conf

        async def send(awaited: Awaited) -> None:
            row, mig = await self.rows(run)
            await self.engine.compute.finish_migration(
                run.ctxt,
                awaited.host,
                with_flavor(row, payload.target_flavor),
                awaited.key(run.id),
                migration=migration_object(mig),
                # The destination fetches the image (grants for it) and the
                # source's disk (a grant signed with the key the source made).
                disk_info=grants.disk_info_for(
                    payload.disk_info or {}, str(row["uuid"]), awaited.host, conf.image_grant_ttl
                ),
                image=grants.attach(
                    (payload.request or SchedulingRequest()).image,
                    awaited.host,
                    conf.image_grant_secret,
                    conf.image_grant_ttl,
                ),
                resize_instance=self._resize(run),
                power_on=bool(payload.power_on),
                injected_files=payload.injected_files,
            )

        outcome = await answer(run, send)
        if outcome is None:
            return run.step
        if not outcome.ok:
            return await self._roll_back(run, Step.ROLLBACK_DEST, outcome, "compute_finish_resize")
        values = {
            **flavor_values(payload.target_flavor),
            "host": dest.host,
            "node": dest.node,
            "vm_state": VMState.RESIZED,
            "task_state": None,
            "power_state": power_state(bool(payload.power_on)),
        }
        writes = chain(
            move_migration(run, {"status": _M.FINISHED}, only_from=[_M.POST_MIGRATING]),
            set_instance(run, values, expected_task_state=(_T.RESIZE_FINISH,)),
            record_event(run, "compute_finish_resize", host=outcome.host),
            finish_action(run, ok=True),
        )
        await run.finish(TaskStatus.SUCCEEDED, writes=writes)
        LOG.info("%r: on %s, waiting for a confirm or revert", run, dest.host)
        return None

    # -- rolling back --------------------------------------------------------------------

    async def _roll_back(self, run: Run, step: Step, outcome: Outcome, event: str) -> str:
        """Start the rollback at ``step`` because ``outcome`` (recorded as ``event``) failed."""
        payload = run.typed(MovePayload)
        dest = payload.dest_place.host
        error = f"{self._what(run)} to {dest} failed on {outcome.host}: {outcome.error}"
        LOG.info("%r: %s; rolling back", run, error)
        payload.error = payload.error or error
        # The source's kept guest has them on its drive: no rollback step needs them.
        payload.injected_files = None
        side = payload.dest_place if step == Step.ROLLBACK_DEST else payload.source_place
        writes = record_event(run, event, ok=False, host=outcome.host, details=outcome.error)
        return await ask(run, step, side.host, node=side.node, payload=payload, writes=writes)

    async def rollback_dest(self, run: Run) -> str | None:
        async def send(awaited: Awaited) -> None:
            row, mig = await self.rows(run)
            await self.engine.compute.revert_migration_destination(
                run.ctxt,
                awaited.host,
                with_flavor(row, run.typed(MovePayload).target_flavor),
                awaited.key(run.id),
                migration=migration_object(mig),
            )

        outcome = await answer(run, send)
        if outcome is None:
            return run.step
        payload = run.typed(MovePayload)
        source = payload.source_place
        if outcome.ok:
            writes = record_event(run, "compute_revert_resize", host=outcome.host)
        else:
            writes = self.failed_try(run, outcome, "compute_revert_resize")
            retried = await self.again(run, writes)
            if retried is not None:
                return retried
            # The instance goes back to the source all the same: what the
            # destination could not remove, its restart repair reaps (no
            # instance is placed there).
            payload.leftover = outcome.failed_text
        return await ask(
            run,
            Step.ROLLBACK_SOURCE,
            source.host,
            node=source.node,
            payload=payload,
            writes=writes,
        )

    async def rollback_source(self, run: Run) -> str | None:
        outcome = await answer(run, self.send_finish_revert(run, Step.ROLLBACK_SOURCE))
        if outcome is None:
            return run.step
        payload = run.typed(MovePayload)
        error = payload.error or "the move failed"
        source = payload.source_place.host
        if outcome.ok:
            done = record_event(run, "compute_finish_revert_resize", host=outcome.host)
            await self.fail(run, f"{error}; rolled back to {source}", restored=True, before=done)
            return None
        record = self.failed_try(run, outcome, "compute_finish_revert_resize")
        retried = await self.again(run, record)
        if retried is not None:
            return retried
        message = f"{error}; the guest could not be brought back on {source}: {outcome.error}"
        await self.fail(run, message, restored=False, before=record)
        return None

    async def fail(
        self,
        run: Run,
        message: str,
        *,
        restored: bool,
        event: str | None = None,
        before: Writes | None = None,
        status: TaskStatus | None = None,
    ) -> None:
        """End with the instance on its source as it was (ERROR unless
        ``restored``), the claims back there and the migration ``error``."""
        payload = run.typed(MovePayload)
        values: dict[str, Any] = {"task_state": None, "old_flavor": None, "new_flavor": None}
        source = payload.source
        if source is not None:
            values.update(host=source.host, node=source.node)
        if restored and payload.dest is not None:
            # A host was asked to move it: the source brought it back as it was.
            on = payload.power_on
            values["power_state"] = power_state(True if on is None else on)
        elif not restored:
            values["vm_state"] = VMState.ERROR
        if status is None:
            expired = payload.expired and restored
            status = TaskStatus.ROLLED_BACK if expired else TaskStatus.FAILED
        details = message
        if payload.leftover:
            details = f"{message}\nleft on the destination: {payload.leftover}"
        # NETWORKING (issue 14): the ports follow the instance back to its source.
        bind = (
            network_ports.bind_writes(run.instance_uuid or "", source.host)
            if source is not None
            else None
        )
        claims = None
        if payload.migration_uuid and run.instance_uuid is not None:
            claims = claims_back_to_source(run.instance_uuid, payload.migration_uuid)
        writes = chain(
            before,
            claims,
            set_migration_if_any(run, {"status": _M.ERROR}),
            set_instance_if_ours(run, values, self.task_states),
            bind,
            record_fault(run, message, details),
            record_event(run, event, ok=False, details=message) if event else None,
            finish_action(run, ok=False),
        )
        await run.finish(status, last_error=message, writes=writes, payload=payload)
        LOG.info("%r: %s", run, message)
        await notify_error(run, self._notification(run), message)

    def _rollback_time(self) -> float:
        """How long a rollback may take once the deadline started it."""
        return 2 * CLEANUP_TRIES * self.engine.compute_step_timeout + self.engine.lease_seconds

    async def expire(self, run: Run) -> None:
        what = self._what(run)
        message = f"The {what.lower()} did not finish before its deadline"
        if run.step == Step.SCHEDULE:
            # No host was asked anything: only the claims go back.
            await self.fail(run, message, restored=True, event="conductor_migrate_deadline")
            return
        payload = run.typed(MovePayload)
        if payload.expired:
            error = payload.error or message
            await self.fail(
                run,
                f"{error}; the rollback did not finish in time either",
                restored=False,
                event="conductor_migrate_deadline",
            )
            return
        step = {Step.MIGRATE_SOURCE: Step.ROLLBACK_SOURCE, Step.FINISH_DEST: Step.ROLLBACK_DEST}
        target = step.get(Step(run.step), Step(run.step))
        payload.expired, payload.error = True, payload.error or message
        payload.injected_files = None  # as at any rollback (_roll_back)
        side = payload.dest_place if target == Step.ROLLBACK_DEST else payload.source_place
        writes = chain(
            extend_deadline(run, self._rollback_time()),
            record_event(run, "conductor_migrate_deadline", ok=False, details=message),
        )
        LOG.info("%r: %s; rolling back from %s", run, message, run.step)
        await ask(run, target, side.host, node=side.node, payload=payload, writes=writes)
        await self.drive(run)
