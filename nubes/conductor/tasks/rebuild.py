"""Rebuild in place and evacuation: the guest created again from an image.

Both are conductor tasks (``docs/moves.md``, ``docs/tasks.md``); the host
does driver work only (``ComputeAPI.rebuild_instance``) and the conductor
writes every state, in the commit of the step that follows from it.

:class:`RebuildTask` — one step, ``rebuild``: commit the instance
``rebuild_spawning`` with the try for its host, send the rebuild
(``evacuate=False``), wait. Success: ``active`` (``stopped`` when it was
off), task None, the power state and ``launched_at``. Failure: ``error``
with a fault, as in Nova, since the old guest is gone by then.

:class:`EvacuateTask` — its host is down; the instance is rebuilt elsewhere:

``schedule``
    Hand the source's claim to the migration (its own commit, so the
    scheduler claims a destination for the instance afresh and a repeat
    gets the one it holds), then select a destination ignoring the source
    (the named host, if any, is checked by the filters, not forced). The
    commit asking for ``rebuild`` also places the instance on the
    destination (``rebuild_spawning``) and records the destination on the
    migration, now ``pre-migrating``. No host: roll back.
``rebuild``
    The destination spawns the guest (``evacuate=True``; a guest already
    there from an earlier try counts as done). Success ends the task: the
    migration's claim is dropped, the migration ``done`` (the source removes
    the remains when it comes back), the instance ``active``/``stopped``.
``rollback_dest``
    After a failure or a missing report: the destination removes whatever
    guest it made (``rollback_evacuation_at_destination``); then the task
    ends rolled back.

Rolling back ends with the instance on its source again (host, node, its
previous vm_state, task None), the claims back where it was, the migration
``failed``, a fault, a failed ``conductor_rebuild_server`` event and an
``instance.evacuate.error`` notification. Past the deadline the same end is
written at once, with the destination asked (without waiting) to remove
its guest.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from nubes import exception, grants
from nubes.conductor.tasks import moves
from nubes.conductor.tasks.base import Run, StepDef, Task, Writes, run_writes, task_kind
from nubes.conductor.tasks.build import request_spec
from nubes.conductor.tasks.helpers import (
    chain,
    instance_object,
    load_instance,
    notify_error,
    set_instance,
)
from nubes.conductor.tasks.payloads import Awaited, MovePayload, Place, SchedulingRequest
from nubes.conductor.tasks.states import Step, TaskKind
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection
from nubes.db.types import utcnow
from nubes.network import ports as network_ports
from nubes.objects.instance import Instance
from nubes.objects.states import (
    REBUILD_TASK_STATES,
    MigrationStatus,
    MigrationType,
    PowerState,
    TaskState,
    VMState,
    as_state,
    check_transition,
)

if TYPE_CHECKING:
    from nubes.conductor.tasks.engine import TaskEngine

LOG = logging.getLogger(__name__)

#: The conductor's event of either operation (Nova's name).
EVENT = "conductor_rebuild_server"
#: What a rollback accepts to find: ours, or none (an admin reset the state).
_ROLLBACK_TASK_STATES: tuple[TaskState | None, ...] = (*REBUILD_TASK_STATES, None)


def rebuilt(payload: MovePayload) -> dict[str, Any]:
    """The instance's fields once its guest was rebuilt: as it was before, running or off."""
    on = payload.powered
    return {
        "vm_state": VMState.ACTIVE if on else VMState.STOPPED,
        "task_state": None,
        "power_state": PowerState.RUNNING if on else PowerState.SHUTDOWN,
        "launched_at": utcnow(),
    }


def _spawning(row: dict[str, Any]) -> None:
    """Refuse to start rebuilding an instance the API did not hand to us."""
    vm = VMState(row["vm_state"])
    check_transition(
        as_state(row["vm_state"], row["task_state"]), (vm, TaskState.REBUILD_SPAWNING), row["uuid"]
    )


def _history(
    run: Run, *, ok: bool, message: str | None = None, details: str | None = None
) -> Writes:
    async def write(conn: Connection) -> None:
        if not ok and message is not None:
            await run.fault(conn, message, details=details)
        await run.event(conn, EVENT, ok=ok, details=None if ok else (details or message))
        await run.finish_action(conn, ok=ok)

    return write


