"""``os-instance_usage_audit_log`` (admins; Nova's path has underscores): how
far the hosts got with the usage audit of the last completed period.

In Nova each compute host runs a periodic usage audit (the
``instance.exists`` notifications billing reads) and records it as a task
log; this API sums those logs per period. nubes' hosts run no usage audit,
so no host has a log: the answer is Nova's for a cloud with the audit off,
every compute host in ``hosts_not_run``, over the period Nova would report
(the last whole month before the given time).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api.compute_v21 import common, hosts
from nubes.api.policy import Rule

#: The formats Nova accepts for ``before``.
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f")
#: How Nova prints the period's ends.
PERIOD_FORMAT = "%Y-%m-%d %H:%M:%S"


def audit_period(before: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The last whole month ending at or before ``before`` (Nova's default period)."""
    end = before.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (end - dt.timedelta(days=1)).replace(day=1)
    return start, end


async def _report(request: Request, before: dt.datetime) -> dict[str, Any]:
    start, end = audit_period(before)
    async with common.state(request).db.reader() as conn:
        computes = await hosts.all_services(conn, binary="compute")
    names = sorted({row["host"] for row in computes})
    return {
        "hosts_not_run": names,
        "log": {},
        "num_hosts": len(names),
        "num_hosts_done": 0,
        "num_hosts_not_run": len(names),
        "num_hosts_running": 0,
        "overall_status": f"0 of {len(names)} hosts done. 0 errors.",
        "period_beginning": start.strftime(PERIOD_FORMAT),
        "period_ending": end.strftime(PERIOD_FORMAT),
        "total_errors": 0,
        "total_instances": 0,
    }


def _parse(raw: str) -> dt.datetime:
    for fmt in TIME_FORMATS:
        try:
            return dt.datetime.strptime(raw, fmt)
        except ValueError:
            continue
    raise common.bad_request(f"Invalid timestamp for date {raw}")


async def index(request: Request) -> Response:
    common.authorize(request, "os-instance-usage-audit-log:list", Rule.ADMIN)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return common.json({"instance_usage_audit_logs": await _report(request, now)})


async def show(request: Request) -> Response:
    common.authorize(request, "os-instance-usage-audit-log:show", Rule.ADMIN)
    before = _parse(request.path_params["before"])
    return common.json({"instance_usage_audit_log": await _report(request, before)})


ROUTES = [
    Route("/os-instance_usage_audit_log", common.no_query(index), methods=["GET"]),
    Route("/os-instance_usage_audit_log/{before}", common.no_query(show), methods=["GET"]),
]
