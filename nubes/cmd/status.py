"""``nubes-manage status``: is the cloud keeping up, and if not, what to start.

One look at what an operator scales by (docs/deploy.md, "Scaling"):

- **queues**: per RPC topic (``conductor``, ``scheduler``, ``compute``) the
  messages waiting, consumers, publish and deliver rates and the age of the
  oldest message, from the RabbitMQ management API; without the plugin,
  depth and consumers from passive declares on the bus; on ``memory://``
  (inside an all-in-one process) from that process's ``/metrics`` when
  ``[metrics] port`` is set;
- **services**: up or down (``nubes.liveness``), version, and the RPC caps
  in force (``[upgrade_levels]``, ``auto`` following the oldest service);
- **tasks**: durable tasks by kind and status, the oldest waiting, lease
  takeovers in the last hour, tasks past their deadline;
- a **verdict** per topic falling behind (``nubes.queue_health``).

How long a queue has been growing needs history: each run records the
depths it saw in the ``queue_samples`` table (kept an hour) and compares
with the earlier runs' samples, so run it periodically (cron, a monitoring
check every minute) to have the trend; Prometheus has it from ``/metrics``.

Exit codes (for scripts): 0 healthy, 1 degraded (a topic falling behind or
with no consumer, a service down, tasks past their deadline), 2 the
database or the broker cannot be reached (or, as for every ``nubes-manage``
command, the configuration is invalid: in either case nothing was checked).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import urllib.request
from dataclasses import asdict
from typing import Any

from oslo_config import cfg

from nubes import exception, liveness, queue_health, versions
from nubes.cmd import broker
from nubes.queue_health import Health, QueueReport, Sample
from nubes.rpc.transport import QueueStats, TransportURL, get_transport
from nubes.service import TOPICS

#: The shared topic queues status looks at.
QUEUES = tuple(TOPICS.values())
#: Seconds status waits for the broker or the database (``--timeout``).
TIMEOUT = 10.0


class Unreachable(Exception):
    """The database or the broker did not answer."""


def _rate(stats: dict[str, Any], name: str) -> float | None:
    details = (stats.get("message_stats") or {}).get(f"{name}_details") or {}
    rate = details.get("rate")
    return float(rate) if rate is not None else None


def _from_management(
    conf: cfg.ConfigOpts, args: argparse.Namespace, now: dt.datetime
) -> dict[str, dict[str, Any]]:
    admin = broker.admin_from_args(conf, args)
    admin.timeout = args.timeout
    found: dict[str, dict[str, Any]] = {}
    vhost = broker.vhost_of(conf, args)
    for name in QUEUES:
        # One queue at a time: the vhost holds a queue per compute host too.
        q = admin.queue(vhost, name)
        if q is None:
            continue
        head = q.get("head_message_timestamp")
        oldest = None
        if isinstance(head, int | float) and q.get("messages_ready"):
            oldest = max(0.0, now.timestamp() - float(head))
        found[name] = {
            "messages": int(q.get("messages_ready", q.get("messages", 0)) or 0),
            "consumers": int(q.get("consumers", 0) or 0),
            "publish_rate": _rate(q, "publish"),
            "deliver_rate": _rate(q, "deliver_get"),
            "oldest_age": oldest,
        }
    return found


async def _from_bus(conf: cfg.ConfigOpts, timeout: float) -> dict[str, dict[str, Any]]:
    transport = get_transport(conf.transport_url, identity=None, rpc_response_timeout=timeout)
    try:
        found: dict[str, QueueStats] = await asyncio.wait_for(
            transport.queue_stats(QUEUES), timeout
        )
    finally:
        await transport.close()
    return {n: {"messages": s.messages, "consumers": s.consumers} for n, s in found.items()}


def _from_metrics(conf: cfg.ConfigOpts, timeout: float) -> dict[str, dict[str, Any]]:
    """The queue gauges of the all-in-one process that holds the memory:// bus."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{conf.metrics.bind}:{conf.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    found: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        field = {"nubes_rpc_queue_messages": "messages", "nubes_rpc_queue_consumers": "consumers"}
        if family.name not in field:
            continue
        for s in family.samples:
            found.setdefault(s.labels["queue"], {"messages": 0, "consumers": 0})[
                field[family.name]
            ] = int(s.value)
    return found


