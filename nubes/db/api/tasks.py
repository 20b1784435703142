"""Durable conductor tasks: rows claimed by one conductor at a time through a lease.

Claiming is a conditional UPDATE, never a lock::

    UPDATE conductor_tasks
       SET owner = :me, lease_expires_at = :now + :lease, status = 'running',
           attempt = attempt + 1
     WHERE id = :task AND status IN ('pending', 'running')
       AND (owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < :now)

Of two conductors racing for a task, the database lets exactly one UPDATE
match; the other sees zero rows. A conductor that died stops renewing, its
lease runs out, and the next claim takes the task over with ``attempt``
one higher. Every later write (step, renew, finish) is conditional on
``owner`` (and, when given, ``attempt``), so a conductor that lost its lease
gets :class:`~nubes.exception.TaskLeaseLost` instead of overwriting the new
owner's progress: (owner, attempt) is a fencing token.

Time is the caller's clock (``now`` defaults to the local UTC time), like
Nova's service heartbeats: conductors need synchronised clocks, and leases
should be long against the skew (tens of seconds, not milliseconds).

One *active* task per instance is enforced by the unique
``active_instance_uuid`` column: set to the instance while the task is
pending or running, NULL once it ended.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db import group_commit
from nubes.db.api._common import (
    Row,
    StatementCache,
    fetch_all,
    fetch_one,
    insert_row,
    insert_rows,
    live,
    new_uuid,
    now_or,
    prebuilt_params,
    run_prebuilt_update,
    soft_delete_where,
    update_row,
)
from nubes.db.models import NOT_DELETED, conductor_tasks
from nubes.db.types import utcnow

#: Candidates :func:`claim_next` looks at per call.
CLAIM_NEXT_CANDIDATES = 16


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.RUNNING)
FINAL_STATUSES = (
    TaskStatus.SUCCEEDED,
    TaskStatus.FAILED,
    TaskStatus.ROLLED_BACK,
    TaskStatus.CANCELLED,
)

#: Fields a lease holder may change through :func:`update`.
UPDATABLE_FIELDS = frozenset({"step", "payload", "last_error", "deadline", "context"})

_t = conductor_tasks

# The engine's writes (claim, step, renew, finish, report) run for every task
# at every step: prebuilt statements with bound parameters, and the status
# constants as SQL literals (no expanding IN to render per execution).
_STATEMENTS = StatementCache()
_LIVE_SQL: ColumnElement[Any] = literal_column(str(NOT_DELETED))
_ACTIVE_SQL: ColumnElement[bool] = _t.c.status.in_(
    [literal_column(f"'{s.value}'") for s in (TaskStatus.PENDING, TaskStatus.RUNNING)]
)


def _by_id() -> ColumnElement[bool]:
    return _t.c.id == bindparam("_id")


def _taken_over_at() -> ColumnElement[Any]:
    """A claim's ``taken_over_at``: now when the task had an owner (whose lease
    ran out: the claim matched), else unchanged (new or released)."""
    now = bindparam("_now", type_=_t.c.taken_over_at.type)
    return case((_t.c.owner.is_not(None), now), else_=_t.c.taken_over_at)


async def create(
    conn: AsyncConnection,
    *,
    kind: str,
    instance_uuid: str | None = None,
    step: str | None = None,
    payload: Any = None,
    context: Any = None,
    deadline: dt.datetime | None = None,
    uuid: str | None = None,
) -> Row:
    """Queue a task (pending, unowned).

    Raises DBDuplicateEntry (columns ``active_instance_uuid``) if the
    instance already has an active task.
    """
    values = {
        "uuid": uuid or new_uuid(),
        "kind": kind,
        "instance_uuid": instance_uuid,
        "active_instance_uuid": instance_uuid,
        "status": TaskStatus.PENDING.value,
        "step": step,
        "payload": payload,
        "context": context,
        "deadline": deadline,
        "attempt": 0,
    }
    return await insert_row(conn, _t, values)


async def create_many(
    conn: AsyncConnection,
    instance_uuids: Sequence[str],
    *,
    kind: str,
    step: str | None = None,
    payload: Any = None,
    context: Any = None,
    deadline: dt.datetime | None = None,
) -> list[Row]:
    """:func:`create` of the same task for several instances; the rows, in that order.

    Raises DBDuplicateEntry if one of the instances already has an active task.
    """
    data = [
        {
            "uuid": new_uuid(),
            "kind": kind,
            "instance_uuid": uuid,
            "active_instance_uuid": uuid,
            "status": TaskStatus.PENDING.value,
            "step": step,
            "payload": payload,
            "context": context,
            "deadline": deadline,
            "attempt": 0,
        }
        for uuid in instance_uuids
    ]
    stored = {row["uuid"]: row for row in await insert_rows(conn, _t, data)}
    return [stored[item["uuid"]] for item in data]


async def get(conn: AsyncConnection, task_id: int) -> Row:
    row = await get_read(task_id).run(conn)
    if row is None:
        raise exception.TaskNotFound(task_id=task_id)
    return row


async def get_by_uuid(conn: AsyncConnection, uuid: str) -> Row:
    row = await fetch_one(conn, select(_t).where(_t.c.uuid == uuid, live(_t)))
    if row is None:
        raise exception.TaskNotFound(task_id=uuid)
    return row


async def get_active_for_instance(conn: AsyncConnection, instance_uuid: str) -> Row | None:
    return await fetch_one(conn, select(_t).where(_t.c.active_instance_uuid == instance_uuid))


def _claimable(now: dt.datetime) -> ColumnElement[bool]:
    return (
        _t.c.status.in_([s.value for s in ACTIVE_STATUSES])
        & live(_t)
        & or_(_t.c.owner.is_(None), _t.c.lease_expires_at.is_(None), _t.c.lease_expires_at < now)
    )


async def claim(
    conn: AsyncConnection,
    task_id: int,
    owner: str,
    *,
    lease_seconds: float,
    now: dt.datetime | None = None,
) -> Row | None:
    """Take the task if nobody holds a valid lease on it; the claimed row, or None."""
    now = now_or(now)
    values = {
        "owner": owner,
        "lease_expires_at": now + dt.timedelta(seconds=lease_seconds),
        "status": TaskStatus.RUNNING.value,
    }

    def where() -> list[ColumnElement[bool]]:
        claimable = or_(
            _t.c.owner.is_(None),
            _t.c.lease_expires_at.is_(None),
            _t.c.lease_expires_at < bindparam("_now", type_=_t.c.lease_expires_at.type),
        )
        return [_by_id(), _ACTIVE_SQL, claimable]

    return await run_prebuilt_update(
        conn,
        _STATEMENTS,
        _t,
        "claim",
        values,
        where,
        {"_id": task_id, "_now": now},
        key=_by_id,
        exprs={"attempt": _t.c.attempt + 1, "taken_over_at": _taken_over_at()},
    )


async def claim_many(
    conn: AsyncConnection,
    task_ids: Sequence[int],
    owner: str,
    *,
    lease_seconds: float,
    now: dt.datetime | None = None,
) -> list[Row]:
    """:func:`claim` for several tasks; the rows claimed, by id.

    One statement where the backend has UPDATE ... RETURNING: each row is
    taken under the same conditions as by :func:`claim`, independently of
    the others, so the outcome is that of claiming them one by one.
    """
    if not task_ids:
        return []
    if not conn.dialect.update_returning:
        rows = []
        for task_id in sorted(task_ids):
            row = await claim(conn, task_id, owner, lease_seconds=lease_seconds, now=now)
            if row is not None:
                rows.append(row)
        return rows
    now = now_or(now)

    def build() -> Any:
        claimable = or_(
            _t.c.owner.is_(None),
            _t.c.lease_expires_at.is_(None),
            _t.c.lease_expires_at < bindparam("_now", type_=_t.c.lease_expires_at.type),
        )
        return (
            _t.update()
            .where(_t.c.id.in_(bindparam("_ids", expanding=True)), live(_t), _ACTIVE_SQL, claimable)
            .values(
                owner=bindparam("_owner"),
                lease_expires_at=bindparam("_lease"),
                status=TaskStatus.RUNNING.value,
                attempt=_t.c.attempt + 1,
                taken_over_at=_taken_over_at(),
            )
            .returning(*_t.c)
        )

    stmt = _STATEMENTS.get(("claim_many",), build)
    params = {
        "_ids": sorted(task_ids),
        "_now": now,
        "_owner": owner,
        "_lease": now + dt.timedelta(seconds=lease_seconds),
    }
    rows = [dict(r) for r in (await conn.execute(stmt, params)).mappings().all()]
    rows.sort(key=lambda r: r["id"])
    return rows


async def claim_next(
    conn: AsyncConnection,
    owner: str,
    *,
    lease_seconds: float,
    kinds: Sequence[str] | None = None,
    now: dt.datetime | None = None,
) -> Row | None:
    """Claim the oldest claimable task (new, or with an expired lease); None if none is.

    Candidates are tried in id order, never shuffled: InnoDB keeps the row
    lock of a conditional UPDATE that did not match until the transaction
    ends, so two conductors trying rows in different orders deadlock, while
    a common order only makes the later one wait a moment. Keep the
    enclosing transaction short for the same reason.
    """
    now = now_or(now)
    stmt = select(_t.c.id).where(_claimable(now))
    if kinds is not None:
        stmt = stmt.where(_t.c.kind.in_(list(kinds)))
    stmt = stmt.order_by(_t.c.id).limit(CLAIM_NEXT_CANDIDATES)
    candidates = list((await conn.execute(stmt)).scalars())
    for task_id in candidates:
        row = await claim(conn, task_id, owner, lease_seconds=lease_seconds, now=now)
        if row is not None:
            return row
    return None


async def _write_as_owner(
    conn: AsyncConnection,
    task_id: int,
    owner: str,
    attempt: int | None,
    values: Mapping[str, Any],
) -> Row:
    row = await _update_as_owner(conn, task_id, owner, attempt, values)
    if row is None:
        raise exception.TaskLeaseLost(task_id=task_id, owner=owner)
    return row


async def _update_as_owner(
    conn: AsyncConnection,
    task_id: int,
    owner: str,
    attempt: int | None,
    values: Mapping[str, Any],
) -> Row | None:
    """The conditional write of a lease holder (prebuilt): the new row, or None."""
    checked = attempt is not None
    return await run_prebuilt_update(
        conn,
        _STATEMENTS,
        _t,
        "as_owner_checked" if checked else "as_owner",
        values,
        lambda: _as_owner(checked),
        _owner_params(task_id, owner, attempt),
        key=_by_id,
    )


def _as_owner(checked: bool) -> list[ColumnElement[bool]]:
    """The lease holder's condition: (owner, attempt) is the fencing token."""
    conditions = [_by_id(), _t.c.deleted == _LIVE_SQL, _t.c.owner == bindparam("_owner")]
    conditions.append(_ACTIVE_SQL)
    if checked:
        conditions.append(_t.c.attempt == bindparam("_attempt"))
    return conditions


