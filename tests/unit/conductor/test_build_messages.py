"""What one build costs on the bus between its compute host and the conductors
(issue 16): one call (the fence save after spawn) and one cast (the step's
report, carrying the build's notifications), counted by the RPC client's
metrics. The placement commit wrote the rest: task_state spawning,
``launched_on`` and the host's event start (compute 1.11); the notifications
ride on the report (conductor 1.7). Capped below either version, each side
falls back to the round trips of the release before, and the build still
ends the same."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from nubes.context import RequestContext
from nubes.db.models import instance_actions, instance_actions_events
from nubes.notifications import relay
from nubes.rpc.transport import IncomingMessage, get_transport
from nubes.testing.allinone import AllInOne
from tests.unit.conductor.conftest import IMAGE, start_cloud

pytestmark = pytest.mark.timeout(90)

BUILDS = 3
#: The methods a compute host sends the conductors during a build.
METHODS = (
    ("object_action", "call"),
    ("object_class_action_versions", "call"),
    ("relay_notifications", "call"),
    ("relay_notification", "call"),
    ("step_finished", "cast"),
)


def _sent() -> dict[str, float]:
    """RPC messages sent to the conductors so far, by method (this process's)."""
    return {
        method: REGISTRY.get_sample_value(
            "nubes_rpc_client_seconds_count",
            {"topic": "conductor", "method": method, "kind": kind, "outcome": "ok"},
        )
        or 0.0
        for method, kind in METHODS
    }


async def _boot(
    tmp_path: Path, ctxt: RequestContext, **overrides: Any
) -> tuple[AllInOne, dict[str, float], list[str], list[str]]:
    """Boot BUILDS servers one after the other on one host; the messages each
    build sent (by method), the notifications seen, and the servers."""
    cloud = await start_cloud(tmp_path, hosts=1, notifications={"driver": "messaging"}, **overrides)
    seen: list[str] = []
    sink = get_transport(cloud.bus, identity="conductor.sink")
    await sink.connect()

    async def note(msg: IncomingMessage) -> None:
        seen.append(msgspec.json.decode(msg.body)["event_type"])

    await sink.listen("notifications", "sink", note)
    try:
        uuids = []
        before = _sent()
        for i in range(BUILDS):
            (inst,) = await cloud.api.create_servers(
                ctxt, name=f"s{i}", flavor="small", image=IMAGE
            )
            await cloud.wait_tasks([inst.uuid])
            uuids.append(inst.uuid)
        for _ in range(100):
            if seen.count("instance.create.end") >= BUILDS:
                break
            await asyncio.sleep(0.05)
        after = _sent()
    finally:
        await sink.close()
    return cloud, {m: (after[m] - before[m]) / BUILDS for m in after}, seen, uuids


async def _check_built(cloud: AllInOne, uuids: list[str]) -> None:
    """Each server ACTIVE on the host with its host's event started there and
    closed by the report, whoever wrote its start."""
    rows = await cloud.instances(uuids)
    assert {(r["vm_state"], r["task_state"], r["launched_on"]) for r in rows} == {
        ("active", None, "fake-0")
    }
    a, e = instance_actions, instance_actions_events
    async with cloud.db.reader() as conn:
        query = (
            select(a.c.instance_uuid, e.c.host, e.c.result, e.c.finish_time)
            .join(a, a.c.id == e.c.action_id)
            .where(a.c.instance_uuid.in_(uuids), e.c.event == "compute_build_and_run_instance")
        )
        events = (await conn.execute(query)).all()
    assert sorted(ev.instance_uuid for ev in events) == sorted(uuids)  # one each
    assert all(ev.host == "fake-0" and ev.result == "Success" for ev in events), events
    assert all(ev.finish_time is not None for ev in events), events


async def test_a_build_sends_one_call_and_one_cast_to_the_conductors(
    tmp_path: Path, ctxt: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # However slow the machine, the build's notifications wait for its report.
    monkeypatch.setattr(relay, "HOLD_SECONDS", 60.0)
    cloud, per_build, seen, uuids = await _boot(tmp_path, ctxt)
    try:
        assert per_build == {
            "object_action": 1.0,  # the fence save after spawn
            "object_class_action_versions": 0.0,  # the event start: placement's
            "relay_notifications": 0.0,  # on the report
            "relay_notification": 0.0,
            "step_finished": 1.0,
        }
        await _check_built(cloud, uuids)
        # Published all the same, before the report was recorded.
        assert seen.count("instance.create.start") == BUILDS
        assert seen.count("instance.create.end") == BUILDS
    finally:
        await cloud.stop()


class _Relay:
    """A conductor that takes batches and records them."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def relay_notification(self, *args: Any) -> None:
        raise AssertionError("batches are taken")

    async def relay_notifications(self, batch: relay.NotificationBatch) -> list[str]:
        self.batches.append([n.event_type for n in batch.notifications])
        return []

    def relays_batches(self) -> bool:
        return True


async def test_a_report_takes_what_is_queued_and_the_rest_goes_after_its_hold() -> None:
    conductor = _Relay()
    queue = relay.RelayQueue(conductor, hold=0.05)
    payload: Any = None
    queue.put(None, "instance.create.start", "INFO", payload)
    queue.put(None, "instance.create.end", "INFO", payload)
    taken = await queue.take()
    assert taken is not None
    assert [n.event_type for n in taken.notifications] == [
        "instance.create.start",
        "instance.create.end",
    ]
    assert await queue.take() is None  # nothing left
    # No report follows this one: it goes by itself once its hold is over.
    queue.put(None, "instance.update", "INFO", payload)
    for _ in range(200):
        if conductor.batches:
            break
        await asyncio.sleep(0.01)
    assert conductor.batches == [["instance.update"]]
    # A flush (a host stopping) does not wait for the hold.
    queue.hold = 60.0
    queue.put(None, "instance.delete.end", "INFO", payload)
    await asyncio.wait_for(queue.flush(), 5)
    assert conductor.batches[-1] == ["instance.delete.end"]


async def test_capped_below_each_version_a_build_makes_the_round_trips_of_before(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    """Conductors capped to compute 1.10 (hosts of the release before) leave
    the spawning save and the event start to the host; hosts capped to
    conductor 1.6 send their notifications before the report, by themselves."""
    levels = {"upgrade_levels": {"compute": "1.10", "conductor": "1.6"}}
    cloud, per_build, seen, uuids = await _boot(tmp_path, ctxt, **levels)
    try:
        assert per_build["object_action"] == 2.0
        assert per_build["object_class_action_versions"] == 1.0
        assert per_build["relay_notifications"] >= 1.0
        assert per_build["step_finished"] == 1.0
        await _check_built(cloud, uuids)
        assert seen.count("instance.create.end") == BUILDS
    finally:
        await cloud.stop()
