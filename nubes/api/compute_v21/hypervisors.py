"""``os-hypervisors``: list, detail, show, uptime, statistics (compute nodes and their services).

A hypervisor's uptime is asked of its compute host (compute RPC
``get_host_uptime``) at ``/os-hypervisors/{id}/uptime``, the route Nova has
up to 2.87 (from 2.88 Nova puts it in the show body instead; nubes stops
before that).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common, hosts
from nubes.api.policy import Rule
from nubes.api.views import Field, View
from nubes.db.api import compute_nodes, instance_listing


def _state(r: dict[str, Any], x: dict[str, Any]) -> str:
    svc = r["_service"]
    return "up" if svc is not None and hosts.is_up(svc, x["conf"]) else "down"


def _status(r: dict[str, Any], _: Any) -> str:
    svc = r["_service"]
    return "disabled" if svc is not None and svc["disabled"] else "enabled"


def _cpu_info_text(r: dict[str, Any], _: Any) -> str:
    return json.dumps(r["cpu_info"] or {})


def _service(r: dict[str, Any], x: dict[str, Any]) -> dict[str, Any]:
    svc = r["_service"] or {}
    use_uuid = x["version"].at_least("2.53")
    return {
        "host": r["host"],
        "id": svc.get("uuid") if use_uuid else svc.get("id"),
        "disabled_reason": svc.get("disabled_reason"),
    }


BASIC = View(
    Field("id", lambda r, _: r["id"], max="2.52"),
    Field("id", lambda r, _: r["uuid"], min="2.53"),
    Field("hypervisor_hostname"),
    Field("state", _state),
    Field("status", _status),
    Field("servers", lambda r, _: r["_servers"], when=lambda x: x["servers"]),
)
#: The last version with the resource counters (2.88 drops them: placement has them).
_COUNTED = "2.87"
DETAIL = View(
    *BASIC.fields[:-1],
    Field("cpu_info", _cpu_info_text, max="2.27"),
    Field("cpu_info", lambda r, _: r["cpu_info"] or {}, min="2.28", max=_COUNTED),
    Field("current_workload", lambda r, _: r["_workload"], max=_COUNTED),
    Field("disk_available_least", lambda r, _: r["local_gb"] - r["local_gb_used"], max=_COUNTED),
    Field("free_disk_gb", lambda r, _: r["local_gb"] - r["local_gb_used"], max=_COUNTED),
    Field("free_ram_mb", lambda r, _: r["memory_mb"] - r["memory_mb_used"], max=_COUNTED),
    Field("host_ip"),
    Field("hypervisor_type", lambda r, _: r["hypervisor_type"] or "fake"),
    Field("hypervisor_version", lambda r, _: r["hypervisor_version"] or 1000),
    Field("local_gb", max=_COUNTED),
    Field("local_gb_used", max=_COUNTED),
    Field("memory_mb", max=_COUNTED),
    Field("memory_mb_used", max=_COUNTED),
    Field("running_vms", max=_COUNTED),
    Field("service", _service),
    Field("vcpus", max=_COUNTED),
    Field("vcpus_used", max=_COUNTED),
    # 2.88: what GET .../uptime answered (None when the host cannot say).
    Field("uptime", lambda r, _: r.get("_uptime"), min="2.88"),
    Field("servers", lambda r, _: r["_servers"], when=lambda x: x["servers"]),
)


async def _nodes(request: Request, *, with_servers: bool) -> list[dict[str, Any]]:
    state = common.state(request)
    async with state.db.reader(allow_stale=True) as conn:
        nodes = await compute_nodes.get_all(conn)
        by_host = {s["host"]: s for s in await hosts.all_services(conn, binary="compute")}
        placed = await instance_listing.placed_on_hosts(conn)
    on: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for p in placed:
        on.setdefault((p["host"], p["node"]), []).append(p)
    reserved = compute_nodes.Reserved.from_conf(state.conf)
    for node in nodes:
        # What the operator keeps back counts as used, as Nova reports it
        # (its resource tracker starts each node's usage at the reserved
        # memory and disk); the scheduler leaves it free the same way.
        node["memory_mb_used"] += reserved.memory_mb
        node["local_gb_used"] += reserved.disk_gb
        node["_service"] = by_host.get(node["host"])
        # Placed but not yet given a node counts on the host's node, as Nova.
        on_node = on.get((node["host"], node["hypervisor_hostname"]), []) + on.get(
            (node["host"], None), []
        )
        node["_workload"] = sum(1 for p in on_node if p["task_state"] is not None)
        node["_servers"] = [{"name": p["display_name"], "uuid": p["uuid"]} for p in on_node]
        # Counted from the instances, in the same read: the host's own
        # periodic report lagged (and counted what was gone or not yet there).
        node["running_vms"] = len(on_node)
    return nodes


def _render(view: View, node: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    body = view.render(node, extra["version"], extra)
    # Asked for, ``servers`` is left out of a node without any before 2.75.
    if not body.get("servers", True) and not extra["version"].at_least("2.75"):
        del body["servers"]
    return body


def _extra(request: Request, servers: bool) -> dict[str, Any]:
    return {
        "conf": common.state(request).conf,
        "version": common.version(request),
        "servers": servers,
    }


async def _list(request: Request, view: View) -> Response:
    common.authorize(request, "os-hypervisors:list", Rule.ADMIN)
    version = common.version(request)
    params = request.query_params
    with_servers = False
    pattern = None
    if version.at_least("2.53"):
        with_servers = v.query_bool(request, "with_servers") or False
        pattern = params.get("hypervisor_hostname_pattern")
        if pattern is not None and ("limit" in params or "marker" in params):
            raise common.bad_request(
                "Paging over hypervisors with the hypervisor_hostname_pattern query "
                "parameter is not supported."
            )
    nodes = await _nodes(request, with_servers=with_servers)
    if pattern is not None:
        nodes = [n for n in nodes if pattern in n["hypervisor_hostname"]]
        if not nodes:
            raise common.not_found(f"No hypervisor matching '{pattern}' could be found.")
    links = None
    if version.at_least("2.33"):
        marker = params.get("marker")
        if marker is not None:
            key = "uuid" if version.at_least("2.53") else "id"
            positions = [i for i, n in enumerate(nodes) if str(n[key]) == marker]
            if not positions:
                raise common.bad_request(f"marker [{marker}] not found")
            nodes = nodes[positions[0] + 1 :]
        limit = common.limit(request)
        if "limit" in params and len(nodes) > limit:
            nodes = nodes[:limit]
            key = "uuid" if version.at_least("2.53") else "id"
            links = common.next_link(request, "os-hypervisors", nodes[-1][key])
        elif len(nodes) > limit:
            nodes = nodes[:limit]
    extra = _extra(request, with_servers)
    if view is DETAIL:
        await _uptimes(request, nodes, extra)
    body: dict[str, Any] = {"hypervisors": [_render(view, n, extra) for n in nodes]}
    if links:
        body["hypervisors_links"] = links
    return common.json(body)


async def index(request: Request) -> Response:
    return await _list(request, BASIC)


async def detail(request: Request) -> Response:
    return await _list(request, DETAIL)


async def _find(request: Request, *, with_servers: bool) -> dict[str, Any]:
    """The node ``{hypervisor_id}`` names (its id, or its uuid from 2.53)."""
    version = common.version(request)
    hypervisor_id = request.path_params["hypervisor_id"]
    if version.at_least("2.53"):
        if not v.is_uuid_like(hypervisor_id):
            raise common.bad_request(f"Invalid uuid {hypervisor_id}")
        match = lambda n: n["uuid"] == hypervisor_id  # noqa: E731
    else:
        try:
            number = int(hypervisor_id)
        except ValueError:
            raise common.not_found(
                f"Hypervisor with ID {hypervisor_id} could not be found."
            ) from None
        match = lambda n: n["id"] == number  # noqa: E731
    for node in await _nodes(request, with_servers=with_servers):
        if match(node):
            return node
    raise common.not_found(f"Hypervisor with ID {hypervisor_id} could not be found.")


async def show(request: Request) -> Response:
    common.authorize(request, "os-hypervisors:show", Rule.ADMIN)
    version = common.version(request)
    with_servers = version.at_least("2.53") and (v.query_bool(request, "with_servers") or False)
    node = await _find(request, with_servers=with_servers)
    extra = _extra(request, with_servers)
    await _uptimes(request, [node], extra)
    return common.json({"hypervisor": _render(DETAIL, node, extra)})


async def _matching(request: Request, action: str, *, with_servers: bool) -> Response:
    """``{pattern}/search`` and ``{pattern}/servers`` (up to 2.52; 2.53 made
    them list filters): the nodes whose name holds the pattern, 404 if none."""
    if common.version(request).at_least("2.53"):
        raise common.not_found("The resource could not be found.")
    common.authorize(request, f"os-hypervisors:{action}", Rule.ADMIN)
    pattern = request.path_params["pattern"]
    nodes = [
        n
        for n in await _nodes(request, with_servers=with_servers)
        if pattern in n["hypervisor_hostname"]
    ]
    if not nodes:
        raise common.not_found(f"No hypervisor matching '{pattern}' could be found.")
    extra = _extra(request, with_servers)
    return common.json({"hypervisors": [_render(BASIC, n, extra) for n in nodes]})


async def search(request: Request) -> Response:
    return await _matching(request, "search", with_servers=False)


async def servers(request: Request) -> Response:
    return await _matching(request, "servers", with_servers=True)


def _gone_from_2_88(request: Request) -> None:
    if common.version(request).at_least("2.88"):
        raise exception.NotFound(message="The resource could not be found.")


async def _uptimes(request: Request, nodes: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """2.88: each node's uptime in its body, None where its host cannot answer."""
    if not extra["version"].at_least("2.88"):
        return
    for node in nodes:
        try:
            node["_uptime"] = await _host_uptime(request, node, extra)
        except (exception.ComputeServiceUnavailable, exception.HostCannotAnswer):
            node["_uptime"] = None


