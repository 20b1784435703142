"""Conductor-routed Instance.save(): a compute host's object, through the
conductor (authorised for that host), committed to the database.

    python bench/conductor.py [--quick] [--seconds S]

Measures saves/s of one field with 1 and 32 concurrent callers on
memory:// + SQLite (everything in this process, as all-in-one runs) and on
rabbit:// + PostgreSQL (the conductor in its own process, as deployed). The
last line ends with the 32-caller rabbit + PostgreSQL figure.

For calibration: Nova 34's in-process functional environment managed about
120-160 conductor-routed saves/s on this machine. Targets: >= 1,500/s on
memory:// + SQLite and >= 500/s on rabbit:// + PostgreSQL with 32 callers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from nubes.context import RequestContext
from nubes.db import engine as db_engine
from nubes.db import migration
from nubes.db.api import instances
from nubes.objects.instance import Instance
from nubes.testing.cloud import Cloud, Host, connect_host

RABBIT = "127.0.0.1:5672"
PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
CALLERS = (1, 32)
HOST = "bench-host"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=False, capture_output=True, timeout=60)


async def _seed(cloud_db: Any, n: int) -> list[str]:
    uuids = []
    async with cloud_db.writer() as conn:
        for i in range(n):
            row = await instances.create(
                conn,
                {
                    "project_id": "p",
                    "user_id": "u",
                    "display_name": f"vm-{i}",
                    "host": HOST,
                    "node": HOST,
                    "vm_state": "active",
                    "vcpus": 1,
                    "memory_mb": 512,
                    "root_gb": 1,
                    "flavor": {"name": "small", "vcpus": 1, "memory_mb": 512, "root_gb": 1},
                },
            )
            uuids.append(row["uuid"])
    return uuids


async def _measure(host: Host, uuids: list[str], callers: int, seconds: float) -> float:
    ctxt = RequestContext()
    objs = [await host.run(Instance.get_by_uuid, ctxt, u) for u in uuids[:callers]]
    done = 0
    stop_at = 0.0

    async def caller(inst: Instance) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop_at:
            i += 1
            inst.progress = i % 100
            await inst.save(ctxt)
            done += 1

    async def run_all() -> None:
        await asyncio.gather(*(caller(o) for o in objs))

    # Warm up (connections, caches), then measure.
    stop_at = time.perf_counter() + min(1.0, seconds / 3)
    await host.run(run_all)
    done = 0
    start = time.perf_counter()
    stop_at = start + seconds
    await host.run(run_all)
    return done / (time.perf_counter() - start)


async def memory_sqlite(seconds: float) -> dict[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cloud = await Cloud.start(f"sqlite:///{tmp}/bench.sqlite")
        try:
            uuids = await _seed(cloud.db, max(CALLERS))
            host = await cloud.host(HOST)
            return {n: await _measure(host, uuids, n, seconds) for n in CALLERS}
        finally:
            await cloud.stop()


async def _pg_database() -> tuple[str, str]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"nubes_bench_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    await admin.dispose()
    return name, f"postgresql://postgres@127.0.0.1:5432/{name}"


async def _drop_pg(name: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    await admin.dispose()


async def rabbit_postgres(seconds: float) -> dict[int, float]:
    password = uuid.uuid4().hex
    suffix = uuid.uuid4().hex[:6]
    conductor_user, host_user = f"conductor.bench-{suffix}", f"compute.{HOST}"
    for user in (conductor_user, host_user):
        _rabbitmqctl("add_user", user, password)
        _rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    name, url = await _pg_database()
    proc = None
    try:
        await migration.db_sync(url)
        db = db_engine.Database(url)
        uuids = await _seed(db, max(CALLERS))
        with tempfile.TemporaryDirectory() as tmp:
            conf = Path(tmp) / "conductor.conf"
            conf.write_text(
                f"[DEFAULT]\nhost = bench-{suffix}\nreport_interval = 60\n"
                f"transport_url = rabbit://{conductor_user}:{password}@{RABBIT}/\n"
                f"[database]\nconnection = {url}\nmax_pool_size = 20\n"
            )
            # Blocking here is fine: nothing else runs on the loop during setup.
            proc = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "nubes.cmd.main", "--config-file", str(conf), "conductor"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                if "serving topic conductor" in line:
                    break
            else:
                raise RuntimeError("the conductor did not start")
            host = await connect_host(HOST, f"rabbit://{host_user}:{password}@{RABBIT}/")
            try:
                return {n: await _measure(host, uuids, n, seconds) for n in CALLERS}
            finally:
                await host.transport.close()
                await db.dispose()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for user in (conductor_user, host_user):
            _rabbitmqctl("delete_user", user)
        await _drop_pg(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        mem = runner.run(memory_sqlite(seconds))
        for n, rate in mem.items():
            print(f"memory:// + SQLite      {n:>3} callers: {rate:8.0f} saves/s")
        rab = runner.run(rabbit_postgres(seconds))
        for n, rate in rab.items():
            print(f"rabbit:// + PostgreSQL  {n:>3} callers: {rate:8.0f} saves/s")
    print(
        f"targets: >= 1500/s memory+SQLite (got {mem[32]:.0f}), "
        f">= 500/s rabbit+PostgreSQL (got {rab[32]:.0f}) with 32 callers"
    )
    print(f"conductor-routed Instance.save, rabbit+PostgreSQL, 32 callers: {rab[32]:.0f}")


if __name__ == "__main__":
    main()
