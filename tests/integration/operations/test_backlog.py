"""Issue 16's acceptance: ``nubes-manage status`` and ``/metrics`` show a backlog
building while the conductor is stopped, and draining when it comes back.

Real processes on the shared RabbitMQ and PostgreSQL (a scratch vhost,
broker users and database, ``nubes.testing.processes``): a scheduler and a
conductor serving ``/metrics``, one fake compute host. The test stops the
conductor, casts ``kick`` to the conductor topic as the API would (its own
broker user), and reads the backlog three ways: ``status --json`` through the
management API, ``status --json --no-management`` (passive declares), and
the scheduler's ``/metrics`` (the queue gauges every controller samples).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.rpc.transport import get_transport
from nubes.testing.processes import ProcessCloud

pytestmark = [pytest.mark.rabbit, pytest.mark.postgres]

#: Casts queued per round while the conductor is stopped.
ROUND = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _gauge(port: int, name: str, **labels: str) -> float | None:
    return _metrics(port).get((name, tuple(sorted(labels.items()))))


def _counted(port: int, name: str, **labels: str) -> float:
    """Sum of ``name`` over the series that carry ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in _metrics(port).items() if n == name and want <= set(ls))


async def _status(config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nubes.cmd.manage", "--config-file", str(config),
        "status", "--json", *extra,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    try:
        return proc.returncode, json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"status printed no JSON (exit {proc.returncode}): {err!r}") from None


async def _kicks(conductors: ConductorAPI, ctxt: RequestContext) -> None:
    # One after the other: casts sent in the same event-loop iteration travel
    # as one AMQP message (rabbit_batch.py), and the broker counts messages.
    for _ in range(ROUND):
        await conductors.kick(ctxt)


def _queue(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(q for q in status["queues"] if q["queue"] == name)


async def _until(what: str, check: Callable[[], Any], timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


@pytest.fixture
async def cloud(rabbit_url: str, postgres_url: str, tmp_path: Path) -> AsyncIterator[ProcessCloud]:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to create one broker user per identity")
    c = ProcessCloud(rabbit_url, postgres_url, tmp_path, hosts=1)
    try:
        await c.setup(conductors=("a",))
        yield c
    finally:
        await c.cleanup()


@pytest.mark.timeout(180)
async def test_status_and_metrics_show_a_backlog_build_and_drain(cloud: ProcessCloud) -> None:
    sched_port, cond_port = _free_port(), _free_port()
    sampled = {"queue_sample_interval": 0.5}
    scheduler = await cloud.start_scheduler(options={"metrics": {"port": sched_port, **sampled}})
    conductor_opts = {"metrics": {"port": cond_port, **sampled}}
    conductor = await cloud.start_conductor("a", options=conductor_opts)
    await cloud.start_computes()
    await cloud.wait_serving([scheduler, conductor])
    await cloud.wait_hosts_registered()
    config = cloud.workdir / "scheduler.conf"

    code, status = await _status(config)
    assert status["queue_source"] == "management", status
    assert _queue(status, "conductor")["messages"] >= 0
    # The management API's figures lag by its statistics interval: consumers
    # are read from the bus itself here.
    code, status = await _status(config, "--no-management")
    assert _queue(status, "conductor")["consumers"] >= 1, status
    assert {s["binary"] for s in status["services"]} >= {"conductor", "scheduler", "compute"}
    assert set(status["caps"]) == {"compute", "conductor", "scheduler"}
    assert "takeovers_last_hour" in status["tasks"]

    # The conductor goes away; the API keeps telling it about work.
    await conductor.kill()
    api = get_transport(cloud.url_for(f"api.{cloud.api_host}"))
    await api.connect()
    try:
        conductors = ConductorAPI(api)
        ctxt = RequestContext()
        await _kicks(conductors, ctxt)

        # Passive declares see the depth at once: no consumer, a verdict, exit 1.
        code, status = await _status(config, "--no-management")
        first = _queue(status, "conductor")
        assert status["queue_source"] == "amqp"
        assert first["messages"] >= ROUND and first["consumers"] == 0, first
        assert code == 1 and status["status"] == "degraded"
        assert any(
            v.startswith("conductor: ") and "no consumers: start a conductor" in v
            for v in status["verdicts"]
        ), status["verdicts"]

        # The scheduler's /metrics shows the same backlog.
        async def metric_backlog() -> bool:
            depth = _gauge(sched_port, "nubes_rpc_queue_messages", queue="conductor")
            consumers = _gauge(sched_port, "nubes_rpc_queue_consumers", queue="conductor")
            return depth is not None and depth >= ROUND and consumers == 0

        await _until("the scheduler's /metrics to show the backlog", metric_backlog)

        # More work arrives: the backlog grows, from the management API too
        # (its figures lag the broker by its statistics interval).
        await _kicks(conductors, ctxt)

        async def grown() -> dict[str, Any] | None:
            code, status = await _status(config)
            q = _queue(status, "conductor")
            # The head's timestamp comes in the same lagging statistics as the
            # depth, not always in the same sample: wait for both.
            grown = q["messages"] >= 2 * ROUND and q["oldest_age"] is not None
            return status if grown and code == 1 else None

        status = await _until("status to show the backlog grown", grown)
        q = _queue(status, "conductor")
        assert status["queue_source"] == "management"
        assert q["trend"] == "growing" and q["growing_for"] is not None, q
        assert q["consumers"] == 0
        # Casts carry their send time: the management API shows the head's.
        assert q["oldest_age"] is not None and q["oldest_age"] >= 0
        assert any("growing for" in v and "start a conductor" in v for v in status["verdicts"])

        async def metric_grown() -> bool:
            depth = _gauge(sched_port, "nubes_rpc_queue_messages", queue="conductor")
            return depth is not None and depth >= 2 * ROUND

        await _until("the scheduler's /metrics to show the backlog grown", metric_grown)
    finally:
        await api.close()

    # The conductor comes back and drains the queue.
    conductor = await cloud.start_conductor("a", options=conductor_opts)
    await cloud.wait_serving([conductor])

    async def drained() -> dict[str, Any] | None:
        _, status = await _status(config, "--no-management")
        q = _queue(status, "conductor")
        return status if q["messages"] == 0 and q["consumers"] >= 1 else None

    status = await _until("status to show the queue drained", drained)
    assert _queue(status, "conductor")["trend"] in ("empty", "draining")
    assert not any(v.startswith("conductor:") and "start" in v for v in status["verdicts"])

    async def metric_drained() -> bool:
        depth = _gauge(sched_port, "nubes_rpc_queue_messages", queue="conductor")
        handled = _counted(
            cond_port, "nubes_rpc_server_seconds_count", topic="conductor", method="kick"
        )
        return depth == 0 and handled >= 2 * ROUND

    await _until("/metrics to show the queue drained by the conductor", metric_drained)
