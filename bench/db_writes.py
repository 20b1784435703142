"""The conductor's hottest DB write: one field of an instance, compare-and-set.

What ``Instance.save()`` of ``power_state`` or ``progress`` costs the DB
layer: an UPDATE of one live instance by uuid, with an expected
``task_state`` compare, returning success or conflict and the new
``updated_at``. Measured with 1 and 32 concurrent asyncio callers, each
saving its own instance in a loop, on SQLite (temporary file, WAL),
PostgreSQL and MariaDB (a scratch database created and dropped like the
tests do; a backend whose server is down is skipped).

Two ways are measured:

``save``
    :func:`nubes.db.api.instances.save`: grouped into shared transactions
    through :mod:`nubes.db.group_commit`, prebuilt SQL, nothing read back.
``update``
    the general path for comparison: ``db.writer()`` around
    :func:`~nubes.db.api.instances.update` (one transaction per save, row
    read back).

``--placed`` adds the per-host placement condition to every save, as the
conductor's authorisation will. Every line prints saves/s (the best of a
few rounds) and the CPU time this process spent per save in that round,
which is what the conductor has left for RPC once the database is fast
enough.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from nubes.db import engine as db_engine
from nubes.db import migration
from nubes.db.api import instances
from nubes.db.engine import Database

POSTGRES_URL = os.environ.get(
    "NUBES_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("NUBES_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")

CALLERS = (1, 32)
HOST = "bench-host"


async def _admin(base_url: str, statement: str) -> None:
    engine = create_async_engine(db_engine.normalize_url(base_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


class Scratch:
    """A migrated database for one backend, dropped (or deleted) at the end."""

    def __init__(self, backend: str, base_url: str | None, tmp_dir: str) -> None:
        self.backend = backend
        self.base_url = base_url
        self.name = f"nubes_bench_{uuid.uuid4().hex[:12]}"
        if backend == "sqlite":
            self.url = f"sqlite:///{os.path.join(tmp_dir, self.name + '.sqlite')}"
        else:
            assert base_url is not None
            self.url = make_url(base_url).set(database=self.name).render_as_string(False)

    async def __aenter__(self) -> str:
        if self.backend == "postgres":
            await _admin(self.base_url or "", f'CREATE DATABASE "{self.name}"')
        elif self.backend == "mariadb":
            await _admin(
                self.base_url or "", f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4"
            )
        await migration.db_sync(self.url)
        return self.url

    async def __aexit__(self, *exc: Any) -> None:
        if self.backend == "postgres":
            await _admin(self.base_url or "", f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        elif self.backend == "mariadb":
            await _admin(self.base_url or "", f"DROP DATABASE IF EXISTS `{self.name}`")


SaveFn = Callable[[Database, str, int], Awaitable[Any]]


async def _save(db: Database, uuid_: str, n: int, placed: bool) -> Any:
    return await instances.save(
        db,
        uuid_,
        {"power_state": n % 4},
        expected_task_state=None,
        placed_on_host=HOST if placed else None,
    )


async def _update(db: Database, uuid_: str, n: int, placed: bool) -> Any:
    async with db.writer() as conn:
        row = await instances.update(
            conn,
            uuid_,
            {"power_state": n % 4},
            expected_task_state=None,
            placed_on_host=HOST if placed else None,
        )
    return row["updated_at"]


async def _round(
    db: Database, uuids: list[str], fn: Callable[..., Awaitable[Any]], seconds: float, placed: bool
) -> tuple[float, float]:
    """saves/s, and this process's CPU seconds per save (the driver's threads included)."""
    stop = time.perf_counter() + seconds
    counts = [0] * len(uuids)

    async def caller(i: int) -> None:
        uuid_ = uuids[i]
        n = 0
        while time.perf_counter() < stop:
            await fn(db, uuid_, n, placed)
            n += 1
        counts[i] = n

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller(i) for i in range(len(uuids))))
    saves = sum(counts)
    return saves / (time.perf_counter() - start), (time.process_time() - cpu) / max(saves, 1)


async def bench_backend(
    backend: str,
    base_url: str | None,
    *,
    rounds: int,
    seconds: float,
    placed: bool,
    modes: list[str],
) -> dict[tuple[str, int], float]:
    results: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="nubes-bench-") as tmp_dir:
        async with Scratch(backend, base_url, tmp_dir) as url:
            db = Database(url)
            try:
                uuids: list[str] = []
                async with db.writer() as conn:
                    for i in range(max(CALLERS)):
                        row = await instances.create(
                            conn,
                            {"display_name": f"bench-{i}", "host": HOST, "node": f"{HOST}-node"},
                        )
                        uuids.append(row["uuid"])
                for mode in modes:
                    fn = _save if mode == "save" else _update
                    for callers in CALLERS:
                        # Warm-up: statement caches, pool, prepared statements.
                        await _round(db, uuids[:callers], fn, min(seconds, 0.2), placed)
                        best, best_cpu = 0.0, 0.0
                        for _ in range(rounds):
                            rate, cpu = await _round(db, uuids[:callers], fn, seconds, placed)
                            if rate > best:
                                best, best_cpu = rate, cpu
                        results[(mode, callers)] = best
                        print(
                            f"{backend:9} {mode:7} {callers:3} callers"
                            f"{' placed' if placed else ''}: {best:8.0f} saves/s"
                            f"  ({best_cpu * 1e6:5.0f} us CPU/save in this process)",
                            flush=True,
                        )
            finally:
                await db.dispose()
    return results


def _reachable(url: str) -> bool:
    import socket

    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 0), timeout=1):
            return True
    except OSError:
        return False


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds (a smoke run)")
    parser.add_argument("--placed", action="store_true", help="add the placement condition")
    parser.add_argument(
        "--backend",
        action="append",
        choices=["sqlite", "postgres", "mariadb"],
        help="only these backends (default: all reachable)",
    )
    parser.add_argument("--mode", action="append", choices=["save", "update"], help="default: both")
    args = parser.parse_args(argv)
    rounds, seconds = (1, 0.5) if args.quick else (3, 2.0)
    backends = args.backend or ["sqlite", "postgres", "mariadb"]
    modes = args.mode or ["save", "update"]
    servers = {"sqlite": None, "postgres": POSTGRES_URL, "mariadb": MARIADB_URL}
    for backend in backends:
        base_url = servers[backend]
        if base_url is not None and not _reachable(base_url):
            print(f"{backend:9} skipped: {make_url(base_url).host} not reachable", flush=True)
            continue
        await bench_backend(
            backend, base_url, rounds=rounds, seconds=seconds, placed=args.placed, modes=modes
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
