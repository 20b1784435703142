"""IPAM: 50 concurrent port creations never share an address; addresses free with their port.

Runs on SQLite here and on PostgreSQL and MariaDB from tests/integration/db.
The ports belong to 50 projects on one shared network, so the per-project
quota lock does not serialise them: only the subnet's IPAM lock does.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from nubes import config, exception
from nubes.context import RequestContext
from nubes.db.engine import Database
from nubes.network.resources import NetworkService

CONCURRENT = 50
ADMIN = RequestContext(project_id="p-admin", user_id="admin", roles=["admin"])


def _service(db: Database) -> NetworkService:
    conf = config.new_config()
    conf([])
    return NetworkService(db, conf)


def _member(n: int) -> RequestContext:
    return RequestContext(project_id=f"p-{n}", user_id=f"u-{n}", roles=["member"])


async def _shared_network(service: NetworkService, cidr: str) -> tuple[str, str]:
    net = await service.create_network(ADMIN, {"name": "shared", "shared": True})
    subnet = await service.create_subnet(ADMIN, {"network_id": net["id"], "cidr": cidr})
    return str(net["id"]), str(subnet["id"])


def _addresses(results: list[Any]) -> list[str]:
    return [r["fixed_ips"][0]["ip_address"] for r in results if isinstance(r, dict)]


async def test_fifty_concurrent_ports_get_distinct_addresses(db: Database) -> None:
    service = _service(db)
    net_id, _ = await _shared_network(service, "10.50.0.0/24")
    results = await asyncio.gather(
        *(service.create_port(_member(n), {"network_id": net_id}) for n in range(CONCURRENT)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    addresses = _addresses(results)
    assert len(addresses) == CONCURRENT == len(set(addresses))
    # Lowest free first: exactly .2 to .51, the gateway .1 never handed out.
    assert sorted(addresses, key=ipaddress.ip_address) == [
        f"10.50.0.{n}" for n in range(2, 2 + CONCURRENT)
    ]


async def test_exhausted_subnet_refuses_the_rest_and_reuses_only_freed(db: Database) -> None:
    service = _service(db)
    net_id, _ = await _shared_network(service, "10.51.0.0/27")  # .2 - .30: 29 addresses
    results = await asyncio.gather(
        *(service.create_port(_member(n), {"network_id": net_id}) for n in range(CONCURRENT)),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, exception.IpAddressGenerationFailure)]
    assert len(made) == 29 and len(refused) == CONCURRENT - 29, results
    assert len(set(_addresses(made))) == 29
    # The address of a deleted port is free again; nothing else is.
    gone = made[7]
    await service.delete_port(_member(int(gone["project_id"][2:])), gone["id"])
    again = await service.create_port(_member(99), {"network_id": net_id})
    assert again["fixed_ips"][0]["ip_address"] == gone["fixed_ips"][0]["ip_address"]
    try:
        await service.create_port(_member(98), {"network_id": net_id})
    except exception.IpAddressGenerationFailure:
        pass
    else:
        raise AssertionError("a full subnet handed out an address")


async def test_concurrent_requests_for_one_fixed_ip_get_it_once(db: Database) -> None:
    service = _service(db)
    net_id, subnet_id = await _shared_network(service, "10.52.0.0/24")
    wanted = {"network_id": net_id, "fixed_ips": [{"ip_address": "10.52.0.77"}]}
    results = await asyncio.gather(
        *(service.create_port(_member(n), dict(wanted)) for n in range(10)),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, exception.IpAddressAlreadyAllocated)]
    assert len(made) == 1 and len(refused) == 9, results
    assert made[0]["fixed_ips"] == [{"subnet_id": subnet_id, "ip_address": "10.52.0.77"}]
