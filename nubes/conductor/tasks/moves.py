"""What the move tasks share: their migration record, the claims of a move, compute steps.

Claims during a move follow one rule (``docs/moves.md``): while an
instance moves, the **migration** (its uuid as the consumer) holds what the
instance used on the source, and the **instance** holds what it needs on
the destination. So:

* :func:`hand_source_claim_to_migration` — before scheduling: the
  instance's allocations become the migration's, so the scheduler claims
  the destination for the instance afresh (and a repeated scheduling step
  gets the destination it already holds, never the source);
* :func:`drop_source_claim` — the move succeeded (confirmed, live migration
  or evacuation done): the migration's allocations are released;
* :func:`claims_back_to_source` — the move was rolled back or reverted: the
  instance's destination claim is released and the migration's allocations
  become the instance's again.

Each is idempotent and runs in the caller's transaction (a step's commit),
so the claims and the step that needs them change together.

Some of these writes can also be descriptions a grouped commit can run
(:class:`nubes.db.group_commit.Write`, made in ``db/api``): those statements are
*required* to match exactly when the Python write would do the common
thing, so anything else (a status the table forbids, a migration someone
else moved on, a row gone) rolls the unit back and the commit runs the
write the ordinary way, whose ``missed`` decides as the Python write always did.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nubes import exception
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.base import Run, Writes
from nubes.conductor.tasks.payloads import Awaited, MovePayload, Outcome
from nubes.conductor.tasks.states import TaskKind
from nubes.db.api import compute_nodes
from nubes.db.api import groups as groups_api
from nubes.db.api import migrations as migrations_api
from nubes.db.api import tasks as tasks_api
from nubes.db.engine import Connection
from nubes.db.group_commit import Read
from nubes.db.types import utcnow
from nubes.objects.migration import Migration
from nubes.objects.states import (
    MIGRATION_TRANSITIONS,
    MigrationType,
    check_migration_status,
)


def scheduling_reads(instance_uuid: str) -> list[Read]:
    """What :func:`scheduling_request` reads (the instance's build task, the
    server group it is a member of), as descriptions: a step reads them with
    its other rows in one grouped read (:func:`nubes.db.group_commit.fetch_together`)."""
    return [
        tasks_api.first_of_kind_read(instance_uuid, TaskKind.BUILD),
        groups_api.uuid_of_instance_read(instance_uuid),
    ]


def scheduling_request_of(
    found: Sequence[dict[str, Any] | None], image_ref: str | None
) -> dict[str, Any]:
    """What a move asks the scheduler again (Nova's request spec), from the rows
    :func:`scheduling_reads` found: the image and hints of the instance's build
    task, and the server group it is a member of now (none once the group was
    deleted), so moves keep the group's policy."""
    built, group = found
    first = dict(built["payload"] or {}) if built is not None else {}
    request: dict[str, Any] = {
        "image": first.get("image") or {"id": image_ref},
        "hints": first.get("hints") or {},
    }
    if group is not None:
        request["group"] = group["uuid"]
    return request


async def scheduling_request(
    conn: Connection, instance_uuid: str, image_ref: str | None
) -> dict[str, Any]:
    """:func:`scheduling_request_of` what :func:`scheduling_reads` find in ``conn``."""
    found = [await read.run(conn) for read in scheduling_reads(instance_uuid)]
    return scheduling_request_of(found, image_ref)


def migration_id(run: Run) -> int:
    value = run.typed(MovePayload).migration_id
    if value is None:
        raise exception.Invalid(reason=f"{run!r} names no migration")
    return value


async def load_migration(run: Run) -> dict[str, Any]:
    """The task's migration row (MigrationNotFound if it went)."""
    async with run.engine.db.reader() as conn:
        return await migrations_api.get_by_id(conn, migration_id(run))


def migration_object(row: dict[str, Any]) -> Migration:
    """The row as the object compute hosts are sent."""
    return Migration._from_db({k: v for k, v in row.items() if k in Migration.obj_fields})


def set_migration(
    run: Run,
    values: dict[str, Any],
    *,
    only_from: Sequence[str] | None = None,
    migration_type: str | None = None,
    missed: Callable[[Connection], Awaitable[None]] | None = None,
) -> Writes:
    """A write of migration fields for a commit's transaction.

    A ``status`` in ``values`` is checked against the migration status table
    (:func:`~nubes.objects.states.check_migration_status`) from the status
    read in the same transaction; with ``only_from``, a migration whose
    status is not one of those is left as it is (an idempotent repeat, or
    someone else — an abort — moved it on).

    With ``migration_type`` (what the task's migration is) the write can
    also join a grouped commit: one UPDATE required to find the migration of
    that type in a status it may go to ``status`` from (and one of
    ``only_from``); anything else makes the commit run the write above, or
    ``missed`` when given (a caller whose miss means something else).
    """
    ident = migration_id(run)

    async def write(conn: Connection) -> None:
        row = await migrations_api.get_by_id(conn, ident)
        if only_from is not None and row["status"] not in only_from:
            return
        target = values.get("status")
        if target is not None:
            check_migration_status(row["migration_type"], row["status"], str(target), row["id"])
        await migrations_api.update(conn, row["id"], values)

    if migration_type is None:
        return write
    ordinary = missed or write
    target = values.get("status")
    expected: tuple[str, ...] | None = None
    if target is not None:
        table = MIGRATION_TRANSITIONS[MigrationType(migration_type)]
        allowed = {str(target)} | {str(s) for s, after in table.items() if target in after}
        candidates = allowed if only_from is None else {str(s) for s in only_from}
        expected = tuple(sorted(candidates & allowed))
        if not expected:
            return ordinary  # never the common case: the ordinary write says why
    elif only_from is not None:
        expected = tuple(sorted(str(s) for s in only_from))

    async def why(conn: Connection) -> None:
        await ordinary(conn)  # what the status was, and what that means

    return migrations_api.update_write(
        ident, str(migration_type), values, expected=expected, missed=why
    )


# -- claims --------------------------------------------------------------------------------


def hand_source_claim_to_migration(instance_uuid: str, migration_uuid: str) -> Writes:
    """The instance's allocations become the migration's (once: a repeat does nothing)."""
    return compute_nodes.hand_over_write(instance_uuid, migration_uuid)


def drop_source_claim(migration_uuid: str) -> Writes:
    """Release what the migration holds (the source's resources)."""
    return compute_nodes.release_writes(migration_uuid)


def claims_back_to_source(instance_uuid: str, migration_uuid: str) -> Writes:
    """Release the instance's destination claim; the migration's become the instance's.

    Idempotent: once the migration holds nothing, the instance's allocations
    are the source's and are left alone.
    """

    async def write(conn: Connection) -> None:
        if not await compute_nodes.holds_allocations(conn, migration_uuid):
            return
        await compute_nodes.release(conn, instance_uuid)
        await compute_nodes.allocations_move(conn, migration_uuid, instance_uuid)

    return write


# -- compute steps ---------------------------------------------------------------------------


async def ask(
    run: Run,
    step: str,
    host: str,
    *,
    node: str | None = None,
    payload: MovePayload | dict[str, Any] | None = None,
    writes: Writes | None = None,
    attempt: int | None = None,
) -> str:
    """Commit ``step`` as awaiting ``host``'s report of it (its next try).

    The try is one more than the last one sent for this step, so a step that
    is retried (it follows itself) is never confused with its earlier try.
    """
    raw = payload if isinstance(payload, dict) else run.payload
    typed = payload if isinstance(payload, MovePayload) else payloads.decode(raw, MovePayload)
    number = attempt if attempt is not None else typed.tried(step) + 1
    typed.tries = {**typed.tries, str(step): number}
    typed.awaiting = Awaited(
        step=str(step),
        attempt=number,
        host=host,
        node=node,
        until=time.time() + run.engine.compute_step_timeout,
    )
    typed.outcome = None
    return await run.commit(step, payload=payloads.encode(typed, raw), writes=writes)


async def answer(run: Run, send: Callable[[Awaited], Awaitable[None]]) -> Outcome | None:
    """Send the awaited step (``send(awaited)``) unless answered, and wait for the outcome.

    None when the task's deadline passed first; a failure outcome when the
    host did not answer in time (``timeout`` set).
    """
    awaited = run.awaited()

    async def go() -> None:
        await send(awaited)

    return await run.wait_for_report(go)


# -- deadlines ---------------------------------------------------------------------------


def extend_deadline(run: Run, seconds: float) -> Writes:
    """Give the task ``seconds`` from now (for a commit's transaction).

    A rollback that starts because the deadline passed must still reach its
    hosts (the engine never waits for a report past the deadline); it gets
    a deadline of its own. The write is the lease holder's, so a conductor
    that lost the task changes nothing.
    """
    deadline = utcnow() + dt.timedelta(seconds=seconds)

    async def write(conn: Connection) -> None:
        await tasks_api.update(
            conn, run.id, run.engine.owner, {"deadline": deadline}, attempt=run.attempt
        )
        run.deadline = deadline

    return write
