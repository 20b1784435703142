"""A compute host's notifications are published by the conductor, as the host.

Only controllers publish on the notifications topic (a host's broker user may
not: docs/security.md); the conductor publishes what a host relays to it,
under the publisher id of the verified caller, whatever the host's own
notifier calls itself.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from nubes import exception
from nubes.conductor.authz import Authorizer
from nubes.context import RequestContext
from nubes.db import migration
from nubes.db.engine import Database
from nubes.notifications.notifier import Notifier
from nubes.notifications.objects import InstanceActionPayload
from nubes.notifications.relay import NotificationBatch, RelayedNotification
from nubes.objects.instance import Instance
from nubes.rpc.transport import IncomingMessage, get_transport
from nubes.testing.cloud import Cloud
from tests.unit.db import factories


async def test_a_hosts_notification_reaches_consumers_from_the_conductor(tmp_path: Path) -> None:
    cloud = await Cloud.start(f"sqlite:///{tmp_path / 'relay.sqlite'}")
    sink = get_transport(cloud.url_for("api.sink"), identity="api.sink")
    try:
        async with cloud.db.writer() as conn:
            await factories.make_service(conn, host="h1", binary="compute")
            inst = await factories.make_instance(conn, host="h1", vm_state="active")
        seen: asyncio.Queue[tuple[str | None, dict[str, Any]]] = asyncio.Queue()

        async def note(msg: IncomingMessage) -> None:
            await seen.put((msg.caller, json.loads(msg.body)))

        await sink.connect()
        await sink.listen("notifications", "sink", note)
        host = await cloud.host("h1")
        # The name the host's notifier gives itself is not what is published.
        notifier = Notifier(host.transport, "compute:someone-else", relay=host.conductor)
        payload = InstanceActionPayload.from_instance_and_fault(
            Instance(uuid=inst["uuid"], host="h1", vm_state="active")
        )
        await host.run(notifier.info, RequestContext(), "instance.power_off.end", payload)
        caller, body = await asyncio.wait_for(seen.get(), 30)
        assert caller == "conductor.ctl"
        assert body["publisher_id"] == "compute:h1"
        assert body["event_type"] == "instance.power_off.end"
        assert body["payload"]["nubes_object.data"]["uuid"] == inst["uuid"]
    finally:
        await sink.close()
        await cloud.stop()


async def test_concurrent_relays_share_one_placement_read_and_each_is_judged(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'authz.sqlite'}")
    await migration.db_sync(db.url)
    try:
        async with db.writer() as conn:
            placed = [await factories.make_instance(conn, host="h1") for _ in range(4)]
            elsewhere = await factories.make_instance(conn, host="h2")
        authz = Authorizer(db)
        h1 = authz.identify("compute.h1")

        async def relay(uuid: str) -> BaseException | None:
            payload = InstanceActionPayload.from_instance_and_fault(
                Instance(uuid=uuid, host="h1", vm_state="active")
            )
            try:
                await authz.authorize_notification(h1, "instance.create.end", "INFO", payload)
            except exception.Forbidden as exc:
                return exc
            return None

        uuids = [i["uuid"] for i in placed] + [elsewhere["uuid"]]
        outcomes = await asyncio.gather(*(relay(u) for u in uuids))
        assert outcomes[:4] == [None] * 4
        assert isinstance(outcomes[4], exception.Forbidden)
        assert "is not on this host" in str(outcomes[4])
        # Asked together: one read answered all five.
        assert (authz._placements.batches, authz._placements.keys) == (1, 5)
    finally:
        await db.dispose()


def _relayed(method: str) -> float:
    """Calls the conductors of this process served of ``method`` so far."""
    labels = {"topic": "conductor", "method": method, "kind": "call", "outcome": "ok"}
    return REGISTRY.get_sample_value("nubes_rpc_server_seconds_count", labels) or 0.0


async def _notes_of(cloud: Cloud) -> tuple[Any, asyncio.Queue[dict[str, Any]]]:
    sink = get_transport(cloud.url_for("api.sink"), identity="api.sink")
    seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def note(msg: IncomingMessage) -> None:
        await seen.put(json.loads(msg.body))

    await sink.connect()
    await sink.listen("notifications", "sink", note)
    return sink, seen


@pytest.mark.parametrize("cap", [None, "1.5"])
async def test_a_hosts_notifications_go_in_its_order_in_one_batch(
    tmp_path: Path, cap: str | None
) -> None:
    """Queued together, a host's notifications cost one call (conductor 1.6),
    or one each to a conductor capped below 1.6; in the host's order both ways."""
    cloud = await Cloud.start(f"sqlite:///{tmp_path / 'batch.sqlite'}")
    sink, seen = await _notes_of(cloud)
    try:
        async with cloud.db.writer() as conn:
            await factories.make_service(conn, host="h1", binary="compute")
            inst = await factories.make_instance(conn, host="h1", vm_state="active")
        host = await cloud.host("h1")
        host.conductor.client.set_version_cap(cap)
        notifier = Notifier(host.transport, "compute:h1", relay=host.conductor)
        payload = InstanceActionPayload.from_instance_and_fault(
            Instance(uuid=inst["uuid"], host="h1", vm_state="active")
        )
        events = ["instance.create.start", "instance.update", "instance.create.end"]
        contexts = [RequestContext() for _ in events]
        batches, singles = _relayed("relay_notifications"), _relayed("relay_notification")

        async def send() -> None:
            for ctxt, event in zip(contexts, events, strict=True):
                await notifier.info(ctxt, event, payload)
            await notifier.flush()

        await host.run(send)
        got = [await asyncio.wait_for(seen.get(), 30) for _ in events]
        assert [(n["event_type"], n["request_id"]) for n in got] == [
            (event, ctxt.request_id) for ctxt, event in zip(contexts, events, strict=True)
        ]
        assert {n["publisher_id"] for n in got} == {"compute:h1"}
        if cap is None:
            assert (
                _relayed("relay_notifications") - batches,
                _relayed("relay_notification") - singles,
            ) == (1, 0)
        else:
            assert (
                _relayed("relay_notifications") - batches,
                _relayed("relay_notification") - singles,
            ) == (0, 3)
    finally:
        await sink.close()
        await cloud.stop()


