"""The verdict rules of nubes/queue_health.py (what nubes-manage status says of a queue)."""

from __future__ import annotations

import datetime as dt

from nubes import queue_health
from nubes.queue_health import Health, Sample, Trend

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def _ago(seconds: float, messages: int) -> Sample:
    return Sample(NOW - dt.timedelta(seconds=seconds), messages)


def test_growing_for_counts_back_to_the_last_drop() -> None:
    history = [_ago(600, 900), _ago(300, 0), _ago(200, 400), _ago(100, 800)]
    assert queue_health.growing_for(history, 1200, NOW) == 300.0
    # Not growing: the depth fell since the last sample, or nothing waits.
    assert queue_health.growing_for(history, 700, NOW) is None
    assert queue_health.growing_for(history, 0, NOW) is None
    assert queue_health.growing_for([], 50, NOW) is None
    # A flat run is not growth.
    assert queue_health.growing_for([_ago(60, 5), _ago(30, 5)], 5, NOW) is None


def test_trend_from_samples_else_from_rates() -> None:
    assert queue_health.trend_of([], 0) is Trend.EMPTY
    assert queue_health.trend_of([_ago(10, 3)], 5) is Trend.GROWING
    assert queue_health.trend_of([_ago(10, 8)], 5) is Trend.DRAINING
    assert queue_health.trend_of([_ago(10, 5)], 5) is Trend.STEADY
    assert queue_health.trend_of([], 5, publish_rate=40.0, deliver_rate=10.0) is Trend.GROWING
    assert queue_health.trend_of([], 5, publish_rate=1.0, deliver_rate=30.0) is Trend.DRAINING
    assert queue_health.trend_of([], 5) is Trend.STEADY


def test_a_queue_growing_for_minutes_asks_for_another_consumer() -> None:
    history = [_ago(300, 100), _ago(120, 600)]
    report = queue_health.assess("conductor", 1200, 2, history, NOW)
    assert report.health is Health.DEGRADED and report.trend is Trend.GROWING
    assert report.verdict == (
        "conductor: 1,200 messages, growing for 5 minutes, 2 consumers: start another conductor"
    )


def test_growth_shorter_than_the_alert_is_not_yet_a_problem() -> None:
    report = queue_health.assess("scheduler", 50, 1, [_ago(20, 10)], NOW)
    assert report.trend is Trend.GROWING and report.growing_for == 20.0
    assert report.health is Health.HEALTHY and report.verdict is None


def test_messages_and_no_consumer_is_falling_behind_at_once() -> None:
    report = queue_health.assess("conductor", 150, 0, [], NOW)
    assert report.health is Health.DEGRADED
    assert report.verdict == "conductor: 150 messages, no consumers: start a conductor"
    compute = queue_health.assess("compute", 3, 0, [], NOW)
    assert compute.verdict is not None and compute.verdict.endswith("start a compute host")


def test_an_old_head_message_is_falling_behind_even_when_steady() -> None:
    report = queue_health.assess("conductor", 40, 1, [_ago(30, 40)], NOW, oldest_age=120.0)
    assert report.trend is Trend.STEADY and report.health is Health.DEGRADED
    assert report.verdict == (
        "conductor: 40 messages, oldest waiting 2 minutes, 1 consumer: start another conductor"
    )


def test_draining_is_shown_and_healthy() -> None:
    report = queue_health.assess("conductor", 300, 2, [_ago(30, 900)], NOW, oldest_age=200.0)
    assert report.trend is Trend.DRAINING and report.health is Health.HEALTHY
    assert (
        report.verdict == "conductor: 300 messages, draining, oldest waiting 3 minutes, 2 consumers"
    )


def test_an_empty_queue_says_nothing() -> None:
    report = queue_health.assess("conductor", 0, 0, [_ago(30, 900)], NOW)
    assert report.trend is Trend.EMPTY and report.verdict is None
    assert report.health is Health.HEALTHY
