"""Floating IPs from IPAM: concurrent creates never share an address, a full pool
refuses cleanly, and one fixed address gets one floating IP however many ask.

Runs on SQLite here and on PostgreSQL and MariaDB from tests/integration/db.
The floating IPs belong to many projects, so only the external subnet's
IPAM lock orders them (the per-project quota lock does not).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from nubes import config, exception
from nubes.context import RequestContext
from nubes.db.api import network as net_db
from nubes.db.engine import Database
from nubes.network.resources import NetworkService, Page

CONCURRENT = 50
ADMIN = RequestContext(project_id="p-admin", user_id="admin", roles=["admin"])


def _service(db: Database) -> NetworkService:
    conf = config.new_config()
    conf([])
    return NetworkService(db, conf)


def _member(n: int) -> RequestContext:
    return RequestContext(project_id=f"p-{n}", user_id=f"u-{n}", roles=["member"])


async def _external(service: NetworkService, cidr: str) -> str:
    net = await service.create_network(ADMIN, {"name": "public", "router:external": True})
    await service.create_subnet(ADMIN, {"network_id": net["id"], "cidr": cidr})
    return str(net["id"])


async def test_fifty_concurrent_floating_ips_get_distinct_addresses(db: Database) -> None:
    service = _service(db)
    public = await _external(service, "198.51.100.0/24")
    results = await asyncio.gather(
        *(
            service.create_floatingip(_member(n), {"floating_network_id": public})
            for n in range(CONCURRENT)
        ),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    addresses = [r["floating_ip_address"] for r in results if isinstance(r, dict)]
    assert len(set(addresses)) == CONCURRENT
    assert sorted(addresses, key=ipaddress.ip_address) == [
        f"198.51.100.{n}" for n in range(2, 2 + CONCURRENT)
    ]


async def test_a_full_pool_refuses_the_rest_and_keeps_nothing_of_them(db: Database) -> None:
    service = _service(db)
    public = await _external(service, "198.51.100.0/28")  # .2 - .14: 13 addresses
    results: list[Any] = await asyncio.gather(
        *(
            service.create_floatingip(_member(n), {"floating_network_id": public})
            for n in range(20)
        ),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(made) == 13 and len(refused) == 7
    assert all(isinstance(r, exception.IpAddressGenerationFailure) for r in refused), refused
    # A refused create left no port behind: the holders are exactly the made ones.
    async with db.reader() as conn:
        held = await net_db.list_rows(conn, "ports", visible=None, filters={"network_id": [public]})
    assert sorted(p["device_id"] for p in held) == sorted(r["id"] for r in made)
    # Deleting one frees its address for the next.
    owner = RequestContext(project_id=made[0]["project_id"], user_id="u", roles=["member"])
    await service.delete_floatingip(owner, made[0]["id"])
    again = await service.create_floatingip(_member(99), {"floating_network_id": public})
    assert again["floating_ip_address"] == made[0]["floating_ip_address"]


async def test_one_fixed_address_gets_one_floating_ip(db: Database) -> None:
    service = _service(db)
    public = await _external(service, "198.51.100.0/24")
    member = _member(1)
    net = await service.create_network(member, {"name": "private"})
    subnet = await service.create_subnet(member, {"network_id": net["id"], "cidr": "10.5.0.0/24"})
    router = await service.create_router(member, {"external_gateway_info": {"network_id": public}})
    await service.add_router_interface(member, router["id"], {"subnet_id": subnet["id"]})
    port = await service.create_port(member, {"network_id": net["id"]})
    fips = [
        await service.create_floatingip(member, {"floating_network_id": public}) for _ in range(10)
    ]
    results = await asyncio.gather(
        *(service.update_floatingip(member, f["id"], {"port_id": port["id"]}) for f in fips),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, dict)]
    assert len(won) == 1, results
    # The losers hear Neutron's 409 (or the unique constraint's, in a race).
    assert all(
        isinstance(r, (exception.FloatingIPPortAlreadyAssociated, exception.DBDuplicateEntry))
        for r in results
        if isinstance(r, BaseException)
    ), results
    mapped = await service.list_floatingips(member, Page(filters={"fixed_port_id": [port["id"]]}))
    assert [m["id"] for m in mapped] == [won[0]["id"]]