def _lenient(write: Writes) -> Writes:
    """An instance write that gives way if someone else moved the instance on."""

    async def lenient(conn: Connection) -> None:
        try:
            await run_writes(conn, write)
        except exception.InstanceUpdateConflict as exc:
            LOG.warning("instance changed under its rebuild task: %s", exc)

    return lenient


def _instance_for(run: Run, row: dict[str, Any] | None) -> Instance:
    if row is not None:
        return instance_object(row)
    # Gone meanwhile (deleted): the host only needs the uuid to remove a guest.
    return Instance(uuid=run.instance_uuid)


async def _send_rebuild(
    engine: TaskEngine,
    run: Run,
    awaited: Awaited,
    *,
    evacuate: bool,
    row: dict[str, Any] | None = None,
) -> None:
    """Ask the awaited host to rebuild the guest (on its own host, or evacuated to it).

    ``row``: the instance as the commit that asked for the rebuild left it,
    when this call made that commit; otherwise it is read.
    """
    row = row or await load_instance(run)
    if row is None:
        raise exception.InstanceNotFound(instance_id=run.instance_uuid)
    await engine.compute.rebuild_instance(
        run.ctxt,
        awaited.host,
        instance_object(row),
        awaited.key(run.id),
        # Grants for this host to fetch the image's bytes (need-to-know).
        image=grants.attach(
            run.typed(MovePayload).image_meta,
            awaited.host,
            engine.conf.image_grant_secret,
            engine.conf.image_grant_ttl,
        ),
        evacuate=evacuate,
        power_on=run.typed(MovePayload).powered,
        injected_files=run.typed(MovePayload).injected_files,
    )


@task_kind
class RebuildTask(Task):
    kind = TaskKind.REBUILD

    def step_defs(self) -> list[StepDef]:
        return [StepDef(Step.REBUILD, self.rebuild)]

    async def rebuild(self, run: Run) -> str | None:
        row: dict[str, Any] | None = None
        if not run.awaiting:
            row = await self._ask(run)
            if row is None:
                return None
            # On to the report with the row as committed (a resumed run reads it anew).
        send = partial(_send_rebuild, self.engine, run, evacuate=False, row=row)
        outcome = await moves.answer(run, send)
        if outcome is None:
            return run.step  # the deadline passed: drive() expires the task
        if outcome.ok:
            writes = chain(
                _lenient(
                    set_instance(
                        run,
                        rebuilt(run.typed(MovePayload)),
                        expected_task_state=[TaskState.REBUILD_SPAWNING],
                    )
                ),
                _history(run, ok=True),
            )
            await run.finish(TaskStatus.SUCCEEDED, writes=writes)
            return None
        await self.fail(
            run, f"Rebuild on {outcome.host} failed: {outcome.error}", guest_touched=True
        )
        return None

    async def _ask(self, run: Run) -> dict[str, Any] | None:
        """Commit the ask for the rebuild; the instance row as committed (None: the task ended)."""
        row = await load_instance(run)
        if row is None:
            await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
            return None
        if not row["host"]:
            await self.fail(run, "The instance is not on any host", guest_touched=False)
            return None
        try:
            _spawning(row)
        except exception.InvalidInstanceTransition as exc:
            await self.fail(run, str(exc), guest_touched=False)
            return None
        spawning = {"task_state": TaskState.REBUILD_SPAWNING}
        writes = set_instance(run, spawning, expected_task_state=REBUILD_TASK_STATES)
        await moves.ask(run, Step.REBUILD, row["host"], node=row["node"], writes=writes)
        return {**row, **spawning}

    async def fail(
        self,
        run: Run,
        message: str,
        *,
        guest_touched: bool,
        status: TaskStatus = TaskStatus.FAILED,
    ) -> None:
        """``error`` with a fault once the host was asked (its old guest may be
        gone); before that, only the task_state is dropped."""
        values: dict[str, Any] = {"task_state": None}
        if guest_touched:
            values["vm_state"] = VMState.ERROR
        writes = chain(
            _lenient(set_instance(run, values, expected_task_state=REBUILD_TASK_STATES)),
            _history(run, ok=False, message=message),
        )
        await run.finish(status, last_error=message, writes=writes)
        LOG.info("%r: rebuild failed: %s", run, message)
        await notify_error(run, "instance.rebuild.error", message)

    async def expire(self, run: Run) -> None:
        await self.fail(
            run,
            "The rebuild did not finish before its deadline",
            guest_touched=bool(run.awaiting),
        )


