"""Compute API v2.1 with microversions (mounted at ``/compute``).

Each resource module holds its views (fields with "added in 2.N" rules), its
JSON schemas per microversion, the small amount of logic between a request
and the DB, and its routes (``ROUTES``). ``servers.py`` (views in
``server_views.py``, schemas in ``server_schemas.py``) calls
:class:`nubes.api.servers.ServersAPI` (``ApiState.servers_api()``) for every
state change and :func:`nubes.api.images.get_active_image` to boot; the
move actions (``server_moves.py``) and the migration records
(``migrations.py``) call :class:`nubes.api.moves.MovesAPI`
(``ApiState.moves_api()``).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route, Router

from nubes.api.compute_v21 import (
    aggregates,
    availability_zones,
    extensions,
    flavors,
    floating_ips,
    hypervisors,
    images,
    instance_actions,
    instance_usage_audit_log,
    keypairs,
    limits,
    migrations,
    network_proxies,
    nubes_status,
    os_hosts,
    quota_sets,
    remote_consoles,
    scheduler_hints,
    server_actions,
    server_diagnostics,
    server_external_events,
    server_groups,
    server_metadata,
    server_network,
    server_password,
    server_shares,
    server_tags,
    server_topology,
    servers,
    services,
    simple_tenant_usage,
    versions,
    volume_attachments,
    volumes_boot,
)
from nubes.api.middleware import service_app
from nubes.api.state import ApiState

#: Resource modules whose ROUTES are served under /compute/v2.1.
RESOURCES = [
    flavors,
    hypervisors,
    services,
    aggregates,
    server_groups,
    availability_zones,
    limits,
    quota_sets,
    scheduler_hints,
    servers,
    server_actions,
    server_tags,
    server_topology,
    server_diagnostics,
    server_external_events,
    remote_consoles,
    server_password,
    volume_attachments,
    server_shares,
    server_metadata,
    instance_actions,
    migrations,
    nubes_status,
    keypairs,
    server_network,
    simple_tenant_usage,
    os_hosts,
    network_proxies,
    floating_ips,
    extensions,
    instance_usage_audit_log,
    images,
    volumes_boot,
]

#: Paths (relative to /compute) that need no token.
PUBLIC = ("", "/", "/v2.1", "/v2.1/", "/v2", "/v2/")


def v21_routes(
    extra: list[BaseRoute] | None = None, *, version_doc: Any = versions.v21
) -> list[BaseRoute]:
    routes: list[BaseRoute] = [Route("/", version_doc, methods=["GET"])]
    for module in RESOURCES:
        routes += module.ROUTES
    routes += extra or []
    return routes


def build_app(state: ApiState, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    routes: list[BaseRoute] = [
        Route("/", versions.root, methods=["GET"]),
        Route("/v2.1", versions.v21, methods=["GET"]),
        Mount("/v2.1", app=Router(v21_routes(extra_routes), redirect_slashes=False)),
        # Nova's /v2 is the v2.1 code at its first version (the middleware
        # pins it), so clients of the old endpoint keep working.
        Route("/v2", versions.v20, methods=["GET"]),
        Mount(
            "/v2",
            app=Router(v21_routes(extra_routes, version_doc=versions.v20), redirect_slashes=False),
        ),
    ]
    app = service_app(state, routes, service="compute", public=PUBLIC, microversions=True)
    # Nova answers a path with a stray trailing slash 404 (an empty id: GET
    # /os-simple-tenant-usage/, DELETE /os-security-groups/), never a
    # redirect to another route.
    app.router.redirect_slashes = False
    return app
