"""``[conductor] workers = 2``: two conductor processes under one parent, one killed.

The option existed and did nothing (a user setting it got one process). Real
processes on RabbitMQ and PostgreSQL: the parent starts two workers; builds
complete; a worker killed with SIGKILL is replaced by the parent, and builds
asked for after that complete as well, with no task left active.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.integration.crash import checks
from tests.integration.crash.conftest import CloudFactory


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _running(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


async def _wait_children(
    pid: int, count: int, gone: int | None = None, timeout: float = 30.0
) -> set[int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # A killed worker stays listed (a zombie) until the parent reaps it.
    while len(kids := _children(pid)) != count or gone in kids:
        assert loop.time() < deadline, f"{len(kids)} workers, expected {count}"
        await asyncio.sleep(0.1)
    return kids


@pytest.mark.timeout(120)
async def test_conductor_workers_option_runs_that_many_processes_and_replaces_a_dead_one(
    process_cloud: CloudFactory,
) -> None:
    cloud = await process_cloud({"conductor": {"workers": 2}})
    scheduler = await cloud.start_scheduler()
    conductor = await cloud.start_conductor("a")
    await cloud.wait_serving([scheduler, conductor])
    workers = await _wait_children(conductor.pid, 2)
    computes = await cloud.start_computes()
    await cloud.wait_serving(list(computes.values()))
    await cloud.wait_hosts_registered()

    first = await checks.create_servers(cloud, 4, name="before")
    await checks.wait_settled(cloud, first, timeout=60)

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    replaced = await _wait_children(conductor.pid, 2, gone=victim)
    assert victim not in replaced and len(replaced - workers) == 1
    await conductor.wait_log(r"exited with -9; starting another")

    second = await checks.create_servers(cloud, 4, name="after")
    await checks.wait_settled(cloud, first + second, timeout=60)
    await checks.check_consistent(cloud, first + second)

    # SIGTERM to the parent stops every worker, and the parent exits 0.
    assert conductor.process is not None
    conductor.process.send_signal(signal.SIGTERM)
    assert await conductor.wait_exit(timeout=40) == 0, conductor.tail()
    # The parent waited for them: no worker is left running or unreaped.
    assert not _running(replaced)