async def _queues(
    conf: cfg.ConfigOpts, args: argparse.Namespace, now: dt.datetime
) -> tuple[str, dict[str, dict[str, Any]], str | None]:
    """(source, {queue: figures}, note)."""
    driver = TransportURL.parse(conf.transport_url).driver
    if driver == "memory":
        if not conf.metrics.port:
            return (
                "memory",
                {},
                (
                    "the memory:// bus lives inside the all-in-one process; set [metrics] port "
                    "to see its queues here"
                ),
            )
        try:
            return "metrics", await asyncio.to_thread(_from_metrics, conf, args.timeout), None
        except OSError as exc:
            raise Unreachable(f"the all-in-one process's metrics: {exc}") from None
    note = None
    if not args.no_management:
        try:
            found = await asyncio.to_thread(_from_management, conf, args, now)
            return "management", found, None
        except exception.ConfigError as exc:
            note = f"{exc.message}; depth and consumers from the bus instead"
    try:
        return "amqp", await _from_bus(conf, args.timeout), note
    except TimeoutError:
        raise Unreachable(f"the broker: no answer within {args.timeout:g} s") from None
    except (exception.NubesError, OSError) as exc:
        raise Unreachable(f"the broker: {exc}") from None


async def _database(
    conf: cfg.ConfigOpts, samples: dict[str, tuple[int, int]], now: dt.datetime
) -> dict[str, Any]:
    from nubes.db import engine
    from nubes.db.api import operations, services

    db = engine.Database.from_config(conf)
    try:
        async with db.writer() as conn:
            history = await operations.queue_history(conn, QUEUES, now=now)
            await operations.add_queue_samples(conn, samples, now=now)
        async with db.reader() as conn:
            rows = await services.get_all_with_last_seen(conn)
            oldest_versions = {
                api: await services.minimum_version(conn, api) for api in versions.APIS
            }
            counts = await operations.task_counts(conn)
            waiting = await operations.oldest_waiting(conn, now=now)
            takeovers = await operations.takeovers_since(conn, now - dt.timedelta(hours=1))
            late = await operations.past_deadline(conn, now=now)
    finally:
        await db.dispose()
    return {
        "history": history,
        "services": rows,
        "oldest_versions": oldest_versions,
        "counts": counts,
        "waiting": waiting,
        "takeovers": takeovers,
        "past_deadline": late,
    }


def _services(
    conf: cfg.ConfigOpts, rows: list[dict[str, Any]], now: dt.datetime
) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        seen = row.get("last_seen_at")
        out.append(
            {
                "binary": row["binary"],
                "host": row["host"],
                "up": liveness.row_is_up(row, conf.service_down_time, now),
                "version": row.get("version"),
                "disabled": bool(row.get("disabled")),
                "forced_down": bool(row.get("forced_down")),
                "last_seen": seen.isoformat() if seen else None,
            }
        )
    return out


def _caps(conf: cfg.ConfigOpts, oldest: dict[str, int | None]) -> dict[str, Any]:
    caps = {}
    for api in versions.APIS:
        level = getattr(conf.upgrade_levels, api)
        caps[api] = {
            "upgrade_level": level,
            "oldest_service_version": oldest.get(api),
            "cap": versions.resolve_cap(level, api, oldest.get(api)),
        }
    return caps


