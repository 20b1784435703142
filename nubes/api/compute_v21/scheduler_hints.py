"""``os-scheduler-hints`` (a nubes extension): the hints the schedulers understand.

Asked of a scheduler over RPC (``get_scheduler_hints``) and cached briefly;
server create (phase 2) validates ``os:scheduler_hints`` against the same list.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api.compute_v21 import common
from nubes.api.policy import Rule


async def index(request: Request) -> Response:
    common.authorize(request, "os-scheduler-hints:list", Rule.ANY)
    hints = await common.state(request).scheduler_hints(common.ctx(request))
    return common.json({"scheduler_hints": hints})


ROUTES = [Route("/os-scheduler-hints", index, methods=["GET"])]
