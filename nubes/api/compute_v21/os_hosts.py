"""``os-hosts`` (admins; removed at 2.43, as in Nova): hosts by service and
zone, a compute host's resources in total, in use and per project, and
enabling or disabling its compute service.

Maintenance mode and host power actions (``reboot``, ``shutdown``,
``startup``) are things a hypervisor driver does in Nova; neither nubes
driver does them, so they are refused with a 400 naming what is missing
(Nova's 501 for such a driver).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common, hosts
from nubes.api.policy import Rule
from nubes.db.api import compute_nodes, services
from nubes.db.api import instances as instances_db

LAST_VERSION = "2.42"
UPDATE = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["enable", "disable", "Enable", "Disable"]},
        "maintenance_mode": {
            "type": "string",
            "enum": ["enable", "disable", "Enable", "Disable"],
        },
    },
    "anyOf": [{"required": ["status"]}, {"required": ["maintenance_mode"]}],
    "additionalProperties": False,
}


def _check(request: Request, action: str) -> None:
    if common.version(request).at_least("2.43"):
        raise common.not_found("The resource could not be found.")
    common.authorize(request, f"os_compute_api:os-hosts:{action}", Rule.ADMIN)


async def index(request: Request) -> Response:
    _check(request, "list")
    zone = request.query_params.get("zone")
    conf = common.state(request).conf
    async with common.state(request).db.reader() as conn:
        rows = await hosts.all_services(conn)
        zones = await hosts.host_zones(conn)
    out = []
    for row in sorted(rows, key=lambda r: (r["host"], r["binary"])):
        entry = {
            "host_name": row["host"],
            "service": row["topic"] or row["binary"],
            "zone": hosts.zone_of(row, zones, conf),
        }
        # An empty zone filters nothing, as in Nova.
        if not zone or entry["zone"] == zone:
            out.append(entry)
    return common.json({"hosts": out})


def _resource(host: str, project: str, cpu: int, memory_mb: int, disk_gb: int) -> dict[str, Any]:
    return {
        "resource": {
            "host": host,
            "project": project,
            "cpu": cpu,
            "memory_mb": memory_mb,
            "disk_gb": disk_gb,
        }
    }


async def show(request: Request) -> Response:
    _check(request, "show")
    host = request.path_params["host_name"]
    async with common.state(request).db.reader() as conn:
        nodes = await compute_nodes.get_all(conn, host=host)
        if not nodes:
            raise exception.NotFound(message=f"Compute host {host} could not be found.")
        placed = await instances_db.get_all_by_host(conn, host)
    total = [sum(n[k] for n in nodes) for k in ("vcpus", "memory_mb", "local_gb")]
    used = [sum(n[k] for n in nodes) for k in ("vcpus_used", "memory_mb_used", "local_gb_used")]
    by_project: dict[str, list[int]] = {}
    for row in placed:
        flavor = row.get("flavor") or {}
        usage = by_project.setdefault(row["project_id"], [0, 0, 0])
        usage[0] += int(flavor.get("vcpus") or 0)
        usage[1] += int(flavor.get("memory_mb") or 0)
        usage[2] += int(flavor.get("root_gb") or 0) + int(flavor.get("ephemeral_gb") or 0)
    used_max = [sum(u[i] for u in by_project.values()) for i in range(3)]
    resources = [
        _resource(host, "(total)", *total),
        _resource(host, "(used_now)", *used),
        _resource(host, "(used_max)", *used_max),
    ] + [_resource(host, p, *u) for p, u in sorted(by_project.items())]
    return common.json({"host": resources})


async def update(request: Request) -> Response:
    _check(request, "update")
    host = request.path_params["host_name"]
    body = await v.json_body(request)
    v.validate(body, UPDATE)
    async with common.state(request).db.writer() as conn:
        # The host is looked up first, as Nova does: an unknown host is 404
        # whatever the body asks.
        try:
            row = await services.get_by_host_and_binary(conn, host, "compute")
        except exception.ServiceNotFound:
            raise exception.NotFound(message=f"Compute host {host} could not be found.") from None
        if "maintenance_mode" in body:
            raise exception.DriverCannotDo(
                reason="Virt driver does not implement host maintenance mode."
            )
        enable = body["status"].lower() == "enable"
        values: dict[str, Any] = {"disabled": not enable}
        if enable:
            values["disabled_reason"] = None
        await services.update(conn, row["id"], values)
    return common.json({"host": host, "status": "enabled" if enable else "disabled"})


POWER_ACTIONS = ("reboot", "shutdown", "startup")


async def power_action(request: Request) -> Response:
    action = request.path_params["action"]
    if action not in POWER_ACTIONS:
        raise common.not_found("The resource could not be found.")
    _check(request, action)
    async with common.state(request).db.reader() as conn:
        if not await compute_nodes.get_all(conn, host=request.path_params["host_name"]):
            host = request.path_params["host_name"]
            raise exception.NotFound(message=f"Compute host {host} could not be found.")
    raise exception.DriverCannotDo(reason="Virt driver does not implement host power actions.")


ROUTES = [
    Route("/os-hosts", index, methods=["GET"]),
    Route("/os-hosts/{host_name}", show, methods=["GET"]),
    Route("/os-hosts/{host_name}", update, methods=["PUT"]),
    Route("/os-hosts/{host_name}/{action}", power_action, methods=["GET"]),
]
