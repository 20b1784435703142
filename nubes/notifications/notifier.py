"""Publishing notifications as JSON on the bus.

A notification is one JSON document (UTF-8), so a plain AMQP consumer reads
it without nubes's codecs::

    {"message_id": "...", "publisher_id": "compute:host-1",
     "event_type": "instance.create.end", "priority": "INFO",
     "timestamp": "2025-01-01T12:00:00.123456+00:00", "request_id": "req-...",
     "payload": {"nubes_object.name": "InstanceActionPayload",
                 "nubes_object.version": "1.0", "nubes_object.data": {...}}}

It is cast to ``Target(<topic>)``: on rabbit:// that is a persistent message
in the durable queue of that name (``notifications`` by default), kept until
someone reads it; on memory:// it waits on the in-process bus. Publishing
never fails the operation it reports on: a bus error is logged and dropped.

Only controllers publish on the notifications topic (a compute host's broker
user may not: docs/security.md). A compute host's :class:`Notifier` has a
*relay*, the conductor: it sends each notification's event type, priority
and payload object to it (queued and batched, in order:
:mod:`nubes.notifications.relay`), and the conductor checks the payload
concerns the caller's own instances or service and publishes it under the
host's ``publisher_id``. Consumers thus see only messages a controller sent.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import uuid
from typing import TYPE_CHECKING

import msgspec

from nubes.notifications.relay import NotificationBatch, NotificationRelay, RelayQueue
from nubes.objects.base import VersionedObject
from nubes.rpc.transport import Target, Transport

if TYPE_CHECKING:
    from nubes.context import RequestContext

LOG = logging.getLogger(__name__)

DEFAULT_TOPIC = "notifications"
CONTENT_TYPE = "application/json"

_ENCODER = msgspec.json.Encoder()


class Priority(enum.StrEnum):
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


class Notifier:
    """Sends notifications as ``publisher_id`` (``<binary>:<host>``, Nova's style).

    ``enabled=False`` makes every method a no-op (``[notifications] driver = noop``).
    With a ``relay``, notifications are queued for it instead of sent to the
    topic; :meth:`flush` waits until the queued ones went, :meth:`take`
    hands them to a step report instead.
    """

    def __init__(
        self,
        transport: Transport,
        publisher_id: str,
        *,
        topic: str = DEFAULT_TOPIC,
        enabled: bool = True,
        relay: NotificationRelay | None = None,
    ) -> None:
        self.transport = transport
        self.publisher_id = publisher_id
        self.enabled = enabled
        self.relay = relay
        self._relayed = RelayQueue(relay) if relay is not None else None
        self._target = Target(topic)
        self._label = f"{topic} notification"

    def encode(
        self,
        ctxt: RequestContext | None,
        event_type: str,
        payload: VersionedObject,
        priority: Priority = Priority.INFO,
        publisher_id: str | None = None,
    ) -> bytes:
        """The JSON body of one notification (from ``publisher_id``, default this notifier's)."""
        payload.obj_reset_changes(recursive=True)
        body = {
            "message_id": str(uuid.uuid4()),
            "publisher_id": publisher_id or self.publisher_id,
            "event_type": event_type,
            "priority": str(priority),
            "timestamp": dt.datetime.now(dt.UTC),
            "request_id": None if ctxt is None else ctxt.request_id,
            "payload": payload.obj_to_primitive(),
        }
        return _ENCODER.encode(body)

    async def notify(
        self,
        ctxt: RequestContext | None,
        event_type: str,
        payload: VersionedObject,
        priority: Priority = Priority.INFO,
        *,
        publisher_id: str | None = None,
    ) -> None:
        """Publish one notification (``publisher_id``: a relayed host's, for the conductor)."""
        if not self.enabled:
            return
        try:
            if self._relayed is not None:
                self._relayed.put(ctxt, event_type, str(priority), payload)
                return
            body = self.encode(ctxt, event_type, payload, priority, publisher_id)
            # Alone: consumers of notifications are plain AMQP clients.
            await self.transport.cast(self._target, body, label=self._label, alone=True)
        except Exception as exc:
            # A notification is a report, not part of the operation.
            LOG.warning("Could not send %s notification: %s", event_type, exc)

    async def flush(self) -> None:
        """Return when every notification queued for the relay so far was sent (or dropped)."""
        if self._relayed is not None:
            await self._relayed.flush()

    async def take(self) -> NotificationBatch | None:
        """The notifications queued for the relay and not sent yet, taken for a
        step report to carry (:meth:`RelayQueue.take`); None: nothing to carry."""
        if self._relayed is None:
            return None
        return await self._relayed.take()

    async def info(
        self, ctxt: RequestContext | None, event_type: str, payload: VersionedObject
    ) -> None:
        await self.notify(ctxt, event_type, payload, Priority.INFO)

    async def error(
        self, ctxt: RequestContext | None, event_type: str, payload: VersionedObject
    ) -> None:
        await self.notify(ctxt, event_type, payload, Priority.ERROR)
