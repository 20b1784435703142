"""The live_migrate task: move a running instance to another host while it runs.

The API records the request (``docs/moves.md``): the instance in task
``migrating``, a ``live-migration`` migration ``accepted``, the action, and
this task with ``migration_id``, ``host`` (None: the scheduler chooses) and
``block_migration`` (a bool or ``"auto"``). Steps (``docs/tasks.md``):

``schedule``
    First pass: the instance's allocations become the migration's
    (:func:`~.moves.hand_source_claim_to_migration`) and the source is
    recorded, committed before the scheduler is asked (so it claims the
    destination for the instance afresh). Second pass: select a host for
    the instance with its own flavor, never the source, restricted to the
    named host when there is one (checked by the filters, not forced); the
    migration gets its destination and goes ``preparing``. NoValidHost ends
    the task: claims back, migration ``failed``.
``check_dest`` → ``check_source`` → ``pre_live``
    Destination check (``dest_check_data``), source check (``migrate_data``),
    the destination prepares (``migrate_data`` updated). Then the migration
    goes ``running``.
``live_migrate``
    The source copies memory, saving progress as it goes. Success places
    the instance on the destination (host, node, power state) in the commit
    that starts ``post_dest``: from here on the guest runs there, and the
    move is finished forwards, never undone.
``post_dest`` → ``post_source``
    The destination adopts the guest, the source removes its remains; each
    is tried up to :data:`CLEANUP_TRIES` times. The end drops the
    migration's claim, marks it ``completed`` and the instance back in its
    vm_state with no task (``error`` on the destination if it never adopted
    the guest, the migration then ``error``).
``rollback_dest``
    Any failure, timeout, deadline or abort before the memory copy
    succeeded: the destination undoes ``pre_live`` (asked only if it was
    asked to prepare), then the task ends with claims back on the source,
    the instance as it was (``active`` or ``paused``) with no task, the
    migration ``failed`` (``cancelled`` for an abort), a fault, a failed
    ``conductor_live_migrate_instance`` event and an
    ``instance.live_migration.error`` (``instance.live_migration_abort.end``)
    notification.

Aborts: the API sets the migration ``cancelling``; each step before the
memory copy finds that at its start and rolls back. Once the copy was asked
for, :func:`~.live_requests.relay_request` (the conductor's
``live_migration_abort``) asks the source to stop it, and its step reports ``details["aborted"]``.

``block_migration="auto"`` is resolved to False: whether storage is shared
is the drivers' knowledge, not the conductor's, so the destination is asked
for a plain live migration and a driver that finds its disks must move says
so in the ``migrate_data`` it returns.

What a run reads, it keeps (``Run.cache``): the instance row (read with
the claim, or once), the migration row and the build's request, updated
with what the run's own commits write to them, so a step does not read
back what the step before it just wrote. A resumed run starts without them
and reads them again. The ``cancelling`` check a step makes when it starts
is made in the transaction of the commit that starts it (that commit reads
the migration's status — in a grouped commit, a required read that fails on
``cancelling`` and sends the commit the ordinary way, which reads it); the
step then uses what that commit saw. The commit that asks for the memory
copy does not happen at all if the migration is ``cancelling`` by then.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nubes import exception, grants
from nubes.conductor.tasks import moves
from nubes.conductor.tasks.base import (
    CLAIMED_INSTANCE,
    Run,
    StepDef,
    Task,
    Writes,
    run_writes,
    task_kind,
)
from nubes.conductor.tasks.build import request_spec
from nubes.conductor.tasks.helpers import chain, instance_object, load_instance, notify_error
from nubes.conductor.tasks.payloads import (
    Awaited,
    LiveMigratePayload,
    LiveRollback,
    Outcome,
    Place,
    SchedulingRequest,
    StepError,
)
from nubes.conductor.tasks.states import STEPS, Step, TaskKind
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection
from nubes.network import ports as network_ports
from nubes.objects.request_spec import RequestSpec
from nubes.objects.states import (
    MIGRATION_TRANSITIONS,
    MigrationStatus,
    MigrationType,
    PowerState,
    TaskState,
    VMState,
)

LOG = logging.getLogger(__name__)

_M = MigrationStatus

#: Tries of a step that cleans up (post_dest, post_source, rollback_dest)
#: before the task gives up on it and ends with what it has.
CLEANUP_TRIES = 3
#: The conductor's event of the move (Nova's name), recorded when it ends.
EVENT = "conductor_live_migrate_instance"
ERROR_NOTIFICATION = "instance.live_migration.error"
ABORT_NOTIFICATION = "instance.live_migration_abort.end"
#: Statuses the task may end a migration from (it ends in a final one).
_OPEN = (_M.ACCEPTED, _M.PREPARING, _M.RUNNING, _M.CANCELLING)
_LIVE = MigrationType.LIVE_MIGRATION.value

# Run.cache keys (see the module docstring).
#: The instance row as this run last knew it.
_INSTANCE = "live_migrate.instance"
#: The migration row as this run last knew it.
_MIGRATION = "live_migrate.migration"
#: The instance's build request (image properties, hints, group).
_ORIGINAL = "live_migrate.original"
#: (step, cancelling): the migration's status as the commit that started ``step`` saw it.
_SEEN = "live_migrate.cancelling"


class _Cancelled(Exception):
    """The migration is ``cancelling``: the commit that would ask for the copy is not made."""


def _failed(what: str, outcome: Outcome) -> str:
    return f"The {what} on {outcome.host} failed: {outcome.error}"


def _payload(run: Run) -> LiveMigratePayload:
    return run.typed(LiveMigratePayload)


def _tries(run: Run, step: str) -> int:
    return _payload(run).tried(step)


def _end_migration(run: Run, preferred: MigrationStatus, fallback: MigrationStatus) -> Writes:
    """The migration's final status: ``preferred`` if its table allows it from
    where the migration is now, else ``fallback`` (a migration already final
    is left alone)."""

    async def write(conn: Connection) -> None:
        row = await migrations_api.get_by_id(conn, moves.migration_id(run))
        if row["status"] not in _OPEN:
            return
        table = MIGRATION_TRANSITIONS[MigrationType(row["migration_type"])]
        allowed = table[MigrationStatus(row["status"])]
        target = preferred if preferred in allowed else fallback
        await run_writes(conn, moves.set_migration(run, {"status": target}, only_from=_OPEN))

    return write


async def _original_request(conn: Connection, instance_uuid: str) -> dict[str, Any]:
    """What the instance was built with (image properties, hints) and its server group."""
    row = await instances_api.get_by_uuid(conn, instance_uuid)
    return await moves.scheduling_request(conn, instance_uuid, row["image_ref"])


def destination_spec(
    row: dict[str, Any], original: dict[str, Any], *, source: str, host: str | None
) -> RequestSpec:
    """The scheduler's question: the instance as built, anywhere but ``source``
    (only ``host`` when named)."""
    spec = request_spec(row, SchedulingRequest.of(original))
    spec.ignore_hosts = [source]
    if host:
        spec.requested_destination = host
    return spec


@task_kind
class LiveMigrateTask(Task):
    kind = TaskKind.LIVE_MIGRATE
    # Every step starts from the instance (the scheduler's question, or the
    # object a host is sent): a claim reads it along.
    prefetch_instance_at = frozenset(STEPS[TaskKind.LIVE_MIGRATE])

    def step_defs(self) -> list[StepDef]:
        # Rollbacks are steps of their own (rollback_dest), not StepDef.rollback.
        return [
            StepDef(Step.SCHEDULE, self.schedule),
            StepDef(Step.CHECK_DEST, self.check_dest),
            StepDef(Step.CHECK_SOURCE, self.check_source),
            StepDef(Step.PRE_LIVE, self.pre_live),
            StepDef(Step.LIVE_MIGRATE, self.live_migrate),
            StepDef(Step.POST_DEST, self.post_dest),
            StepDef(Step.POST_SOURCE, self.post_source),
            StepDef(Step.ROLLBACK_DEST, self.rollback_dest),
        ]

    # -- schedule ----------------------------------------------------------------------

    async def schedule(self, run: Run) -> str | None:
        first = _payload(run).source is None
        row = await self._fetch(run, migration=first, original=True)
        if row is None:
            await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
            return None
        if first:
            migration = run.cache[_MIGRATION]
            if not row["host"] or row["task_state"] != TaskState.MIGRATING:
                self._record_basics(run, row, migration)
                await self._give_up(
                    run,
                    f"The instance is {row['vm_state']}/{row['task_state']} on "
                    f"{row['host']}, not migrating from a host",
                )
                return None
            payload = self._record_basics(run, row, migration)
            origin = {"source_compute": row["host"], "source_node": row["node"]}
            writes = chain(
                moves.hand_source_claim_to_migration(row["uuid"], migration["uuid"]),
                moves.set_migration(run, origin, migration_type=_LIVE),
            )
            return await self._commit_watching(
                run,
                Step.SCHEDULE,
                lambda w: run.commit(Step.SCHEDULE, payload=payload, writes=w),
                writes,
                origin,
            )
        if await self._cancelling(run):
            await self._give_up(run, self._cancel_message(run), cancelled=True)
            return None
        payload = _payload(run)
        source = payload.source_place.host
        original = run.cache[_ORIGINAL]
        spec = destination_spec(row, original, source=source, host=payload.host)
        try:
            chosen = await self.engine.scheduler.select_destinations(
                run.ctxt, spec, [row["uuid"]], False
            )
        except (exception.NoValidHost, exception.InvalidSchedulerHint) as exc:
            await self._give_up(run, str(exc))
            return None
        selection = chosen[0][0]
        host, node = selection.host, selection.nodename
        requested = payload.block_migration
        payload.dest = Place(host=host, node=node)
        # "auto": see the module docstring.
        payload.block = requested if isinstance(requested, bool) else False
        dest = {"dest_compute": host, "dest_node": node}
        writes = chain(
            # The destination is named before it is asked anything: a host may
            # read and write for an instance migrating to it (authorization.md).
            moves.set_migration(run, dest, migration_type=_LIVE),
            moves.set_migration(
                run, {"status": _M.PREPARING}, only_from=(_M.ACCEPTED,), migration_type=_LIVE
            ),
        )
        LOG.info("%r: live migrating %s from %s to %s", run, row["uuid"], source, host)
        return await self._commit_watching(
            run,
            Step.CHECK_DEST,
            lambda w: moves.ask(run, Step.CHECK_DEST, host, node=node, payload=payload, writes=w),
            writes,
            {**dest, "status": _M.PREPARING},
        )

    @staticmethod
    def _record_basics(
        run: Run, row: dict[str, Any], migration: dict[str, Any]
    ) -> LiveMigratePayload:
        """What every end needs, in the payload: source, vm_state before, migration uuid."""
        payload = _payload(run)
        payload.source = Place(host=row["host"], node=row["node"])
        payload.vm_state = row["vm_state"]
        payload.migration_uuid = migration["uuid"]
        run.keep(payload)
        return payload

    # -- checks and preparation ----------------------------------------------------------

    async def check_dest(self, run: Run) -> str | None:
        if await self._cancelling(run):
            return await self._to_rollback(run, self._cancel_message(run), cancelled=True)
        send = self._send(
            run, "check_can_live_migrate_destination", block_migration=bool(_payload(run).block)
        )
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step  # the deadline passed: drive() expires the task
        if not outcome.ok:
            return await self._to_rollback(run, _failed("destination check", outcome))
        payload = _payload(run)
        payload.dest_check_data = dict(outcome.details.get("dest_check_data") or {})
        source = payload.source_place
        return await self._commit_watching(
            run,
            Step.CHECK_SOURCE,
            lambda w: moves.ask(
                run,
                Step.CHECK_SOURCE,
                source.host,
                node=source.node,
                payload=payload,
                writes=w,
            ),
        )

    async def check_source(self, run: Run) -> str | None:
        if await self._cancelling(run):
            return await self._to_rollback(run, self._cancel_message(run), cancelled=True)
        send = self._send(
            run,
            "check_can_live_migrate_source",
            dest_check_data=_payload(run).dest_check_data or {},
        )
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step
        if not outcome.ok:
            return await self._to_rollback(run, _failed("source check", outcome))
        payload = _payload(run)
        # From here on the destination may hold something to undo.
        payload.migrate_data = dict(outcome.details.get("migrate_data") or {})
        payload.prepared = True
        dest = payload.dest_place
        return await self._commit_watching(
            run,
            Step.PRE_LIVE,
            lambda w: moves.ask(
                run, Step.PRE_LIVE, dest.host, node=dest.node, payload=payload, writes=w
            ),
        )

    async def pre_live(self, run: Run) -> str | None:
        if await self._cancelling(run):
            return await self._to_rollback(run, self._cancel_message(run), cancelled=True)
        # The destination makes the guest's disk over the instance's image: it
        # gets grants to fetch that image (and its kernel and ramdisk), as a
        # build does, sent only, never kept in the task.
        image = await self._image(run)
        dest_host = _payload(run).dest_place.host
        granted = grants.attach(
            image, dest_host, self.engine.conf.image_grant_secret, self.engine.conf.image_grant_ttl
        )
        send = self._send(
            run,
            "pre_live_migration",
            migrate_data={**(_payload(run).migrate_data or {}), "image": granted},
        )
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step
        if not outcome.ok:
            return await self._to_rollback(run, _failed("preparation", outcome))
        payload = _payload(run)
        returned = outcome.details.get("migrate_data") or payload.migrate_data or {}
        payload.migrate_data = {k: v for k, v in returned.items() if k != "image"}
        source = payload.source_place
        running = {"status": _M.RUNNING}
        before = run.payload
        try:
            return await self._commit_watching(
                run,
                Step.LIVE_MIGRATE,
                lambda w: moves.ask(
                    run,
                    Step.LIVE_MIGRATE,
                    source.host,
                    node=source.node,
                    payload=payload,
                    writes=w,
                ),
                moves.set_migration(run, running, only_from=(_M.PREPARING,), migration_type=_LIVE),
                running,
                refuse=True,
            )
        except _Cancelled:
            # Cancelled while the destination prepared: the copy never starts.
            run.payload = before
            return await self._to_rollback(run, self._cancel_message(run), cancelled=True)

    # -- the memory copy ------------------------------------------------------------------

    async def live_migrate(self, run: Run) -> str | None:
        # A migration found cancelling here is still sent: the source reads
        # its status before it starts and answers "aborted" (and a copy a
        # previous owner of this task started must be stopped, not forgotten).
        migration = moves.migration_object(await self._migration(run))
        payload = _payload(run)
        dest = payload.dest_place
        send = self._send(
            run,
            "live_migration",
            migration=migration,
            dest_host=dest.host,
            migrate_data=payload.migrate_data,
        )
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step
        if not outcome.ok:
            if outcome.timeout:
                # Silent source: whatever it is doing, it must not finish now.
                await self._abort_source(run)
            if outcome.details.get("aborted"):
                return await self._to_rollback(run, self._cancel_message(run), cancelled=True)
            return await self._to_rollback(run, _failed("live migration", outcome))
        power = PowerState.PAUSED if payload.vm_state == VMState.PAUSED else PowerState.RUNNING
        placed = {"host": dest.host, "node": dest.node, "power_state": int(power)}
        # What the source adds for the steps after (its guest's console log so far).
        payload.migrate_data = {
            **(payload.migrate_data or {}),
            **(outcome.details.get("migrate_data") or {}),
        }
        # NETWORKING (issue 14): the ports bound to the destination with the
        # instance (until then the source holds them, so a rollback has none to undo).
        bind = network_ports.bind_writes(run.instance_uuid or "", dest.host)
        committed = await moves.ask(
            run,
            Step.POST_DEST,
            dest.host,
            node=dest.node,
            payload=payload,
            writes=chain(self._instance(run, placed), bind),
        )
        known = run.cache.get(_INSTANCE)
        if known is not None:
            known.update(placed)
        return committed

    # -- finishing forwards ----------------------------------------------------------------

    async def post_dest(self, run: Run) -> str | None:
        send = self._send(
            run, "post_live_migration_at_destination", migrate_data=_payload(run).migrate_data
        )
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step
        payload = _payload(run)
        dest = payload.dest_place
        if not outcome.ok:
            if _tries(run, Step.POST_DEST) < CLEANUP_TRIES:
                return await moves.ask(run, Step.POST_DEST, dest.host, node=dest.node)
            payload.errors = [
                *payload.errors,
                StepError(step=Step.POST_DEST.value, error=_failed("adoption", outcome)),
            ]
        source = payload.source_place
        return await moves.ask(
            run, Step.POST_SOURCE, source.host, node=source.node, payload=payload
        )

    async def post_source(self, run: Run) -> str | None:
        send = self._send(run, "post_live_migration", migrate_data=_payload(run).migrate_data)
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step
        if not outcome.ok:
            payload = _payload(run)
            source = payload.source_place
            if _tries(run, Step.POST_SOURCE) < CLEANUP_TRIES:
                return await moves.ask(run, Step.POST_SOURCE, source.host, node=source.node)
            payload.errors = [
                *payload.errors,
                StepError(step=Step.POST_SOURCE.value, error=_failed("clean-up", outcome)),
            ]
            run.keep(payload)
        await self._end_moved(run)
        return None

    async def _end_moved(self, run: Run, status: TaskStatus | None = None) -> None:
        """End with the instance on the destination: the migration's claim dropped.

        Errors of the clean-up steps leave the migration ``error`` with a
        fault; a destination that never adopted the guest leaves the
        instance ``error`` there (as Nova does).
        """
        payload = _payload(run)
        errors = payload.errors
        adopted = all(e.step != Step.POST_DEST for e in errors)
        vm_state = payload.vm_state if adopted else VMState.ERROR
        message = "; ".join(e.error for e in errors)

        async def history(conn: Connection) -> None:
            if errors:
                await run.fault(conn, message)
            await run.event(conn, EVENT, ok=not errors, details=message or None)
            await run.finish_action(conn, ok=not errors)

        writes = chain(
            moves.drop_source_claim(payload.migration_uuid or ""),
            _end_migration(run, _M.ERROR if errors else _M.COMPLETED, _M.ERROR),
            self._instance(run, {"vm_state": vm_state, "task_state": None, "progress": 100}),
            history,
        )
        final = status or (TaskStatus.FAILED if errors else TaskStatus.SUCCEEDED)
        await run.finish(final, last_error=message or None, writes=writes, payload=payload)
        if errors:
            await notify_error(run, ERROR_NOTIFICATION, message)
        LOG.info("%r: live migration done (%s)", run, message or "completed")

    # -- rolling back --------------------------------------------------------------------

    async def _to_rollback(
        self,
        run: Run,
        message: str,
        *,
        cancelled: bool = False,
        expired: bool = False,
        writes: Writes | None = None,
    ) -> str:
        """Commit ``rollback_dest``: asking the destination to undo its preparation,
        if it was asked to prepare."""
        payload = _payload(run)
        payload.rollback = LiveRollback(
            error=message, cancelled=cancelled, expired=expired, since=run.step
        )
        LOG.info("%r: rolling back: %s", run, message)
        if payload.prepared:
            dest = payload.dest_place
            return await moves.ask(
                run, Step.ROLLBACK_DEST, dest.host, node=dest.node, payload=payload, writes=writes
            )
        payload.awaiting = payload.outcome = None
        return await run.commit(Step.ROLLBACK_DEST, payload=payload, writes=writes)

    async def rollback_dest(self, run: Run) -> str | None:
        awaited = run.awaiting
        if awaited is not None and awaited.step == Step.ROLLBACK_DEST:
            send = self._send(
                run,
                "rollback_live_migration_at_destination",
                migrate_data=_payload(run).migrate_data or {},
            )
            outcome = await moves.answer(run, send)
            if outcome is None:
                return run.step
            if not outcome.ok:
                if _tries(run, Step.ROLLBACK_DEST) < CLEANUP_TRIES:
                    dest = _payload(run).dest_place
                    return await moves.ask(run, Step.ROLLBACK_DEST, dest.host, node=dest.node)
                # The instance runs on the source either way: end, and say what is left.
                self._note_leftover(run, _failed("clean-up", outcome))
        await self._end_rolled_back(run)
        return None

    def _note_leftover(self, run: Run, text: str) -> None:
        payload = _payload(run)
        rollback = payload.rollback or LiveRollback(error=text)
        rollback.details = "; ".join(filter(None, [rollback.details, text]))
        payload.rollback = rollback
        run.keep(payload)

    async def _give_up(self, run: Run, message: str, *, cancelled: bool = False) -> None:
        """End at ``schedule`` (nothing asked of any host yet)."""
        payload = _payload(run)
        payload.rollback = LiveRollback(error=message, cancelled=cancelled, since=run.step)
        run.keep(payload)
        await self._end_rolled_back(run)

    async def _end_rolled_back(self, run: Run) -> None:
        """End with the instance on the source as it was and the claims back there."""
        payload = _payload(run)
        rollback = payload.rollback
        if rollback is None:
            raise exception.Invalid(reason=f"{run!r} ends rolled back without a reason")
        cancelled, message = rollback.cancelled, rollback.error
        if rollback.expired:
            status = TaskStatus.ROLLED_BACK
        else:
            status = TaskStatus.CANCELLED if cancelled else TaskStatus.FAILED
        details = "\n".join(filter(None, [message, rollback.details]))

        async def history(conn: Connection) -> None:
            await run.fault(conn, message, details=details)
            await run.event(conn, EVENT, ok=False, details=details)
            await run.finish_action(conn, ok=False)

        writes = chain(
            moves.claims_back_to_source(run.instance_uuid or "", payload.migration_uuid or ""),
            _end_migration(run, _M.CANCELLED if cancelled else _M.FAILED, _M.FAILED),
            self._instance(
                run,
                {
                    "vm_state": payload.vm_state or VMState.ACTIVE,
                    "task_state": None,
                    "progress": None,
                },
            ),
            history,
        )
        await run.finish(status, last_error=message, writes=writes, payload=payload)
        LOG.info("%r: live migration %s: %s", run, status, message)
        if cancelled:
            await _notify_info(run, ABORT_NOTIFICATION)
        else:
            await notify_error(run, ERROR_NOTIFICATION, message)

    # -- the deadline ----------------------------------------------------------------------

    async def expire(self, run: Run) -> None:
        message = "The live migration did not finish before its deadline"
        step = run.step
        if _payload(run).migration_uuid is None:
            row = await load_instance(run)
            if row is None:
                await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
                return
            self._record_basics(run, row, await moves.load_migration(run))
        if step in (Step.POST_DEST, Step.POST_SOURCE):
            # The guest runs on the destination: finish the move, do not undo it.
            payload = _payload(run)
            payload.errors = [*payload.errors, StepError(step=step, error=message)]
            if step == Step.POST_DEST:
                await run.commit(Step.POST_SOURCE, payload=payload)
            else:
                run.keep(payload)
            await self._end_moved(run, TaskStatus.FAILED)
            return
        if step == Step.SCHEDULE:
            payload = _payload(run)
            payload.rollback = LiveRollback(error=message, expired=True)
            run.keep(payload)
            await self._end_rolled_back(run)
            return
        if step == Step.ROLLBACK_DEST:
            # The rollback's own time ran out as well.
            self._note_leftover(run, "the destination did not confirm its clean-up in time")
            await self._end_rolled_back(run)
            return
        if step == Step.LIVE_MIGRATE:
            await self._abort_source(run)
        # Time of its own for the rollback to reach the destination, and on
        # with it now (drive() stops after an expiry).
        window = self.engine.compute_step_timeout * CLEANUP_TRIES
        await self._to_rollback(
            run, message, expired=True, writes=moves.extend_deadline(run, window)
        )
        await self.drive(run)

    # -- pieces ----------------------------------------------------------------------------

    async def _image(self, run: Run) -> dict[str, Any]:
        """The image the instance was built from, as its build recorded it."""
        assert run.instance_uuid is not None
        async with self.engine.db.reader() as conn:
            original = await _original_request(conn, run.instance_uuid)
        return dict(original.get("image") or {})

    def _send(self, run: Run, method: str, **kwargs: Any) -> Callable[[Awaited], Awaitable[None]]:
        """The awaited step's cast: ``ComputeAPI.<method>`` to its host with the instance."""

        async def send(awaited: Awaited) -> None:
            row = await self._fetch(run)
            if row is None:
                raise exception.InstanceNotFound(instance_id=run.instance_uuid)
            await getattr(self.engine.compute, method)(
                run.ctxt,
                awaited.host,
                instance_object(row),
                awaited.key(run.id),
                **kwargs,
            )

        return send

    async def _cancelling(self, run: Run) -> bool:
        """Whether the migration is ``cancelling`` as the step starts: as the commit
        that started it saw it, if this run made that commit, else read now."""
        seen = run.cache.pop(_SEEN, None)
        if seen is not None and seen[0] == run.step:
            return bool(seen[1])
        row = await moves.load_migration(run)
        run.cache[_MIGRATION] = row
        return bool(row["status"] == _M.CANCELLING)

    async def _commit_watching(
        self,
        run: Run,
        step: str,
        commit: Callable[[Writes], Awaitable[str]],
        writes: Writes | None = None,
        migration_values: dict[str, Any] | None = None,
        *,
        refuse: bool = False,
    ) -> str:
        """``commit(writes + a look at the migration's status)``, the commit that starts ``step``.

        The step then knows whether the migration was ``cancelling`` at that
        commit (:meth:`_cancelling`); with ``refuse``, a ``cancelling``
        migration stops the commit instead (_Cancelled, nothing written).
        ``migration_values`` are what ``writes`` set on the migration, for
        the run's copy of it.
        """
        ident = moves.migration_id(run)

        async def look(conn: Connection) -> None:
            row = await migrations_api.get_by_id(conn, ident)
            cancelling = row["status"] == _M.CANCELLING
            if cancelling and refuse:
                raise _Cancelled()
            run.cache[_MIGRATION] = row
            run.cache[_SEEN] = (step, cancelling)

        run.cache.pop(_SEEN, None)
        not_cancelling = migrations_api.not_in_write(ident, _M.CANCELLING, missed=look)
        committed = await commit(chain(writes, not_cancelling))
        if _SEEN not in run.cache:
            # Committed and look() never ran: the read found it not
            # cancelling (grouped or not), and every write happened as asked.
            run.cache[_SEEN] = (step, False)
            known = run.cache.get(_MIGRATION)
            if known is not None and migration_values:
                known.update(migration_values)
        return committed

    async def _fetch(
        self, run: Run, *, migration: bool = False, original: bool = False
    ) -> dict[str, Any] | None:
        """The instance row as this run knows it (None once deleted).

        Whatever of it, the migration and the build's request the run does
        not have yet is read, in one transaction.
        """
        cache = run.cache
        if _INSTANCE not in cache:
            claimed = cache.pop(CLAIMED_INSTANCE, None)
            if claimed is not None:
                cache[_INSTANCE] = dict(claimed)
        need = [
            key
            for key, wanted in ((_INSTANCE, True), (_MIGRATION, migration), (_ORIGINAL, original))
            if wanted and key not in cache
        ]
        if need:
            assert run.instance_uuid is not None
            async with self.engine.db.reader() as conn:
                if _INSTANCE in need:
                    try:
                        cache[_INSTANCE] = await instances_api.get_by_uuid(conn, run.instance_uuid)
                    except exception.InstanceNotFound:
                        return None
                if _MIGRATION in need:
                    cache[_MIGRATION] = await migrations_api.get_by_id(
                        conn, moves.migration_id(run)
                    )
                if _ORIGINAL in need:
                    cache[_ORIGINAL] = await _original_request(conn, run.instance_uuid)
        row: dict[str, Any] = cache[_INSTANCE]
        return row

    async def _migration(self, run: Run) -> dict[str, Any]:
        """The migration row as this run knows it."""
        row = run.cache.get(_MIGRATION)
        if row is None:
            row = run.cache[_MIGRATION] = await moves.load_migration(run)
        return dict(row)

    @staticmethod
    def _cancel_message(run: Run) -> str:
        dest = _payload(run).dest
        return f"The live migration to {dest.host if dest else 'another host'} was cancelled"

    def _instance(self, run: Run, values: dict[str, Any]) -> Writes:
        """Instance fields, only while it is still migrating (for a commit's transaction).

        Someone else moved it on (an operator's reset): the rest of the
        commit still goes through, with a warning. (In a grouped commit the
        update is required, so that case runs this write the ordinary way.)
        """

        async def missed(conn: Connection) -> None:
            LOG.warning("%r: instance no longer migrating; %s not written", run, sorted(values))
            run.cache.pop(_INSTANCE, None)  # read it again if needed

        assert run.instance_uuid is not None
        return instances_api.update_write(
            run.instance_uuid, values, missed=missed, expected_task_state=[TaskState.MIGRATING]
        )

    async def _abort_source(self, run: Run) -> None:
        """Ask the source to stop the memory copy (best effort: a cast)."""
        try:
            row = await load_instance(run)
            if row is None:
                return
            await self.engine.compute.live_migration_abort(
                run.ctxt,
                _payload(run).source_place.host,
                instance_object(row),
                moves.migration_id(run),
            )
        except Exception as exc:
            LOG.warning("%r: could not ask the source to abort: %s", run, exc)


async def _notify_info(run: Run, event_type: str) -> None:
    """An info notification about the task's instance (never fails the task)."""
    try:
        from nubes.notifications.objects import InstanceActionPayload

        row = await load_instance(run)
        if row is None:
            return
        payload = InstanceActionPayload.from_instance_and_fault(instance_object(row), None)
        await run.engine.notifier.info(run.ctxt, event_type, payload)
    except Exception as exc:
        LOG.warning("%r: could not notify %s: %s", run, event_type, exc)
