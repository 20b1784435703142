"""What every task kind shares: ordered steps, the run of one claim, commits as owner.

A task kind (:class:`Task`) is a table of steps. Each step has an
idempotent ``run`` — running it again after a crash does no harm — that
ends by *committing* the next step (:meth:`Run.commit`, a write conditioned
on this conductor still holding the lease) and returns it, or finishes the
task and returns None.
Each step may also have a ``rollback``, used when the task's deadline
passes: the steps done so far are rolled back newest first, then the kind's
:meth:`Task.expire` records the fault.

Waiting for a compute host: the step records in the payload what it awaits
(``await``: the compute step, the try number sent as ``attempt``, the host,
and until when), commits, then sends the message and waits in memory while
the engine keeps renewing its lease. The host's report
(``ConductorAPI.step_finished``) is written into the row by whichever
conductor receives it, which takes the lease over in the same statement and
carries the task on (waking the waiter when that is itself). If the
conductor dies while waiting, its lease runs out and the next owner sends
the message again (the host answers a repeat with the outcome it already
has) and waits for what is left of the wait; a report that never comes
counts as that host's failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from nubes import exception, metrics
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.payloads import Awaited, Outcome, P, TaskPayload
from nubes.conductor.tasks.states import END, FIRST_STEP, STEPS, Step, TaskKind, check_step
from nubes.context import RequestContext
from nubes.db import group_commit
from nubes.db.api import actions, tasks
from nubes.db.api import instances as instances_api
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection
from nubes.db.group_commit import CommitPart, Read, Write
from nubes.db.types import utcnow

if TYPE_CHECKING:
    from nubes.conductor.tasks.engine import TaskEngine

LOG = logging.getLogger(__name__)

#: Longest fault message the database keeps (as InstanceFault).
FAULT_MESSAGE_LENGTH = 255

#: What a step commits with its end: write descriptions from ``db/api``
#: (:class:`~nubes.db.group_commit.Write`) and, for what has no single
#: statement, functions of the transaction's connection; one or several, in
#: order. How they commit (grouped with other tasks' or alone) is the
#: database layer's choice (:func:`nubes.db.group_commit.commit`).
Writes = CommitPart | Sequence[CommitPart]


def steps(*writes: Writes | None) -> list[CommitPart]:
    """``writes`` flattened, in order."""
    out: list[CommitPart] = []
    for w in writes:
        if w is None:
            continue
        if isinstance(w, Write | Read) or callable(w):
            out.append(w)
        else:
            out.extend(w)
    return out


async def run_writes(conn: Connection, *writes: Writes | None) -> None:
    """``writes`` in the caller's transaction, in order (for a step's own block)."""
    for w in steps(*writes):
        if isinstance(w, Write | Read):
            await w.run(conn)
        else:
            await w(conn)


def _deadline(row: dict[str, Any]) -> dt.datetime | None:
    value = row.get("deadline")
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value if isinstance(value, dt.datetime) else None


class Run:
    """One conductor's hold on one task, from its claim until it ends or loses it."""

    def __init__(self, engine: TaskEngine, row: dict[str, Any]) -> None:
        self.engine = engine
        self.id: int = row["id"]
        self.kind: str = row["kind"]
        self.instance_uuid: str | None = row["instance_uuid"]
        self.step: str = row["step"] or FIRST_STEP[TaskKind(row["kind"])]
        self.attempt: int = row["attempt"]
        self.payload: dict[str, Any] = dict(row["payload"] or {})
        self.deadline = _deadline(row)
        context = dict(row["context"] or {})
        context["caller"] = None
        self.ctxt = RequestContext.from_dict(context)
        #: Set once the run stopped holding the task (ended or lost).
        self.released = False
        #: Set when the engine stopped this run because its lease went elsewhere.
        self.superseded = False
        #: The instance row as read in the transaction of this run's claim (for
        #: a kind whose step is in its :attr:`Task.prefetch_instance_at`) or of
        #: its last commit (``commit(read_instance=True)``): the database's
        #: row, never one a step edited. The next step's first read takes it
        #: (``helpers.load_instance(run, fresh=True)``); any commit drops it.
        self.fresh_instance: dict[str, Any] | None = None
        #: Set by the engine: the host this run's awaited step waits on is down.
        self.host_down: str | None = None

    def __repr__(self) -> str:
        return f"<{self.kind} task {self.id} at {self.step} (claim {self.attempt})>"

    @property
    def request_id(self) -> str:
        return self.ctxt.request_id

    def past_deadline(self, now: dt.datetime | None = None) -> bool:
        return self.deadline is not None and (now or utcnow()) >= self.deadline

    async def commit(
        self,
        step: str,
        *,
        payload: TaskPayload | dict[str, Any] | None = None,
        writes: Writes | None = None,
        lease_seconds: float | None = None,
        read_instance: bool = False,
    ) -> str:
        """Record that the current step is done and ``step`` is next; returns ``step``.

        ``writes`` run in the same transaction, before the task's own
        conditional write: if the lease was lost, none of them happen. With
        ``read_instance`` the instance row is read last in that transaction,
        for the next step (:attr:`fresh_instance`).
        """
        check_step(self.kind, self.step, step)
        if payload is not None:
            self.payload = self._stored(payload)
        done = self.step
        values = {"step": step, "payload": self.payload}
        lease = lease_seconds or self.engine.lease_seconds

        own = tasks.update_write(
            self.id, self.engine.owner, values, attempt=self.attempt, lease_seconds=lease
        )
        read = (
            instances_api.get_read(self.instance_uuid)
            if read_instance and self.instance_uuid is not None
            else None
        )
        self.fresh_instance = None
        found = await group_commit.commit(
            self.engine.db, self.instance_uuid or "", steps(writes, own, read)
        )
        if read is not None:
            self.fresh_instance = found[-1]
        self.step = step
        self.engine.passed(f"{self.kind}:after:{done}")
        return step

    async def finish(
        self,
        status: TaskStatus,
        *,
        last_error: str | None = None,
        writes: Writes | None = None,
        payload: TaskPayload | dict[str, Any] | None = None,
    ) -> None:
        """End the task with ``status``; ``writes`` (and ``payload``) commit with it.

        A build's or rebuild's personality files are dropped from the payload
        here: no later step needs them, and a user's files stay in the
        database no longer than the task that carries them to the host.
        """
        check_step(self.kind, self.step, END)
        stored = self.payload if payload is None else self._stored(payload)
        forgotten = payloads.without_injected_files(stored)
        if forgotten is not None:
            payload = forgotten
        elif payload is not None:
            payload = stored

        own = tasks.finish_write(
            self.id,
            self.engine.owner,
            status=status,
            last_error=last_error,
            attempt=self.attempt,
            values=None if payload is None else {"payload": payload},
        )
        await group_commit.commit(self.engine.db, self.instance_uuid or "", steps(writes, own))
        if payload is not None:
            self.payload = payload
        self.released = True
        self.engine.passed(f"{self.kind}:after:{self.step}")

    @property
    def awaiting(self) -> Awaited | None:
        """The compute step this task waits for, None when it waits for none."""
        return payloads.awaiting(self.payload)

    def awaited(self) -> Awaited:
        """The compute step this task waits for (Invalid when it waits for none)."""
        awaited = self.awaiting
        if awaited is None:
            raise exception.Invalid(reason=f"{self!r} awaits no report")
        return awaited

    def typed(self, kind: type[P]) -> P:
        """The payload as its kind's struct (:mod:`.payloads`)."""
        return payloads.decode(self.payload, kind)

    def keep(self, payload: TaskPayload | dict[str, Any]) -> None:
        """Hold ``payload`` in memory (what the next commit writes)."""
        self.payload = self._stored(payload)

    def _stored(self, payload: TaskPayload | dict[str, Any]) -> dict[str, Any]:
        if isinstance(payload, TaskPayload):
            return payloads.encode(payload, self.payload)
        return payload

    def refresh(self, row: dict[str, Any]) -> None:
        """Take over a newer claim of the same task (a report handed it to us)."""
        self.attempt = row["attempt"]
        self.payload = dict(row["payload"] or {})
        self.released = False

    async def wait_for_report(self, send: Callable[[], Awaitable[None]]) -> Outcome | None:
        """The outcome of the awaited compute step: sends it (again) and waits.

        Returns the reported outcome, a failure outcome when the host did not
        report in time, or None when the task's deadline passed first.
        """
        awaited = self.awaited()
        outcome = payloads.reported(self.payload)
        if outcome is not None:
            return outcome
        if time.time() < awaited.until and not self.past_deadline():
            # Bounded by the wait itself: a cast the bus never takes (a
            # publisher confirm that never comes after a broker node was
            # lost) would hold this run, its lease renewed, for ever.
            bound = asyncio.timeout(awaited.until - time.time())
            try:
                async with bound:
                    await send()
            except exception.UnsupportedVersion as exc:
                # The host's RPC API is capped below what this step needs
                # ([upgrade_levels], an old host running): it cannot do it,
                # now or on a retry. That is its failure, reported at once.
                return awaited.failure(f"{awaited.host} cannot be asked to {awaited.step}: {exc}")
            except TimeoutError:
                if not bound.expired():
                    raise
                LOG.warning(
                    "%r: the bus did not take %s for %s before the step's wait ended",
                    self,
                    awaited.step,
                    awaited.host,
                )
                if self.past_deadline():
                    return None
                # It may have gone out all the same: a timeout, as a silent host's.
                return awaited.failure(
                    f"the bus did not take {awaited.step} for {awaited.host} in time",
                    timeout=True,
                )
            self.engine.passed(f"{self.kind}:sent:{self.step}")
            row = await self.engine.wait_report(self, awaited.until)
            if row is not None:
                self.refresh(row)
            outcome = payloads.reported(self.payload)
            if outcome is not None:
                return outcome
            down, self.host_down = self.host_down, None
            if down is not None:
                # Its service is down: that host's failure now, as a timeout
                # would be later (a build's guest there is removed).
                return awaited.failure(
                    f"{down} is down (no heartbeat for service_down_time)", timeout=True
                )
        if self.past_deadline():
            return None
        return awaited.failure(
            f"{awaited.host} did not report {awaited.step} in time", timeout=True
        )

    # -- instance history, in the caller's transaction ---------------------------

    async def event(
        self,
        conn: Connection,
        name: str,
        *,
        ok: bool = True,
        details: str | None = None,
        host: str | None = None,
    ) -> None:
        """Record :meth:`event_writes` in the caller's transaction."""
        for write in self.event_writes(name, ok=ok, details=details, host=host):
            await write.run(conn)

    async def finish_action(self, conn: Connection, *, ok: bool = True) -> None:
        """Record :meth:`finish_action_writes` in the caller's transaction."""
        for write in self.finish_action_writes(ok=ok):
            await write.run(conn)

    def event_writes(
        self,
        name: str,
        *,
        ok: bool = True,
        details: str | None = None,
        host: str | None = None,
    ) -> list[Write]:
        """A finished event of this task's action on its instance, for a commit.

        Nothing without an instance, or without an action (a task made by an
        operator tool has no history).
        """
        if self.instance_uuid is None:
            return []
        return actions.event_record_writes(
            instance_uuid=self.instance_uuid,
            request_id=self.request_id,
            event=name,
            host=host or self.engine.host,
            result=actions.RESULT_SUCCESS if ok else actions.RESULT_ERROR,
            details=details,
        )

    def event_start_writes(self, name: str, *, host: str) -> list[Write]:
        """An open event of this task's action, started on ``host``, for a
        commit: one a compute host's step report will close as its own
        (nothing without an instance or an action)."""
        if self.instance_uuid is None:
            return []
        return [
            actions.event_start_write(
                instance_uuid=self.instance_uuid,
                request_id=self.request_id,
                event=name,
                host=host,
            )
        ]

    def finish_action_writes(self, *, ok: bool = True) -> list[Write]:
        """The end of this task's action, for a commit (nothing without one)."""
        if self.instance_uuid is None:
            return []
        return [
            actions.action_finish_write(
                instance_uuid=self.instance_uuid,
                request_id=self.request_id,
                message=None if ok else actions.ACTION_ERROR_MESSAGE,
            )
        ]

    async def fault(
        self, conn: Connection, message: str, *, details: str | None = None, code: int = 500
    ) -> None:
        """Record an instance fault (the message cut to what the column keeps)."""
        if self.instance_uuid is None:
            return
        await instances_api.fault_create(
            conn,
            {
                "instance_uuid": self.instance_uuid,
                "code": code,
                "message": message[:FAULT_MESSAGE_LENGTH],
                "details": details if details is not None else message,
                "host": self.engine.host,
            },
        )