def _owner_params(task_id: int, owner: str, attempt: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"_id": task_id, "_owner": owner}
    if attempt is not None:
        params["_attempt"] = attempt
    return params


async def renew_lease(
    conn: AsyncConnection,
    task_id: int,
    owner: str,
    *,
    lease_seconds: float,
    attempt: int | None = None,
    now: dt.datetime | None = None,
) -> Row:
    """Extend the lease; TaskLeaseLost if another conductor took the task over."""
    expires = now_or(now) + dt.timedelta(seconds=lease_seconds)
    return await _write_as_owner(conn, task_id, owner, attempt, {"lease_expires_at": expires})


async def renew_leases(
    conn: AsyncConnection,
    owner: str,
    held: Sequence[tuple[int, int]],
    *,
    lease_seconds: float,
    now: dt.datetime | None = None,
) -> set[int]:
    """:func:`renew_lease` for several (task id, attempt) pairs; the ids renewed.

    A task left out of the answer is one whose lease was lost.

    The rows are locked first with SKIP LOCKED, in id order, and only those
    are written: a renewal never waits for a row lock. It held every row
    in one statement before, and a grouped commit writing two of them in
    its own order (a batch's step commits are ordered by instance)
    deadlocked with it; PostgreSQL breaks a deadlock only after
    ``deadlock_timeout`` (1 s), and the whole batch of steps waited that
    long each time (bench/scale.py: three in a run, a 400-server boot at
    75 servers/s instead of 200). A row locked elsewhere right now is being
    written by this owner's own step commit, which sets the lease itself,
    or taken over by another conductor's report: it counts as renewed while
    a plain read still shows it held by ``owner``, and the next renewal
    (a third of the lease later) looks again.
    """
    expires = now_or(now) + dt.timedelta(seconds=lease_seconds)
    by_attempt: dict[int, list[int]] = {}
    for task_id, attempt in held:
        by_attempt.setdefault(attempt, []).append(task_id)

    def held_by_owner() -> Any:
        return (
            select(_t.c.id)
            .where(
                _t.c.id.in_(bindparam("_ids", expanding=True)),
                live(_t),
                _t.c.owner == bindparam("_owner"),
                _ACTIVE_SQL,
                _t.c.attempt == bindparam("_attempt"),
            )
            .order_by(_t.c.id)
        )

    lock = _STATEMENTS.get(
        ("renew_lock",), lambda: held_by_owner().with_for_update(skip_locked=True)
    )
    still_held = _STATEMENTS.get(("renew_still_held",), held_by_owner)
    # The conditions were checked under the lock just taken.
    write = _STATEMENTS.get(
        ("renew_locked",),
        lambda: (
            _t.update()
            .where(_t.c.id.in_(bindparam("_ids", expanding=True)))
            .values(lease_expires_at=bindparam("_lease"))
        ),
    )
    renewed: set[int] = set()
    for attempt, ids in sorted(by_attempt.items()):
        params = {"_ids": sorted(ids), "_owner": owner, "_attempt": attempt}
        locked = set((await conn.execute(lock, params)).scalars())
        if locked:
            await conn.execute(write, {"_ids": sorted(locked), "_lease": expires})
            renewed |= locked
        busy = sorted(set(ids) - locked)
        if busy:
            found = await conn.execute(still_held, {**params, "_ids": busy})
            renewed.update(found.scalars())
    return renewed