async def uptime(request: Request) -> Response:
    _gone_from_2_88(request)
    common.authorize(request, "os-hypervisors:uptime", Rule.ADMIN)
    node = await _find(request, with_servers=False)
    extra = _extra(request, False)
    body = _render(BASIC, node, extra)
    body["uptime"] = await _host_uptime(request, node, extra)
    return common.json({"hypervisor": body})


async def _host_uptime(request: Request, node: dict[str, Any], extra: dict[str, Any]) -> str:
    host = node["host"]
    compute = common.state(request).compute_api()
    # As Nova: a host whose service is down is not asked (it could not answer).
    if compute is None or _state(node, extra) != "up":
        raise exception.ComputeServiceUnavailable(host=host)
    try:
        text = await compute.get_host_uptime(common.ctx(request), host)
    except exception.UnsupportedVersion as exc:
        # The host (or the configured cap) predates the question: Nova's 501
        # for a driver without uptime, which clients treat as "no uptime".
        raise exception.HostCannotAnswer(host=host, question="uptime", reason=str(exc)) from None
    except exception.MessagingTimeout:
        raise exception.ComputeServiceUnavailable(host=host) from None
    return str(text)


STAT_KEYS = (
    "count",
    "vcpus_used",
    "local_gb_used",
    "memory_mb",
    "current_workload",
    "vcpus",
    "running_vms",
    "free_disk_gb",
    "disk_available_least",
    "local_gb",
    "free_ram_mb",
    "memory_mb_used",
)


