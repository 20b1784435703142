"""Scheduler select + claim at 1,000 and 10,000 hosts, 1 and 2 schedulers.

A fleet of fake compute nodes with mixed usage (random 0-70 % of RAM, vCPU
and disk taken) is written into a scratch database (SQLite file in WAL
mode; PostgreSQL database created and dropped like the tests do, skipped if
the server is down). Four availability zones cover the fleet; 2 % of the
hosts sit in tenant-isolation aggregates; a fifth of the requests join one
of 200 anti-affinity server groups, a third ask for a zone, one in ten
comes from an isolated tenant; flavors are mixed (1-8 vCPUs, 2-16 GB).

Each scheduler is a separate process with its own engine and in-memory
view (loaded before timing starts) calling ``SchedulerManager.select_destinations``
one request at a time, exactly what the RPC endpoint runs. Printed per
backend, fleet size and number of schedulers: p50 and p99 of one select +
claim, and claims/s of all schedulers together. The last line ends with the
10,000-host PostgreSQL p50 in ms (SQLite's when PostgreSQL is not there).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POSTGRES_URL = os.environ.get(
    "NUBES_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
ZONES = ("az1", "az2", "az3", "az4")
TENANTS = tuple(f"tenant-{i}" for i in range(10))
GROUPS = 200
#: (vcpus, memory_mb, disk_gb) of the request flavors.
FLAVORS = ((1, 2048, 20), (2, 4096, 40), (4, 8192, 80), (8, 16384, 160))
ISOLATED_SHARE = 0.02
#: [filter_scheduler] host_subset_size of the schedulers (env NUBES_BENCH_SUBSET).
SUBSET_SIZE = int(os.environ.get("NUBES_BENCH_SUBSET", "4"))


async def _admin(base_url: str, statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from nubes.db import engine as db_engine

    engine = create_async_engine(db_engine.normalize_url(base_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _scratch(backend: str, tmp: Path) -> tuple[str, str | None]:
    """(url, name to drop) of a new migrated database."""
    from sqlalchemy.engine import make_url

    from nubes.db import migration

    name = f"nubes_bench_{uuid.uuid4().hex[:10]}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp / (name + '.sqlite')}"
        drop = None
    else:
        await _admin(POSTGRES_URL, f'CREATE DATABASE "{name}"')
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        drop = name
    await migration.db_sync(url)
    return url, drop


async def _build_fleet(url: str, n_hosts: int, seed: int) -> None:
    from sqlalchemy import insert

    from nubes.db.engine import Database
    from nubes.db.models import instance_groups
    from nubes.testing.fleet import HostSpec, create_aggregate, create_hosts

    rng = random.Random(seed)
    specs = []
    for i in range(n_hosts):
        vcpus, mem, disk = rng.choice(((32, 131072, 2000), (64, 262144, 4000), (16, 65536, 1000)))
        used = rng.uniform(0.0, 0.7)
        specs.append(
            HostSpec(
                f"host-{i:05d}",
                vcpus=vcpus,
                memory_mb=mem,
                local_gb=disk,
                vcpus_used=int(vcpus * 4 * used),
                memory_mb_used=int(mem * used),
                local_gb_used=int(disk * used),
                cpu_allocation_ratio=4.0,
                ram_allocation_ratio=1.0,
                metrics={"cpu.percent": round(rng.uniform(0, 100), 1)},
            )
        )
    db = Database(url)
    try:
        await create_hosts(db, specs)
        names = [s.host for s in specs]
        for z, zone in enumerate(ZONES):
            await create_aggregate(db, zone, names[z :: len(ZONES)], {"availability_zone": zone})
        isolated = names[: int(n_hosts * ISOLATED_SHARE)]
        for t, tenant in enumerate(TENANTS):
            await create_aggregate(
                db, f"iso-{tenant}", isolated[t :: len(TENANTS)], {"filter_tenant_id": tenant}
            )
        async with db.writer() as conn:
            await conn.execute(
                insert(instance_groups),
                [
                    {"uuid": _group_uuid(g), "name": f"g{g}", "policy": "anti-affinity"}
                    for g in range(GROUPS)
                ],
            )
    finally:
        await db.dispose()


def _group_uuid(g: int) -> str:
    return str(uuid.UUID(int=g + 1))


def _request(rng: random.Random) -> dict[str, Any]:
    vcpus, mem, disk = rng.choice(FLAVORS)
    req: dict[str, Any] = {"vcpus": vcpus, "memory_mb": mem, "root_gb": disk}
    req["project_id"] = rng.choice(TENANTS) if rng.random() < 0.1 else "shared"
    if rng.random() < 1 / 3:
        req["availability_zone"] = rng.choice(ZONES)
    if rng.random() < 0.2:
        req["group"] = rng.randrange(GROUPS)
    return req


async def _run_scheduler(url: str, n_requests: int, seed: int, barrier: Any) -> list[float]:
    from sqlalchemy import insert, select

    from nubes import config
    from nubes.context import RequestContext
    from nubes.db.engine import Database
    from nubes.db.models import instance_group_members, instance_groups
    from nubes.objects.flavor import Flavor
    from nubes.objects.request_spec import RequestSpec
    from nubes.scheduler.manager import SchedulerManager

    conf = config.new_config()
    conf([])
    # Several schedulers deciding on similar views: pick among the best few so
    # they do not all queue on the same row (Nova's advice for host_subset_size).
    conf.set_override("host_subset_size", SUBSET_SIZE, group="filter_scheduler")
    db = Database(url)
    manager = SchedulerManager(db, conf)
    await manager.view.refresh()
    async with db.reader() as conn:
        group_ids = {
            r.uuid: r.id
            for r in await conn.execute(select(instance_groups.c.uuid, instance_groups.c.id))
        }
    rng = random.Random(seed)
    requests = [_request(rng) for _ in range(n_requests)]
    latencies: list[float] = []
    await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
    for n, r in enumerate(requests):
        flavor = Flavor(
            id=1,
            flavorid="f",
            name="f",
            vcpus=r["vcpus"],
            memory_mb=r["memory_mb"],
            root_gb=r["root_gb"],
        )
        spec = RequestSpec(flavor=flavor, project_id=r["project_id"])
        if "availability_zone" in r:
            spec.availability_zone = r["availability_zone"]
        if "group" in r:
            spec.instance_group_uuid = _group_uuid(r["group"])
            spec.instance_group_policy = "anti-affinity"
        instance = str(uuid.uuid4())
        t0 = time.perf_counter()
        try:
            await manager.select_destinations(RequestContext(), spec, [instance])
        except Exception as exc:  # counted as not placed; the run goes on
            print(f"  request {n} failed: {exc}", file=sys.stderr)
            continue
        latencies.append(time.perf_counter() - t0)
        if "group" in r:
            # The conductor's part (not timed): the instance joins its group.
            async with db.writer() as conn:
                await conn.execute(
                    insert(instance_group_members),
                    {"group_id": group_ids[spec.instance_group_uuid], "instance_uuid": instance},
                )
    await manager.close()
    await db.dispose()
    return latencies


def _child(url: str, n_requests: int, seed: int, barrier: Any, out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    started = time.perf_counter()
    latencies = asyncio.run(_run_scheduler(url, n_requests, seed, barrier))
    out.put((latencies, time.time(), started))


def _measure(url: str, schedulers: int, n_requests: int, seed: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(schedulers + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(url, n_requests, seed + i, barrier, out))
        for i in range(schedulers)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.time()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = max(end for _, end, _ in results) - t0
    latencies = sorted(x for lat, _, _ in results for x in lat)
    q = statistics.quantiles(latencies, n=100)
    return {
        "p50": statistics.median(latencies) * 1000,
        "p99": q[98] * 1000,
        "claims_per_s": len(latencies) / elapsed,
        "placed": len(latencies),
    }


async def _drop(name: str) -> None:
    await _admin(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--requests", type=int, default=1500, help="per scheduler")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    from nubes.testing import servers

    last: tuple[str, int, float] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            if backend == "postgresql" and not servers.reachable("postgres"):
                print("postgresql: server not reachable, skipped")
                continue
            for n_hosts in args.hosts:
                url, drop = asyncio.run(_scratch(backend, Path(tmp)))
                try:
                    asyncio.run(_build_fleet(url, n_hosts, seed=n_hosts))
                    for schedulers in (1, 2):
                        r = _measure(url, schedulers, args.requests, seed=schedulers * 1000)
                        print(
                            f"{backend:<10} {n_hosts:>6} hosts  {schedulers} scheduler(s): "
                            f"p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                            f"{r['claims_per_s']:7.0f} claims/s  ({r['placed']:.0f} placed)",
                            flush=True,
                        )
                        if schedulers == 1:
                            last = (backend, n_hosts, r["p50"])
                finally:
                    if drop:
                        asyncio.run(_drop(drop))
    if last is None:
        return 1
    backend, n_hosts, p50 = last
    print(f"select + claim, 1 scheduler, {n_hosts} hosts, {backend}: p50 (ms) {p50:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
