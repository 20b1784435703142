"""Service liveness and host availability zones, shared by services, hypervisors and zones."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from nubes import liveness
from nubes.db.api import groups, services
from nubes.db.engine import Connection

#: What the API calls a binary, from what the services table records
#: (``compute`` is ``nubes-compute``).
BINARY_PREFIX = "nubes-"
#: Prefixes accepted in filters and request bodies for a binary: nubes' own
#: names, and Nova's (``nova-compute``, ``nova-conductor``, ``nova-scheduler``)
#: for the clients and tests written against Nova.
ACCEPTED_PREFIXES = ("nubes-", "nova-")


def public_binary(binary: str, prefix: str = BINARY_PREFIX) -> str:
    """The binary's public name, ``prefix`` + the services table's name."""
    for known in ACCEPTED_PREFIXES:
        if binary.startswith(known):
            binary = binary[len(known) :]
    return prefix + binary


def naming_prefix(name: str | None) -> str:
    """The prefix a request named a binary with: a listing filtered by
    ``binary=nova-compute`` names its services ``nova-compute`` as Nova does
    (a Nova client compares the names it gets with the one it asked for);
    anything else gets nubes' own names."""
    for prefix in ACCEPTED_PREFIXES:
        if name is not None and name.startswith(prefix):
            return prefix
    return BINARY_PREFIX


def internal_binary(name: str) -> str:
    for prefix in ACCEPTED_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def is_up(row: dict[str, Any], conf: cfg.ConfigOpts, now: dt.datetime | None = None) -> bool:
    """Nova's rule (:mod:`nubes.liveness`) on a row of ``get_all_with_last_seen``."""
    return liveness.row_is_up(row, conf.service_down_time, now)


def updated_at(row: dict[str, Any]) -> dt.datetime | None:
    # The heartbeat is the service's "last update" (Nova bumps updated_at on report).
    candidates = [t for t in (row.get("last_seen_at"), row.get("updated_at")) if t is not None]
    return max(candidates) if candidates else row.get("created_at")


async def host_zones(conn: Connection) -> dict[str, str]:
    """Host -> availability zone, for hosts in an aggregate that names one."""
    zones: dict[str, str] = {}
    for agg in await groups.aggregate_get_all(conn):
        zone = agg["metadata"].get(groups.AVAILABILITY_ZONE_KEY)
        if zone:
            for host in agg["hosts"]:
                zones.setdefault(host, zone)
    return zones


def zone_of(row: dict[str, Any], zones: dict[str, str], conf: cfg.ConfigOpts) -> str:
    if row["binary"] != "compute":
        return str(conf.api.internal_service_availability_zone)
    return zones.get(row["host"], str(conf.api.default_availability_zone))


def instance_zone(row: Mapping[str, Any], zones: Mapping[str, str], conf: cfg.ConfigOpts) -> str:
    """The zone an instance is in (``OS-EXT-AZ:availability_zone``): its
    host's; without a host, the one it is pinned to (or none)."""
    host = row.get("host")
    if not host:
        return str(row.get("availability_zone") or "")
    return zones.get(host, str(conf.api.default_availability_zone))


async def all_services(conn: Connection, *, binary: str | None = None) -> list[dict[str, Any]]:
    return await services.get_all_with_last_seen(conn, binary=binary)
