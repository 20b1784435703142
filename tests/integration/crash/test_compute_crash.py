"""Kill -9 a compute host mid-spawn and restart it: every build still ends ACTIVE.

Real processes on RabbitMQ and PostgreSQL, fake spawns that take a few
seconds. While the conductor waits for a host's spawn report, that host's
process is killed with SIGKILL and started again under the same name:

- at once: the restarted host repairs what it finds (a building instance
  with no guest: left to the build step) and the build message, never
  acknowledged by the dead process, is delivered again or re-sent by the
  conductor, so the builds finish on that host;
- after the conductor's ``compute_step_timeout``: the conductor counts the
  silent host as failed and reschedules its builds to alternates; the
  restarted host must not take them back (its stale saves are refused).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from nubes.db.models import conductor_tasks, instances
from nubes.testing.processes import Proc, ProcessCloud
from tests.integration.crash import checks
from tests.integration.crash.conftest import RESULTS, CloudFactory

SERVERS = 5
SIGKILLED = -9


async def _spawning_host(cloud: ProcessCloud, uuids: list[str], timeout: float = 30.0) -> str:
    """The host of the first of these instances seen spawning."""
    assert cloud.db is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with cloud.db.reader() as conn:
            host = (
                await conn.execute(
                    select(instances.c.host)
                    .where(instances.c.uuid.in_(uuids), instances.c.task_state == "spawning")
                    .limit(1)
                )
            ).scalar()
        if host is not None:
            return str(host)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no instance started spawning in {timeout}s:\n{cloud.describe()}")


async def _placed_on(cloud: ProcessCloud, uuids: list[str], host: str) -> list[str]:
    assert cloud.db is not None
    async with cloud.db.reader() as conn:
        rows = await conn.execute(
            select(instances.c.uuid).where(instances.c.uuid.in_(uuids), instances.c.host == host)
        )
        return [r.uuid for r in rows]


async def _start(cloud: ProcessCloud) -> tuple[Proc, dict[str, Proc]]:
    scheduler = await cloud.start_scheduler()
    conductor = await cloud.start_conductor("a")
    # Controllers first: a host's calls before the conductor's queue exists
    # are lost and only retried after the RPC timeout.
    await cloud.wait_serving([scheduler, conductor])
    computes = await cloud.start_computes()
    await cloud.wait_serving(list(computes.values()))
    await cloud.wait_hosts_registered()
    return conductor, computes


@pytest.mark.timeout(90)
async def test_compute_killed_mid_spawn_and_restarted(process_cloud: CloudFactory) -> None:
    label = "compute killed mid-spawn, restarted at once"
    RESULTS[label] = "did not finish"
    cloud = await process_cloud({"fake_driver": {"spawn_delay": 3}})
    _, computes = await _start(cloud)

    uuids = await checks.create_servers(cloud, SERVERS)
    host = await _spawning_host(cloud, uuids)
    assert await computes[host].kill() == SIGKILLED
    victims = await _placed_on(cloud, uuids, host)
    restarted = await cloud.start_compute(host)
    await cloud.wait_serving([restarted])

    await checks.wait_settled(cloud, uuids, timeout=60)
    outcome = await checks.check_consistent(cloud, uuids)
    assert outcome.active == SERVERS, outcome
    RESULTS[label] = "consistent"
    print(f"\n{label}: {len(victims)} builds on {host} cut off; {outcome}")


@pytest.mark.timeout(90)
async def test_compute_down_past_step_timeout_builds_reschedule(
    process_cloud: CloudFactory,
) -> None:
    label = "compute killed mid-spawn, down past the step timeout"
    RESULTS[label] = "did not finish"
    cloud = await process_cloud(
        {"fake_driver": {"spawn_delay": 2}, "conductor": {"compute_step_timeout": 5}}
    )
    _, computes = await _start(cloud)

    uuids = await checks.create_servers(cloud, SERVERS)
    host = await _spawning_host(cloud, uuids)
    assert await computes[host].kill() == SIGKILLED
    victims = await _placed_on(cloud, uuids, host)
    assert victims
    # Down until the conductor gave up on it and moved its builds elsewhere.
    assert cloud.db is not None
    deadline = time.monotonic() + 30
    while await _placed_on(cloud, victims, host):
        assert time.monotonic() < deadline, f"builds never left {host}:\n{cloud.describe()}"
        await asyncio.sleep(0.1)
    restarted = await cloud.start_compute(host)
    await cloud.wait_serving([restarted])

    rows = await checks.wait_settled(cloud, uuids, timeout=60)
    # The restarted host has had time to act on the build messages it got again.
    await asyncio.sleep(2)
    outcome = await checks.check_consistent(cloud, uuids)
    assert outcome.active == SERVERS, outcome
    assert all(rows[u]["host"] != host for u in victims), "a rescheduled build went back"
    async with cloud.db.reader() as conn:
        tries = {
            r.instance_uuid: (r.payload or {}).get("try")
            for r in await conn.execute(
                select(conductor_tasks.c.instance_uuid, conductor_tasks.c.payload).where(
                    conductor_tasks.c.instance_uuid.in_(victims)
                )
            )
        }
    assert all(t and t > 1 for t in tries.values()), tries
    RESULTS[label] = "consistent"
    print(f"\n{label}: {len(victims)} builds on {host} rescheduled; {outcome}")
