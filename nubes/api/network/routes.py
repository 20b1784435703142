"""HTTP routes of the network service (a Neutron v2.0 subset, mounted at ``/networking``).

Neutron's shapes: ``{"network": {...}}`` in and out, lists as
``{"networks": [...], "networks_links": [...]}``, any attribute as a filter
(repeat it for "any of"), ``fields`` to choose attributes, ``limit`` /
``marker`` / ``page_reverse`` paging (by id), and errors as
``{"NeutronError": {"type", "message", "detail"}}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nubes import exception
from nubes.api import policy, quotas
from nubes.api.middleware import api_state, request_context, service_app
from nubes.api.state import ApiState
from nubes.api.validation import json_body
from nubes.api.views import iso_z
from nubes.db.api import network as net_db
from nubes.db.api import quotas as quotas_db
from nubes.network import resources
from nubes.network.resources import NetworkService, Row, security_groups

#: Extensions whose attributes and behaviour this subset has (clients check some).
EXTENSIONS = (
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("external-net", "Neutron external network", "Adds external network attribute"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("port-security", "Port Security", "Provides port security"),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("quotas", "Quota management support", "Expose functions for quotas management"),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding"),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "enable_snat"),
    ("quota_details", "Quota details management support", "Expose quota usage details"),
    ("security-group", "security-group", "The security groups extension."),
    ("standard-attr-description", "standard-attr-description", "Description of resources"),
    ("standard-attr-revisions", "Resource revision numbers", "Revision numbers on resources"),
    ("standard-attr-timestamp", "Resource timestamps", "created_at and updated_at fields"),
    ("stateful-security-group", "Stateful security group", "Stateful security groups"),
)
#: Neutron resource quotas shown besides ours (RBAC, subnet pools: not built, 0).
UNBUILT_QUOTAS = ("rbac_policy", "subnetpool")


_state = api_state
_ctx = request_context


def _service(request: Request) -> NetworkService:
    found = _state(request).network_service()
    assert isinstance(found, NetworkService)
    return found


# --- views -----------------------------------------------------------------------------------


def _common(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "tenant_id": row["project_id"],
        "project_id": row["project_id"],
        "created_at": iso_z(row["created_at"]),
        "updated_at": iso_z(row["updated_at"] or row["created_at"]),
        "revision_number": row["revision_number"],
        "tags": [],
    }


def network_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **_common(row),
        "name": row["name"],
        "description": row["description"],
        "admin_state_up": row["admin_state_up"],
        "status": "ACTIVE" if row["admin_state_up"] else "DOWN",
        "subnets": list(row.get("subnets", [])),
        "shared": row["shared"],
        "router:external": row["external"],
        "mtu": row["mtu"],
        "port_security_enabled": row["port_security_enabled"],
        "provider:network_type": "flat" if row["physical_network"] else "vxlan",
        "provider:physical_network": row["physical_network"],
        "provider:segmentation_id": None if row["physical_network"] else row["segmentation_id"],
        "availability_zone_hints": [],
        "availability_zones": ["nova"],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "is_default": False,
        "l2_adjacency": True,
    }


def subnet_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **_common(row),
        "name": row["name"],
        "description": row["description"],
        "network_id": row["network_id"],
        "ip_version": row["ip_version"],
        "cidr": row["cidr"],
        "gateway_ip": row["gateway_ip"],
        "enable_dhcp": row["enable_dhcp"],
        "allocation_pools": list(row["allocation_pools"]),
        "dns_nameservers": list(row["dns_nameservers"]),
        "host_routes": list(row["host_routes"]),
        "ipv6_ra_mode": row["ipv6_ra_mode"],
        "ipv6_address_mode": row["ipv6_address_mode"],
        "subnetpool_id": None,
        "service_types": [],
        "segment_id": None,
    }


def port_view(row: Mapping[str, Any]) -> dict[str, Any]:
    bound = bool(row["binding_host_id"])
    return {
        **_common(row),
        "name": row["name"],
        "description": row["description"],
        "network_id": row["network_id"],
        "mac_address": row["mac_address"],
        "admin_state_up": row["admin_state_up"],
        "status": row["status"],
        "device_id": row["device_id"],
        "device_owner": row["device_owner"],
        "fixed_ips": list(row["fixed_ips"]),
        "security_groups": list(row["security_groups"]),
        "port_security_enabled": row["port_security_enabled"],
        "binding:host_id": row["binding_host_id"],
        "binding:vif_type": "bridge" if bound else "unbound",
        "binding:vnic_type": "normal",
        "binding:profile": {},
        "binding:vif_details": {"port_filter": True} if bound else {},
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
    }


def rule_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **_common(row),
        "security_group_id": row["security_group_id"],
        "direction": row["direction"],
        "ethertype": row["ethertype"],
        "protocol": row["protocol"],
        "port_range_min": row["port_range_min"],
        "port_range_max": row["port_range_max"],
        "remote_ip_prefix": row["remote_ip_prefix"],
        "remote_group_id": row["remote_group_id"],
        "remote_address_group_id": None,
        "normalized_cidr": security_groups.normalized_cidr(row["remote_ip_prefix"]),
        "description": row["description"],
    }


def group_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **_common(row),
        "name": row["name"],
        "description": row["description"],
        "stateful": row["stateful"],
        "shared": False,
        "security_group_rules": [rule_view(r) for r in row.get("security_group_rules", [])],
    }


def router_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **_common(row),
        "name": row["name"],
        "description": row["description"],
        "admin_state_up": row["admin_state_up"],
        "status": row["status"],
        "external_gateway_info": row["external_gateway_info"],
        "routes": [],
        "distributed": False,
        "ha": False,
        "availability_zone_hints": [],
        "availability_zones": ["nova"],
        "flavor_id": None,
    }


def floatingip_view(row: Mapping[str, Any]) -> dict[str, Any]:
    common = _common(row)
    return {
        **common,
        "description": row["description"],
        "floating_ip_address": row["floating_ip_address"],
        "floating_network_id": row["floating_network_id"],
        "router_id": row["router_id"],
        "port_id": row["fixed_port_id"],
        "fixed_ip_address": row["fixed_ip_address"],
        "status": row["status"],
        "port_forwardings": [],
        "qos_policy_id": None,
    }


def interface_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """What add/remove_router_interface answer (no wrapper, as Neutron)."""
    return dict(row)


# --- lists: filters, fields, paging ----------------------------------------------------------

#: Per collection: query filter -> (column, kind) where kind converts the text.
_Filter = tuple[str, str]
#: Filters every collection has (rules have no name or description of their own to filter).
_OWNED_NO_NAME: dict[str, _Filter] = {
    "id": ("id", "str"),
    "project_id": ("project_id", "str"),
    "tenant_id": ("project_id", "str"),
}
_OWNED: dict[str, _Filter] = {
    **_OWNED_NO_NAME,
    "name": ("name", "str"),
    "description": ("description", "str"),
}
FILTERS: dict[str, dict[str, _Filter]] = {
    "networks": {
        **_OWNED,
        "shared": ("shared", "bool"),
        "router:external": ("external", "bool"),
        "admin_state_up": ("admin_state_up", "bool"),
        "mtu": ("mtu", "int"),
    },
    "subnets": {
        **_OWNED,
        "network_id": ("network_id", "str"),
        "ip_version": ("ip_version", "int"),
        "cidr": ("cidr", "str"),
        "gateway_ip": ("gateway_ip", "str"),
        "enable_dhcp": ("enable_dhcp", "bool"),
    },
    "ports": {
        **_OWNED,
        "network_id": ("network_id", "str"),
        "mac_address": ("mac_address", "str"),
        "device_id": ("device_id", "str"),
        "device_owner": ("device_owner", "str"),
        "status": ("status", "str"),
        "admin_state_up": ("admin_state_up", "bool"),
        "binding:host_id": ("binding_host_id", "str"),
    },
    "security_groups": {
        **_OWNED,
    },
    "security_group_rules": {
        **_OWNED_NO_NAME,
        "security_group_id": ("security_group_id", "str"),
        "direction": ("direction", "str"),
        "ethertype": ("ethertype", "str"),
        "protocol": ("protocol", "str"),
        "port_range_min": ("port_range_min", "int"),
        "port_range_max": ("port_range_max", "int"),
        "remote_ip_prefix": ("remote_ip_prefix", "str"),
        "remote_group_id": ("remote_group_id", "str"),
    },
    "routers": {
        **_OWNED,
        "admin_state_up": ("admin_state_up", "bool"),
        "status": ("status", "str"),
    },
    "floatingips": {
        **_OWNED_NO_NAME,
        "description": ("description", "str"),
        "floating_ip_address": ("floating_ip_address", "str"),
        "floating_network_id": ("floating_network_id", "str"),
        "port_id": ("fixed_port_id", "str"),
        "fixed_ip_address": ("fixed_ip_address", "str"),
        "router_id": ("router_id", "str"),
        "status": ("status", "str"),
    },
}
#: Query parameters that are not filters.
PAGING = ("fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir", "fixed_ips")


def _convert(name: str, kind: str, raw: str) -> Any:
    if kind == "bool":
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise exception.NetworkInvalid(
                reason=f"Invalid input for {name}. Reason: '{raw}' cannot be converted to boolean."
            )
        return lowered in ("true", "1")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise exception.NetworkInvalid(
                reason=f"Invalid input for {name}. Reason: '{raw}' is not an integer."
            ) from None
    return raw


def _filters(request: Request, collection: str) -> dict[str, list[Any]]:
    known = FILTERS[collection]
    out: dict[str, list[Any]] = {}
    for name, raw in request.query_params.multi_items():
        if name in PAGING:
            continue
        if name not in known:
            # Neutron ignores filters on attributes it does not filter by
            # (tags, status of a network ...) unless strict filtering is on.
            continue
        column, kind = known[name]
        out.setdefault(column, []).append(_convert(name, kind, raw))
    return out


def _paging(request: Request) -> tuple[int | None, str | None, bool]:
    params = request.query_params
    limit: int | None = None
    raw = params.get("limit")
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise exception.NetworkInvalid(
                reason=f"Bad limit request: Limit must be an integer 0 or greater and not '{raw}'"
            ) from None
        if limit < 0:
            raise exception.NetworkInvalid(
                reason=f"Bad limit request: Limit must be an integer 0 or greater and not '{raw}'"
            )
    cap = int(_state(request).conf.api.max_limit)
    limit = cap if not limit else min(limit, cap)
    marker = params.get("marker")
    reverse = params.get("page_reverse", "false").lower() in ("true", "1")
    return limit, marker, reverse


def _fields(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    wanted = request.query_params.getlist("fields")
    if not wanted:
        return body
    return {k: v for k, v in body.items() if k in wanted}


def _list_response(
    request: Request,
    collection: str,
    rows: Sequence[Row],
    view: Callable[[Mapping[str, Any]], dict[str, Any]],
    limit: int | None,
    reverse: bool,
) -> Response:
    items = [_fields(request, view(r)) for r in rows]
    body: dict[str, Any] = {collection: items}
    if limit is not None and len(rows) == limit and rows:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
        query.append(("marker", rows[-1]["id"]))
        base = str(request.url).split("?", 1)[0]
        body[f"{collection}_links"] = [
            {"rel": "previous" if reverse else "next", "href": f"{base}?{urlencode(query)}"}
        ]
    return JSONResponse(body)


# --- handlers --------------------------------------------------------------------------------

Lister = Callable[..., Awaitable[list[Row]]]


def _collection(
    collection: str,
    singular: str,
    view: Callable[[Mapping[str, Any]], dict[str, Any]],
    allowed: Sequence[str],
    required: Sequence[str],
    updatable: Sequence[str] | None,
    stem: str,
) -> list[Route]:
    """The five Neutron routes of one collection.

    The service's methods are named after ``stem``: ``create_<stem>``,
    ``get_<stem>``, ``list_<stem>s``, ``update_<stem>``, ``delete_<stem>``;
    ``updatable=None`` means the collection has no PUT (rules).
    """

    verbs = ("create", "get", "delete", *(("update",) if updatable is not None else ()))
    # A misnamed stem fails when the app is built, not on a tenant's first request.
    missing = [
        n
        for n in (f"list_{stem}s", *(f"{v}_{stem}" for v in verbs))
        if not hasattr(NetworkService, n)
    ]
    if missing:
        raise AttributeError(f"NetworkService lacks {missing}")

    def method(service: NetworkService, verb: str) -> Callable[..., Awaitable[Any]]:
        found: Callable[..., Awaitable[Any]] = getattr(service, f"{verb}_{stem}")
        return found

    async def index(request: Request) -> Response:
        limit, marker, reverse = _paging(request)
        extra: dict[str, Any] = {}
        if collection == "ports":
            extra["fixed_ips"] = request.query_params.getlist("fixed_ips")
        lister: Lister = getattr(_service(request), f"list_{stem}s")
        page = resources.Page(_filters(request, collection), limit, marker, reverse)
        rows = await lister(_ctx(request), page, **extra)
        return _list_response(request, collection, rows, view, limit, reverse)

    async def post(request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, dict) and isinstance(body.get(collection), list):
            raise exception.NetworkInvalid(reason="Bulk create is not supported.")
        item = resources.check_body(body, singular, allowed, required)
        row = await method(_service(request), "create")(_ctx(request), item)
        return JSONResponse({singular: view(row)}, status_code=201)

    async def get(request: Request) -> Response:
        row = await method(_service(request), "get")(_ctx(request), request.path_params["id"])
        return JSONResponse({singular: _fields(request, view(row))})

    async def put(request: Request) -> Response:
        assert updatable is not None
        item = resources.check_body(await json_body(request), singular, updatable)
        update = method(_service(request), "update")
        row = await update(_ctx(request), request.path_params["id"], item)
        return JSONResponse({singular: view(row)})

    async def delete(request: Request) -> Response:
        await method(_service(request), "delete")(_ctx(request), request.path_params["id"])
        return Response(status_code=204)

    base = f"/v2.0/{collection.replace('_', '-')}"
    routes = [
        Route(base, index, methods=["GET"]),
        Route(base, post, methods=["POST"]),
        Route(base + "/{id}", get, methods=["GET"]),
        Route(base + "/{id}", delete, methods=["DELETE"]),
    ]
    if updatable is not None:
        routes.append(Route(base + "/{id}", put, methods=["PUT"]))
    return routes


COMMON_ATTRS = ("name", "description", "project_id", "tenant_id")


def _routes() -> list[Route]:
    out: list[Route] = []
    out += _collection(
        "networks",
        "network",
        network_view,
        allowed=(
            *COMMON_ATTRS,
            "admin_state_up",
            "shared",
            "router:external",
            "mtu",
            "port_security_enabled",
            "availability_zone_hints",
            "provider:network_type",
            "provider:physical_network",
            "provider:segmentation_id",
        ),
        required=(),
        updatable=(
            "name",
            "description",
            "admin_state_up",
            "shared",
            "router:external",
            "mtu",
            "port_security_enabled",
        ),
        stem="network",
    )
    out += _collection(
        "subnets",
        "subnet",
        subnet_view,
        allowed=(
            *COMMON_ATTRS,
            "network_id",
            "ip_version",
            "cidr",
            "gateway_ip",
            "allocation_pools",
            "dns_nameservers",
            "host_routes",
            "enable_dhcp",
            "ipv6_ra_mode",
            "ipv6_address_mode",
        ),
        required=("network_id",),
        updatable=("name", "description", "enable_dhcp", "dns_nameservers", "host_routes"),
        stem="subnet",
    )
    out += _collection(
        "ports",
        "port",
        port_view,
        allowed=(
            *COMMON_ATTRS,
            "network_id",
            "admin_state_up",
            "mac_address",
            "fixed_ips",
            "device_id",
            "device_owner",
            "security_groups",
            "port_security_enabled",
            "binding:host_id",
            "binding:vnic_type",
            "binding:profile",
        ),
        required=("network_id",),
        updatable=(
            "name",
            "description",
            "admin_state_up",
            "fixed_ips",
            "device_id",
            "device_owner",
            "security_groups",
            "port_security_enabled",
            "binding:host_id",
        ),
        stem="port",
    )
    out += _collection(
        "security_groups",
        "security_group",
        group_view,
        allowed=(*COMMON_ATTRS, "stateful"),
        required=(),
        updatable=("name", "description"),
        stem="security_group",
    )
    out += _collection(
        "security_group_rules",
        "security_group_rule",
        rule_view,
        allowed=(
            "project_id",
            "tenant_id",
            "description",
            "security_group_id",
            "direction",
            "ethertype",
            "protocol",
            "port_range_min",
            "port_range_max",
            "remote_ip_prefix",
            "remote_group_id",
        ),
        required=("security_group_id", "direction"),
        updatable=None,
        stem="rule",
    )
    out += _collection(
        "routers",
        "router",
        router_view,
        allowed=(*COMMON_ATTRS, "admin_state_up", "external_gateway_info", "distributed", "ha"),
        required=(),
        updatable=(
            "name",
            "description",
            "admin_state_up",
            "external_gateway_info",
            "routes",
            "distributed",
            "ha",
        ),
        stem="router",
    )
    out += _collection(
        "floatingips",
        "floatingip",
        floatingip_view,
        allowed=(
            "project_id",
            "tenant_id",
            "description",
            "floating_network_id",
            "floating_ip_address",
            "subnet_id",
            "port_id",
            "fixed_ip_address",
        ),
        required=("floating_network_id",),
        updatable=("description", "port_id", "fixed_ip_address"),
        stem="floatingip",
    )
    out += [
        Route(f"/v2.0/routers/{{id}}/{verb}_router_interface", _interface(verb), methods=["PUT"])
        for verb in ("add", "remove")
    ]
    return out


def _interface(verb: str) -> Callable[[Request], Awaitable[Response]]:
    async def interface(request: Request) -> Response:
        body = await json_body(request)
        method = getattr(_service(request), f"{verb}_router_interface")
        row = await method(_ctx(request), request.path_params["id"], body)
        return JSONResponse(interface_view(row))

    return interface


# --- versions, extensions, quotas ------------------------------------------------------------


async def versions(request: Request) -> Response:
    base = _state(request).public_endpoint + "/networking"
    return JSONResponse(
        {
            "versions": [
                {
                    "id": "v2.0",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"{base}/v2.0/"}],
                }
            ]
        }
    )


async def resources_index(request: Request) -> Response:
    base = _state(request).public_endpoint + "/networking/v2.0"
    names = (
        "network",
        "subnet",
        "port",
        "security_group",
        "security_group_rule",
        "router",
        "floatingip",
    )
    return JSONResponse(
        {
            "resources": [
                {
                    "name": name,
                    "collection": name.replace("_", "-") + "s",
                    "links": [{"rel": "self", "href": f"{base}/{name.replace('_', '-')}s"}],
                }
                for name in names
            ]
        }
    )


def _extension(alias: str, name: str, description: str) -> dict[str, Any]:
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "updated": "2026-12-06T00:00:00-00:00",
        "links": [],
    }


async def extensions(request: Request) -> Response:
    return JSONResponse({"extensions": [_extension(*e) for e in EXTENSIONS]})


async def extension(request: Request) -> Response:
    alias = request.path_params["alias"]
    for entry in EXTENSIONS:
        if entry[0] == alias:
            return JSONResponse({"extension": _extension(*entry)})
    raise exception.NotFound(reason=f"Extension with alias {alias} does not exist")


_COUNTED: dict[str, net_db.Kind] = {
    "network": "networks",
    "subnet": "subnets",
    "port": "ports",
    "security_group": "security_groups",
    "security_group_rule": "security_group_rules",
    "router": "routers",
    "floatingip": "floatingips",
}


async def _limits(request: Request, project_id: str) -> dict[str, int]:
    async with _state(request).db.reader() as conn:
        limits = await quotas.network_limits(conn, _state(request).conf, project_id)
    return {**limits, **dict.fromkeys(UNBUILT_QUOTAS, 0)}


def _quota_project(request: Request) -> str:
    project_id: str = request.path_params["project_id"]
    policy.authorize(_ctx(request), "get_quota", policy.Rule.PROJECT_READER, project_id)
    return project_id


async def quota_show(request: Request) -> Response:
    return JSONResponse({"quota": await _limits(request, _quota_project(request))})


async def quota_default(request: Request) -> Response:
    _quota_project(request)
    conf = _state(request).conf
    limits = {name: int(getattr(conf.quota, name)) for name in _COUNTED}
    return JSONResponse({"quota": {**limits, **dict.fromkeys(UNBUILT_QUOTAS, 0)}})


async def quota_details(request: Request) -> Response:
    project_id = _quota_project(request)
    limits = await _limits(request, project_id)
    async with _state(request).db.reader() as conn:
        used = {
            name: await net_db.count_by_project(conn, table, project_id)
            for name, table in _COUNTED.items()
        }
    body = {
        name: {"limit": limit, "used": used.get(name, 0), "reserved": 0}
        for name, limit in limits.items()
    }
    return JSONResponse({"quota": body})


async def quota_update(request: Request) -> Response:
    project_id: str = request.path_params["project_id"]
    policy.authorize(_ctx(request), "update_quota", policy.Rule.ADMIN)
    item = resources.check_body(await json_body(request), "quota", (*_COUNTED, *UNBUILT_QUOTAS))
    values: dict[str, int] = {}
    for name, raw in item.items():
        if name in UNBUILT_QUOTAS:
            continue
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < quotas.UNLIMITED:
            raise exception.NetworkInvalid(
                reason=f"Invalid input for {name}. Reason: '{raw}' is not a valid quota limit."
            )
        values[name] = raw
    async with _state(request).db.writer() as conn:
        await quotas_db.limits_set(conn, project_id, values)
    return JSONResponse({"quota": await _limits(request, project_id)})


def build_app(state: ApiState) -> Starlette:
    routes = [
        Route("/", versions, methods=["GET"]),
        Route("/v2.0", resources_index, methods=["GET"]),
        Route("/v2.0/", resources_index, methods=["GET"]),
        Route("/v2.0/extensions", extensions, methods=["GET"]),
        Route("/v2.0/extensions/{alias}", extension, methods=["GET"]),
        Route("/v2.0/quotas/{project_id}", quota_show, methods=["GET"]),
        Route("/v2.0/quotas/{project_id}", quota_update, methods=["PUT"]),
        Route("/v2.0/quotas/{project_id}/default", quota_default, methods=["GET"]),
        Route("/v2.0/quotas/{project_id}/details.json", quota_details, methods=["GET"]),
        Route("/v2.0/quotas/{project_id}/details", quota_details, methods=["GET"]),
        *_routes(),
    ]
    return service_app(state, routes, service="network", public=("", "/"))
