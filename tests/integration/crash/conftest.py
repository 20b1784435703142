"""Crash tests: real nubes processes on RabbitMQ and PostgreSQL, killed mid-build.

They skip without the servers (and fail under CI, see tests/servers.py).
Each test gets its own :class:`~nubes.testing.processes.ProcessCloud`
(scratch database, vhost and broker users), removed at the end. The
terminal summary says how many kill points were tried and how many ended
consistent.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from nubes.testing.processes import ProcessCloud
from tests.summaries import Board

#: Kill point -> "consistent" or what went wrong, filled by the tests.
RESULTS = Board("crash")

CloudFactory = Callable[..., Awaitable[ProcessCloud]]


@pytest.fixture
async def process_cloud(
    rabbit_url: str, postgres_url: str, tmp_path: Path
) -> AsyncIterator[CloudFactory]:
    """Makes a set-up ProcessCloud (``options`` override its config); cleans it up."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to create one broker user per identity")
    made: list[ProcessCloud] = []

    async def make(
        options: Mapping[str, Mapping[str, Any]] | None = None, hosts: int = 3
    ) -> ProcessCloud:
        cloud = ProcessCloud(
            rabbit_url, postgres_url, tmp_path / f"cloud-{len(made)}", hosts, options or {}
        )
        made.append(cloud)
        await cloud.setup()
        return cloud

    yield make
    for cloud in made:
        await cloud.cleanup()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    report = yield
    RESULTS.attach(report)
    return report
