"""The build task: schedule with alternates, spawn, reschedule on failure, or ERROR.

Steps (see ``docs/tasks.md``):

``schedule``
    Ask the scheduler for a host (claimed) and up to ``max_attempts - 1``
    alternates (unclaimed), then commit them with the instance in task
    state ``networking``, going to ``networking``; a server that asked for
    no NICs goes straight to ``spawn`` (placed as ``networking`` would).
    NoValidHost ends the task: the
    instance goes to ERROR with a fault carrying the scheduler's summary
    (which filter removed how many hosts). Idempotent: the scheduler
    answers a repeated request for the same instance with the claim it
    already holds. Rollback: release the instance's claims.
``networking``
    Make the server's ports (IPAM, one transaction, idempotent), then
    commit ``spawn`` with the instance placed on the chosen host and its
    ports bound there. A failure (no address left, quota, a network
    deleted) releases the claims and ends in ERROR with that message.
``spawn``
    Send ``build_and_run_instance`` to the host of the current try (the
    message carries task id, step and try, so a repeat is answered, not run
    again) and wait for the host's report. A host that takes compute 1.11
    finds the instance already spawning with ``launched_on`` and its
    ``compute_build_and_run_instance`` event started, written by the commit
    that placed it (``placed``): its one call is the save after the spawn
    that checks the build is still its own. Success ends the task (compute
    saved the instance ACTIVE itself). A failure, or no report in time,
    moves the claim to the next alternate (``SchedulerAPI.claim_alternate``,
    which also releases the failed host) and commits ``spawn`` again with
    the next try — the reschedule, recorded as a ``conductor_reschedule``
    event of the instance's ``create`` action. When no alternate is left,
    the claims are released and the instance goes to ERROR with a fault
    naming each host's failure.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from nubes import exception, grants
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.base import (
    Run,
    StepDef,
    Task,
    Writes,
    task_kind,
)
from nubes.conductor.tasks.helpers import (
    chain,
    end_writes,
    event_writes,
    finish_action_writes,
    instance_object,
    load_instance,
    notify_error,
    reported_end,
    set_instance,
)
from nubes.conductor.tasks.payloads import (
    Awaited,
    BuildPayload,
    Failure,
    Outcome,
    SchedulingRequest,
)
from nubes.conductor.tasks.payloads import Selection as ChosenHost
from nubes.conductor.tasks.remove_guest import kick_created, remove_guest_writes
from nubes.conductor.tasks.states import Step, TaskKind
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection
from nubes.network import ports as network_ports
from nubes.notifications.state_change import NOTIFY_VM_AND_TASK_STATE, update_payload
from nubes.objects.flavor import Flavor
from nubes.objects.request_spec import RequestSpec, Selection
from nubes.objects.states import BUILD_TASK_STATES, TaskState, VMState

LOG = logging.getLogger(__name__)

_SELECTION_FIELDS = tuple(ChosenHost.__struct_fields__)
#: The compute host's event of a build (its report closes it).
BUILD_EVENT = "compute_build_and_run_instance"


def _chosen(sel: Selection) -> ChosenHost:
    """The scheduler's selection as the payload keeps it."""
    fields = {name: getattr(sel, name) for name in _SELECTION_FIELDS if sel.obj_attr_is_set(name)}
    return ChosenHost(**fields)


def _selection(chosen: ChosenHost) -> Selection:
    """The kept selection as the scheduler takes it back (an alternate's claim)."""
    fields = msgspec.structs.asdict(chosen)
    return Selection(**{k: v for k, v in fields.items() if v is not None})


def request_spec(
    row: dict[str, Any],
    payload: SchedulingRequest,
    *,
    host: str | None = None,
    node: str | None = None,
) -> RequestSpec:
    """What the scheduler is asked, from the instance row and the build's payload.

    ``host``/``node``: where an admin asked the build to go (still filtered).
    """
    image = payload.image
    properties = {str(k): str(v) for k, v in (image.get("properties") or {}).items()}
    values: dict[str, Any] = {
        "instance_uuids": [row["uuid"]],
        "num_instances": 1,
        "project_id": row["project_id"],
        "user_id": row["user_id"],
        "availability_zone": row["availability_zone"],
        "image_properties": properties,
    }
    if payload.group:
        values["instance_group_uuid"] = payload.group
    if host:
        values["requested_destination"] = host
    if node:
        values["force_nodes"] = [node]
    return RequestSpec.from_components(
        flavor=Flavor.from_snapshot(row["flavor"]),
        scheduler_hints=payload.hints,
        **values,
    )


