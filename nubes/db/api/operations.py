"""What ``nubes-manage status`` reads about the cloud's work: tasks and queue samples.

Task figures come from ``conductor_tasks`` (by kind and status, the oldest
waiting, takeovers, deadlines passed); queue samples are the depths of the
topic queues ``status`` saw on its earlier runs (``queue_samples``, kept
:data:`SAMPLE_RETENTION`), from which it tells how long a queue has grown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.api._common import Row, fetch_all, live, now_or
from nubes.db.api.tasks import ACTIVE_STATUSES, TaskStatus
from nubes.db.models import conductor_tasks, queue_samples

#: How long queue samples are kept.
SAMPLE_RETENTION = dt.timedelta(hours=1)

_t = conductor_tasks
_active = [s.value for s in ACTIVE_STATUSES]


async def task_counts(conn: AsyncConnection) -> dict[str, dict[str, int]]:
    """Live (not archived) tasks: ``{kind: {status: count}}``."""
    stmt = (
        select(_t.c.kind, _t.c.status, func.count())
        .where(live(_t))
        .group_by(_t.c.kind, _t.c.status)
    )
    out: dict[str, dict[str, int]] = {}
    for kind, status, count in (await conn.execute(stmt)).all():
        out.setdefault(kind, {})[status] = int(count)
    return out


async def oldest_waiting(conn: AsyncConnection, *, now: dt.datetime | None = None) -> Row | None:
    """The oldest task no conductor holds now (pending, or its lease ran out)."""
    now = now_or(now)
    stmt = (
        select(_t.c.id, _t.c.uuid, _t.c.kind, _t.c.step, _t.c.created_at)
        .where(
            live(_t),
            _t.c.status.in_(_active),
            (_t.c.owner.is_(None)) | (_t.c.lease_expires_at < now),
        )
        .order_by(_t.c.id)
        .limit(1)
    )
    rows = await fetch_all(conn, stmt)
    return rows[0] if rows else None


async def takeovers_since(conn: AsyncConnection, since: dt.datetime) -> int:
    """Tasks a conductor took over (another's lease ran out) since ``since``."""
    stmt = select(func.count()).where(live(_t), _t.c.taken_over_at >= since)
    return int((await conn.execute(stmt)).scalar_one())


async def past_deadline(conn: AsyncConnection, *, now: dt.datetime | None = None) -> int:
    """Active tasks whose deadline passed (a conductor rolls them back when it runs them)."""
    stmt = select(func.count()).where(
        live(_t), _t.c.status.in_(_active), _t.c.deadline < now_or(now)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def running_count(conn: AsyncConnection) -> int:
    stmt = select(func.count()).where(live(_t), _t.c.status == TaskStatus.RUNNING.value)
    return int((await conn.execute(stmt)).scalar_one())


async def add_queue_samples(
    conn: AsyncConnection,
    samples: Mapping[str, tuple[int, int]],
    *,
    now: dt.datetime | None = None,
) -> None:
    """Record ``{queue: (messages, consumers)}`` as seen at ``now``; forget old samples."""
    now = now_or(now)
    await conn.execute(
        delete(queue_samples).where(queue_samples.c.taken_at < now - SAMPLE_RETENTION)
    )
    if samples:
        await conn.execute(
            insert(queue_samples),
            [
                {"queue": q, "taken_at": now, "messages": m, "consumers": c}
                for q, (m, c) in samples.items()
            ],
        )


async def queue_history(
    conn: AsyncConnection, queues: Sequence[str], *, now: dt.datetime | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The kept samples of ``queues``, oldest first:
    ``{queue: [{taken_at, messages, consumers}]}``."""
    since = now_or(now) - SAMPLE_RETENTION
    stmt = (
        select(
            queue_samples.c.queue,
            queue_samples.c.taken_at,
            queue_samples.c.messages,
            queue_samples.c.consumers,
        )
        .where(queue_samples.c.queue.in_(list(queues)), queue_samples.c.taken_at >= since)
        .order_by(queue_samples.c.taken_at, queue_samples.c.id)
    )
    out: dict[str, list[dict[str, Any]]] = {q: [] for q in queues}
    for row in await fetch_all(conn, stmt):
        out[row.pop("queue")].append(row)
    return out
