"""Instance actions (one per user request on an instance) and their events.

An action is keyed by (instance_uuid, request_id): the request id travels
with every RPC message of the operation, so any service can add an event to
the right action without knowing its row id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
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
from nubes.db.models import NOT_DELETED, instance_actions, instance_actions_events
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


async def events_get(conn: AsyncConnection, action_id: int) -> list[Row]:
    stmt = select(_e).where(_e.c.action_id == action_id, live(_e)).order_by(_e.c.id)
    return await fetch_all(conn, stmt)