async def update(
    conn: AsyncConnection,
    task_id: int,
    owner: str,
    values: Mapping[str, Any],
    *,
    attempt: int | None = None,
    lease_seconds: float | None = None,
    now: dt.datetime | None = None,
) -> Row:
    """Record progress (step, payload, last_error ...), optionally renewing the lease."""
    data = _progress(values, lease_seconds, now)
    return await _write_as_owner(conn, task_id, owner, attempt, data)


def _progress(
    values: Mapping[str, Any], lease_seconds: float | None, now: dt.datetime | None
) -> dict[str, Any]:
    unknown = set(values) - UPDATABLE_FIELDS
    if unknown:
        raise exception.ValidationError(field=",".join(sorted(unknown)), reason="not updatable")
    data = dict(values)
    if lease_seconds is not None:
        data["lease_expires_at"] = now_or(now) + dt.timedelta(seconds=lease_seconds)
    return data


async def finish(
    conn: AsyncConnection,
    task_id: int,
    owner: str,
    *,
    status: TaskStatus = TaskStatus.SUCCEEDED,
    last_error: str | None = None,
    attempt: int | None = None,
) -> Row:
    """End the task: final status, lease dropped, instance free for its next task."""
    values = _ending(status, last_error, None)
    return await _write_as_owner(conn, task_id, owner, attempt, values)


