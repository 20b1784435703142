"""Boot throughput: servers per second from request to ACTIVE, all services in one process.

    python bench/boot.py [--quick] [--sizes 100,1000] [--hosts 10,100]
                         [--backend sqlite|postgres|mariadb] [--no-units] [--ports]

Every service runs in this process on memory:// + SQLite, as all-in-one
does: the API side writes the instances and build tasks, the conductor's
task engine schedules each build through the scheduler and casts it to a
fake compute host, which spawns (no delay) and reports back through the
conductor. ``--backend`` puts the database on a server instead (a scratch
database, as bench/db_writes.py makes; NUBES_TEST_POSTGRES_URL /
NUBES_TEST_MARIADB_URL); ``--no-units`` keeps the task engine's commits out
of the group committer, to see what grouping them pays. Servers boot with
``networks: none`` unless ``--ports`` gives each one a port on a shared
network's /16 (its address from IPAM, the project's default security
group), as a user's ``server create --network`` does. For N servers on
H hosts it prints servers/s (from the create
request to the last instance ACTIVE) and CPU seconds per server (process
CPU time, every thread, over the same interval). The last line ends with
the N = 1,000 servers/s (on the largest host count).

For calibration: Nova 34's in-process functional environment booted 1-3.6
servers/s on this machine, with CPU per server growing from 0.3 s to 0.7 s
as N grew. Targets: >= 100 servers/s, and CPU per server <= 10 ms and flat
from N = 100 to N = 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.db.models import instances
from nubes.network import ports as network_ports
from nubes.network.resources import NetworkService
from nubes.testing.allinone import AllInOne

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.db_writes import MARIADB_URL, POSTGRES_URL, Scratch

IMAGE = {"id": "bench-image", "properties": {}}
ADMIN = RequestContext(project_id="bench-admin", user_id="admin", roles=["admin"])


@dataclass
class Result:
    servers: int
    hosts: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.servers / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu / self.servers * 1000


async def _active(cloud: AllInOne) -> int:
    stmt = select(func.count()).where(
        instances.c.vm_state == "active", instances.c.task_state.is_(None)
    )
    async with cloud.db.reader() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def boot(
    servers: int,
    hosts: int,
    *,
    backend: str = "sqlite",
    units: bool = True,
    ports: bool = False,
    timeout: float = 600.0,
) -> Result:
    per_host = -(-servers // hosts) + 8
    overrides = {
        "fake_driver": {"vcpus": per_host, "memory_mb": per_host * 512, "local_gb": per_host * 2},
        "quota": {"port": -1},
    }
    base = {"postgres": POSTGRES_URL, "mariadb": MARIADB_URL}.get(backend)
    with tempfile.TemporaryDirectory() as tmp:
        async with Scratch(backend, base, tmp) as url:
            return await _boot(url, servers, hosts, overrides, units, ports, timeout)


async def _boot(
    url: str,
    servers: int,
    hosts: int,
    overrides: dict[str, dict[str, int]],
    units: bool,
    ports: bool,
    timeout: float,
) -> Result:
    cloud = await AllInOne.start(url, hosts=hosts, overrides=overrides)
    committer = cloud.db.group_commit
    if committer is not None and not units:
        committer.units = False
    try:
        async with cloud.db.writer() as conn:
            await flavors.create(
                conn,
                {
                    "flavorid": "tiny",
                    "name": "tiny",
                    "vcpus": 1,
                    "memory_mb": 256,
                    "root_gb": 1,
                },
            )
        ctxt = RequestContext(user_id="bench", project_id="bench", roles=["member"])
        network = NetworkService(cloud.db, cloud.conf)
        requested: object = "none"
        if ports:
            net = await network.create_network(ADMIN, {"name": "bench", "shared": True})
            await network.create_subnet(ADMIN, {"network_id": net["id"], "cidr": "10.0.0.0/16"})
            requested = [{"uuid": net["id"]}]
        start, cpu0 = time.perf_counter(), time.process_time()
        # As the compute API does: the NICs resolved, then the servers recorded with them.
        nics = await network_ports.resolve(network, ctxt, requested, None, servers)
        await cloud.api.create_servers(
            ctxt, name="vm", flavor="tiny", image=IMAGE, count=servers, network_requests=nics
        )
        deadline = start + timeout
        while await _active(cloud) < servers:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{await _active(cloud)} of {servers} active")
            await asyncio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        return Result(servers, hosts, elapsed, cpu)
    finally:
        await cloud.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 100 and 1,000 on 10 hosts only")
    parser.add_argument("--sizes", default="100,1000", help="server counts, comma-separated")
    parser.add_argument("--hosts", default="10,100", help="host counts, comma-separated")
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres", "mariadb"))
    parser.add_argument("--no-units", action="store_true", help="task commits not grouped")
    parser.add_argument("--ports", action="store_true", help="a port per server (IPAM)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    sizes = [int(n) for n in args.sizes.split(",")]
    host_counts = [10] if args.quick else [int(h) for h in args.hosts.split(",")]
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    results: list[Result] = []
    with runner:
        for hosts in host_counts:
            for servers in sizes:
                r = runner.run(
                    boot(
                        servers,
                        hosts,
                        backend=args.backend,
                        units=not args.no_units,
                        ports=args.ports,
                    )
                )
                results.append(r)
                print(
                    f"N={r.servers:>5} on {r.hosts:>3} hosts: {r.rate:7.1f} servers/s "
                    f"({r.seconds:6.2f} s), CPU {r.cpu_ms:6.2f} ms/server",
                    flush=True,
                )
    last = [r for r in results if r.servers == max(sizes)]
    final = max(last, key=lambda r: r.hosts)
    print(
        f"boot request->ACTIVE, all-in-one memory:// + {args.backend}"
        f"{' (no units)' if args.no_units else ''}{' with ports' if args.ports else ''}, "
        f"N={final.servers} on "
        f"{final.hosts} hosts: {final.rate:.1f} servers/s"
    )


if __name__ == "__main__":
    main()
