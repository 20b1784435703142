"""Notifications: JSON bodies any consumer can read, on memory:// and RabbitMQ."""

from __future__ import annotations

import json
import uuid

import aiormq

from nubes.context import RequestContext
from nubes.notifications.notifier import Notifier
from nubes.notifications.objects import InstanceActionPayload, ServiceStatusPayload
from nubes.objects.instance import Instance
from nubes.rpc.transport import get_transport

UUID = "6f1c5b8e-9b8a-4e0a-9a8e-3c0d2b1f0a11"


def _instance() -> Instance:
    return Instance(uuid=UUID, vm_state="active", host="h1", power_state=1, display_name="vm")


def test_body_is_plain_json_with_a_versioned_payload():
    notifier = Notifier(get_transport("memory://", identity="compute.h1"), "compute:h1")
    ctxt = RequestContext()
    body = notifier.encode(
        ctxt,
        "instance.create.error",
        InstanceActionPayload.from_instance_and_fault(_instance(), ValueError("boom")),
    )
    doc = json.loads(body)
    assert doc["event_type"] == "instance.create.error"
    assert doc["publisher_id"] == "compute:h1"
    assert doc["request_id"] == ctxt.request_id
    assert doc["priority"] == "INFO"
    assert doc["timestamp"] and doc["message_id"]
    payload = doc["payload"]
    assert payload["nubes_object.name"] == "InstanceActionPayload"
    assert payload["nubes_object.version"] == "1.0"
    data = payload["nubes_object.data"]
    assert data["uuid"] == UUID and data["state"] == "active" and data["power_state"] == "running"
    assert data["fault"]["nubes_object.data"]["exception_message"] == "boom"
    assert "nubes_object.changes" not in payload


async def test_disabled_notifier_sends_nothing():
    transport = get_transport("memory:///quiet", identity="compute.h1")
    await transport.connect()
    notifier = Notifier(transport, "compute:h1", enabled=False)
    await notifier.info(None, "service.update", ServiceStatusPayload(host="h1", binary="compute"))
    assert not transport.bus.queue("notifications").pending  # type: ignore[attr-defined]
    await transport.close()


async def test_a_plain_amqp_consumer_reads_them_from_rabbitmq(rabbit_url: str):
    queue = "notifications"
    connection = await aiormq.connect(rabbit_url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True)
        await channel.queue_purge(queue)
        transport = get_transport(rabbit_url)
        await transport.connect()
        try:
            notifier = Notifier(transport, "compute:h1")
            marker = str(uuid.uuid4())
            ctxt = RequestContext(request_id=f"req-{marker}")
            await notifier.info(
                ctxt,
                "instance.create.end",
                InstanceActionPayload.from_instance_and_fault(_instance()),
            )
        finally:
            await transport.close()
        message = await channel.basic_get(queue, no_ack=True)
        assert message.body
        doc = json.loads(message.body)
        assert doc["event_type"] == "instance.create.end"
        assert doc["request_id"] == f"req-{marker}"
        assert doc["payload"]["nubes_object.data"]["uuid"] == UUID
    finally:
        await connection.close()
