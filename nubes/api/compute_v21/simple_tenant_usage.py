"""``os-simple-tenant-usage``: what each project's servers used in a period.

For every server alive at some point between ``start`` and ``end`` (deleted
ones included), the hours it overlapped the period times its flavor's
vCPUs, RAM and disk, summed per project, as Nova computes them. ``detailed=1``
lists each server. Admins see every project (index) and any one (show); a
member sees its own project's. Paging (``limit``, ``marker``) from 2.40,
with the ``*_links`` Nova adds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api.compute_v21 import common
from nubes.api.policy import Rule
from nubes.db.api import instances as instances_db
from nubes.db.types import utcnow

PAGING_VERSION = "2.40"
_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S.%f")


def _time(raw: str | None, now: dt.datetime) -> dt.datetime:
    if raw is None:
        return now
    for fmt in _FORMATS:
        try:
            return dt.datetime.strptime(raw, fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    raise common.bad_request(f"Invalid time format '{raw}'; use YYYY-MM-DDTHH:MM:SS[.ffffff].")


def _period(request: Request) -> tuple[dt.datetime, dt.datetime, bool]:
    now = utcnow()
    q = request.query_params
    start = _time(q.get("start"), now - dt.timedelta(microseconds=1))
    stop = _time(q.get("end"), now)
    if not start < stop:
        raise common.bad_request(
            "Invalid start time. The start time cannot occur after the end time."
        )
    return start, stop, q.get("detailed", "0") == "1"


def _aware(stamp: dt.datetime | None) -> dt.datetime | None:
    if stamp is not None and stamp.tzinfo is None:
        return stamp.replace(tzinfo=dt.UTC)
    return stamp


def _naive_iso(stamp: dt.datetime | None) -> str | None:
    # Nova shows these times without a zone (they are UTC).
    return stamp.astimezone(dt.UTC).replace(tzinfo=None).isoformat() if stamp else None


def _hours(
    launched: dt.datetime | None, ended: dt.datetime | None, start: dt.datetime, stop: dt.datetime
) -> float:
    if launched is None or launched > stop or (ended is not None and ended < start):
        return 0.0
    first = max(launched, start)
    last = min(stop, ended) if ended is not None else stop
    return max((last - first).total_seconds(), 0.0) / 3600.0


def _server_usage(row: dict[str, Any], start: dt.datetime, stop: dt.datetime) -> dict[str, Any]:
    flavor = row.get("flavor") or {}
    launched, ended = _aware(row.get("launched_at")), _aware(row.get("terminated_at"))
    state = "terminated" if ended is not None else row["vm_state"]
    now = utcnow()
    uptime = 0
    if launched is not None:
        uptime = int(((ended if ended is not None else now) - launched).total_seconds())
    return {
        "instance_id": row["uuid"],
        "name": row.get("display_name"),
        "tenant_id": row["project_id"],
        "hours": _hours(launched, ended, start, stop),
        "memory_mb": int(flavor.get("memory_mb") or 0),
        "local_gb": int(flavor.get("root_gb") or 0) + int(flavor.get("ephemeral_gb") or 0),
        "vcpus": int(flavor.get("vcpus") or 0),
        "flavor": flavor.get("name"),
        "started_at": _naive_iso(launched),
        "ended_at": _naive_iso(ended),
        "state": state,
        "uptime": uptime,
    }


def _summaries(
    rows: list[dict[str, Any]], start: dt.datetime, stop: dt.datetime, detailed: bool
) -> list[dict[str, Any]]:
    by_project: dict[str, dict[str, Any]] = {}
    for row in rows:
        usage = _server_usage(row, start, stop)
        total = by_project.setdefault(
            usage["tenant_id"],
            {
                "tenant_id": usage["tenant_id"],
                "total_local_gb_usage": 0.0,
                "total_vcpus_usage": 0.0,
                "total_memory_mb_usage": 0.0,
                "total_hours": 0.0,
                "start": _naive_iso(start),
                "stop": _naive_iso(stop),
                **({"server_usages": []} if detailed else {}),
            },
        )
        hours = usage["hours"]
        total["total_local_gb_usage"] += usage["local_gb"] * hours
        total["total_vcpus_usage"] += usage["vcpus"] * hours
        total["total_memory_mb_usage"] += usage["memory_mb"] * hours
        total["total_hours"] += hours
        if detailed:
            total["server_usages"].append(usage)
    return list(by_project.values())


async def _rows(
    request: Request, start: dt.datetime, stop: dt.datetime, project_id: str | None
) -> tuple[list[dict[str, Any]], bool]:
    paged = common.version(request).at_least(PAGING_VERSION)
    limit = common.limit(request) if paged else None
    marker = request.query_params.get("marker") if paged else None
    async with common.state(request).db.reader() as conn:
        rows = await instances_db.get_active_by_window(
            conn, start, stop, project_id=project_id, limit=limit, marker=marker
        )
    return rows, bool(paged and limit is not None and rows and len(rows) == limit)


async def index(request: Request) -> Response:
    common.authorize(request, "os-simple-tenant-usage:list", Rule.ADMIN)
    start, stop, detailed = _period(request)
    rows, more = await _rows(request, start, stop, None)
    body: dict[str, Any] = {"tenant_usages": _summaries(rows, start, stop, detailed)}
    if more:
        body["tenant_usages_links"] = common.next_link(
            request, "os-simple-tenant-usage", rows[-1]["uuid"]
        )
    return common.json(body)


async def show(request: Request) -> Response:
    project_id = request.path_params["tenant_id"]
    common.authorize(request, "os-simple-tenant-usage:show", Rule.PROJECT_READER, project_id)
    start, stop, _ = _period(request)
    rows, more = await _rows(request, start, stop, project_id)
    # Nova's show always lists the servers; an empty period is an empty object.
    found = _summaries(rows, start, stop, True)
    body: dict[str, Any] = {"tenant_usage": found[0] if found else {}}
    if more:
        body["tenant_usage_links"] = common.next_link(
            request, f"os-simple-tenant-usage/{project_id}", rows[-1]["uuid"]
        )
    return common.json(body)


ROUTES = [
    Route(
        "/os-simple-tenant-usage",
        common.known_query(index, {"2.75": ("start", "end", "detailed", "limit", "marker")}),
        methods=["GET"],
    ),
    Route(
        "/os-simple-tenant-usage/{tenant_id}",
        common.known_query(show, {"2.75": ("start", "end", "limit", "marker")}),
        methods=["GET"],
    ),
]
