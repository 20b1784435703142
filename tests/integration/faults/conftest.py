"""Fault suite: real nubes processes while the infrastructure under them fails.

The servers that fail are private to this suite, never the shared ones on
the standard ports (other test runs use those at the same time):

- a three-node RabbitMQ cluster (nubes.testing.infra.RabbitCluster), with the
  topic queues as quorum queues (on by default: the URL lists three brokers);
- a PostgreSQL primary with a streaming replica (PostgresPair); the
  conductor and scheduler read stale-tolerant data from the replica.

Both are started once per session (the expensive part: about 15 s on two
cores; the figure is printed) and stopped at the end. Each test gets its own
ProcessCloud on them (own vhost, users, database), removed at the end.
Without the binaries the suite skips, and fails under CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from nubes.testing.infra import RABBIT_LIB, PostgresPair, RabbitCluster, postgres_bin
from nubes.testing.processes import ProcessCloud
from tests.summaries import Board

#: Scenario -> its printed outcome (the terminal summary lists them).
RESULTS = Board("fault")
#: Startup figures of the shared servers.
STARTUP = Board("fault")

#: The suite's shortened timings (the issue's 60 s outage and Nova's 60 s
#: service_down_time would cost minutes of CI): an outage of OUTAGE seconds,
#: hosts down after 8 s without a heartbeat.
FAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "DEFAULT": {"service_down_time": 8},
    "fake_driver": {"spawn_delay": 2},
    "conductor": {"compute_step_timeout": 30, "build_deadline": 90},
}

CloudFactory = Callable[..., Awaitable[ProcessCloud]]


def _layered(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI requires {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    if not (RABBIT_LIB / "rabbitmq-server").exists() and shutil.which("rabbitmq-server") is None:
        _missing("rabbitmq-server (apt-get install rabbitmq-server) for the private cluster")
    cluster = RabbitCluster(3)
    try:
        cluster.start()
        STARTUP["startup: 3-node RabbitMQ cluster"] = f"{cluster.startup_seconds:.1f} s"
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_pair() -> Iterator[PostgresPair]:
    try:
        postgres_bin()
    except RuntimeError as exc:
        _missing(f"PostgreSQL binaries ({exc})")
    pair = PostgresPair()
    try:
        pair.start()
        STARTUP["startup: PostgreSQL primary + replica"] = f"{pair.startup_seconds:.1f} s"
        yield pair
    finally:
        pair.stop()


@pytest.fixture
async def fault_cloud(
    rabbit_cluster: RabbitCluster, postgres_pair: PostgresPair, tmp_path: Path
) -> AsyncIterator[CloudFactory]:
    """Makes a set-up ProcessCloud on the private servers; cleans it up."""
    made: list[ProcessCloud] = []

    async def make(
        options: Mapping[str, Mapping[str, Any]] | None = None, hosts: int = 3
    ) -> ProcessCloud:
        workdir = tmp_path / f"cloud-{len(made)}"
        guests = workdir / "guests"
        guests.mkdir(parents=True)
        cloud = ProcessCloud(
            rabbit_url=rabbit_cluster.url(),
            postgres_url=postgres_pair.url(),
            workdir=workdir,
            hosts=hosts,
            # Each host keeps its guests in guests/<host>.json: the suite
            # reads them to find a guest on two hosts.
            options=_layered(
                FAULT_OPTIONS, {"fake_driver": {"state_path": str(guests)}}, options or {}
            ),
            ctl=rabbit_cluster.ctl,
            replica_url=postgres_pair.url(replica=True),
        )
        made.append(cloud)
        await cloud.setup(conductors=("a", "b"))
        return cloud

    yield make
    for cloud in made:
        await cloud.cleanup()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    report = yield
    STARTUP.attach(report)
    RESULTS.attach(report)
    return report
