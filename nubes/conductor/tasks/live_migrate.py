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
    Destination check (``dest_check_data``), source check (``migrate_data``,
    and the personality files on the guest's config drive: they live
    nowhere else, and the destination writes its drive anew), the
    destination prepares (``migrate_data`` updated; the files written on
    its drive and dropped from the task). Then the migration goes ``running``.
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

The steps are here; what a step reads of the instance and the migration
when it starts (and the commit that refuses a ``cancelling`` migration) is
in :mod:`~.live_migrate_view`, and the two ways the task ends (moved, or
rolled back) in :mod:`~.live_migrate_end`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nubes import exception, grants
from nubes.conductor.tasks import moves
from nubes.conductor.tasks.base import (
    Run,
    StepDef,
    Task,
    task_kind,
)
from nubes.conductor.tasks.build import request_spec
from nubes.conductor.tasks.helpers import chain, instance_object, load_instance
from nubes.conductor.tasks.live_migrate_end import (
    CLEANUP_TRIES,
    end_moved,
    end_rolled_back,
    failed,
    give_up,
    note_leftover,
    to_rollback,
)
from nubes.conductor.tasks.live_migrate_view import (
    Cancelled,
    cancel_message,
    commit_unless_cancelling,
    fetch,
    instance_write,
    live_payload,
    tries,
)
from nubes.conductor.tasks.payloads import (
    Awaited,
    LiveMigratePayload,
    LiveRollback,
    Place,
    SchedulingRequest,
    StepError,
)
from nubes.conductor.tasks.states import STEPS, Step, TaskKind
from nubes.db.api.tasks import TaskStatus
from nubes.network import ports as network_ports
from nubes.objects.request_spec import RequestSpec
from nubes.objects.states import (
    MigrationStatus,
    MigrationType,
    PowerState,
    TaskState,
    VMState,
)

LOG = logging.getLogger(__name__)

_M = MigrationStatus

