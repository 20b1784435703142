"""A compute host's report of a task step, through the group committer.

A compute host's report is a read of the task, a check, and a write
conditioned on what was read. Where the group committer runs units, both
go through it (each shares a transaction with other writers): the write
is then conditioned on the payload read, as well as on step, claim and
owner, so that it lands only on the very row the check looked at, as if
read and write had shared one transaction; if anything changed, the
caller reads again.

Used by :mod:`nubes.conductor.tasks.reports` where the group committer runs
units (SQLite, PostgreSQL); elsewhere the report takes :func:`nubes.db.api.tasks.
record_outcome` in an ordinary transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sqlalchemy import ColumnElement, Text, bindparam, literal_column, select, type_coerce

from nubes.db import group_commit
from nubes.db.api._common import Row, StatementCache, prebuilt_params
from nubes.db.api.tasks import ACTIVE_STATUSES, TaskStatus
from nubes.db.engine import Database
from nubes.db.models import NOT_DELETED, conductor_tasks
from nubes.db.types import utcnow

_t = conductor_tasks
# Prebuilt statements of this module (keys apart from nubes.db.api.tasks' own cache), with
# the status and soft-delete constants as SQL literals, as the engine's writes there are.
_STATEMENTS = StatementCache()
_ACTIVE_SQL: ColumnElement[bool] = _t.c.status.in_(
    [literal_column(f"'{s.value}'") for s in ACTIVE_STATUSES]
)
_LIVE_SQL: ColumnElement[Any] = literal_column(str(NOT_DELETED))


def _by_id() -> ColumnElement[bool]:
    return _t.c.id == bindparam("_id")


#: Key, in a row read by :func:`read_grouped`, of the payload as stored (text).
PAYLOAD_TEXT = "_payload_text"


def _payload_text() -> ColumnElement[Any]:
    return type_coerce(_t.c.payload, Text)


async def read_grouped(db: Database, task_id: int) -> Row | Literal[False] | None:
    """The live task (with its payload as stored under :data:`PAYLOAD_TEXT`),
    None if there is none, or False when it cannot be read this way here."""
    committer = db.group_commit if not db.in_block() else None
    if committer is None or not committer.units:
        return False
    dialect = committer.dialect

    def build() -> group_commit.Prepared:
        stmt = select(_t, _payload_text().label(PAYLOAD_TEXT)).where(
            _by_id(), _t.c.deleted == _LIVE_SQL
        )
        return group_commit.prepare(stmt, dialect)

    prepared: group_commit.Prepared = _STATEMENTS.get(
        ("unit_get", dialect.name, dialect.driver), build
    )
    statement = group_commit.UnitStatement(
        prepared, prepared.args({"_id": task_id}), required=False, returning=True
    )
    outcome = await committer.execute_unit(f"task-{task_id}", [statement])
    if not outcome:
        return False
    rows = outcome[0][1]
    return prepared.row(rows[0]) if rows else None


async def record_outcome_grouped(
    db: Database,
    task_id: int,
    *,
    step: str,
    attempt: int,
    owner: str | None,
    payload_text: str,
    payload: Any,
    new_owner: str | None = None,
    lease_seconds: float | None = None,
) -> Row | Literal[False] | None:
    """:func:`record_outcome` for a row read by :func:`read_grouped`, as a grouped unit.

    Also conditioned on the payload being still ``payload_text``. The new
    row, None when the task changed since it was read, or False when it
    cannot be done this way here.
    """
    committer = db.group_commit if not db.in_block() else None
    if committer is None or not committer.units:
        return False
    dialect = committer.dialect
    values: dict[str, Any] = {"payload": payload, "updated_at": utcnow()}
    adopt = new_owner is not None
    if adopt:
        values.update(
            owner=new_owner,
            status=TaskStatus.RUNNING.value,
            lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds or 0.0),
        )
    else:
        values.update(owner=None, lease_expires_at=None)
    unowned = owner is None
    keys = tuple(sorted(values))

    def build() -> group_commit.Prepared:
        changes: dict[str, Any] = {k: bindparam(f"_v_{k}") for k in keys}
        if adopt:
            changes["attempt"] = _t.c.attempt + literal_column("1")
        stmt = (
            _t.update()
            .where(
                _t.c.deleted == _LIVE_SQL,
                _by_id(),
                _ACTIVE_SQL,
                _t.c.step == bindparam("_step"),
                _t.c.attempt == bindparam("_attempt"),
                _t.c.owner.is_(None) if unowned else _t.c.owner == bindparam("_owner"),
                _payload_text() == bindparam("_payload_text", type_=Text()),
            )
            .values(changes)
            .returning(*_t.c)
        )
        return group_commit.prepare(stmt, dialect)

    shape = ("unit_outcome", dialect.name, dialect.driver, keys, unowned, adopt)
    prepared: group_commit.Prepared = _STATEMENTS.get(shape, build)
    params = prebuilt_params(
        values, _id=task_id, _step=step, _attempt=attempt, _payload_text=payload_text
    )
    if not unowned:
        params["_owner"] = owner
    statement = group_commit.UnitStatement(prepared, prepared.args(params), returning=True)
    outcome = await committer.execute_unit(f"task-{task_id}", [statement])
    if outcome is None:
        return False  # the batch failed: the ordinary way then
    if outcome is False:
        return None
    db.note_write()
    rows = outcome[0][1]
    assert rows
    return prepared.row(rows[0])
