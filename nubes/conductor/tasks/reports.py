"""Recording a compute host's report of a step into its task, whoever owns the task.

``ConductorAPI.step_finished`` lands on any conductor. The report is
checked against the task row (the host may report only the step and try
the task awaits from that host: :meth:`~nubes.conductor.authz.Authorizer.
authorize_step_report`), then written into the payload with a write
conditioned on what was read (:func:`nubes.db.api.tasks.outcome_write`),
which also hands the lease to this conductor's engine — or to nobody when
this process runs no engine — so the report is never lost with a dead owner
and the task moves on at once.

The end of the action event the step started travels with the report
(conductor RPC 1.5, :mod:`nubes.step_end`) and is written in the same
commit, whatever the task's kind: the event of the task's own instance and
request, only if the awaited host started it
(:meth:`~nubes.conductor.authz.Authorizer.authorize_step_event`). A report
without one (a host of an older release finished it itself) writes nothing
more; one whose event has no start recorded (no action: an internal
operation) is recorded all the same.

Recording is idempotent: the task's step and try name the report, and a
repeat of one already recorded writes nothing. A report that could not be
recorded because the database was away is not lost: the RPC server runs it
again until it is (``nubes.rpc.server``).
"""

from __future__ import annotations

import logging
from typing import Any

from nubes import exception
from nubes.conductor.authz import Authorizer, Caller
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.payloads import Awaited, Outcome
from nubes.context import RequestContext
from nubes.db import group_commit
from nubes.db.api import actions, tasks
from nubes.db.engine import Database
from nubes.injected_files import InjectedFiles
from nubes.step_end import EventEnd
from nubes.step_key import StepKey

LOG = logging.getLogger(__name__)

#: Times a report is re-read and retried when the task changed under it.
RETRIES = 3
#: Longest error text kept from a report.
MAX_ERROR = 4000


async def record(
    db: Database,
    authz: Authorizer,
    caller: Caller,
    *,
    task_id: int,
    step: str,
    attempt: int,
    ok: bool,
    error: str | None,
    details: dict[str, Any] | None,
    owner: str | None,
    lease_seconds: float,
    event: EventEnd | None = None,
    injected_files: InjectedFiles | None = None,
) -> dict[str, Any] | None:
    """Write the report into the task; the task's row if ``owner`` now holds it, else None.

    A read of the task, the check, and a write conditioned on the row read
    (:func:`nubes.db.api.tasks.outcome_write`), both through the one seam
    of :mod:`nubes.db.group_commit`, which groups them with other writers'
    where that pays; if the task changed in between, it is read again.
    """
    key = StepKey(task_id=task_id, step=step, attempt=attempt)
    if event is not None:
        authz.authorize_step_event(caller, key, event)
    for _ in range(RETRIES):
        row = await group_commit.fetch(db, f"task-{task_id}", tasks.get_read(task_id))
        awaited = authz.authorize_step_report(caller, key, row)
        assert row is not None
        if payloads.reported(row["payload"]) is not None:
            LOG.debug("task %s: repeated report of %s try %s", task_id, step, attempt)
            return _handed_over(row, owner)
        payload = payloads.with_outcome(
            row["payload"] or {}, _outcome(awaited, ok, error, details, injected_files)
        )
        write, new = tasks.outcome_write(row, payload, new_owner=owner, lease_seconds=lease_seconds)
        try:
            await group_commit.commit(
                db, f"task-{task_id}", [write, *_event_writes(row, awaited, event)]
            )
        except exception.TaskChanged:
            continue  # the task changed since it was read: read it again
        return new if owner is not None else None
    LOG.warning(
        "task %s: report of %s try %s lost a race %d times", task_id, step, attempt, RETRIES
    )
    return None


def _outcome(
    awaited: Awaited,
    ok: bool,
    error: str | None,
    details: dict[str, Any] | None,
    injected_files: InjectedFiles | None = None,
) -> Outcome:
    """The report as recorded: for the awaited step and try, by the awaited host.

    Personality files ride only on a success: a failed step's report ends
    the task's use of them."""
    return Outcome(
        step=awaited.step,
        attempt=awaited.attempt,
        host=awaited.host,
        ok=bool(ok),
        error=None if error is None else str(error)[:MAX_ERROR],
        details=dict(details or {}),
        injected_files=injected_files if ok and injected_files else None,
    )


def _event_writes(
    task: dict[str, Any], awaited: Awaited, event: EventEnd | None
) -> list[group_commit.Write]:
    """The reported end of the step's event, for the report's commit: on the
    task's instance, under the task's request, only if the awaited host
    started it (nothing without an event, or a task without an instance)."""
    if event is None or task["instance_uuid"] is None:
        return []
    return actions.reported_event_finish_writes(
        instance_uuid=task["instance_uuid"],
        request_id=RequestContext.from_dict(dict(task["context"] or {})).request_id,
        event=event.event,
        result=event.result,
        started_by=awaited.host,
        traceback=event.traceback,
        details=event.details,
    )


def _handed_over(row: dict[str, Any], owner: str | None) -> dict[str, Any] | None:
    """The row of a repeated report if the first one handed the task to ``owner``.

    A report whose commit failed with an unknown outcome (the connection
    dropped at COMMIT) is run again (``nubes.rpc.server``); if that commit
    did land, the task is ours already but nobody drives it: the engine
    adopts it now (a no-op if it drives that claim already) rather than
    when the lease runs out.
    """
    return row if owner is not None and row.get("owner") == owner else None
