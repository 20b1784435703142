"""Instance actions (one per user request on an instance) and their events.

An action is keyed by (instance_uuid, request_id): the request id travels
with every RPC message of the operation, so any service can add an event to
the right action without knowing its row id.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import Row, fetch_all, fetch_one, insert_row, live, now_or, update_row
from nubes.db.models import instance_actions, instance_actions_events

#: Event result values (Nova's).
RESULT_SUCCESS = "Success"
RESULT_ERROR = "Error"
#: Message an action gets when one of its events failed.
ACTION_ERROR_MESSAGE = "Error"

_a = instance_actions
_e = instance_actions_events


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


async def action_get_by_request_id(
    conn: AsyncConnection, instance_uuid: str, request_id: str
) -> Row:
    """The newest action of that request on that instance."""
    stmt = (
        select(_a)
        .where(_a.c.instance_uuid == instance_uuid, _a.c.request_id == request_id, live(_a))
        .order_by(_a.c.id.desc())
        .limit(1)
    )
    row = await fetch_one(conn, stmt)
    if row is None:
        raise exception.InstanceActionNotFound(request_id=request_id, instance_uuid=instance_uuid)
    return row


async def action_finish(
    conn: AsyncConnection,
    *,
    instance_uuid: str,
    request_id: str,
    finish_time: dt.datetime | None = None,
    message: str | None = None,
) -> Row:
    action = await action_get_by_request_id(conn, instance_uuid, request_id)
    values: dict[str, Any] = {"finish_time": now_or(finish_time)}
    if message is not None:
        values["message"] = message
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
    values = {
        "finish_time": now_or(finish_time),
        "result": result,
        "traceback": traceback,
        "details": details,
    }
    row = await update_row(conn, _e, _e.c.id == open_event["id"], values)
    assert row is not None
    if result.lower() == RESULT_ERROR.lower():
        await update_row(conn, _a, _a.c.id == action["id"], {"message": ACTION_ERROR_MESSAGE})
    return row


async def events_get(conn: AsyncConnection, action_id: int) -> list[Row]:
    stmt = select(_e).where(_e.c.action_id == action_id, live(_e)).order_by(_e.c.id)
    return await fetch_all(conn, stmt)
