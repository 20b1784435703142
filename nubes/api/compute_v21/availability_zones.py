"""``os-availability-zone``: zones of the compute hosts, and (admins) every service per zone."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api.compute_v21 import common, hosts
from nubes.api.policy import Rule
from nubes.api.views import nova_time


async def _zones(request: Request) -> tuple[list[dict[str, Any]], dict[str, str]]:
    async with common.state(request).db.reader(allow_stale=True) as conn:
        return await hosts.all_services(conn), await hosts.host_zones(conn)


async def index(request: Request) -> Response:
    common.authorize(request, "os-availability-zone:list", Rule.ANY)
    conf = common.state(request).conf
    services, zones = await _zones(request)
    available: dict[str, bool] = {}
    for svc in services:
        if svc["binary"] != "compute":
            continue
        zone = hosts.zone_of(svc, zones, conf)
        available[zone] = available.get(zone, False) or not svc["disabled"]
    info = [
        {"zoneName": zone, "zoneState": {"available": ok}, "hosts": None}
        for zone, ok in sorted(available.items(), key=lambda kv: (not kv[1], kv[0]))
    ]
    return common.json({"availabilityZoneInfo": info})


async def detail(request: Request) -> Response:
    common.authorize(request, "os-availability-zone:detail", Rule.ADMIN)
    conf = common.state(request).conf
    services, zones = await _zones(request)
    by_zone: dict[str, dict[str, dict[str, Any]]] = {}
    available: dict[str, bool] = {}
    for svc in services:
        zone = hosts.zone_of(svc, zones, conf)
        entry = by_zone.setdefault(zone, {}).setdefault(svc["host"], {})
        entry[hosts.public_binary(svc["binary"])] = {
            "available": hosts.is_up(svc, conf),
            "active": not svc["disabled"],
            "updated_at": nova_time(hosts.updated_at(svc)),
        }
        available[zone] = available.get(zone, False) or not svc["disabled"]
    info = [
        {"zoneName": zone, "zoneState": {"available": available[zone]}, "hosts": by_zone[zone]}
        for zone in sorted(by_zone)
    ]
    return common.json({"availabilityZoneInfo": info})


ROUTES = [
    Route("/os-availability-zone", common.no_query(index), methods=["GET"]),
    Route("/os-availability-zone/detail", common.no_query(detail), methods=["GET"]),
]
