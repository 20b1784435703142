"""IPAM throughput and what networking adds to a boot, per database.

``N`` concurrent port creations (default 50), each by its own project on one
shared network's /16, through :class:`nubes.network.resources.NetworkService`
(the same path as the network API and a server's build task: quota lock,
the port row, the subnet's IPAM lock, its address, its security group), on
SQLite (temporary file), PostgreSQL and MariaDB (a scratch database each; a
backend whose server is down is skipped). Each round checks that no address
was handed out twice. Prints ports/s (the best of a few rounds) per backend.

Then what networking adds to a boot, on the same backend in the same run:
``--servers`` servers (default 200, all at once) booted on the fake driver
by :func:`bench.boot.boot` with ``networks: none`` and again each with a
port on a shared network (its address from IPAM), alternating, best of
``--boot-rounds`` each; it prints both rates, CPU per server and the
ratio, and what ports add to CPU per server (steadier than the rates on a
busy machine). Issue 14's target: networking adds at most 20 % (ratio >= 0.83).
The last line ends with ports/s on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.boot import Result, boot
from bench.db_writes import MARIADB_URL, POSTGRES_URL, Scratch
from nubes import config
from nubes.context import RequestContext
from nubes.db.engine import Database
from nubes.network.resources import NetworkService

ADMIN = RequestContext(project_id="bench-admin", user_id="admin", roles=["admin"])


async def _round(service: NetworkService, net_id: str, n: int, start: int) -> float:
    ctxts = [
        RequestContext(project_id=f"p{start + i}", user_id=f"u{start + i}", roles=["member"])
        for i in range(n)
    ]
    began = time.perf_counter()
    made = await asyncio.gather(*(service.create_port(c, {"network_id": net_id}) for c in ctxts))
    elapsed = time.perf_counter() - began
    addresses = [p["fixed_ips"][0]["ip_address"] for p in made]
    assert len(set(addresses)) == n, "an address was handed out twice"
    return n / elapsed


async def run_backend(backend: str, base_url: str | None, n: int, rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        async with Scratch(backend, base_url, tmp) as url:
            conf = config.new_config()
            conf([])
            conf.set_override("port", -1, group="quota")
            db = Database(url)
            try:
                service = NetworkService(db, conf)
                net = await service.create_network(ADMIN, {"name": "bench", "shared": True})
                await service.create_subnet(ADMIN, {"network_id": net["id"], "cidr": "10.0.0.0/16"})
                best = 0.0
                for r in range(rounds):
                    best = max(best, await _round(service, net["id"], n, r * n))
                return best
            finally:
                await db.dispose()


async def boot_cost(backend: str, servers: int, rounds: int) -> tuple[Result, Result]:
    """The best boot without ports and with, same backend, alternating rounds."""
    bare: list[Result] = []
    ported: list[Result] = []
    for _ in range(rounds):
        bare.append(await boot(servers, 10, backend=backend))
        ported.append(await boot(servers, 10, backend=backend, ports=True))
    return max(bare, key=lambda r: r.rate), max(ported, key=lambda r: r.rate)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ports", type=int, default=50, help="concurrent creates per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--servers", type=int, default=200, help="servers per boot (0: no boots)")
    parser.add_argument("--boot-rounds", type=int, default=2)
    parser.add_argument(
        "--backends", default="sqlite,mariadb,postgres", help="comma-separated, postgres last"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    urls = {"sqlite": None, "postgres": POSTGRES_URL, "mariadb": MARIADB_URL}
    for backend in args.backends.split(","):
        try:
            rate = await run_backend(backend, urls[backend], args.ports, args.rounds)
        except OSError as exc:
            print(f"{backend}: skipped ({exc})")
            continue
        ports_line = f"{backend}: {args.ports} concurrent port creates, {rate:.0f} ports/s"
        if args.servers:
            bare, ported = await boot_cost(backend, args.servers, args.boot_rounds)
            ratio = ported.rate / bare.rate
            print(
                f"{backend}: boot of {args.servers}: networks none {bare.rate:.0f} servers/s "
                f"({bare.cpu_ms:.2f} ms CPU/server), a port each {ported.rate:.0f} servers/s "
                f"({ported.cpu_ms:.2f} ms CPU/server): with ports at {ratio:.2f}x, "
                f"networking adds {(1 / ratio - 1) * 100:.0f} % to boot time "
                f"(target <= 20 %: {'met' if ratio >= 1 / 1.2 else 'NOT met'}) and "
                f"{(ported.cpu_ms / bare.cpu_ms - 1) * 100:.0f} % to CPU per server",
                flush=True,
            )
        print(ports_line, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