@task_kind
class EvacuateTask(Task):
    kind = TaskKind.EVACUATE

    def step_defs(self) -> list[StepDef]:
        return [
            StepDef(Step.SCHEDULE, self.schedule),
            StepDef(Step.REBUILD, self.rebuild),
            StepDef(Step.ROLLBACK_DEST, self.rollback_dest),
        ]

    # -- schedule --------------------------------------------------------------------------

    async def schedule(self, run: Run) -> str | None:
        row = await load_instance(run)
        if row is None:
            await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
            return None
        uuid = row["uuid"]
        try:
            migration = await moves.load_migration(run)
            _spawning(row)
        except (exception.MigrationNotFound, exception.InvalidInstanceTransition) as exc:
            await self.roll_back(run, f"Cannot evacuate {uuid}: {exc}")
            return None
        if (
            migration["migration_type"] != MigrationType.EVACUATION
            or migration["instance_uuid"] != uuid
        ):
            await self.roll_back(
                run, f"Migration {migration['id']} is not this evacuation", own_migration=False
            )
            return None
        payload = run.typed(MovePayload)
        if payload.source is None:
            if migration["status"] != MigrationStatus.ACCEPTED:
                await self.roll_back(run, f"The evacuation is {migration['status']} already")
                return None
            # The claim first, in its own commit: the scheduler must then
            # find the instance holding nothing, and claim the destination.
            payload.migration_uuid = migration["uuid"]
            payload.source = Place(
                host=migration["source_compute"] or row["host"],
                node=migration["source_node"] or row["node"],
            )
            await run.commit(
                Step.SCHEDULE,
                payload=payload,
                writes=moves.hand_source_claim_to_migration(uuid, migration["uuid"]),
            )
        source = payload.source_place.host
        # As Nova, an evacuation keeps the build's hints and the server group's policy.
        async with self.engine.db.reader() as conn:
            original = await moves.scheduling_request(conn, uuid, row["image_ref"])
        spec = request_spec(row, SchedulingRequest.of({**original, "image": payload.image_meta}))
        spec.ignore_hosts = [source]
        if payload.host:
            spec.requested_destination = payload.host
        try:
            selections = await self.engine.scheduler.select_destinations(
                run.ctxt, spec, [uuid], False
            )
            chosen = selections[0][0]
        except (exception.NoValidHost, exception.InvalidSchedulerHint) as exc:
            await self.roll_back(run, f"No host to evacuate to: {exc}")
            return None
        host, node = chosen.host, chosen.nodename
        if host == source:
            # ignore_hosts makes this impossible; never rebuild on the down host.
            await self.roll_back(run, f"The scheduler chose the source host {source}")
            return None
        payload.dest = Place(host=host, node=node)
        writes = chain(
            moves.set_migration(
                run,
                {
                    "status": MigrationStatus.PRE_MIGRATING,
                    "dest_compute": host,
                    "dest_node": node,
                },
                only_from=[MigrationStatus.ACCEPTED],
            ),
            set_instance(
                run,
                {"host": host, "node": node, "task_state": TaskState.REBUILD_SPAWNING},
                expected_task_state=REBUILD_TASK_STATES,
            ),
            # NETWORKING (issue 14): the ports bound to the destination with the
            # instance; a rollback binds them back to the source.
            network_ports.bind_writes(uuid, host),
        )
        LOG.info("%r: evacuating %s from %s to %s", run, uuid, source, host)
        return await moves.ask(run, Step.REBUILD, host, node=node, payload=payload, writes=writes)

    # -- rebuild ---------------------------------------------------------------------------

    async def rebuild(self, run: Run) -> str | None:
        outcome = await moves.answer(run, partial(_send_rebuild, self.engine, run, evacuate=True))
        if outcome is None:
            return run.step
        if outcome.ok:
            await self.succeed(run)
            return None
        payload = run.typed(MovePayload)
        dest = payload.dest_place
        error = f"Evacuation to {outcome.host} failed: {outcome.error}"
        LOG.info("%r: %s; rolling back", run, error)
        payload.error = error
        return await moves.ask(run, Step.ROLLBACK_DEST, dest.host, node=dest.node, payload=payload)

    async def succeed(self, run: Run) -> None:
        writes = chain(
            set_instance(
                run,
                rebuilt(run.typed(MovePayload)),
                expected_task_state=[TaskState.REBUILD_SPAWNING],
            ),
            moves.drop_source_claim(run.typed(MovePayload).migration_uuid or ""),
            moves.set_migration(
                run, {"status": MigrationStatus.DONE}, only_from=[MigrationStatus.PRE_MIGRATING]
            ),
            _history(run, ok=True),
        )
        await run.finish(TaskStatus.SUCCEEDED, writes=writes)

    # -- rolling back ------------------------------------------------------------------------

    async def rollback_dest(self, run: Run) -> str | None:
        outcome = await moves.answer(run, lambda awaited: self._send_rollback(run, awaited))
        if outcome is None:
            return run.step
        error = run.typed(MovePayload).error or "The evacuation failed"
        details = error
        if not outcome.ok:
            # The instance goes back to its source all the same; the guest
            # left there is reaped when that host next starts.
            details += f"\n{outcome.host} could not remove its guest: {outcome.error}"
        await self.roll_back(run, error, details=details)
        return None

    async def _send_rollback(self, run: Run, awaited: Awaited) -> None:
        await self.engine.compute.rollback_evacuation_at_destination(
            run.ctxt,
            awaited.host,
            _instance_for(run, await load_instance(run)),
            awaited.key(run.id),
        )

    async def roll_back(
        self,
        run: Run,
        message: str,
        *,
        details: str | None = None,
        status: TaskStatus = TaskStatus.FAILED,
        own_migration: bool = True,
    ) -> None:
        """End with the instance on its source as before, claims there, migration failed."""
        payload = run.typed(MovePayload)
        writes: list[Writes] = []
        source = payload.source
        if source is not None:
            values: dict[str, Any] = {"host": source.host, "node": source.node, "task_state": None}
            writes.append(
                moves.claims_back_to_source(str(run.instance_uuid), payload.migration_uuid or "")
            )
            writes.append(set_instance(run, values, expected_task_state=_ROLLBACK_TASK_STATES))
            writes.append(network_ports.bind_writes(str(run.instance_uuid), source.host))
        else:
            # It never left, nor did its claim: only our task_state to drop,
            # if the instance still has it.
            writes.append(
                _lenient(
                    set_instance(
                        run, {"task_state": None}, expected_task_state=_ROLLBACK_TASK_STATES
                    )
                )
            )
        if own_migration and payload.migration_id is not None:
            writes.append(
                _tolerate_missing(
                    moves.set_migration(
                        run,
                        {"status": MigrationStatus.FAILED},
                        only_from=[MigrationStatus.ACCEPTED, MigrationStatus.PRE_MIGRATING],
                    )
                )
            )
        writes.append(_history(run, ok=False, message=message, details=details))
        await run.finish(status, last_error=message, writes=chain(*writes))
        LOG.info("%r: evacuation rolled back: %s", run, message)
        await notify_error(run, "instance.evacuate.error", message)

    async def expire(self, run: Run) -> None:
        awaited = run.awaiting
        if run.step in (Step.REBUILD, Step.ROLLBACK_DEST) and awaited:
            # No time is left to wait for it: ask, and end regardless.
            rollback = msgspec.structs.replace(
                awaited,
                step=Step.ROLLBACK_DEST.value,
                attempt=run.typed(MovePayload).tried(Step.ROLLBACK_DEST) + 1,
            )
            try:
                await self._send_rollback(run, rollback)
            except Exception as exc:
                LOG.warning("%r: could not ask %s to remove its guest: %s", run, awaited.host, exc)
        await self.roll_back(
            run,
            "The evacuation did not finish before its deadline",
            details=run.typed(MovePayload).error,
            status=TaskStatus.ROLLED_BACK,
        )


def _tolerate_missing(write: Writes) -> Writes:
    async def tolerant(conn: Connection) -> None:
        try:
            await run_writes(conn, write)
        except exception.MigrationNotFound:
            pass  # deleted with its instance: nothing to mark

    return tolerant
