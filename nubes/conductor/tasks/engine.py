"""The task engine: one per conductor process, driving the tasks it holds a lease on.

- **Claiming.** A loop claims tasks and starts a coroutine per task. It is
  woken at once when this process learns of one (the API's ``kick`` cast
  names the new tasks; a compute report hands its task over; kicks that
  come less than ``KICK_GATHER`` after the last claim are claimed together
  once it has passed) and otherwise
  looks every ``[conductor] task_poll_interval`` seconds for claimable
  tasks: new ones created through another conductor, and ones whose lease
  ran out because their conductor died. That look is also the deadline
  sweep: a task past its deadline whose owner is gone is claimed like any
  other, and the first thing a run checks is the deadline. When claimable
  tasks were left waiting because ``[conductor] task_concurrency`` was
  reached, the loop looks again as soon as an eighth of the slots (at most
  a claim batch) are free, not at its next poll. The claim also reads, in
  the same transaction, the instances of tasks whose first step starts by
  reading it (``Task.prefetch_instance_at``).
- **Commits.** A step's end and what it wrote commit as one unit through
  the database's group committer when the writes allow it (every write a
  ``group_commit.Write`` description, on SQLite or PostgreSQL; decided in
  ``group_commit.commit`` alone): many tasks' commits then share one
  transaction, each still all or nothing and conditioned on its lease;
  otherwise in a transaction of their own. Either way the commit is done
  before the next step starts.
- **Leases.** Every task this process holds, working or waiting for a
  compute host, has its lease renewed every third of
  ``task_lease_seconds`` in one transaction. A renewal that finds the lease
  taken (another conductor adopted the task with a report) stops the local
  coroutine.
- **Hosts that die.** A step waiting for a compute host whose service is
  down (:mod:`nubes.liveness`: no heartbeat for ``service_down_time``) is
  woken every ``HOST_WATCH_INTERVAL`` seconds' look and counts that host
  as failed now (a build goes to its next alternate), not at
  ``compute_step_timeout``. Heartbeats reach the database through a
  conductor, so silence right after this engine started or could not
  read the database is no proof: it acts only after it has read the
  database without fail for ``service_down_time``.
- **Draining.** :meth:`TaskEngine.stop` (the conductor got SIGTERM) first
  stops claiming and adopting tasks, then gives the runs working now up to
  ``[conductor] drain_timeout`` seconds to end or to reach a wait for a
  compute host's report; then it cancels what is left, gives up the
  leases and tells the other conductors (a fanout ``kick``), so they
  resume those tasks at once instead of after the lease runs out. A step
  cut short is run again by the next conductor, as after a crash: every
  step is written to be.
- **Owner id.** ``<host>:<pid>:<random>``, new for every process, so a
  restarted conductor never mistakes its predecessor's leases for its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from oslo_config import cfg

from nubes import exception, liveness, metrics

# The kinds' modules (all but caps) are imported for their @task_kind
# registrations in base.KINDS, which the engine instantiates.
from nubes.conductor.tasks import (  # noqa: F401
    actions,
    build,
    caps,
    confirm_revert,
    delete,
    live_migrate,
    migrate,
    power,
    rebuild,
    remove_guest,
    shelve,
    snapshot,
)
from nubes.conductor.tasks.base import KINDS, Run, Task
from nubes.conductor.tasks.states import FIRST_STEP
from nubes.db.api import host_views, tasks
from nubes.db.api import instances as instances_api
from nubes.db.engine import Connection, Database
from nubes.db.types import utcnow
from nubes.rpc.transport import Transport

LOG = logging.getLogger(__name__)

#: Errors that mean the database or the bus is away for now: retried.
_AWAY = exception.TRANSIENT_ERRORS
#: Longest pause (seconds) between two looks for hosts gone down under waiting steps.
HOST_WATCH_INTERVAL = 2.0
#: Tasks claimed per transaction.
CLAIM_BATCH = 64
#: Shortest time (seconds) between two claims of kicked tasks. A kick that
#: comes sooner after the last claim (single-server POSTs at a high rate, one
#: kick each) waits out the rest of it, and the kicks that come meanwhile are
#: claimed with it: one claim transaction for several tasks instead of one
#: each, and tasks that start together move through their steps together, so
#: their writes share group commits as a ``min_count`` batch's do. A kick that
#: comes later (a quiet API) is claimed at once.
KICK_GATHER = 0.05
#: Seconds between two looks at whether a draining engine's runs still work.
DRAIN_POLL = 0.05
#: Seconds a stopping engine waits for the bus to take its hand-over kick.
HAND_OVER_TIMEOUT = 2.0


def new_owner_id(host: str) -> str:
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def renew_leases(
    db: Database, owner: str, held: list[tuple[int, int]], lease_seconds: float
) -> set[int]:
    """Renew the leases of ``held`` (task id, attempt) pairs; the ids renewed.

    It waits for no row lock (:func:`nubes.db.api.tasks.renew_leases`), so
    no grouped commit deadlocks with it; run through the writer seam that
    retries a deadlock all the same, since waiting a third of the lease for
    the next try lost leases under load, and a lost lease sends the step again.
    """
    return await db.run_in_writer(tasks.renew_leases, owner, held, lease_seconds=lease_seconds)


class TaskEngine:
    """Claims, drives and renews the conductor tasks of one process."""

    def __init__(
        self,
        db: Database,
        transport: Transport,
        *,
        host: str,
        conf: cfg.ConfigOpts | None = None,
        owner: str | None = None,
        scheduler: Any = None,
        compute: Any = None,
        notifier: Any = None,
        boundary: Callable[[str], None] | None = None,
    ) -> None:
        """``boundary``, if given, is told each step boundary a run passes
        (``kind:after:step`` once a step committed, ``kind:sent:step`` once a
        host was asked): the crash suite's test double (``nubes.testing.
        crash``) dies there. Production passes none."""
        from nubes import config

        conf = conf if conf is not None else config.CONF
        #: The options, for task kinds that read their own ([DEFAULT] resize_*).
        self.conf = conf
        self.db = db
        self.transport = transport
        self.host = host
        self.owner = owner or new_owner_id(host)
        opts = conf.conductor
        self.lease_seconds: float = opts.task_lease_seconds
        self.poll_interval: float = opts.task_poll_interval
        self.concurrency: int = opts.task_concurrency
        self.compute_step_timeout: float = opts.compute_step_timeout
        self.drain_timeout: float = opts.drain_timeout
        self.service_down_time: float = conf.service_down_time
        self.max_attempts: int = conf.scheduler.max_attempts
        if scheduler is None:
            from nubes.scheduler.rpcapi import SchedulerAPI

            scheduler = SchedulerAPI(transport, timeout=conf.rpc_response_timeout)
        if compute is None:
            from nubes.compute.rpcapi import ComputeAPI

            compute = ComputeAPI(transport)
        if notifier is None:
            from nubes.notifications.notifier import Notifier

            notes = conf.notifications
            notifier = Notifier(
                transport,
                f"conductor:{host}",
                topic=notes.topic,
                enabled=notes.driver != "noop",
            )
        self.scheduler = scheduler
        self.compute = compute
        self.notifier = notifier
        self._boundary = boundary
        self.kinds: dict[str, Task] = {k.value: cls(self) for k, cls in KINDS.items()}
        self._runs: dict[int, Run] = {}
        self._coros: dict[int, asyncio.Task[None]] = {}
        self._waiters: dict[int, tuple[Run, asyncio.Future[dict[str, Any] | None]]] = {}
        self._wanted: set[int] = set()
        #: time.monotonic() of the last claim of kicked tasks (see KICK_GATHER).
        self._kicks_claimed = float("-inf")
        #: Claimable tasks were left unclaimed for want of a free slot.
        self._backlog = False
        #: Free slots that make the engine claim them without waiting for its poll.
        self._refill = max(1, min(CLAIM_BATCH, self.concurrency // 8))
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        #: Stop claiming and adopting tasks (the drain before a stop).
        self._draining = False
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = self._draining = False
        await caps.refresh(self)
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="nubes-task-claims"),
            asyncio.create_task(self._renew_loop(), name="nubes-task-leases"),
            asyncio.create_task(
                caps.follow(self, self.conf.upgrade_levels.refresh_interval),
                name="nubes-rpc-caps",
            ),
            asyncio.create_task(self._watch_hosts(), name="nubes-host-watch"),
        ]
        if self.conf.resize_confirm_window > 0:
            from nubes.conductor.tasks import autoconfirm

            self._loops.append(
                asyncio.create_task(autoconfirm.sweep_forever(self), name="nubes-autoconfirm")
            )
        from nubes.conductor.tasks import reclaim

        if self.conf.reclaim_instance_interval > 0:
            after = float(self.conf.reclaim_instance_interval)
            self._loops.append(
                asyncio.create_task(
                    reclaim.sweep_forever(self, reclaim.RECLAIM, after), name="nubes-reclaim"
                )
            )
        if self.conf.shelved_offload_time > 0:
            after = float(self.conf.shelved_offload_time)
            self._loops.append(
                asyncio.create_task(
                    reclaim.sweep_forever(self, reclaim.OFFLOAD, after), name="nubes-offload"
                )
            )
        LOG.info("task engine %s started", self.owner)

    async def stop(self) -> None:
        """Drain (see the module's docstring), then stop driving tasks and give
        their leases up, so other conductors resume them now."""
        self._draining = True
        self._wake.set()
        drained = await self._drain(self.drain_timeout)
        self._stopping = True
        # Taken before the cancellations: each run leaves _runs as it ends.
        held = [run for run in self._runs.values() if not run.superseded]
        pending = {*self._loops, *self._coros.values()}
        while pending:
            # A cancellation that lands inside a database call can come back
            # as a DB error the loop handles; cancel until each has ended.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        self._loops = []
        self._runs.clear()
        given: list[int] = []
        if held:
            try:
                async with self.db.writer() as conn:
                    for run in held:
                        if await tasks.release(conn, run.id, self.owner, attempt=run.attempt):
                            given.append(run.id)
            except Exception as exc:
                # Their leases run out instead: slower, as safe.
                given = []
                LOG.warning("task engine %s could not give its leases up: %s", self.owner, exc)
        if given:
            await self._hand_over(given)
        LOG.info(
            "task engine %s stopped (%s; %d leases given up)",
            self.owner,
            "drained" if drained else f"not drained within {self.drain_timeout:g} s",
            len(given),
        )

    async def _drain(self, timeout: float) -> bool:
        """Until no run is working (each ended or waits for a host), at most ``timeout`` s.

        A run waiting for a host's report could wait for minutes: it is
        handed over rather than waited for. True when drained in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            working = [
                run
                for run in self._runs.values()
                if run.id not in self._waiters or self._waiters[run.id][1].done()
            ]
            if not working:
                return True
            if time.monotonic() >= deadline:
                LOG.warning(
                    "task engine %s: %d tasks still working after %g s; handing them over",
                    self.owner,
                    len(working),
                    timeout,
                )
                return False
            # Polled: a run moves between working and waiting inside the task
            # kinds' code, which has no hook to tell the engine.
            await asyncio.sleep(DRAIN_POLL)

    async def _hand_over(self, task_ids: list[int]) -> None:
        """Tell every conductor about tasks whose leases this one gave up.

        A fanout: a cast to the shared queue could come back to this very
        process, which claims nothing any more. Best effort: the others'
        poll finds the tasks anyway.
        """
        from nubes.conductor.rpcapi import ConductorAPI
        from nubes.context import get_admin_context

        try:
            async with asyncio.timeout(HAND_OVER_TIMEOUT):
                await ConductorAPI(self.transport).kick(get_admin_context(), task_ids, fanout=True)
        except Exception as exc:
            LOG.warning(
                "could not tell the other conductors about tasks %s (%s); their poll finds them",
                task_ids,
                exc,
            )

    def passed(self, point: str) -> None:
        """A run passed the step boundary ``point`` (see ``boundary``)."""
        if self._boundary is not None:
            self._boundary(point)

    @property
    def running(self) -> int:
        return len(self._runs)

    @property
    def accepting(self) -> bool:
        """Whether this engine takes tasks over now (started, not draining)."""
        return bool(self._loops) and not self._stopping and not self._draining

    # -- being told about tasks ----------------------------------------------------------

    def kick(self, task_ids: Iterable[int] = ()) -> None:
        """Claim these tasks (or look for any) now rather than at the next poll."""
        self._wanted.update(task_ids)
        self._wake.set()

    def adopt(self, row: dict[str, Any]) -> None:
        """Drive a task this engine has just claimed elsewhere (a report handed it over)."""
        waiting = self._waiters.pop(row["id"], None)
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(row)
            return
        current = self._runs.get(row["id"])
        if current is not None and current.attempt == row["attempt"]:
            # Driven here already and not waiting: a repeated report. (The
            # waiter comes first: the run waiting for this very report is
            # in ``_runs`` with the same attempt, and must be woken.)
            return
        self._start(row)

    async def wait_report(self, run: Run, until: float) -> dict[str, Any] | None:
        """Wait for ``run``'s compute report until ``until`` (or its deadline); the new row."""
        timeout = until - time.time()
        if run.deadline is not None:
            timeout = min(timeout, run.deadline.timestamp() - time.time())
        if timeout <= 0:
            return None
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._waiters[run.id] = (run, future)
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can lose a
            # cancellation that lands as the report arrives.
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return None
        finally:
            current = self._waiters.get(run.id)
            if current is not None and current[1] is future:
                del self._waiters[run.id]

    async def _watch_hosts(self) -> None:
        """Wake the steps waiting on a host whose service is down (see the docstring)."""
        interval = min(HOST_WATCH_INTERVAL, max(self.service_down_time / 4, 0.1))
        reading_since = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(interval)
            waiting = [
                (run, future)
                for run, future in self._waiters.values()
                if not future.done() and run.awaiting is not None
            ]
            if not waiting:
                continue
            try:
                async with self.db.reader() as conn:
                    down = await host_views.down_compute_hosts(
                        conn, liveness.window(self.service_down_time)
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOG.warning("task engine %s cannot tell which hosts are up: %s", self.owner, exc)
                reading_since = time.monotonic()
                continue
            if time.monotonic() - reading_since < self.service_down_time:
                continue
            for run, future in waiting:
                host = run.awaited().host
                if host in down and not future.done():
                    LOG.warning("%r: %s is down; not waiting for its report", run, host)
                    run.host_down = host
                    future.set_result(None)

    # -- claiming -------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        next_scan = 0.0
        backoff = self.poll_interval
        while not self._stopping and not self._draining:
            if not self._wanted and not self._refill_due():
                timeout = max(next_scan - time.monotonic(), 0.0)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            self._wake.clear()
            if self._draining:
                return
            try:
                if self._wanted:
                    gather = self._kicks_claimed + KICK_GATHER - time.monotonic()
                    if gather > 0:
                        await asyncio.sleep(gather)
                        if self._draining:
                            return
                    self._kicks_claimed = time.monotonic()
                    wanted, self._wanted = self._wanted, set()
                    await self._claim([i for i in wanted if i not in self._runs])
                if time.monotonic() >= next_scan or self._refill_due():
                    await self._scan()
                    next_scan = time.monotonic() + self.poll_interval
                backoff = self.poll_interval
            except asyncio.CancelledError:
                raise
            except _AWAY as exc:
                LOG.warning("task engine %s cannot claim tasks now: %s", self.owner, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.lease_seconds)
            except Exception:
                LOG.exception("task engine %s: claiming failed", self.owner)
                await asyncio.sleep(backoff)

    def _free(self) -> int:
        return self.concurrency - len(self._runs)

    def _refill_due(self) -> bool:
        """Claimable tasks were left waiting for a free slot, and enough slots are free now.

        Then the engine looks for them at once rather than at its next poll,
        a batch of them at a time: a full engine keeps as busy as it may be.
        """
        return self._backlog and self._free() >= self._refill

    async def _scan(self) -> None:
        self._backlog = False
        while self._free() > 0:
            limit = min(self._free(), CLAIM_BATCH)
            async with self.db.reader() as conn:
                ids = await tasks.list_claimable(conn, limit=limit)
            if not ids:
                return
            if not await self._claim(ids) or len(ids) < limit:
                # Fewer waiting than there was room for: none is left behind.
                return
            # A full listing: more may wait. Look again while slots are free
            # (runs that ended during this scan freed some, and their wake-up
            # is spent), else leave the backlog for the next refill.
        self._backlog = True

    async def _claim(self, ids: list[int]) -> int:
        ids = sorted(ids)
        if len(ids) > self._free():
            # Told of more than there is room for: the rest wait in the database.
            self._backlog = True
            ids = ids[: max(self._free(), 0)]
        if not ids:
            return 0
        before = utcnow()
        async with self.db.writer() as conn:
            rows = await tasks.claim_many(conn, ids, self.owner, lease_seconds=self.lease_seconds)
            found = await self._prefetch(conn, rows)
        for row in rows:
            taken = row.get("taken_over_at")
            if taken is not None and taken >= before:
                metrics.task_takeovers.labels(row["kind"]).inc()
            self._start(row, found.get(row["instance_uuid"]))
        return len(rows)

    async def _prefetch(
        self, conn: Connection, rows: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """The instances of the claimed tasks whose first step reads it, in one query."""
        uuids = []
        for row in rows:
            kind = self.kinds.get(row["kind"])
            if kind is None or not row["instance_uuid"] or not kind.prefetch_instance_at:
                continue
            if (row["step"] or FIRST_STEP[kind.kind]) in kind.prefetch_instance_at:
                uuids.append(row["instance_uuid"])
        return await instances_api.get_many_by_uuids(conn, uuids) if uuids else {}

    # -- driving --------------------------------------------------------------------------

    def _start(self, row: dict[str, Any], instance: dict[str, Any] | None = None) -> None:
        old = self._coros.get(row["id"])
        if old is not None and not old.done():
            # A report handed us a newer claim of a task we were still working
            # on: the old coroutine's lease is gone, stop it.
            previous = self._runs.get(row["id"])
            if previous is not None:
                previous.superseded = True
            old.cancel()
        run = Run(self, row)
        if instance is not None:
            # Read with the claim: the first step need not read it again.
            run.fresh_instance = instance
        self._runs[run.id] = run
        metrics.tasks_running.set(len(self._runs))
        self._coros[run.id] = asyncio.create_task(self._drive(run), name=f"nubes-task-{run.id}")

    async def _drive(self, run: Run) -> None:
        kind = self.kinds.get(run.kind)
        try:
            if kind is None:
                raise exception.Invalid(reason=f"no task kind {run.kind!r}")
            await kind.drive(run)
        except asyncio.CancelledError:
            raise
        except exception.TaskLeaseLost:
            LOG.info("%r: another conductor took the task over", run)
        except _AWAY as exc:
            if run.superseded or self._stopping:
                # Cancelled inside a database call, which reports it as a
                # connection error: nothing went wrong.
                LOG.debug("%r stopped inside a database call: %s", run, exc)
            else:
                # The lease runs out and a conductor (maybe this one) resumes it.
                LOG.warning("%r stopped: %s; it resumes when its lease runs out", run, exc)
        except Exception:
            LOG.exception("%r failed; it resumes when its lease runs out", run)
        finally:
            if self._runs.get(run.id) is run:
                del self._runs[run.id]
                metrics.tasks_running.set(len(self._runs))
                self._coros.pop(run.id, None)
                self._wake.set()

    async def _renew_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.lease_seconds / 3)
            held = [run for run in self._runs.values() if not run.released]
            if not held:
                continue
            lost: list[Run] = []
            try:
                pairs = [(run.id, run.attempt) for run in held]
                renewed = await renew_leases(self.db, self.owner, pairs, self.lease_seconds)
                # A run that took a newer claim meanwhile (a report) holds it still.
                lost = [
                    run
                    for run, (_, attempt) in zip(held, pairs, strict=True)
                    if run.id not in renewed and run.attempt == attempt
                ]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOG.warning("task engine %s could not renew its leases: %s", self.owner, exc)
                continue
            for run in lost:
                run.superseded = True
                if self._runs.get(run.id) is run:
                    coro = self._coros.get(run.id)
                    if coro is not None:
                        coro.cancel()
                    LOG.info("%r: lease lost, stopped", run)
