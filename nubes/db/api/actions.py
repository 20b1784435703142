"""Instance actions (one per user request on an instance) and their events.

An action is keyed by (instance_uuid, request_id): the request id travels
with every RPC message of the operation, so any service can add an event to
the right action without knowing its row id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, exists, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db import group_commit
from nubes.db.api._common import (
    Row,
    StatementCache,
    fetch_all,
    fetch_one,
    insert_row,
    live,
    now_or,
    to_row,
    update_row,
)
from nubes.db.api.instances import PLACED_HOST_PARAM, check_placed_on_host, placed_on_host_clause
from nubes.db.engine import Database
from nubes.db.models import NOT_DELETED, instance_actions, instance_actions_events, instances
from nubes.db.types import utcnow

#: Event result values (Nova's).
RESULT_SUCCESS = "Success"
RESULT_ERROR = "Error"
#: Message an action gets when one of its events failed.
ACTION_ERROR_MESSAGE = "Error"

_a = instance_actions
_e = instance_actions_events

# Every build and power operation records an action, two events per compute
# step and the action's end: prebuilt statements, and on backends with
# UPDATE ... RETURNING (SQLite, PostgreSQL) the lookup of the action (and of
# the open event) folded into the write as a subquery — one statement each.
_STATEMENTS = StatementCache()
_LIVE: ColumnElement[Any] = literal_column(str(NOT_DELETED))


def _action_id() -> Any:
    """The newest live action of (:_instance_uuid, :_request_id), as a scalar subquery."""
    return (
        select(_a.c.id)
        .where(
            _a.c.instance_uuid == bindparam("_instance_uuid"),
            _a.c.request_id == bindparam("_request_id"),
            _a.c.deleted == _LIVE,
        )
        .order_by(_a.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _lookup_params(instance_uuid: str, request_id: str) -> dict[str, Any]:
    return {"_instance_uuid": instance_uuid, "_request_id": request_id}


async def action_start(
    conn: AsyncConnection,
    *,
    instance_uuid: str,
    action: str,
    request_id: str,
    user_id: str | None = None,
    project_id: str | None = None,
    start_time: dt.datetime | None = None,
) -> Row:
    values = {
        "instance_uuid": instance_uuid,
        "action": action,
        "request_id": request_id,
        "user_id": user_id,
        "project_id": project_id,
        "start_time": now_or(start_time),
    }
    return await insert_row(conn, _a, values)


async def action_start_many(
    conn: AsyncConnection,
    instance_uuids: Sequence[str],
    *,
    action: str,
    request_id: str,
    user_id: str | None = None,
    project_id: str | None = None,
    start_time: dt.datetime | None = None,
) -> None:
    """:func:`action_start` of the same request on several instances (nothing read back)."""
    start = now_or(start_time)
    rows = [
        {
            "instance_uuid": uuid,
            "action": action,
            "request_id": request_id,
            "user_id": user_id,
            "project_id": project_id,
            "start_time": start,
        }
        for uuid in instance_uuids
    ]
    if rows:
        await conn.execute(_STATEMENTS.get(("action_insert",), _a.insert), rows)


async def action_get_by_request_id(
    conn: AsyncConnection, instance_uuid: str, request_id: str
) -> Row:
    """The newest action of that request on that instance."""

    def build() -> Any:
        return (
            select(_a)
            .where(
                _a.c.instance_uuid == bindparam("_instance_uuid"),
                _a.c.request_id == bindparam("_request_id"),
                _a.c.deleted == _LIVE,
            )
            .order_by(_a.c.id.desc())
            .limit(1)
        )

    stmt = _STATEMENTS.get(("action_get",), build)
    found = (await conn.execute(stmt, _lookup_params(instance_uuid, request_id))).mappings().first()
    if found is None:
        raise exception.InstanceActionNotFound(request_id=request_id, instance_uuid=instance_uuid)
    return to_row(found)


async def action_finish(
    conn: AsyncConnection,
    *,
    instance_uuid: str,
    request_id: str,
    finish_time: dt.datetime | None = None,
    message: str | None = None,
) -> Row:
    values: dict[str, Any] = {"finish_time": now_or(finish_time)}
    if message is not None:
        values["message"] = message
    if conn.dialect.update_returning:
        keys = tuple(sorted(values))

        def build() -> Any:
            return (
                _a.update()
                .where(_a.c.id == _action_id(), _a.c.deleted == _LIVE)
                .values({key: bindparam(f"_v_{key}") for key in keys})
                .returning(*_a.c)
            )

        stmt = _STATEMENTS.get(("action_finish", keys), build)
        params = _lookup_params(instance_uuid, request_id)
        params.update({f"_v_{key}": value for key, value in values.items()})
        found = (await conn.execute(stmt, params)).mappings().first()
        if found is None:
            raise exception.InstanceActionNotFound(
                request_id=request_id, instance_uuid=instance_uuid
            )
        return to_row(found)
    action = await action_get_by_request_id(conn, instance_uuid, request_id)
    row = await update_row(conn, _a, _a.c.id == action["id"], values)
    assert row is not None
    return row


async def actions_get(
    conn: AsyncConnection, instance_uuid: str, *, limit: int | None = None
) -> list[Row]:
    """An instance's actions, newest first."""
    stmt = (
        select(_a)
        .where(_a.c.instance_uuid == instance_uuid, live(_a))
        .order_by(_a.c.created_at.desc(), _a.c.id.desc())
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return await fetch_all(conn, stmt)


async def event_start(
    conn: AsyncConnection,
    *,
    instance_uuid: str,
    request_id: str,
    event: str,
    host: str | None = None,
    start_time: dt.datetime | None = None,
) -> Row:
    if conn.dialect.insert_returning:
        # INSERT ... SELECT from the action: no row inserted, no such action.
        def build() -> Any:
            source = select(
                _a.c.id,
                bindparam("_event", type_=_e.c.event.type),
                bindparam("_host", type_=_e.c.host.type),
                bindparam("_start_time", type_=_e.c.start_time.type),
                bindparam("_created_at", type_=_e.c.created_at.type),
                _LIVE,
            ).where(_a.c.id == _action_id())
            cols = [_e.c.action_id, _e.c.event, _e.c.host, _e.c.start_time, _e.c.created_at]
            return (
                _e.insert()
                .from_select([*cols, _e.c.deleted], source, include_defaults=False)
                .returning(*_e.c)
            )

        stmt = _STATEMENTS.get(("event_start",), build)
        params = _lookup_params(instance_uuid, request_id)
        params.update(
            _event=event, _host=host, _start_time=now_or(start_time), _created_at=utcnow()
        )
        found = (await conn.execute(stmt, params)).mappings().first()
        if found is None:
            raise exception.InstanceActionNotFound(
                request_id=request_id, instance_uuid=instance_uuid
            )
        return to_row(found)
    action = await action_get_by_request_id(conn, instance_uuid, request_id)
    values = {
        "action_id": action["id"],
        "event": event,
        "host": host,
        "start_time": now_or(start_time),
    }
    return await insert_row(conn, _e, values)


async def event_finish(
    conn: AsyncConnection,
    *,
    instance_uuid: str,
    request_id: str,
    event: str,
    result: str,
    traceback: str | None = None,
    details: str | None = None,
    finish_time: dt.datetime | None = None,
) -> Row:
    """Close the newest open event of that name; an error result marks the action too."""
    values = {
        "finish_time": now_or(finish_time),
        "result": result,
        "traceback": traceback,
        "details": details,
    }
    if conn.dialect.update_returning:
        stmt = _STATEMENTS.get(("event_finish",), _event_finish_statement)
        params = _lookup_params(instance_uuid, request_id)
        params["_event"] = event
        params.update({f"_v_{key}": value for key, value in values.items()})
        found = (await conn.execute(stmt, params)).mappings().first()
        if found is None:
            raise exception.InstanceActionNotFound(
                request_id=request_id, instance_uuid=instance_uuid
            )
        closed = to_row(found)
        if result.lower() == RESULT_ERROR.lower():
            await update_row(
                conn, _a, _a.c.id == closed["action_id"], {"message": ACTION_ERROR_MESSAGE}
            )
        return closed
    action = await action_get_by_request_id(conn, instance_uuid, request_id)
    open_event = await fetch_one(
        conn,
        select(_e.c.id)
        .where(_e.c.action_id == action["id"], _e.c.event == event, live(_e))
        .order_by(_e.c.id.desc())
        .limit(1),
    )
    if open_event is None:
        raise exception.InstanceActionNotFound(request_id=request_id, instance_uuid=instance_uuid)
    row = await update_row(conn, _e, _e.c.id == open_event["id"], values)
    assert row is not None
    if result.lower() == RESULT_ERROR.lower():
        await update_row(conn, _a, _a.c.id == action["id"], {"message": ACTION_ERROR_MESSAGE})
    return row


def _event_finish_statement() -> Any:
    """UPDATE the newest live event of that name of the newest matching action."""
    newest: ColumnElement[Any] = (
        select(_e.c.id)
        .where(
            _e.c.action_id == _action_id(),
            _e.c.event == bindparam("_event"),
            _e.c.deleted == _LIVE,
        )
        .order_by(_e.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    keys = ("details", "finish_time", "result", "traceback")
    return (
        _e.update()
        .where(_e.c.id == newest, _e.c.deleted == _LIVE)
        .values({key: bindparam(f"_v_{key}") for key in keys})
        .returning(*_e.c)
    )


# --- one-statement events and grouped units ------------------------------------
# The conductor's events start and finish at once, and its task engine
# commits them (and the action's end) with a step through the group
# committer: the statements below, built once, serve both its ordinary path
# and the prepared one (:mod:`nubes.db.group_commit`). The newest action is
# max(id) here rather than ORDER BY ... LIMIT 1, which some dialects render
# with bound parameters of their own that a prepared statement cannot have.


def _newest_action_id() -> Any:
    return (
        select(func.max(_a.c.id))
        .where(
            _a.c.instance_uuid == bindparam("_instance_uuid"),
            _a.c.request_id == bindparam("_request_id"),
            _a.c.deleted == _LIVE,
        )
        .scalar_subquery()
    )


_RECORD_COLUMNS = (
    "event",
    "host",
    "start_time",
    "finish_time",
    "result",
    "traceback",
    "details",
    "created_at",
    "updated_at",
)


def _event_record_statement() -> Any:
    source = select(
        _a.c.id,
        *(bindparam(f"_v_{name}", type_=_e.c[name].type) for name in _RECORD_COLUMNS),
        _LIVE,
    ).where(_a.c.id == _newest_action_id())
    cols = [_e.c.action_id, *(_e.c[name] for name in _RECORD_COLUMNS), _e.c.deleted]
    return _e.insert().from_select(cols, source, include_defaults=False)


def _mark_error_statement() -> Any:
    return (
        _a.update()
        .where(_a.c.id == _newest_action_id(), _a.c.deleted == _LIVE)
        .values(message=bindparam("_v_message"), updated_at=bindparam("_v_updated_at"))
    )


def _finish_statement(keys: tuple[str, ...]) -> Any:
    return (
        _a.update()
        .where(_a.c.id == _newest_action_id(), _a.c.deleted == _LIVE)
        .values({key: bindparam(f"_v_{key}") for key in keys})
    )


def _record_params(
    instance_uuid: str,
    request_id: str,
    event: str,
    result: str,
    host: str | None,
    details: str | None,
    traceback: str | None,
    now: dt.datetime | None,
) -> dict[str, Any]:
    stamp = now_or(now)
    params = _lookup_params(instance_uuid, request_id)
    values = {
        "event": event,
        "host": host,
        "start_time": stamp,
        "finish_time": stamp,
        "result": result,
        "traceback": traceback,
        "details": details,
        "created_at": stamp,
        "updated_at": stamp,
    }
    params.update({f"_v_{key}": value for key, value in values.items()})
    return params


def _is_error(result: str) -> bool:
    return result.lower() == RESULT_ERROR.lower()


async def event_record(
    conn: AsyncConnection,
    *,
    instance_uuid: str,
    request_id: str,
    event: str,
    result: str = RESULT_SUCCESS,
    host: str | None = None,
    details: str | None = None,
    traceback: str | None = None,
    now: dt.datetime | None = None,
) -> None:
    """An event that starts and finishes at once (the conductor's), in one INSERT.

    What :func:`event_start` then :func:`event_finish` would record, an
    error result marking the action failed too; InstanceActionNotFound if
    there is no such action.
    """
    writes = event_record_writes(
        instance_uuid=instance_uuid,
        request_id=request_id,
        event=event,
        result=result,
        host=host,
        details=details,
        traceback=traceback,
        now=now,
        required=True,
    )
    for write in writes:
        await write.run(conn)


def event_record_writes(
    *,
    instance_uuid: str,
    request_id: str,
    event: str,
    result: str = RESULT_SUCCESS,
    host: str | None = None,
    details: str | None = None,
    traceback: str | None = None,
    now: dt.datetime | None = None,
    required: bool = False,
) -> list[group_commit.Write]:
    """:func:`event_record` described for a commit (:func:`nubes.db.group_commit.commit`).

    Without the action (a task made without one) there is no event: an
    error with ``required`` (InstanceActionNotFound), else simply none, as
    the task engine wants.
    """
    params = _record_params(instance_uuid, request_id, event, result, host, details, traceback, now)

    async def missing(conn: AsyncConnection) -> None:
        raise exception.InstanceActionNotFound(request_id=request_id, instance_uuid=instance_uuid)

    out = [
        group_commit.Write(
            (__name__, "event_record"),
            _event_record_statement,
            params,
            missing if required else None,
        )
    ]
    if _is_error(result):
        marking = {
            **_lookup_params(instance_uuid, request_id),
            "_v_message": ACTION_ERROR_MESSAGE,
            "_v_updated_at": params["_v_updated_at"],
        }
        out.append(group_commit.Write((__name__, "mark_error"), _mark_error_statement, marking))
    return out


def event_start_write(
    *,
    instance_uuid: str,
    request_id: str,
    event: str,
    host: str | None = None,
    now: dt.datetime | None = None,
) -> group_commit.Write:
    """:func:`event_start` described for a commit: an open event (no finish
    yet) of the instance's newest action under ``request_id``, started on
    ``host``. Without the action it writes nothing (a task made without one).

    The build's placement writes the start of the compute host's
    ``compute_build_and_run_instance`` event, in the host's name, so that
    the host need not call for it; the host's step report closes it as one
    it started (:func:`reported_event_finish_writes`).
    """
    stamp = now_or(now)
    params = _lookup_params(instance_uuid, request_id)
    params.update(_event=event, _host=host, _start_time=stamp, _created_at=stamp)
    return group_commit.Write(
        (__name__, "event_start", False), lambda: _start_statement(False), params
    )


def action_finish_write(
    *,
    instance_uuid: str,
    request_id: str,
    message: str | None = None,
    now: dt.datetime | None = None,
) -> group_commit.Write:
    """:func:`action_finish` described for a commit; without the action it writes nothing."""
    stamp = now_or(now)
    values: dict[str, Any] = {"finish_time": stamp, "updated_at": stamp}
    if message is not None:
        values["message"] = message
    keys = tuple(sorted(values))
    params = _lookup_params(instance_uuid, request_id)
    params.update({f"_v_{key}": value for key, value in values.items()})
    return group_commit.Write(
        (__name__, "action_finish", keys), lambda: _finish_statement(keys), params
    )


# --- a compute host's events, grouped and scoped to its instances -------------
# A compute host records two events per step through the conductor. They go
# through the group committer like its instance saves, and the conductor's
# authorisation (the instance placed on the calling host) is a condition of
# the write itself rather than a read before it.


def _placed() -> ColumnElement[bool]:
    """The instance :_instance_uuid is live and placed on :_placed_on_host."""
    return exists().where(
        instances.c.uuid == bindparam("_instance_uuid"),
        instances.c.deleted == _LIVE,
        placed_on_host_clause(),
    )


def _open_on_host() -> ColumnElement[bool]:
    """The newest live event :_event of the action is open and :_host started it."""
    return exists().where(
        _e.c.id == _newest_event_id(),
        _e.c.host == bindparam("_host"),
        _e.c.finish_time.is_(None),
    )


def _start_statement(placed: bool) -> Any:
    """Start event :_event on :_host, unless that host has it open already.

    An event a host started and never ended is a try of the same step its
    death cut off (the step is redelivered, or sent again, after its restart
    repair): the repeat takes that event up rather than opening a second one,
    so the end its report carries (:func:`reported_event_finish_writes`, the
    newest event of the name) closes it, and no event is left open for good.
    """
    conditions = [_a.c.id == _newest_action_id(), ~_open_on_host()]
    if placed:
        conditions.append(_placed())
    source = select(
        _a.c.id,
        bindparam("_event", type_=_e.c.event.type),
        bindparam("_host", type_=_e.c.host.type),
        bindparam("_start_time", type_=_e.c.start_time.type),
        bindparam("_created_at", type_=_e.c.created_at.type),
        _LIVE,
    ).where(*conditions)
    cols = [_e.c.action_id, _e.c.event, _e.c.host, _e.c.start_time, _e.c.created_at, _e.c.deleted]
    return _e.insert().from_select(cols, source, include_defaults=False)


_FINISH_KEYS = ("details", "finish_time", "result", "traceback", "updated_at")


def _newest_event_id() -> Any:
    """The newest live event :_event of the action, as a scalar subquery."""
    return (
        select(func.max(_e.c.id))
        .where(
            _e.c.action_id == _newest_action_id(),
            _e.c.event == bindparam("_event"),
            _e.c.deleted == _LIVE,
        )
        .scalar_subquery()
    )


def _close_statement(placed: bool, started_by: bool = False) -> Any:
    conditions = [_e.c.id == _newest_event_id(), _e.c.deleted == _LIVE]
    if placed:
        conditions.append(_placed())
    if started_by:
        # Only an event that host started and nobody finished yet.
        conditions += [_e.c.host == bindparam("_started_by"), _e.c.finish_time.is_(None)]
    return _e.update().where(*conditions).values({k: bindparam(f"_v_{k}") for k in _FINISH_KEYS})


def _event_statement() -> Any:
    # No RETURNING on the writes: MariaDB has none for UPDATE, and one read
    # after the write, in the same transaction, serves every backend.
    return select(_e).where(_e.c.id == _newest_event_id())


async def _not_recorded(
    conn: AsyncConnection, instance_uuid: str, request_id: str, placed_on_host: str | None
) -> Exception:
    """Why an event write matched nothing: the instance not there, or no action (event)."""
    if placed_on_host is not None:
        try:
            await check_placed_on_host(conn, instance_uuid, placed_on_host)
        except (exception.InstanceNotFound, exception.InstanceNotOnHost) as exc:
            return exc
    return exception.InstanceActionNotFound(request_id=request_id, instance_uuid=instance_uuid)


async def _record_event(
    db: Database,
    instance_uuid: str,
    request_id: str,
    params: dict[str, Any],
    write: tuple[str, Any],
    placed_on_host: str | None,
    *also: group_commit.Write,
    taken_up: bool = False,
) -> Row:
    """One event write, then the event as it now is, committed by the database
    layer's one seam (:func:`nubes.db.group_commit.commit`: grouped with other
    writes where that pays, else a transaction of its own). ``taken_up``: a
    start that wrote nothing because its host has the event open already
    (:func:`_start_statement`) is that event, not an error."""

    async def missed(conn: AsyncConnection) -> None:
        error = await _not_recorded(conn, instance_uuid, request_id, placed_on_host)
        if taken_up and isinstance(error, exception.InstanceActionNotFound):
            found = await conn.execute(select(_open_on_host()), params)
            if found.scalar():
                return
        raise error

    placed = placed_on_host is not None
    if placed:
        params[PLACED_HOST_PARAM] = placed_on_host
    name, build = write
    parts: list[group_commit.CommitPart] = [
        group_commit.Write((__name__, name, placed), lambda: build(placed), params, missed),
        *also,
        group_commit.Read((__name__, "event"), _event_statement, params),
    ]
    found = (await group_commit.commit(db, instance_uuid, parts))[0]
    assert found is not None  # the write matched, in the same transaction
    return found


async def record_event_start(
    db: Database,
    *,
    instance_uuid: str,
    request_id: str,
    event: str,
    host: str | None = None,
    placed_on_host: str | None = None,
) -> Row:
    """:func:`event_start` in a transaction of its own, grouped with others'.

    With ``placed_on_host`` the instance must also be placed on that host
    (:func:`~nubes.db.api.instances.placed_on_host_clause`), checked by the
    write itself: InstanceNotFound or InstanceNotOnHost otherwise, before
    InstanceActionNotFound.
    """
    now = utcnow()
    params = _lookup_params(instance_uuid, request_id)
    params.update(_event=event, _host=host, _start_time=now, _created_at=now)
    return await _record_event(
        db,
        instance_uuid,
        request_id,
        params,
        ("event_start", _start_statement),
        placed_on_host,
        taken_up=host is not None,
    )


async def record_event_finish(
    db: Database,
    *,
    instance_uuid: str,
    request_id: str,
    event: str,
    result: str,
    traceback: str | None = None,
    details: str | None = None,
    placed_on_host: str | None = None,
) -> Row:
    """:func:`event_finish` in a transaction of its own, grouped with others'.

    ``placed_on_host`` as for :func:`record_event_start`; an error result
    marks the action failed too, in the same commit.
    """
    params, also = _finish_params(instance_uuid, request_id, event, result, traceback, details)
    return await _record_event(
        db,
        instance_uuid,
        request_id,
        params,
        ("event_finish", _close_statement),
        placed_on_host,
        *also,
    )


def reported_event_finish_writes(
    *,
    instance_uuid: str,
    request_id: str,
    event: str,
    result: str,
    started_by: str,
    traceback: str | None = None,
    details: str | None = None,
) -> list[group_commit.Write]:
    """:func:`record_event_finish` of an event a compute host started and
    reported the end of with its step (:mod:`nubes.step_end`), described for
    the commit that records the report.

    It closes only the newest event of that name under the request's action
    on that instance if the host ``started_by`` started it and it is still
    open: the reporting host can end nothing else. Matching nothing is no
    error (no action: an internal operation; or the host never recorded the
    start): the report is recorded all the same.
    """
    params, also = _finish_params(instance_uuid, request_id, event, result, traceback, details)
    params["_started_by"] = started_by
    close = group_commit.Write(
        (__name__, "event_finish", False, "started_by"),
        lambda: _close_statement(False, started_by=True),
        params,
    )
    return [close, *also]


def _finish_params(
    instance_uuid: str,
    request_id: str,
    event: str,
    result: str,
    traceback: str | None,
    details: str | None,
) -> tuple[dict[str, Any], list[group_commit.Write]]:
    """The parameters of an event's close, and the action's mark on an error result."""
    now = utcnow()
    params = _lookup_params(instance_uuid, request_id)
    params["_event"] = event
    values = {
        "finish_time": now,
        "result": result,
        "traceback": traceback,
        "details": details,
        "updated_at": now,
    }
    params.update({f"_v_{key}": value for key, value in values.items()})
    also: list[group_commit.Write] = []
    if _is_error(result):
        marking = {
            **_lookup_params(instance_uuid, request_id),
            "_v_message": ACTION_ERROR_MESSAGE,
            "_v_updated_at": now,
        }
        also.append(group_commit.Write((__name__, "mark_error"), _mark_error_statement, marking))
    return params, also


async def events_get(conn: AsyncConnection, action_id: int) -> list[Row]:
    stmt = select(_e).where(_e.c.action_id == action_id, live(_e)).order_by(_e.c.id)
    return await fetch_all(conn, stmt)
