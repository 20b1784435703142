"""Whether a service is up: the one rule, used by everyone who asks.

Nova's rule: a forced-down service is down; otherwise it is up when its last
heartbeat is within ``service_down_time`` seconds of now. One that never
reported counts from its creation (it is not down before its first report
is due). Clock skew either way is tolerated up to ``service_down_time``: a
heartbeat "from the future" within that much still counts.

``os-services`` and ``os-hosts`` (the API), ``Service.is_up`` (objects), the
scheduler's host view and the conductor's watch on the hosts its tasks wait
for all decide with :func:`is_up`; the database reads that select the hosts
that are down (``nubes.db.api.host_views.down_compute_hosts``) take the
:func:`window` it checks against, so SQL and Python cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def window(down_time: float, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """The heartbeat times that count as up at ``now``: ``(oldest, newest)``."""
    now = now or dt.datetime.now(dt.UTC)
    span = dt.timedelta(seconds=down_time)
    return now - span, now + span


def is_up(
    *,
    forced_down: bool,
    last_seen: dt.datetime | None,
    created_at: dt.datetime | None,
    down_time: float,
    now: dt.datetime | None = None,
) -> bool:
    if forced_down:
        return False
    last = last_seen if last_seen is not None else created_at
    if last is None:
        return False
    oldest, newest = window(down_time, now)
    return oldest <= last <= newest


def row_is_up(row: Mapping[str, Any], down_time: float, now: dt.datetime | None = None) -> bool:
    """:func:`is_up` on a services row read with its heartbeat (``last_seen_at``),
    as ``nubes.db.api.services`` returns it."""
    return is_up(
        forced_down=bool(row.get("forced_down")),
        last_seen=row.get("last_seen_at"),
        created_at=row.get("created_at"),
        down_time=down_time,
        now=now,
    )
