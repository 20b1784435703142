"""The dashboard's ASGI application, mounted at ``/dashboard`` (or on a port of its own)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oslo_config import cfg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from nubes.dashboard import admin, auth, network, project, web
from nubes.dashboard.session import Sealer

#: Where the dashboard is mounted on the API port.
PREFIX = "/dashboard"
STATIC = Path(__file__).parent / "static"


@dataclass
class Settings:
    """What the pages need: the path they live under, the API app, the cookie sealer."""

    root: str
    sealer: Sealer
    refresh_interval: float
    #: The whole API (identity, compute, image, network), set once it exists.
    api: Any = None

    def api_app(self) -> Callable[..., Any]:
        assert self.api is not None, "the dashboard was built without its API"
        return self.api


async def _home(request: Request) -> Response:
    return RedirectResponse(web.url(request, "/overview"), status_code=303)


def _page(handler: web.Handler, *, admin: bool = False) -> Any:
    return web.protected(handler, admin=admin)


def routes() -> list[BaseRoute]:
    return [
        Route("/", _home, methods=["GET"]),
        Route("/login", auth.login_form, methods=["GET"]),
        Route("/login", auth.login, methods=["POST"]),
        Route("/logout", _page(auth.logout), methods=["POST"]),
        Route("/switch", _page(auth.switch_project), methods=["POST"]),
        Route("/overview", _page(project.overview), methods=["GET"]),
        Route("/servers", _page(project.servers), methods=["GET"]),
        Route("/servers/rows", _page(project.server_rows), methods=["GET"]),
        Route("/servers/launch", _page(project.launch_form), methods=["GET"]),
        Route("/servers/launch", _page(project.launch), methods=["POST"]),
        Route("/servers/{server_id}", _page(project.server_detail), methods=["GET"]),
        Route("/servers/{server_id}/status", _page(project.server_status), methods=["GET"]),
        Route("/servers/{server_id}/console", _page(project.console_log), methods=["GET"]),
        Route("/servers/{server_id}/action", _page(project.server_action), methods=["POST"]),
        Route("/keypairs", _page(project.keypairs), methods=["GET"]),
        Route("/keypairs", _page(project.keypair_create), methods=["POST"]),
        Route("/keypairs/delete", _page(project.keypair_delete), methods=["POST"]),
        Route("/images", _page(project.images), methods=["GET"]),
        Route("/images/upload", _page(project.image_upload), methods=["POST"]),
        Route("/images/delete", _page(project.image_delete), methods=["POST"]),
        Route("/networks", _page(network.networks), methods=["GET"]),
        Route("/networks", _page(network.network_create), methods=["POST"]),
        Route("/networks/delete", _page(network.network_delete), methods=["POST"]),
        Route("/security-groups", _page(network.security_groups), methods=["GET"]),
        Route("/security-groups", _page(network.group_create), methods=["POST"]),
        Route("/security-groups/delete", _page(network.group_delete), methods=["POST"]),
        Route("/security-groups/rules", _page(network.rule_create), methods=["POST"]),
        Route("/security-groups/rules/delete", _page(network.rule_delete), methods=["POST"]),
        Route("/admin/hypervisors", _page(admin.hypervisors, admin=True), methods=["GET"]),
        Route("/admin/hypervisors/rows", _page(admin.hypervisor_rows, admin=True)),
        Route("/admin/services", _page(admin.services, admin=True), methods=["GET"]),
        Route("/admin/services/rows", _page(admin.service_rows, admin=True)),
        Route("/admin/services", _page(admin.service_update, admin=True), methods=["POST"]),
        Route("/admin/migrations", _page(admin.migrations, admin=True), methods=["GET"]),
        Route("/admin/migrations/rows", _page(admin.migration_rows, admin=True)),
        Route("/admin/inventory", _page(admin.inventory, admin=True), methods=["GET"]),
        Route("/admin/health", _page(admin.health, admin=True), methods=["GET"]),
        Route("/admin/health/rows", _page(admin.health_rows, admin=True)),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]


def build_app(conf: cfg.ConfigOpts, root: str = PREFIX) -> Starlette:
    """The dashboard; its ``state.dashboard.api`` must be set to the API app before use."""
    dash = conf.dashboard
    app = Starlette(routes=routes())
    app.state.dashboard = Settings(
        root=root,
        sealer=Sealer(dash.session_key, dash.session_ttl),
        refresh_interval=dash.refresh_interval,
    )
    return app