async def statistics(request: Request) -> Response:
    _gone_from_2_88(request)
    common.authorize(request, "os-hypervisors:statistics", Rule.ADMIN)
    nodes = await _nodes(request, with_servers=False)
    stats = dict.fromkeys(STAT_KEYS, 0)
    for n in nodes:
        stats["count"] += 1
        for key in (
            "vcpus",
            "vcpus_used",
            "memory_mb",
            "memory_mb_used",
            "local_gb",
            "local_gb_used",
            "running_vms",
        ):
            stats[key] += n[key]
        stats["current_workload"] += n["_workload"]
        stats["free_disk_gb"] += n["local_gb"] - n["local_gb_used"]
        stats["disk_available_least"] += n["local_gb"] - n["local_gb_used"]
        stats["free_ram_mb"] += n["memory_mb"] - n["memory_mb_used"]
    return common.json({"hypervisor_statistics": stats})


#: Nova's list query from 2.53 (nothing else is taken).
LIST_QUERY = {"2.53": ("limit", "marker", "hypervisor_hostname_pattern", "with_servers")}


ROUTES = [
    Route("/os-hypervisors", common.known_query(index, LIST_QUERY), methods=["GET"]),
    Route("/os-hypervisors/detail", common.known_query(detail, LIST_QUERY), methods=["GET"]),
    Route("/os-hypervisors/statistics", statistics, methods=["GET"]),
    Route(
        "/os-hypervisors/{hypervisor_id}",
        common.known_query(show, {"2.53": ("with_servers",)}),
        methods=["GET"],
    ),
    Route("/os-hypervisors/{hypervisor_id}/uptime", uptime, methods=["GET"]),
    Route("/os-hypervisors/{pattern}/search", search, methods=["GET"]),
    Route("/os-hypervisors/{pattern}/servers", servers, methods=["GET"]),
]