async def test_a_refused_notification_of_a_batch_leaves_the_others_published(
    tmp_path: Path,
) -> None:
    cloud = await Cloud.start(f"sqlite:///{tmp_path / 'refused.sqlite'}")
    sink, seen = await _notes_of(cloud)
    try:
        async with cloud.db.writer() as conn:
            await factories.make_service(conn, host="h1", binary="compute")
            mine = await factories.make_instance(conn, host="h1", vm_state="active")
            theirs = await factories.make_instance(conn, host="h2", vm_state="active")
        host = await cloud.host("h1")

        def note(uuid: str, host_name: str) -> RelayedNotification:
            payload = InstanceActionPayload.from_instance_and_fault(
                Instance(uuid=uuid, host=host_name, vm_state="active")
            )
            return RelayedNotification(
                event_type="instance.update", priority="INFO", request_id=None, payload=payload
            )

        batch = NotificationBatch(
            notifications=[note(theirs["uuid"], "h2"), note(mine["uuid"], "h1")]
        )
        refused = await host.run(host.conductor.relay_notifications, batch)
        assert len(refused) == 1 and refused[0].startswith("notification 0:")
        assert "is not on this host" in refused[0]
        published = await asyncio.wait_for(seen.get(), 30)
        assert published["payload"]["nubes_object.data"]["uuid"] == mine["uuid"]
        assert seen.empty()
    finally:
        await sink.close()
        await cloud.stop()


async def test_notifications_on_a_step_report_are_judged_as_a_batch_is(tmp_path: Path) -> None:
    """Conductor 1.7: the batch a host's step report carries is published as
    relay_notifications publishes one (as the verified host, only about its
    own instances), before the report is handled; a refused one is dropped,
    never the others."""
    cloud = await Cloud.start(f"sqlite:///{tmp_path / 'report.sqlite'}")
    sink = get_transport(cloud.url_for("api.sink"), identity="api.sink")
    try:
        async with cloud.db.writer() as conn:
            await factories.make_service(conn, host="h1", binary="compute")
            own = await factories.make_instance(conn, host="h1", vm_state="active")
            other = await factories.make_instance(conn, host="h2", vm_state="active")
        seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def note(msg: IncomingMessage) -> None:
            await seen.put(json.loads(msg.body))

        await sink.connect()
        await sink.listen("notifications", "sink", note)
        host = await cloud.host("h1")

        def relayed(uuid: str, event_type: str) -> RelayedNotification:
            payload = InstanceActionPayload.from_instance_and_fault(
                Instance(uuid=uuid, host="h1", vm_state="active")
            )
            return RelayedNotification(
                event_type=event_type, priority="INFO", request_id="req-1", payload=payload
            )

        batch = NotificationBatch(
            notifications=[
                relayed(other["uuid"], "instance.create.start"),  # not its own
                relayed(own["uuid"], "instance.create.end"),
            ]
        )
        assert host.conductor.reports_notifications()
        # A report of no task this host was asked for: refused, logged, but
        # its notifications were judged and published first.
        await host.conductor.step_finished(
            RequestContext(), 999, "spawn", 1, True, notifications=batch
        )
        body = await asyncio.wait_for(seen.get(), 30)
        assert (body["event_type"], body["publisher_id"]) == ("instance.create.end", "compute:h1")
        assert body["payload"]["nubes_object.data"]["uuid"] == own["uuid"]
        assert body["request_id"] == "req-1"
        # Nothing else of the first batch went out: the next one seen is this.
        marker = NotificationBatch(notifications=[relayed(own["uuid"], "instance.update")])
        await host.conductor.step_finished(
            RequestContext(), 999, "spawn", 1, True, notifications=marker
        )
        body = await asyncio.wait_for(seen.get(), 30)
        assert body["event_type"] == "instance.update"
        assert seen.empty()
    finally:
        await sink.close()
        await cloud.stop()
