"""Prometheus metrics: every series a nubes process exports, and the endpoint.

One home for the metric names, their labels and their buckets; the code that
measures (``rpc/server.py``, ``rpc/client.py``, the task engine, the
scheduler, ``db/engine.py``, the conductor's authorisation) imports the
objects from here. Labels have bounded values only: a topic, a method the
dispatcher found (never a name a caller made up), an outcome, a task kind
and step, a rule of a table. Recording is a dictionary lookup and an
addition: cheap enough for every RPC message (``bench/boot.py`` measures it).

Every process records into the default registry whether or not it serves
it; ``[metrics] port`` (0: off) makes :func:`serve` expose it over HTTP on
``[metrics] bind``. A process running several services (``all-in-one``,
``--fake-hosts``) serves one registry on one port; ``[conductor] workers``
and ``[scheduler] workers`` serve worker *i* on ``port + i``.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from oslo_config import cfg
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Metric,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from nubes import exception

#: Set by nubes/cmd/workers.py in each worker: its index (0 ...), which offsets
#: its ``[metrics] port``.
WORKER_INDEX_ENV = "NUBES_WORKER_INDEX"

LOG = logging.getLogger(__name__)

#: Seconds: RPC handlers and calls, task steps, scheduler decisions.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Seconds: one SQL statement.
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)

#: What became of an RPC message or a task step.
OK = "ok"
ERROR = "error"  # the method raised (the caller gets a typed error)
REFUSED = "refused"  # never reached the method: bad message, version, caller
RETRIED = "retried"  # a cast held for a transient failure, run again later
TIMEOUT = "timeout"


class _Series:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class FastHistogram:
    """nubes' histograms: some observe per RPC message or per SQL statement.

    ``prometheus_client.Histogram.observe`` takes two locks and walks the
    buckets (about 5 µs on this machine); this one is a bisect and two
    additions on plain lists, read by the scrape thread when Prometheus
    asks (a collector of its own). The event loop is the only writer in a
    process, so no lock: at worst a scrape reads a count one observation
    ahead of the sum.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], _Series] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Series:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = _Series(self.bounds)
        return series

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in list(self._series.items()):
            counts, total, buckets = list(series.counts), 0, []
            for bound, count in zip(self.bounds, counts, strict=False):
                total += count
                buckets.append((floatToGoString(bound), total))
            buckets.append(("+Inf", total + counts[-1]))
            family.add_metric(list(values), buckets, series.sum)
        yield family


class Tally:
    """A gauge of things in use now, by one label: a plain counter per value,
    read when scraped (``Gauge.inc``/``dec`` lock; this runs per message)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelname: str,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelname = labelname
        self.counts: dict[str, int] = {}
        registry.register(self)

    def add(self, value: str, delta: int) -> None:
        self.counts[value] = self.counts.get(value, 0) + delta

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=[self.labelname])]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=[self.labelname])
        for value, count in list(self.counts.items()):
            family.add_metric([value], count)
        yield family


rpc_server_seconds = FastHistogram(
    "nubes_rpc_server_seconds",
    "Time an RPC server spent on a message, from receipt to reply or end of the cast.",
    ["topic", "method", "kind", "outcome"],
    LATENCY_BUCKETS,
)
rpc_in_flight = Tally(
    "nubes_rpc_in_flight",
    "RPC messages this process is handling now (received, not finished).",
    "topic",
)
rpc_client_seconds = FastHistogram(
    "nubes_rpc_client_seconds",
    "Time an RPC call waited for its reply, or a cast for the bus to take it.",
    ["topic", "method", "kind", "outcome"],
    LATENCY_BUCKETS,
)
rpc_queue_messages = Gauge(
    "nubes_rpc_queue_messages",
    "Messages waiting in a topic's queue on the bus (sampled by controllers).",
    ["queue"],
)
rpc_queue_consumers = Gauge(
    "nubes_rpc_queue_consumers",
    "Consumers of a topic's queue on the bus (sampled by controllers).",
    ["queue"],
)
task_step_seconds = FastHistogram(
    "nubes_task_step_seconds",
    "Time a durable task step took in this conductor (including waits for hosts).",
    ["kind", "step", "outcome"],
    LATENCY_BUCKETS,
)
tasks_running = Gauge("nubes_tasks_running", "Durable tasks this conductor is driving now.")
task_takeovers = Counter(
    "nubes_task_lease_takeovers_total",
    "Tasks this conductor claimed after another conductor's lease ran out.",
    ["kind"],
)
scheduler_seconds = FastHistogram(
    "nubes_scheduler_decision_seconds",
    "Time select_destinations took to decide and claim.",
    ["outcome"],
    LATENCY_BUCKETS,
)
db_statement_seconds = FastHistogram(
    "nubes_db_statement_seconds",
    "Time one SQL statement took, by engine role (writer, reader).",
    ["role"],
    DB_BUCKETS,
)
db_transactions = Counter(
    "nubes_db_transactions_total",
    "Database blocks this process ended, by engine role and how (commit, rollback). "
    "On PostgreSQL a read block sends no BEGIN, so only writer blocks are transactions "
    "on the server there.",
    ["role", "end"],
)
db_grouped_commits = Counter(
    "nubes_db_grouped_commits_total",
    "Transactions the group committer (nubes/db/group_commit.py) committed; "
    "nubes_db_grouped_writes_total over this is the writes each one carried.",
)
db_grouped_writes = Counter(
    "nubes_db_grouped_writes_total",
    "Writes (and units) committed together by the group committer.",
)
db_pool_in_use = Tally(
    "nubes_db_pool_connections_in_use",
    "Database connections checked out of the pool now.",
    "role",
)
authz_refusals = Counter(
    "nubes_authz_refusals_total",
    "Calls the conductor refused a compute host, by rule (object.method) .",
    ["rule"],
)


def outcome_of(exc: BaseException | None) -> str:
    if exc is None:
        return OK
    if isinstance(exc, exception.MessagingTimeout | TimeoutError):
        return TIMEOUT
    return ERROR


@contextmanager
def timed(histogram: FastHistogram, *values: str) -> Iterator[None]:
    """Observe the block's duration under ``values`` and, last, the ``outcome``
    from how it ended."""
    start = time.perf_counter()
    exc: BaseException | None = None
    try:
        yield
    except BaseException as e:
        exc = e
        raise
    finally:
        histogram.labels(*values, outcome_of(exc)).observe(time.perf_counter() - start)


def port_for(conf: cfg.ConfigOpts) -> int:
    """The port this process serves on: ``[metrics] port``, plus the worker's index."""
    port = int(conf.metrics.port)
    if port:
        port += int(os.environ.get(WORKER_INDEX_ENV, "0"))
    return port


def serve(conf: cfg.ConfigOpts, what: str) -> int:
    """Serve ``/metrics`` if ``[metrics] port`` is set; the port, or 0 when off.

    The HTTP server runs in a thread of its own, so a scrape never waits for
    the event loop and the loop never waits for a scrape.
    """
    port = port_for(conf)
    if not port:
        return 0
    bind = conf.metrics.bind
    try:
        start_http_server(port, addr=bind, registry=REGISTRY)
    except OSError as exc:
        raise exception.ConfigError(
            reason=f"[metrics] port {port} on {bind}: cannot listen ({exc})"
        ) from None
    LOG.info("%s serves metrics at http://%s:%d/metrics", what, bind, port)
    return port
