"""A conductor stopped with SIGTERM drains: it hands its tasks over and exits 0.

Real processes on RabbitMQ and PostgreSQL: a scheduler, two conductors and
three compute hosts whose fake spawns take a few seconds, so builds are in
flight on the first conductor when it gets SIGTERM. Leases last far longer
than the test may wait: the second conductor can only finish the builds in
time if the first gave its leases up when it stopped (not by their expiry).
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from sqlalchemy import func, select

from nubes.db.models import conductor_tasks
from nubes.testing.processes import ProcessCloud
from tests.integration.crash import checks
from tests.integration.crash.conftest import CloudFactory

SERVERS = 6
#: Far beyond the test's waits: a lease that ran out cannot explain the hand-over.
LEASE = 300
DRAIN = 5
SPAWN = 12


async def _owned_by(cloud: ProcessCloud, conductor: str) -> int:
    assert cloud.db is not None
    owner = f"{cloud.conductor_host(conductor)}:%"
    async with cloud.db.reader() as conn:
        query = select(func.count()).where(conductor_tasks.c.owner.like(owner))
        return int((await conn.execute(query)).scalar_one())


@pytest.mark.timeout(90)
async def test_sigterm_hands_the_conductors_tasks_over_and_exits_0(
    process_cloud: CloudFactory,
) -> None:
    cloud = await process_cloud(
        {
            "conductor": {
                "task_lease_seconds": LEASE,
                "drain_timeout": DRAIN,
                "build_deadline": LEASE,
                "compute_step_timeout": LEASE,
                # Not needed to find released tasks: the hand-over's kick is.
                "task_poll_interval": 30,
            },
            # Long enough that every build still spawns once the second
            # conductor has started on a loaded machine.
            "fake_driver": {"spawn_delay": SPAWN},
        }
    )
    scheduler = await cloud.start_scheduler()
    first = await cloud.start_conductor("a")
    await cloud.wait_serving([scheduler, first])
    computes = await cloud.start_computes()
    await cloud.wait_serving(list(computes.values()))
    await cloud.wait_hosts_registered()

    # The builds' kick reaches the first conductor alone: it holds them all.
    uuids = await checks.create_servers(cloud, SERVERS)
    deadline = time.monotonic() + 30
    while await _owned_by(cloud, "a") < SERVERS:
        assert time.monotonic() < deadline, cloud.describe()
        await asyncio.sleep(0.05)
    second = await cloud.start_conductor("b")
    await cloud.wait_serving([second])
    held = await _owned_by(cloud, "a")
    assert await checks.unfinished(cloud, uuids) == SERVERS, "builds ended before SIGTERM"

    stopped_at = time.monotonic()
    assert first.process is not None
    first.process.send_signal(signal.SIGTERM)
    code = await first.wait_exit(timeout=DRAIN + 15)
    assert code == 0, f"the conductor exited with {code}:\n{first.tail()}"
    assert "leases given up" in first.log(), first.tail()
    assert await _owned_by(cloud, "a") == 0

    await checks.wait_settled(cloud, uuids, timeout=45)
    outcome = await checks.check_consistent(cloud, uuids)
    assert outcome.active == SERVERS, outcome
    print(
        f"\ndrain: {held} tasks held at SIGTERM, handed over; all {SERVERS} builds ACTIVE "
        f"{time.monotonic() - stopped_at:.1f} s after it (lease {LEASE} s, poll 30 s)"
    )
