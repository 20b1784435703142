"""The conductor's backlog as the status API shows it: live tasks by kind and status.

Branch ``ops`` (``nubes-manage status``) reads the same figures
(``operations.task_counts``); when both land, keep one query.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.api._common import live
from nubes.db.models import conductor_tasks


async def task_counts(conn: AsyncConnection) -> dict[str, dict[str, int]]:
    """Live (not archived) tasks: ``{kind: {status: count}}``."""
    t = conductor_tasks
    stmt = select(t.c.kind, t.c.status, func.count()).where(live(t)).group_by(t.c.kind, t.c.status)
    out: dict[str, dict[str, int]] = {}
    for kind, status, count in (await conn.execute(stmt)).all():
        out.setdefault(kind, {})[status] = int(count)
    return out