#: Each task kind's :class:`Task` class (filled by :func:`task_kind`).
KINDS: dict[TaskKind, type[Task]] = {}

T = TypeVar("T", bound="Task")


def task_kind(cls: type[T]) -> type[T]:
    """Register the decorated class as the :class:`Task` of its ``kind``."""
    if cls.kind in KINDS:
        raise TypeError(f"{cls.kind} has a task class already: {KINDS[cls.kind].__name__}")
    KINDS[cls.kind] = cls
    return cls


StepRun = Callable[[Run], Awaitable[str | None]]
StepRollback = Callable[[Run], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class StepDef:
    """One step of a kind: ``run`` (idempotent) and the ``rollback`` that undoes it."""

    name: Step
    run: StepRun
    rollback: StepRollback | None = None


class Task:
    """A kind of task: its steps in order, and what expiring at its deadline does."""

    kind: ClassVar[TaskKind]
    #: Steps that start by reading the task's instance: when a claim finds the
    #: task at one of them, the engine reads the instance with the claim (one
    #: query for every task claimed together) for the step's first
    #: ``load_instance(run, fresh=True)``.
    prefetch_instance_at: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, engine: TaskEngine) -> None:
        self.engine = engine
        self.steps: dict[str, StepDef] = {s.name: s for s in self.step_defs()}
        missing = set(STEPS[self.kind]) - set(self.steps)
        if missing:
            raise TypeError(f"{type(self).__name__} lacks steps {sorted(missing)}")

    def step_defs(self) -> list[StepDef]:
        raise NotImplementedError

    async def drive(self, run: Run) -> None:
        """Run steps until the task ends or its lease is lost (TaskLeaseLost)."""
        while not run.released:
            if run.past_deadline():
                await self.expire(run)
                return
            step = self.steps[run.step]
            before = run.step
            with metrics.timed(metrics.task_step_seconds, run.kind, before):
                nxt = await step.run(run)
            if nxt is None:
                return
            if nxt != before and run.step != nxt:
                raise RuntimeError(f"{run!r}: step {before} returned {nxt} without committing it")

    async def rollback(self, run: Run) -> None:
        """Undo the steps done so far, newest first (each rollback is idempotent)."""
        order = list(self.steps)
        upto = order.index(run.step) if run.step in order else len(order) - 1
        for name in reversed(order[: upto + 1]):
            undo = self.steps[name].rollback
            if undo is not None:
                await undo(run)

    async def expire(self, run: Run) -> None:
        """The deadline passed: roll back and end with a fault and a notification."""
        raise NotImplementedError
