"""The ASGI application: identity, compute, image and network under their prefixes on one port."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from nubes.api import compute_v21, errors
from nubes.api.identity import routes as identity_routes
from nubes.api.image import routes as image_routes
from nubes.api.middleware import RequestIdMiddleware
from nubes.api.network import routes as network_routes
from nubes.api.state import ApiState
from nubes.dashboard import app as dashboard

Scope = dict[str, Any]

SERVICES = ("identity", "compute", "image", "network")
#: Path prefix of each service (Neutron's is ``/networking`` in a devstack-style cloud).
PREFIXES = {name: f"/{name}" for name in SERVICES} | {"network": "/networking"}


async def _root(request: Request) -> Response:
    base = request.app.state.api.public_endpoint
    return JSONResponse(
        {"services": {name: f"{base}{PREFIXES[name]}" for name in SERVICES}},
    )


class _Bare:
    """Serve ``prefix`` itself as the service's root (its version document)."""

    def __init__(self, prefix: str, app: Starlette) -> None:
        self.prefix = prefix
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        scope = dict(scope)
        scope["root_path"] = scope.get("root_path", "") + self.prefix
        scope["path"] = scope["path"].rstrip("/") + "/"
        await self.app(scope, receive, send)


def build_services(
    state: ApiState, compute_routes: list[BaseRoute] | None = None
) -> dict[str, Starlette]:
    return {
        "identity": identity_routes.build_app(state),
        "compute": compute_v21.build_app(state, compute_routes),
        "image": image_routes.build_app(state),
        "network": network_routes.build_app(state),
    }


def build_app(
    state: ApiState,
    *,
    only: tuple[str, ...] = SERVICES,
    compute_routes: list[BaseRoute] | None = None,
) -> RequestIdMiddleware:
    """The whole API (or only some services, for a port of their own)."""
    apps = build_services(state, compute_routes)
    routes: list[BaseRoute] = [Route("/", _root, methods=["GET"])]
    dash = None
    if state.conf.dashboard.enabled and set(only) == set(SERVICES):
        dash = dashboard.build_app(state.conf)
        routes.append(Mount(dashboard.PREFIX, app=dash))
    for name in only:
        # "/compute" without the slash is the version document, not a redirect.
        prefix = PREFIXES[name]
        routes.append(Route(prefix, _Bare(prefix, apps[name]), methods=["GET", "HEAD"]))
        routes.append(Mount(prefix, app=apps[name]))
    app = Starlette(routes=routes, exception_handlers=errors.last_resort_handlers())
    app.state.api = state
    whole = RequestIdMiddleware(app)
    if dash is not None:
        # The dashboard asks this very app, in process, as any client would.
        dash.state.dashboard.api = whole
    return whole


def build_dashboard_app(state: ApiState) -> Starlette:
    """The dashboard alone (``[dashboard] port``), at ``/``, asking the whole API in process."""
    dash = dashboard.build_app(state.conf, root="")
    dash.state.dashboard.api = build_app(state)
    app = Starlette(
        routes=[
            Route(dashboard.PREFIX, _redirect_root, methods=["GET"]),
            Mount("", app=dash),
        ]
    )
    return app


async def _redirect_root(request: Request) -> Response:
    return Response(status_code=307, headers={"Location": "/"})