_LIVE = MigrationType.LIVE_MIGRATION.value


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
        first = live_payload(run).source is None
        known = await fetch(run, migration=True, original=not first)
        row, migration = known.instance, known.migration
        if row is None:
            await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
            return None
        assert migration is not None
        if first:
            if not row["host"] or row["task_state"] != TaskState.MIGRATING:
                self._record_basics(run, row, migration)
                await give_up(
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
            return await run.commit(Step.SCHEDULE, payload=payload, writes=writes)
        if known.cancelling:
            await give_up(run, cancel_message(run), cancelled=True)
            return None
        payload = live_payload(run)
        source = payload.source_place.host
        spec = destination_spec(row, known.original or {}, source=source, host=payload.host)
        try:
            chosen = await self.engine.scheduler.select_destinations(
                run.ctxt, spec, [row["uuid"]], False
            )
        except (exception.NoValidHost, exception.InvalidSchedulerHint) as exc:
            await give_up(run, str(exc))
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
        return await moves.ask(
            run, Step.CHECK_DEST, host, node=node, payload=payload, writes=writes
        )

    @staticmethod
    def _record_basics(
        run: Run, row: dict[str, Any], migration: dict[str, Any]
    ) -> LiveMigratePayload:
        """What every end needs, in the payload: source, vm_state before, migration uuid."""
        payload = live_payload(run)
        payload.source = Place(host=row["host"], node=row["node"])
        payload.vm_state = row["vm_state"]
        payload.migration_uuid = migration["uuid"]
        run.keep(payload)
        return payload

    # -- checks and preparation ----------------------------------------------------------

    async def check_dest(self, run: Run) -> str | None:
        known = await fetch(run, migration=True)
        if known.cancelling:
            return await to_rollback(run, cancel_message(run), cancelled=True)
        send = self._send(
            run,
            "check_can_live_migrate_destination",
            known.instance,
            block_migration=bool(live_payload(run).block),
        )
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step  # the deadline passed: drive() expires the task
        if not outcome.ok:
            return await to_rollback(run, failed("destination check", outcome))
        payload = live_payload(run)
        payload.dest_check_data = dict(outcome.details.get("dest_check_data") or {})
        source = payload.source_place
        return await moves.ask(
            run, Step.CHECK_SOURCE, source.host, node=source.node, payload=payload
        )

    async def check_source(self, run: Run) -> str | None:
        known = await fetch(run, migration=True)
        if known.cancelling:
            return await to_rollback(run, cancel_message(run), cancelled=True)
        send = self._send(
            run,
            "check_can_live_migrate_source",
            known.instance,
            dest_check_data=live_payload(run).dest_check_data or {},
        )
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step
        if not outcome.ok:
            return await to_rollback(run, failed("source check", outcome))
        payload = live_payload(run)
        # From here on the destination may hold something to undo.
        payload.migrate_data = dict(outcome.details.get("migrate_data") or {})
        # The personality files on the source's drive (conductor 1.8), for the
        # destination's: kept only until it has prepared (or the task ends).
        payload.injected_files = outcome.injected_files
        payload.prepared = True
        dest = payload.dest_place
        return await moves.ask(run, Step.PRE_LIVE, dest.host, node=dest.node, payload=payload)

    async def pre_live(self, run: Run) -> str | None:
        known = await fetch(run, migration=True, original=True)
        if known.cancelling:
            return await to_rollback(run, cancel_message(run), cancelled=True)
        # The destination makes the guest's disk over the instance's image: it
        # gets grants to fetch that image (and its kernel and ramdisk), as a
        # build does, sent only, never kept in the task.
        image = dict((known.original or {}).get("image") or {})
        dest_host = live_payload(run).dest_place.host
        granted = grants.attach(
            image, dest_host, self.engine.conf.image_grant_secret, self.engine.conf.image_grant_ttl
        )
        send = self._send(
            run,
            "pre_live_migration",
            known.instance,
            migrate_data={**(live_payload(run).migrate_data or {}), "image": granted},
            injected_files=live_payload(run).injected_files,
        )
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step
        if not outcome.ok:
            return await to_rollback(run, failed("preparation", outcome))
        payload = live_payload(run)
        # On the destination's drive now: no later step needs them.
        payload.injected_files = None
        returned = outcome.details.get("migrate_data") or payload.migrate_data or {}
        payload.migrate_data = {k: v for k, v in returned.items() if k != "image"}
        source = payload.source_place
        running = {"status": _M.RUNNING}
        before = run.payload
        try:
            return await commit_unless_cancelling(
                run,
                lambda w: moves.ask(
                    run,
                    Step.LIVE_MIGRATE,
                    source.host,
                    node=source.node,
                    payload=payload,
                    writes=w,
                ),
                moves.set_migration(run, running, only_from=(_M.PREPARING,), migration_type=_LIVE),
            )
        except Cancelled:
            # Cancelled while the destination prepared: the copy never starts.
            run.payload = before
            return await to_rollback(run, cancel_message(run), cancelled=True)

    # -- the memory copy ------------------------------------------------------------------

    async def live_migrate(self, run: Run) -> str | None:
        # A migration found cancelling here is still sent: the source reads
        # its status before it starts and answers "aborted" (and a copy a
        # previous owner of this task started must be stopped, not forgotten).
        known = await fetch(run, migration=True)
        assert known.migration is not None
        migration = moves.migration_object(dict(known.migration))
        payload = live_payload(run)
        dest = payload.dest_place
        send = self._send(
            run,
            "live_migration",
            known.instance,
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
                return await to_rollback(run, cancel_message(run), cancelled=True)
            return await to_rollback(run, failed("live migration", outcome))
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
        return await moves.ask(
            run,
            Step.POST_DEST,
            dest.host,
            node=dest.node,
            payload=payload,
            writes=chain(instance_write(run, placed), bind),
        )

    # -- finishing forwards ----------------------------------------------------------------

    async def post_dest(self, run: Run) -> str | None:
        send = self._send(
            run, "post_live_migration_at_destination", migrate_data=live_payload(run).migrate_data
        )
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step
        payload = live_payload(run)
        dest = payload.dest_place
        if not outcome.ok:
            if tries(run, Step.POST_DEST) < CLEANUP_TRIES:
                return await moves.ask(run, Step.POST_DEST, dest.host, node=dest.node)
            payload.errors = [
                *payload.errors,
                StepError(step=Step.POST_DEST.value, error=failed("adoption", outcome)),
            ]
        source = payload.source_place
        return await moves.ask(
            run, Step.POST_SOURCE, source.host, node=source.node, payload=payload
        )

    async def post_source(self, run: Run) -> str | None:
        send = self._send(run, "post_live_migration", migrate_data=live_payload(run).migrate_data)
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step
        if not outcome.ok:
            payload = live_payload(run)
            source = payload.source_place
            if tries(run, Step.POST_SOURCE) < CLEANUP_TRIES:
                return await moves.ask(run, Step.POST_SOURCE, source.host, node=source.node)
            payload.errors = [
                *payload.errors,
                StepError(step=Step.POST_SOURCE.value, error=failed("clean-up", outcome)),
            ]
            run.keep(payload)
        await end_moved(run)
        return None

    async def rollback_dest(self, run: Run) -> str | None:
        awaited = run.awaiting
        if awaited is not None and awaited.step == Step.ROLLBACK_DEST:
            send = self._send(
                run,
                "rollback_live_migration_at_destination",
                migrate_data=live_payload(run).migrate_data or {},
            )
            outcome = await moves.answer(run, send)
            if outcome is None:
                return run.step
            if not outcome.ok:
                if tries(run, Step.ROLLBACK_DEST) < CLEANUP_TRIES:
                    dest = live_payload(run).dest_place
                    return await moves.ask(run, Step.ROLLBACK_DEST, dest.host, node=dest.node)
                # The instance runs on the source either way: end, and say what is left.
                note_leftover(run, failed("clean-up", outcome))
        await end_rolled_back(run)
        return None

    # -- the deadline ----------------------------------------------------------------------

    async def expire(self, run: Run) -> None:
        message = "The live migration did not finish before its deadline"
        step = run.step
        if live_payload(run).migration_uuid is None:
            row = await load_instance(run)
            if row is None:
                await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
                return
            self._record_basics(run, row, await moves.load_migration(run))
        if step in (Step.POST_DEST, Step.POST_SOURCE):
            # The guest runs on the destination: finish the move, do not undo it.
            payload = live_payload(run)
            payload.errors = [*payload.errors, StepError(step=step, error=message)]
            if step == Step.POST_DEST:
                await run.commit(Step.POST_SOURCE, payload=payload)
            else:
                run.keep(payload)
            await end_moved(run, TaskStatus.FAILED)
            return
        if step == Step.SCHEDULE:
            payload = live_payload(run)
            payload.rollback = LiveRollback(error=message, expired=True)
            run.keep(payload)
            await end_rolled_back(run)
            return
        if step == Step.ROLLBACK_DEST:
            # The rollback's own time ran out as well.
            note_leftover(run, "the destination did not confirm its clean-up in time")
            await end_rolled_back(run)
            return
        if step == Step.LIVE_MIGRATE:
            await self._abort_source(run)
        # Time of its own for the rollback to reach the destination, and on
        # with it now (drive() stops after an expiry).
        window = self.engine.compute_step_timeout * CLEANUP_TRIES
        await to_rollback(run, message, expired=True, writes=moves.extend_deadline(run, window))
        await self.drive(run)

    # -- pieces ----------------------------------------------------------------------------

    def _send(
        self, run: Run, method: str, instance: dict[str, Any] | None = None, **kwargs: Any
    ) -> Callable[[Awaited], Awaitable[None]]:
        """The awaited step's cast: ``ComputeAPI.<method>`` to its host with the
        instance (``instance``, the row the step read when it started, else read
        when sent)."""

        async def send(awaited: Awaited) -> None:
            row = instance or (await fetch(run)).instance
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

    async def _abort_source(self, run: Run) -> None:
        """Ask the source to stop the memory copy (best effort: a cast)."""
        try:
            row = await load_instance(run)
            if row is None:
                return
            await self.engine.compute.live_migration_abort(
                run.ctxt,
                live_payload(run).source_place.host,
                instance_object(row),
                moves.migration_id(run),
            )
        except Exception as exc:
            LOG.warning("%r: could not ask the source to abort: %s", run, exc)
