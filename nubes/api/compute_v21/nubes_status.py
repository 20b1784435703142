"""``GET /os-nubes-status``: a nubes extension for operators (admin only).

What the dashboard's health view draws: the conductor's task backlog (live
tasks by kind and status) and each service's version and liveness, as
``{"status": {"tasks": {kind: {status: n}}, "services": [...], "queues": null}}``.
``queues`` (messages waiting per topic) is null until this API can read the
bus's queue depths (branch ``ops``' queue sampler), never a made-up figure.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api.compute_v21 import common, hosts
from nubes.api.policy import Rule
from nubes.api.views import nova_time
from nubes.db.api import backlog


async def show(request: Request) -> Response:
    common.authorize(request, "os-nubes-status", Rule.ADMIN)
    conf = common.state(request).conf
    async with common.state(request).db.reader() as conn:
        tasks = await backlog.task_counts(conn)
        rows = await hosts.all_services(conn)
    services = [
        {
            "binary": hosts.public_binary(r["binary"]),
            "host": r["host"],
            "version": r["version"],
            "state": "up" if hosts.is_up(r, conf) else "down",
            "updated_at": nova_time(hosts.updated_at(r)),
        }
        for r in sorted(rows, key=lambda r: (r["binary"], r["host"]))
    ]
    return common.json({"status": {"tasks": tasks, "services": services, "queues": None}})


ROUTES = [Route("/os-nubes-status", show, methods=["GET"])]
