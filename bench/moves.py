"""Move operations: cold migrate + confirm and live migration, all services in one process.

    python bench/moves.py [--quick] [--hosts 10] [--sequential 20] [--concurrent 100]

Every service runs in this process on memory:// + SQLite, as all-in-one
does, with fake compute hosts (no delays). It boots the servers it needs,
then measures, from the API request (``MovesAPI``) to the end of the task:

- cold migrate + confirm, one at a time: the migrate to VERIFY_RESIZE plus
  the confirm back to ACTIVE;
- live migration, one at a time;
- live migrations per second with ``--concurrent`` of them asked at once.

CPU is the process's CPU time (every service of the cloud, so an upper bound
of the conductor's share) per operation over the same interval.

The end of a task is what the database says: no task of the instances is
pending or running. It is asked whenever the conductors' task engines hold
no task (looked at in memory every millisecond, every 5 ms during the
concurrent run, which costs next to nothing) and at least every 50 ms, so
the figures measure the request to the task's end without the bench's own
queries weighing on them.

For calibration: Nova 34's functional environment took about 1.1 s per cold
migrate + confirm and 0.66 s per live migration on this machine, one at a
time. Targets: <= 100 ms per operation one at a time, and >= 50 live
migrations/s with 100 concurrent. The last line ends with the live
migrations per second of the concurrent run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from nubes.api.moves import MovesAPI
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.db.api import tasks as tasks_api
from nubes.db.models import conductor_tasks, instances
from nubes.testing.allinone import AllInOne

IMAGE = {"id": "bench-image", "properties": {}}
#: Nova 34's figures on this machine (seconds per operation, one at a time).
NOVA_COLD_MIGRATE_CONFIRM = 1.1
NOVA_LIVE_MIGRATION = 0.66
#: How often the engines are looked at (short: it bounds the latency measured).
POLL = 0.001
#: The same for the concurrent run, which lasts seconds (and needs the CPU).
BURST_POLL = 0.005
#: Longest time between two asks of the database whatever the engines hold.
DB_POLL = 0.05


@dataclass
class Timing:
    name: str
    seconds: list[float]
    cpu: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def cpu_ms(self) -> float:
        return statistics.mean(self.cpu) * 1000


async def _tasks_ended(cloud: AllInOne, uuids: list[str], poll: float = POLL) -> None:
    """Until no task of ``uuids`` is pending or running, as the database says.

    The engines are looked at every ``poll`` seconds; the database is asked
    when none holds a task (a run leaves its engine once its end is
    committed) and at least every :data:`DB_POLL`.
    """
    stmt = select(func.count()).where(
        conductor_tasks.c.instance_uuid.in_(uuids),
        conductor_tasks.c.status.in_([s.value for s in tasks_api.ACTIVE_STATUSES]),
    )
    asked = float("-inf")
    while True:
        now = time.perf_counter()
        if now - asked >= DB_POLL or not any(e.running for e in cloud.engines):
            asked = now
            async with cloud.db.reader() as conn:
                if not (await conn.execute(stmt)).scalar_one():
                    return
        await asyncio.sleep(poll)


async def _state(cloud: AllInOne, uuid: str) -> tuple[str, str | None]:
    async with cloud.db.reader() as conn:
        row = (
            await conn.execute(
                select(instances.c.vm_state, instances.c.host).where(instances.c.uuid == uuid)
            )
        ).one()
    return row.vm_state, row.host


async def _timed(step: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    start, cpu0 = time.perf_counter(), time.process_time()
    await step()
    return time.perf_counter() - start, time.process_time() - cpu0


async def _boot(cloud: AllInOne, count: int) -> list[str]:
    async with cloud.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "tiny", "name": "tiny", "vcpus": 1, "memory_mb": 256, "root_gb": 1}
        )
    made = await cloud.api.create_servers(
        RequestContext(user_id="bench", project_id="bench"),
        name="vm",
        flavor="tiny",
        image=IMAGE,
        count=count,
    )
    uuids = [i.uuid for i in made]
    await cloud.wait_tasks(uuids, timeout=300)
    return uuids


async def run(hosts: int, sequential: int, concurrent: int) -> tuple[list[Timing], float]:
    per_host = 2 * (sequential + concurrent) // hosts + 16
    overrides = {
        "fake_driver": {"vcpus": per_host, "memory_mb": per_host * 512, "local_gb": per_host * 2},
        # The engine is woken by kicks and reports; polling is only the fallback.
        "conductor": {"task_poll_interval": 1.0},
    }
    with tempfile.TemporaryDirectory() as tmp:
        cloud = await AllInOne.start(
            f"sqlite:///{tmp}/moves.sqlite", hosts=hosts, overrides=overrides
        )
        try:
            uuids = await _boot(cloud, sequential + concurrent)
            api = MovesAPI(cloud.db, cloud.api.conductor, conf=cloud.conf)
            admin = RequestContext(user_id="bench", project_id="bench", roles=["admin"])
            cold = Timing("cold migrate + confirm", [], [])
            live = Timing("live migration", [], [])
            for uuid in uuids[:sequential]:

                async def migrate_confirm(uuid: str = uuid) -> None:
                    await api.migrate_server(admin, uuid)
                    await _tasks_ended(cloud, [uuid])
                    vm_state, _ = await _state(cloud, uuid)
                    if vm_state != "resized":
                        raise RuntimeError(f"{uuid} is {vm_state} after the migrate")
                    await api.confirm_resize(admin, uuid)
                    await _tasks_ended(cloud, [uuid])

                seconds, cpu = await _timed(migrate_confirm)
                cold.seconds.append(seconds)
                cold.cpu.append(cpu)
            for uuid in uuids[:sequential]:

                async def live_migrate(uuid: str = uuid) -> None:
                    _, before = await _state(cloud, uuid)
                    await api.live_migrate_server(admin, uuid)
                    await _tasks_ended(cloud, [uuid])
                    vm_state, host = await _state(cloud, uuid)
                    if (vm_state, host == before) != ("active", False):
                        raise RuntimeError(f"{uuid} is {vm_state} on {host} after the move")

                seconds, cpu = await _timed(live_migrate)
                live.seconds.append(seconds)
                live.cpu.append(cpu)
            batch = uuids[sequential:]

            async def all_at_once() -> None:
                await asyncio.gather(*(api.live_migrate_server(admin, u) for u in batch))
                await asyncio.wait_for(_tasks_ended(cloud, batch, BURST_POLL), 300)

            seconds, cpu = await _timed(all_at_once)
            moved = [r for r in await cloud.instances(batch) if r["vm_state"] == "active"]
            if len(moved) != len(batch):
                raise RuntimeError(f"only {len(moved)} of {len(batch)} live migrations ended")
            name = f"{len(batch)} concurrent live migrations"
            burst = Timing(name, [seconds], [cpu / len(batch)])
            return [cold, live, burst], len(batch) / seconds
        finally:
            await cloud.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 sequential, 50 concurrent")
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=100)
    args = parser.parse_args()
    if args.quick:
        args.sequential, args.concurrent = 10, 50
    logging.basicConfig(level=logging.ERROR)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        timings, rate = runner.run(run(args.hosts, args.sequential, args.concurrent))
    cold, live, burst = timings
    nova_cold = NOVA_COLD_MIGRATE_CONFIRM * 1000
    print(
        f"cold migrate + confirm, one at a time ({len(cold.seconds)}): median "
        f"{cold.median_ms:.1f} ms, CPU {cold.cpu_ms:.1f} ms/op; Nova 34: "
        f"{nova_cold:.0f} ms -> {nova_cold / cold.median_ms:.1f}x"
    )
    print(
        f"live migration, one at a time ({len(live.seconds)}): median {live.median_ms:.1f} ms, "
        f"CPU {live.cpu_ms:.1f} ms/op; Nova 34: {NOVA_LIVE_MIGRATION * 1000:.0f} ms -> "
        f"{NOVA_LIVE_MIGRATION * 1000 / live.median_ms:.1f}x"
    )
    print(
        f"{burst.name} on {args.hosts} hosts: {burst.seconds[0]:.2f} s, CPU "
        f"{burst.cpu_ms:.1f} ms/op; live migrations/s: {rate:.1f}"
    )


if __name__ == "__main__":
    main()