def _ending(
    status: TaskStatus, last_error: str | None, values: Mapping[str, Any] | None
) -> dict[str, Any]:
    if status not in FINAL_STATUSES:
        raise exception.Invalid(reason=f"{status} is not a final task status")
    data = _progress(values or {}, None, None)
    data.update(
        status=TaskStatus(status).value,
        active_instance_uuid=None,
        owner=None,
        lease_expires_at=None,
    )
    if last_error is not None:
        data["last_error"] = last_error
    return data


# --- the lease holder's step commits, as descriptions ------------------------------
# The task engine commits a step's end together with what the step wrote
# (the instance placed, an event, the action finished) through
# :func:`nubes.db.group_commit.commit`, which groups them with other tasks'
# commits where that pays. These describe :func:`update` and :func:`finish`
# for it: the same values and conditions, nothing read back.


def _owner_write(
    task_id: int, owner: str, attempt: int | None, values: Mapping[str, Any]
) -> group_commit.Write:
    data = dict(values)
    if "updated_at" not in data:
        data["updated_at"] = utcnow()
    keys = tuple(sorted(data))
    checked = attempt is not None

    def build() -> Any:
        return (
            _t.update().where(*_as_owner(checked)).values({k: bindparam(f"_v_{k}") for k in keys})
        )

    async def missed(conn: AsyncConnection) -> None:
        raise exception.TaskLeaseLost(task_id=task_id, owner=owner)

    params = prebuilt_params(data, **_owner_params(task_id, owner, attempt))
    return group_commit.Write((__name__, "as_owner", keys, checked), build, params, missed)


