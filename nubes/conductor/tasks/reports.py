"""Recording a compute host's report of a step into its task, whoever owns the task.

``ConductorAPI.step_finished`` lands on any conductor. The report is
checked against the task row (the host may report only the step and try
the task awaits from that host: :meth:`~nubes.conductor.authz.Authorizer.
authorize_step_report`), then written into the payload with a write
conditioned on what was read (:func:`nubes.db.api.tasks.record_outcome`),
which also hands the lease to this conductor's engine — or to nobody when
this process runs no engine — so the report is never lost with a dead owner
and the task moves on at once.

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
from nubes.conductor.tasks.payloads import Awaited, Outcome, StepKey
from nubes.db.api import task_reports, tasks
from nubes.db.engine import Database

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
) -> dict[str, Any] | None:
    """Write the report into the task; the task's row if ``owner`` now holds it, else None."""
    key = StepKey(task_id=task_id, step=step, attempt=attempt)
    for _ in range(RETRIES):
        new: dict[str, Any] | bool | None = await _record_grouped(
            db, authz, caller, key, ok, error, details, owner, lease_seconds
        )
        if new is _DONE:
            return None
        if isinstance(new, dict):
            return new if owner is not None else None
        if new is None:
            continue  # the task changed since it was read: read it again
        async with db.writer() as conn:
            try:
                row = await tasks.get(conn, task_id)
            except exception.TaskNotFound:
                row = None
            awaited = authz.authorize_step_report(caller, key, row)
            assert row is not None
            if payloads.reported(row["payload"]) is not None:
                LOG.debug("task %s: repeated report of %s try %s", task_id, step, attempt)
                return _handed_over(row, owner)
            outcome = _outcome(awaited, ok, error, details)
            payload = payloads.with_outcome(row["payload"] or {}, outcome)
            new = await tasks.record_outcome(
                conn,
                task_id,
                step=row["step"],
                attempt=row["attempt"],
                owner=row["owner"],
                payload=payload,
                new_owner=owner,
                lease_seconds=lease_seconds,
                updated_at=row["updated_at"],
            )
        if isinstance(new, dict):
            return new if owner is not None else None
    LOG.warning(
        "task %s: report of %s try %s lost a race %d times", task_id, step, attempt, RETRIES
    )
    return None


def _outcome(
    awaited: Awaited, ok: bool, error: str | None, details: dict[str, Any] | None
) -> Outcome:
    """The report as recorded: for the awaited step and try, by the awaited host."""
    return Outcome(
        step=awaited.step,
        attempt=awaited.attempt,
        host=awaited.host,
        ok=bool(ok),
        error=None if error is None else str(error)[:MAX_ERROR],
        details=dict(details or {}),
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


#: :func:`_record_grouped`: the report needs no write (a repeat).
_DONE = True


async def _record_grouped(
    db: Database,
    authz: Authorizer,
    caller: Caller,
    key: StepKey,
    ok: bool,
    error: str | None,
    details: dict[str, Any] | None,
    owner: str | None,
    lease_seconds: float,
) -> dict[str, Any] | bool | None:
    """One try through the group committer (see ``task_reports.read_grouped``).

    The new row; None when the task changed between the read and the write
    (nothing written); :data:`_DONE` for a repeated report; False when the
    group committer cannot do it here (then the ordinary way, in one
    transaction of its own).
    """
    found = await task_reports.read_grouped(db, key.task_id)
    if found is False:
        return False
    awaited = authz.authorize_step_report(caller, key, found)
    assert found is not None
    payload_text = found.pop(task_reports.PAYLOAD_TEXT)
    if payloads.reported(found["payload"]) is not None:
        LOG.debug("task %s: repeated report of %s try %s", key.task_id, key.step, key.attempt)
        return _handed_over(found, owner) or _DONE
    payload = payloads.with_outcome(found["payload"] or {}, _outcome(awaited, ok, error, details))
    return await task_reports.record_outcome_grouped(
        db,
        key.task_id,
        step=found["step"],
        attempt=found["attempt"],
        owner=found["owner"],
        payload_text=payload_text,
        payload=payload,
        new_owner=owner,
        lease_seconds=lease_seconds,
    )
