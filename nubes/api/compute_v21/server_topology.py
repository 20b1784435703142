"""``GET /servers/{id}/topology`` (2.78): the server's NUMA nodes.

nubes places no guest on NUMA nodes (no ``hw:numa_*`` placement, no
pinning to host cells), so every server has Nova's answer for an instance
without a NUMA topology: no nodes and no page size.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api.compute_v21 import common, servers
from nubes.api.policy import Rule


async def index(request: Request) -> Response:
    if not common.version(request).at_least("2.78"):
        raise exception.NotFound(message="The resource could not be found.")
    row = await servers.get_server(request, request.path_params["server_id"])
    common.authorize(request, "server:topology:index", Rule.PROJECT_READER, row["project_id"])
    return common.json({"nodes": [], "pagesize_kb": None})


ROUTES = [Route("/servers/{server_id}/topology", common.no_query(index), methods=["GET"])]
