"""``/servers/{id}/os-server-password``: the (encrypted) password the guest
posted to the metadata service (``POST /openstack/latest/password``), shown
and cleared as Nova does. nubes never sees it in clear: a guest encrypts it
with the server's key pair's public key before posting."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api.compute_v21 import common, servers
from nubes.api.policy import Rule
from nubes.api.servers import ServersAPI
from nubes.db.api.metadata import password_of


async def show(request: Request) -> Response:
    row = await servers.get_server(request, request.path_params["server_id"])
    common.authorize(request, "os-server-password:show", Rule.PROJECT_READER, row["project_id"])
    return common.json({"password": password_of(row.get("system_metadata"))})


async def clear(request: Request) -> Response:
    row = await servers.get_server(request, request.path_params["server_id"])
    common.authorize(request, "os-server-password:clear", Rule.PROJECT_MEMBER, row["project_id"])
    api: ServersAPI = common.state(request).servers_api()
    await api.clear_password(common.ctx(request), row["uuid"])
    return common.empty(204)


ROUTES = [
    Route("/servers/{server_id}/os-server-password", common.no_query(show), methods=["GET"]),
    Route("/servers/{server_id}/os-server-password", clear, methods=["DELETE"]),
]