def update_write(
    task_id: int,
    owner: str,
    values: Mapping[str, Any],
    *,
    attempt: int | None = None,
    lease_seconds: float | None = None,
    now: dt.datetime | None = None,
) -> group_commit.Write:
    """:func:`update` for a commit (TaskLeaseLost when the lease was lost)."""
    return _owner_write(task_id, owner, attempt, _progress(values, lease_seconds, now))


def finish_write(
    task_id: int,
    owner: str,
    *,
    status: TaskStatus = TaskStatus.SUCCEEDED,
    last_error: str | None = None,
    attempt: int | None = None,
    values: Mapping[str, Any] | None = None,
) -> group_commit.Write:
    """:func:`finish` (with :func:`update` of ``values`` in the same statement) for a commit."""
    return _owner_write(task_id, owner, attempt, _ending(status, last_error, values))


async def cancel(
    conn: AsyncConnection,
    task_id: int,
    *,
    reason: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Row:
    """End an active task whoever holds it (a delete's cancel); TaskNotFound if
    not active. ``payload``, when given, replaces the stored one (what the
    task must not keep once it has ended, such as a user's files)."""
    values: dict[str, Any] = {
        "status": TaskStatus.CANCELLED.value,
        "active_instance_uuid": None,
        "owner": None,
        "lease_expires_at": None,
        "last_error": reason,
    }
    if payload is not None:
        values["payload"] = dict(payload)
    active = _t.c.status.in_([s.value for s in ACTIVE_STATUSES])
    row = await update_row(conn, _t, _t.c.id == task_id, values, conditions=[active])
    if row is None:
        raise exception.TaskNotFound(task_id=task_id)
    return row


async def list_claimable(
    conn: AsyncConnection,
    *,
    limit: int,
    kinds: Sequence[str] | None = None,
    now: dt.datetime | None = None,
) -> list[int]:
    """Ids of tasks :func:`claim` would take now (new, released or lease expired), oldest first."""
    stmt = select(_t.c.id).where(_claimable(now_or(now)))
    if kinds is not None:
        stmt = stmt.where(_t.c.kind.in_(list(kinds)))
    return list((await conn.execute(stmt.order_by(_t.c.id).limit(limit))).scalars())


async def release(conn: AsyncConnection, task_id: int, owner: str, *, attempt: int) -> bool:
    """Give up a lease without ending the task, so any conductor may claim it at once.

    False when the lease was no longer ours (nothing to give up).
    """
    values = {"owner": None, "lease_expires_at": None}
    return await _update_as_owner(conn, task_id, owner, attempt, values) is not None


def _get_statement() -> Any:
    return select(_t).where(_by_id(), _t.c.deleted == _LIVE_SQL)


def get_read(task_id: int) -> group_commit.Read:
    """:func:`get` as a description, for :func:`nubes.db.group_commit.fetch` (None if none)."""
    return group_commit.Read((__name__, "get"), _get_statement, {"_id": task_id})


def _first_of_kind_statement() -> Any:
    # The oldest by id, as a subquery rather than ORDER BY ... LIMIT, whose
    # limit would be a bind parameter nobody names (a prepared statement's rule).
    mine = (_t.c.instance_uuid == bindparam("_uuid")) & (_t.c.kind == bindparam("_kind"))
    first = select(func.min(_t.c.id)).where(mine, _t.c.deleted == _LIVE_SQL).scalar_subquery()
    return select(_t).where(_t.c.id == first)


def first_of_kind_read(instance_uuid: str, kind: str) -> group_commit.Read:
    """The instance's oldest live task of ``kind`` (None if none), as a description
    (:func:`nubes.db.group_commit.fetch_together`, or ``.run(conn)`` in a block)."""
    return group_commit.Read(
        (__name__, "first_of_kind"),
        _first_of_kind_statement,
        {"_uuid": instance_uuid, "_kind": str(kind)},
    )


def outcome_write(
    row: Row,
    payload: Any,
    *,
    new_owner: str | None = None,
    lease_seconds: float | None = None,
    now: dt.datetime | None = None,
) -> tuple[group_commit.Write, Row]:
    """Write what a compute host reported into the active task ``row`` (as read), whoever owns it.

    The write and the row as it is once the write committed. The write is
    conditioned on what the caller read: the task still at its ``step``
    with the same claim ``attempt`` and ``owner``, and not written since
    (``updated_at``: a step committed by its owner in between — a
    reschedule to the next host at the same step — changes ``updated_at``
    and nothing else the condition sees; on PostgreSQL's READ COMMITTED the
    UPDATE would otherwise land on that newer row and put the old payload
    back). So a report never overwrites progress made since: a miss raises
    :class:`~nubes.exception.TaskChanged` (read it again). The lease is
    handed over in the same statement: to ``new_owner`` (a claim,
    ``attempt`` + 1) or to nobody, so the next claim by any conductor sees
    the report.
    """
    values: dict[str, Any] = {"payload": payload, "updated_at": utcnow()}
    adopt = new_owner is not None
    if adopt:
        values.update(
            owner=new_owner,
            status=TaskStatus.RUNNING.value,
            lease_expires_at=now_or(now) + dt.timedelta(seconds=lease_seconds or 0.0),
        )
    else:
        values.update(owner=None, lease_expires_at=None)
    keys = tuple(sorted(values))
    unowned = row["owner"] is None
    stamped = row["updated_at"] is not None

    def build() -> Any:
        changes: dict[str, Any] = {k: bindparam(f"_v_{k}") for k in keys}
        if adopt:
            changes["attempt"] = _t.c.attempt + literal_column("1")
        return (
            _t.update()
            .where(
                _by_id(),
                _t.c.deleted == _LIVE_SQL,
                _ACTIVE_SQL,
                _t.c.step == bindparam("_step"),
                _t.c.attempt == bindparam("_attempt"),
                _t.c.owner.is_(None) if unowned else _t.c.owner == bindparam("_owner"),
                _t.c.updated_at == bindparam("_updated_at", type_=_t.c.updated_at.type)
                if stamped
                else _t.c.updated_at.is_(None),
            )
            .values(changes)
        )

    task_id = row["id"]

    async def missed(conn: AsyncConnection) -> None:
        raise exception.TaskChanged(task_id=task_id)

    params = prebuilt_params(values, _id=task_id, _step=row["step"], _attempt=row["attempt"])
    if not unowned:
        params["_owner"] = row["owner"]
    if stamped:
        params["_updated_at"] = row["updated_at"]
    shape = (__name__, "outcome", keys, unowned, adopt, stamped)
    new = {**row, **values}
    if adopt:
        new["attempt"] = row["attempt"] + 1
    return group_commit.Write(shape, build, params, missed), new


async def list_expired(
    conn: AsyncConnection, *, now: dt.datetime | None = None, limit: int | None = None
) -> list[Row]:
    """Active tasks whose owner's lease ran out (their conductor is presumed dead)."""
    now = now_or(now)
    stmt = select(_t).where(
        _t.c.status.in_([s.value for s in ACTIVE_STATUSES]),
        live(_t),
        _t.c.owner.is_not(None),
        _t.c.lease_expires_at < now,
    )
    stmt = stmt.order_by(_t.c.lease_expires_at, _t.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return await fetch_all(conn, stmt)


async def list_past_deadline(
    conn: AsyncConnection, *, now: dt.datetime | None = None, limit: int | None = None
) -> list[Row]:
    """Active tasks whose deadline passed (to be rolled back)."""
    stmt = select(_t).where(
        _t.c.status.in_([s.value for s in ACTIVE_STATUSES]),
        live(_t),
        _t.c.deadline < now_or(now),
    )
    stmt = stmt.order_by(_t.c.deadline, _t.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return await fetch_all(conn, stmt)


async def list_active(
    conn: AsyncConnection, *, owner: str | None = None, kind: str | None = None
) -> list[Row]:
    stmt = select(_t).where(_t.c.status.in_([s.value for s in ACTIVE_STATUSES]), live(_t))
    if owner is not None:
        stmt = stmt.where(_t.c.owner == owner)
    if kind is not None:
        stmt = stmt.where(_t.c.kind == kind)
    return await fetch_all(conn, stmt.order_by(_t.c.id))


async def list_for_instance(conn: AsyncConnection, instance_uuid: str) -> list[Row]:
    stmt = select(_t).where(_t.c.instance_uuid == instance_uuid, live(_t))
    return await fetch_all(conn, stmt.order_by(_t.c.id))


async def delete(conn: AsyncConnection, task_id: int, *, now: dt.datetime | None = None) -> None:
    """Soft-delete a finished task so archiving can move it away."""
    finished = _t.c.status.in_([s.value for s in FINAL_STATUSES])
    if not await soft_delete_where(conn, _t, (_t.c.id == task_id) & finished, now):
        raise exception.TaskNotFound(task_id=task_id)