async def gather(conf: cfg.ConfigOpts, args: argparse.Namespace) -> dict[str, Any]:
    """The whole status as one JSON-able dict (``--json`` prints it)."""
    now = dt.datetime.now(dt.UTC)
    problems: list[str] = []
    health = Health.HEALTHY
    source, note = "unreachable", None
    found: dict[str, dict[str, Any]] = {}
    try:
        source, found, note = await _queues(conf, args, now)
    except Unreachable as exc:
        problems.append(f"cannot reach {exc}")
        health = Health.UNREACHABLE
    samples = {q: (f["messages"], f["consumers"]) for q, f in found.items()}
    db: dict[str, Any] | None = None
    try:
        db = await asyncio.wait_for(_database(conf, samples, now), args.timeout)
    except TimeoutError:
        problems.append(f"cannot reach the database: no answer within {args.timeout:g} s")
        health = Health.UNREACHABLE
    except (exception.NubesError, OSError) as exc:
        problems.append(f"cannot reach the database: {exc}")
        health = Health.UNREACHABLE
    reports: list[QueueReport] = []
    history = db["history"] if db else {}
    for name in QUEUES:
        if name not in found:
            continue
        f = found[name]
        past = [Sample(s["taken_at"], s["messages"]) for s in history.get(name, [])]
        reports.append(
            queue_health.assess(
                name,
                f["messages"],
                f["consumers"],
                past,
                now,
                publish_rate=f.get("publish_rate"),
                deliver_rate=f.get("deliver_rate"),
                oldest_age=f.get("oldest_age"),
            )
        )
    verdicts = [r.verdict for r in reports if r.verdict]
    if any(r.health is Health.DEGRADED for r in reports):
        health = max(health, Health.DEGRADED)
    out: dict[str, Any] = {
        "time": now.isoformat(),
        "queue_source": source,
        "queues": [
            {**asdict(r), "trend": str(r.trend), "health": r.health.name.lower()} for r in reports
        ],
    }
    if note:
        out["notes"] = [note]
    if db is not None:
        svcs = _services(conf, db["services"], now)
        for s in svcs:
            if not s["up"] and not s["disabled"] and not s["forced_down"]:
                problems.append(f"{s['binary']} on {s['host']} is down")
                health = max(health, Health.DEGRADED)
        waiting = db["waiting"]
        if db["past_deadline"]:
            problems.append(f"{db['past_deadline']} tasks are past their deadline")
            health = max(health, Health.DEGRADED)
        out["services"] = svcs
        out["caps"] = _caps(conf, db["oldest_versions"])
        out["tasks"] = {
            "by_kind": db["counts"],
            "oldest_waiting": None
            if waiting is None
            else {
                "id": waiting["id"],
                "kind": waiting["kind"],
                "step": waiting["step"],
                "age": round((now - waiting["created_at"]).total_seconds(), 1)
                if waiting["created_at"]
                else None,
            },
            "takeovers_last_hour": db["takeovers"],
            "past_deadline": db["past_deadline"],
        }
    out["verdicts"] = verdicts + problems
    out["status"] = health.name.lower()
    out["exit_code"] = int(health)
    return out


def render(status: dict[str, Any]) -> str:
    lines = [f"nubes status at {status['time']}: {status['status'].upper()}"]
    lines.append(f"\nqueues (from {status['queue_source']}):")
    for q in status["queues"]:
        rates = ""
        if q["publish_rate"] is not None:
            rates = f"  in {q['publish_rate']:.1f}/s out {q['deliver_rate'] or 0:.1f}/s"
        oldest = f"  oldest {q['oldest_age']:.0f} s" if q["oldest_age"] is not None else ""
        lines.append(
            f"  {q['queue']:<10} {q['messages']:>8,} messages  {q['consumers']:>3} consumers  "
            f"{q['trend']}{rates}{oldest}"
        )
    for note in status.get("notes", []):
        lines.append(f"  ({note})")
    if "services" in status:
        lines.append("\nservices:")
        for s in status["services"]:
            state = "up" if s["up"] else "DOWN"
            extra = " disabled" if s["disabled"] else ""
            extra += " forced down" if s["forced_down"] else ""
            lines.append(
                f"  {s['binary']:<10} {s['host']:<24} {state:<5} version {s['version']}{extra}"
            )
        caps = ", ".join(
            f"{api} {c['cap'] or 'uncapped'} ({c['upgrade_level'] or 'unset'})"
            for api, c in status["caps"].items()
        )
        lines.append(f"  caps in force: {caps}")
        t = status["tasks"]
        lines.append("\ntasks:")
        for kind, by_status in sorted(t["by_kind"].items()):
            counts = ", ".join(f"{n} {st}" for st, n in sorted(by_status.items()))
            lines.append(f"  {kind:<14} {counts}")
        w = t["oldest_waiting"]
        if w is not None:
            lines.append(
                f"  oldest waiting: {w['kind']} task {w['id']} at {w['step']}, {w['age']} s old"
            )
        lines.append(
            f"  lease takeovers in the last hour: {t['takeovers_last_hour']}; "
            f"past their deadline: {t['past_deadline']}"
        )
    if status["verdicts"]:
        lines.append("\nverdict:")
        lines.extend(f"  {v}" for v in status["verdicts"])
    else:
        lines.append("\nverdict: keeping up")
    return "\n".join(lines)


def _status(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    status = asyncio.run(gather(conf, args))
    if args.json:
        json.dump(status, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(render(status))
    return int(status["exit_code"])


def add_status_command(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="queues, services, tasks and a verdict (exit 0 healthy, 1 degraded, 2 unreachable)",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT,
        help=f"seconds to wait for the broker and the database (default {TIMEOUT:g})",
    )
    p.add_argument("--vhost", help="virtual host (default: the transport_url's)")
    p.add_argument(
        "--no-management",
        action="store_true",
        help="do not ask the management API; passive declares on the bus only",
    )
    broker.add_admin_options(p)
    p.set_defaults(handler=_status, needs_config=True)
