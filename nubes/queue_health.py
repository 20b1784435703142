"""Whether a topic queue keeps up: its trend and the plain verdict an operator reads.

Pure functions over what ``nubes-manage status`` gathered (the queue's depth
and consumers now, the broker's rates when it has them, the samples of
earlier runs), so the rules are tested without a broker. The scaling guide
(docs/deploy.md) explains each verdict; this is the one place that decides.

- A queue with messages and **no consumer** is falling behind whatever its
  trend: nothing serves it ("start one").
- A queue **growing** (deeper than at the previous sample, or, without one,
  published faster than delivered) for :data:`GROWING_ALERT` or more is
  falling behind: its consumers do not keep up ("start another").
- A queue whose oldest message waited :data:`OLDEST_ALERT` or more is
  falling behind even if steady: work waits that long to start.
- A queue getting shorter is **draining**; shown, not a problem.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass

#: Seconds a queue must keep growing before status calls it falling behind.
GROWING_ALERT = 60.0
#: Seconds the oldest message may wait before status calls the queue falling behind.
OLDEST_ALERT = 60.0

#: What to start when a topic falls behind, by queue.
REMEDY = {
    "conductor": "conductor",
    "scheduler": "scheduler",
    "compute": "compute host",
}


class Trend(enum.StrEnum):
    EMPTY = "empty"
    STEADY = "steady"
    GROWING = "growing"
    DRAINING = "draining"


class Health(enum.IntEnum):
    """Also ``nubes-manage status``'s exit code."""

    HEALTHY = 0
    DEGRADED = 1
    UNREACHABLE = 2


@dataclass(frozen=True, slots=True)
class Sample:
    taken_at: dt.datetime
    messages: int


@dataclass(frozen=True, slots=True)
class QueueReport:
    queue: str
    messages: int
    consumers: int
    trend: Trend
    #: Seconds the depth has not gone down while above zero (None: not growing).
    growing_for: float | None
    publish_rate: float | None
    deliver_rate: float | None
    oldest_age: float | None
    health: Health
    verdict: str | None


def growing_for(history: Sequence[Sample], messages: int, now: dt.datetime) -> float | None:
    """Seconds since the queue last stopped growing, if it grows now.

    Walks the samples back from now while each is no deeper than the one
    after it; the span counts only if the depth rose over it.
    """
    if messages == 0 or not history:
        return None
    start: Sample | None = None
    after = messages
    for sample in reversed(history):
        if sample.messages > after:
            break
        start, after = sample, sample.messages
    if start is None or start.messages >= messages:
        return None
    return max(0.0, (now - start.taken_at).total_seconds())


def trend_of(
    history: Sequence[Sample],
    messages: int,
    publish_rate: float | None = None,
    deliver_rate: float | None = None,
) -> Trend:
    if messages == 0:
        return Trend.EMPTY
    if history:
        last = history[-1].messages
        if messages > last:
            return Trend.GROWING
        if messages < last:
            return Trend.DRAINING
    if publish_rate is not None and deliver_rate is not None:
        if publish_rate > deliver_rate:
            return Trend.GROWING
        if publish_rate < deliver_rate:
            return Trend.DRAINING
    return Trend.STEADY


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} seconds"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _consumers(n: int) -> str:
    return f"{n} consumer" if n == 1 else f"{n} consumers"


def assess(
    queue: str,
    messages: int,
    consumers: int,
    history: Sequence[Sample],
    now: dt.datetime,
    *,
    publish_rate: float | None = None,
    deliver_rate: float | None = None,
    oldest_age: float | None = None,
) -> QueueReport:
    """The queue's trend, health and verdict (None while it keeps up)."""
    trend = trend_of(history, messages, publish_rate, deliver_rate)
    grown = growing_for(history, messages, now) if trend is Trend.GROWING else None
    what = REMEDY.get(queue, f"{queue} consumer")
    parts = [f"{queue}: {messages:,} messages"]
    if grown is not None:
        parts.append(f"growing for {_duration(grown)}")
    elif trend is Trend.GROWING:
        parts.append("growing")
    elif trend is Trend.DRAINING:
        parts.append("draining")
    if oldest_age is not None:
        parts.append(f"oldest waiting {_duration(oldest_age)}")
    health = Health.HEALTHY
    verdict = None
    if messages and consumers == 0:
        health = Health.DEGRADED
        verdict = ", ".join([*parts, f"no consumers: start a {what}"])
    elif (grown is not None and grown >= GROWING_ALERT) or (
        oldest_age is not None and oldest_age >= OLDEST_ALERT and trend is not Trend.DRAINING
    ):
        health = Health.DEGRADED
        verdict = ", ".join([*parts, f"{_consumers(consumers)}: start another {what}"])
    elif trend is Trend.DRAINING:
        verdict = ", ".join([*parts, _consumers(consumers)])
    return QueueReport(
        queue=queue,
        messages=messages,
        consumers=consumers,
        trend=trend,
        growing_for=grown,
        publish_rate=publish_rate,
        deliver_rate=deliver_rate,
        oldest_age=oldest_age,
        health=health,
        verdict=verdict,
    )
