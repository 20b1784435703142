"""``GET /os-nubes-status``: a nubes extension for operators (admin only).

What the dashboard's health view draws: the conductor's task backlog (live
tasks by kind and status) and each service's version and liveness, as
``{"status": {"tasks": {kind: {status: n}}, "services": [...], "queues": {topic: n}}}``.
``queues`` (messages waiting on each shared topic queue) is read from the bus
by this API process at each request (``Transport.queue_stats``, what
``nubes-manage status`` and ``/metrics`` show too); it is null when the bus
cannot tell (the in-memory bus) or will not (a broker user without the
right), never a made-up figure.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api.compute_v21 import common, hosts
from nubes.api.policy import Rule
from nubes.api.views import nova_time
from nubes.db.api import operations
from nubes.service import TOPICS

LOG = logging.getLogger(__name__)


async def _queues(request: Request) -> dict[str, int] | None:
    transport = common.state(request).transport
    if transport is None:
        return None
    try:
        found = await transport.queue_stats(list(TOPICS.values()))
    except Exception as exc:
        # A broker away or a user without the right: unknown, not zero.
        LOG.info("queue depths unavailable: %s", exc)
        return None
    return {name: stats.messages for name, stats in found.items()} or None


async def show(request: Request) -> Response:
    common.authorize(request, "os-nubes-status", Rule.ADMIN)
    conf = common.state(request).conf
    async with common.state(request).db.reader() as conn:
        tasks = await operations.task_counts(conn)
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
    queues = await _queues(request)
    return common.json({"status": {"tasks": tasks, "services": services, "queues": queues}})


ROUTES = [Route("/os-nubes-status", show, methods=["GET"])]