def failure_message(failures: list[Failure]) -> str:
    """The fault text of a build that failed everywhere, for the server's owner.

    It names no host (hosts are the operator's business, as Nova hides them
    behind ``hostId``); each host and its error are in the fault's details,
    which only admins see.
    """
    return f"Build failed on every host tried ({len(failures)})."


def failure_details(failures: list[Failure]) -> str:
    return "\n".join(f"{f.host}: {f.error}" for f in failures)


def _payload(run: Run) -> BuildPayload:
    return payloads.decode(run.payload, BuildPayload)


@task_kind
class BuildTask(Task):
    kind = TaskKind.BUILD
    prefetch_instance_at = frozenset({Step.SCHEDULE.value})

    def step_defs(self) -> list[StepDef]:
        return [
            StepDef(Step.SCHEDULE, self.schedule, self.release_claims),
            StepDef(Step.NETWORKING, self.networking),
            StepDef(Step.SPAWN, self.spawn),
        ]

    # -- schedule ----------------------------------------------------------------------

    async def schedule(self, run: Run) -> str | None:
        row = await load_instance(run, fresh=True)
        if row is None:
            await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
            return None
        scheduler = self.engine.scheduler
        try:
            chosen = await scheduler.select_destinations(
                run.ctxt,
                request_spec(
                    row,
                    (p := _payload(run)).scheduling,
                    host=p.requested_host,
                    node=p.requested_node,
                ),
                [row["uuid"]],
                True,
            )
        except exception.NoValidHost as exc:
            await self.fail(
                run,
                exception.NoValidHost.FAULT_MESSAGE,
                details=str(exc),
                event="conductor_schedule_and_build_instances",
            )
            return None
        except exception.InvalidSchedulerHint as exc:
            # The server group was deleted since the request.
            await self.fail(run, str(exc), event="conductor_schedule_and_build_instances")
            return None
        payload = _payload(run)
        payload.selections = [_chosen(s) for s in chosen[0]][: self.engine.max_attempts]
        payload.tries, payload.failures = 1, []
        if not payload.networked:
            # No NIC asked for: no ports to make, so no networking step (its
            # commit and its locking transaction would do nothing).
            return await self.place(run, payload)
        # NETWORKING (issue 14): the choice kept, the instance in Nova's
        # ``networking`` task state while its ports are made.
        networking = set_instance(
            run, {"task_state": TaskState.NETWORKING}, expected_task_state=BUILD_TASK_STATES
        )
        return await run.commit(
            Step.NETWORKING, payload=payloads.encode(payload, run.payload), writes=networking
        )

    # -- networking (issue 14) ------------------------------------------------------------

    async def networking(self, run: Run) -> str | None:
        """The server's ports made (idempotent: a repeat makes none), then ``place``."""
        try:
            await network_ports.allocate_for_instance(
                self.engine.db, self.engine.conf, run.instance_uuid or ""
            )
        except exception.InstanceNotFound:
            # Deleted (or being deleted) meanwhile: its delete frees what it holds.
            await self.release_claims(run)
            await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
            return None
        except (exception.Invalid, exception.Conflict, exception.NotFound) as exc:
            await self.release_claims(run)
            await self.fail(run, exc.user_message(), event="conductor_allocate_network")
            return None
        return await self.place(run, _payload(run))

    async def place(
        self,
        run: Run,
        payload: BuildPayload,
        *,
        reschedule: str | None = None,
        cleanup: Writes | None = None,
    ) -> str:
        """Commit ``spawn`` for the payload's try: the instance placed on its host."""
        sel = payload.selection
        host, node = sel.host, sel.nodename
        payload.awaiting = Awaited(
            step=Step.SPAWN.value,
            attempt=payload.tries,
            host=host,
            node=node,
            until=time.time() + self.engine.compute_step_timeout,
        )
        payload.outcome = None
        # The destination a compute host may set host/node to (authz.py).
        payload.dest_host, payload.dest_node = host, node
        values: dict[str, Any] = {"host": host, "node": node}
        if reschedule is not None:
            values.update(vm_state=VMState.BUILDING, task_state=TaskState.SCHEDULING)
        # What the host would save and record first, written here when it
        # takes a placed build (compute 1.11): two round trips fewer per
        # build. Every build task_state may move to spawning (states.py).
        payload.placed = self.engine.compute.places_builds()
        started = None
        before = await self._state_before_placement(run) if payload.placed else None
        if payload.placed:
            values.update(
                vm_state=VMState.BUILDING, task_state=TaskState.SPAWNING, launched_on=host
            )
            started = run.event_start_writes(BUILD_EVENT, host=host)
        placement = set_instance(run, values, expected_task_state=BUILD_TASK_STATES)
        event = None
        if reschedule is not None:
            event = event_writes(run, "conductor_reschedule", details=reschedule)
        # NETWORKING (issue 14): the ports bound to the host, with the placement.
        bind = (
            network_ports.bind_writes(run.instance_uuid or "", host) if payload.networked else None
        )
        step = await run.commit(
            Step.SPAWN,
            payload=payloads.encode(payload, run.payload),
            writes=chain(placement, bind, event, started, cleanup),
            # The row spawn sends, as placed: read in this transaction.
            read_instance=True,
        )
        if before is not None and run.fresh_instance is not None:
            await self._notify_placed(run, before, dict(run.fresh_instance))
        kick_created(run, cleanup)
        return step

    async def _state_before_placement(self, run: Run) -> dict[str, Any] | None:
        """The instance row before a placed build's commit, when an
        ``instance.update`` may be owed for it (None otherwise).

        Read only when ``[notifications] notify_on_state_change`` asks for
        task-state changes: a placement never changes the vm_state (a build
        stays ``building``), so with ``vm_state`` (the default) or ``none``
        there is nothing to send and no read to pay for."""
        mode = self.engine.conf.notifications.notify_on_state_change
        if mode != NOTIFY_VM_AND_TASK_STATE or not self.engine.notifier.enabled:
            return None
        return await load_instance(run)

    async def _notify_placed(self, run: Run, before: dict[str, Any], after: dict[str, Any]) -> None:
        """``instance.update`` for the move a placed build's commit wrote (to
        task_state spawning), as the host sends one for the save it makes
        when the build is not placed (compute RPC 1.11): the conductor wrote
        the change, so it tells. Never fails the build."""
        try:
            note = update_payload(
                self.engine.conf.notifications.notify_on_state_change,
                instance_object(after),
                before.get("vm_state"),
                before.get("task_state"),
            )
            if note is not None:
                await self.engine.notifier.info(run.ctxt, "instance.update", note)
        except Exception as exc:
            LOG.warning("%r: could not notify instance.update: %s", run, exc)

    async def release_claims(self, run: Run) -> None:
        if run.instance_uuid is not None:
            await self.engine.scheduler.release(run.ctxt, run.instance_uuid)

    # -- spawn --------------------------------------------------------------------------

    async def spawn(self, run: Run) -> str | None:
        payload = _payload(run)
        awaited = run.awaited()

        async def send() -> None:
            row = await load_instance(run, fresh=True)
            if row is None:
                raise exception.InstanceNotFound(instance_id=run.instance_uuid)
            await self.engine.compute.build_and_run_instance(
                run.ctxt,
                awaited.host,
                instance_object(row),
                awaited.node,
                awaited.key(run.id),
                # Grants for this host to fetch the image's bytes (need-to-know).
                grants.attach(
                    payload.image,
                    awaited.host,
                    self.engine.conf.image_grant_secret,
                    self.engine.conf.image_grant_ttl,
                ),
                payload.request,
                payload.injected_files,
                placed=payload.placed,
            )

        outcome = await run.wait_for_report(send)
        if outcome is None:
            return run.step  # the deadline passed: drive() expires the task
        if outcome.ok:
            row = await load_instance(run)
            try:
                end = reported_end(outcome, row, (TaskState.SPAWNING,))
            except exception.Invalid as exc:
                # Its guest may run: removed as a silent host's (timeout).
                outcome = awaited.failure(str(exc), timeout=True)
            else:
                # ACTIVE in the commit that closes the task (nubes/step_end.py).
                writes = chain(end_writes(run, end, row), finish_action_writes(run))
                await run.finish(TaskStatus.SUCCEEDED, writes=writes)
                return None
        return await self.reschedule(run, outcome)

    def given_up(self, run: Run, why: str) -> Writes | None:
        """The awaited host's guest removed (a remove_guest task), unless it said it failed.

        A host that reported a failure removed its guest itself; one that
        did not report (its report lost, or it is slow or down) may run it.
        """
        awaited = run.awaiting
        if awaited is None or run.instance_uuid is None:
            return None
        outcome = payloads.reported(run.payload)
        if outcome is not None and not outcome.timeout:
            return None
        return remove_guest_writes(run, awaited.host, run.instance_uuid, why)

    async def reschedule(self, run: Run, outcome: Outcome) -> str | None:
        payload = _payload(run)
        # The timeout outcome is not in the row: only a report is.
        cleanup = (
            remove_guest_writes(run, outcome.host, run.instance_uuid, outcome.error or "")
            if outcome.timeout and run.instance_uuid is not None and outcome.host is not None
            else None
        )
        failures = [*payload.failures, Failure(host=outcome.host, error=outcome.error)]
        selections = payload.selections
        for index in range(payload.tries, len(selections)):
            sel = selections[index]
            try:
                await self.engine.scheduler.claim_alternate(run.ctxt, _selection(sel))
            except exception.NoValidHost as exc:
                failures.append(Failure(host=sel.host, error=str(exc)))
                continue
            payload.tries, payload.failures = index + 1, failures
            why = f"{outcome.host} failed: {outcome.error}; trying {sel.host}"
            LOG.info("%r: %s", run, why)
            return await self.place(run, payload, reschedule=why, cleanup=cleanup)
        await self.release_claims(run)
        payload.failures = failures
        run.payload = payloads.encode(payload, run.payload)
        await self.fail(
            run, failure_message(failures), details=failure_details(failures), cleanup=cleanup
        )
        return None

    # -- ending in ERROR ---------------------------------------------------------------------

    async def fail(
        self,
        run: Run,
        message: str,
        *,
        event: str = "conductor_build_failed",
        details: str | None = None,
        cleanup: Writes | None = None,
    ) -> None:
        """ERROR with a fault, the action marked failed, the task FAILED, a notification.

        The instance holds no claim any more: its host and node are cleared.
        """
        values: dict[str, Any] = {
            "vm_state": VMState.ERROR,
            "task_state": None,
            "host": None,
            "node": None,
        }

        async def history(conn: Connection) -> None:
            await run.fault(conn, message, details=details)
            await run.event(conn, event, ok=False, details=details or message)
            await run.finish_action(conn, ok=False)

        # NETWORKING (issue 14): a failed build frees its ports, as Nova's does.
        release = network_ports.release_writes(run.instance_uuid or "")
        writes = chain(
            set_instance(run, values, expected_task_state=BUILD_TASK_STATES),
            history,
            cleanup,
            release,
        )
        await run.finish(TaskStatus.FAILED, last_error=message, writes=writes, payload=run.payload)
        kick_created(run, cleanup)
        LOG.info("%r: build failed: %s", run, message)
        await notify_error(run, "instance.create.error", message)

    async def expire(self, run: Run) -> None:
        await self.rollback(run)
        failures = _payload(run).failures
        message = "The build did not finish before its deadline"
        await self.fail(
            run,
            message,
            event="conductor_build_deadline",
            details=failure_details(failures) if failures else None,
            cleanup=self.given_up(run, message),
        )
