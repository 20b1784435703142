"""The Prometheus series (nubes/metrics.py): what the RPC layer records, label
values bounded by what the server knows, the endpoint, and the dashboard in docs/."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from nubes import config, exception, metrics
from nubes.context import RequestContext
from nubes.rpc.client import RPCClient
from nubes.rpc.queue_sampler import QueueSampler
from nubes.rpc.server import RPCServer
from nubes.rpc.transport import Target, get_transport

ROOT = Path(__file__).resolve().parents[2]


class Echo:
    RPC_API_VERSION = "1.0"

    async def echo(self, context: RequestContext, x: int) -> int:
        return x

    async def boom(self, context: RequestContext) -> None:
        raise exception.Invalid(reason="no")


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_rpc_records_each_side_by_topic_method_and_outcome() -> None:
    server_t = get_transport("memory:///metrics", identity="conductor.c")
    peer_t = get_transport("memory:///metrics", identity="conductor.p")
    await server_t.connect()
    await peer_t.connect()
    server = RPCServer(server_t, "mtopic", "c", [Echo()])
    await server.start()
    client = RPCClient(peer_t, Target("mtopic"), timeout=5)
    ok = dict(topic="mtopic", method="echo", kind="call", outcome="ok")
    err = dict(topic="mtopic", method="boom", kind="call", outcome="error")
    # A name the caller made up is never a label value.
    refused = dict(topic="mtopic", method="?", kind="call", outcome="refused")
    before = {
        k: _value("nubes_rpc_server_seconds_count", **v)
        for k, v in (("ok", ok), ("err", err), ("refused", refused))
    }
    sent = _value("nubes_rpc_client_seconds_count", **ok)
    try:
        assert await client.call(RequestContext(), "echo", x=3) == 3
        with pytest.raises(exception.NubesError):
            await client.call(RequestContext(), "boom")
        with pytest.raises(exception.NubesError):
            await client.call(RequestContext(), "made_up_" + "x" * 50)
        await client.cast(RequestContext(), "echo", x=1)
        sampler = QueueSampler(peer_t, ["mtopic", "absent"], interval=0)
        await sampler.sample()
    finally:
        await server.stop()
        await peer_t.close()
        await server_t.close()
    assert _value("nubes_rpc_server_seconds_count", **ok) == before["ok"] + 1
    assert _value("nubes_rpc_server_seconds_count", **err) == before["err"] + 1
    assert _value("nubes_rpc_server_seconds_count", **refused) == before["refused"] + 1
    assert _value("nubes_rpc_client_seconds_count", **ok) == sent + 1
    assert _value("nubes_rpc_client_seconds_count", topic="mtopic", method="echo", kind="cast",
                  outcome="ok") >= 1  # fmt: skip
    assert _value("nubes_rpc_in_flight", topic="mtopic") == 0
    # The memory bus told the sampler what it knows: one consumer, nothing waiting.
    assert _value("nubes_rpc_queue_consumers", queue="mtopic") == 1
    assert REGISTRY.get_sample_value("nubes_rpc_queue_messages", {"queue": "absent"}) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_port_serves_the_registry_and_zero_serves_nothing() -> None:
    conf = config.new_config()
    conf([])
    assert metrics.serve(conf, "test") == 0
    port = _free_port()
    conf.set_override("port", port, group="metrics")
    assert metrics.serve(conf, "test") == port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert "nubes_rpc_server_seconds_bucket" in text or "nubes_rpc_server_seconds" in text
    # The port is taken now: a clear configuration error, not a traceback.
    with pytest.raises(exception.ConfigError, match=r"\[metrics\] port"):
        metrics.serve(conf, "test")


def test_the_dashboard_uses_only_series_nubes_exports() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exported = {m.name for m in REGISTRY.collect()}
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(nubes_[a-z_]+|process_[a-z_]+)", target["expr"]))
    suffixes = ("_bucket", "_count", "_sum", "_total")
    bases = {next((u[: -len(s)] for s in suffixes if u.endswith(s)), u) for u in used}
    assert bases - exported == set(), bases - exported
    # Every nubes series is on the dashboard.
    ours = {n for n in exported if n.startswith("nubes_")}
    assert ours <= bases, ours - bases


def test_timed_labels_the_outcome_by_how_the_block_ended() -> None:
    hist = metrics.task_step_seconds
    ok = ("nubes_task_step_seconds_count", {"kind": "kx", "step": "s1", "outcome": "ok"})
    err = ("nubes_task_step_seconds_count", {"kind": "kx", "step": "s1", "outcome": "error"})
    with metrics.timed(hist, "kx", "s1"):
        pass
    with pytest.raises(exception.Invalid), metrics.timed(hist, "kx", "s1"):
        raise exception.Invalid(reason="no")
    assert REGISTRY.get_sample_value(*ok) == 1 and REGISTRY.get_sample_value(*err) == 1
    # Cumulative buckets, +Inf equal to the count, as Prometheus expects.
    inf = dict(ok[1], le="+Inf")
    assert REGISTRY.get_sample_value("nubes_task_step_seconds_bucket", inf) == 1


async def test_database_blocks_are_counted_by_role_and_end(tmp_path: Path) -> None:
    """What bench/scale.py reports per server: each block, and how it ended."""
    from nubes.db.engine import Database

    db = Database(f"sqlite:///{tmp_path / 'count.sqlite'}")

    def ends() -> tuple[float, ...]:
        return tuple(
            _value("nubes_db_transactions_total", role=role, end=end)
            for role, end in (("writer", "commit"), ("writer", "rollback"), ("primary", "read"))
        )

    try:
        before = ends()
        async with db.writer() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with pytest.raises(RuntimeError):
            async with db.writer() as conn:
                await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
                raise RuntimeError("undone")
        async with db.reader() as conn:
            assert (await conn.exec_driver_sql("SELECT count(*) FROM t")).scalar() == 0
        assert tuple(a - b for a, b in zip(ends(), before, strict=True)) == (1, 1, 1)
    finally:
        await db.dispose()
