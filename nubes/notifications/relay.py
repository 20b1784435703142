"""A compute host's notifications on their way to the conductor, in order and in batches.

A host's broker user may not publish notifications (docs/security.md): the
conductor publishes them for it (:mod:`nubes.notifications.notifier`). One
call per notification made every build pay three round trips to a conductor
(``instance.create.start``, ``instance.update``, ``instance.create.end``),
each checked against the database there. So a host queues its notifications
and one sender hands a conductor everything queued at once
(``relay_notifications``, conductor RPC 1.6): a build's start goes while the
build goes on, and its update and end go together at the step's report.

Order is the host's: one batch in flight at a time, and the conductor
publishes a batch's notifications one after the other. A step's notifications
are published before its report is sent (the step runner flushes first), so a
consumer that sees a server ACTIVE has already been sent the build's end, as
when each notification was awaited.

A notification is a report, not part of the operation: a batch the bus or the
conductor refuses is logged and dropped, never raised into the operation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from nubes.objects.base import VersionedObject

if TYPE_CHECKING:
    from nubes.context import RequestContext

LOG = logging.getLogger(__name__)

#: Notifications one batch carries at most (the conductor refuses more).
MAX_BATCH = 64


class RelayedNotification(msgspec.Struct, frozen=True, kw_only=True):
    """One notification a host asks a conductor to publish for it."""

    event_type: str
    priority: str
    #: The request the notification reports on (its ``request_id``).
    request_id: str | None
    #: The payload object (a VersionedObject; the RPC serializer carries it).
    payload: Any


class NotificationBatch(msgspec.Struct, frozen=True, kw_only=True):
    """What ``relay_notifications`` carries: a host's notifications, oldest first."""

    notifications: list[RelayedNotification]


class NotificationRelay(Protocol):
    """Who publishes a compute host's notifications for it (``ConductorAPI``)."""

    async def relay_notification(
        self,
        context: RequestContext | None,
        event_type: str,
        priority: str,
        payload: VersionedObject,
    ) -> None: ...

    async def relay_notifications(self, batch: NotificationBatch) -> list[str]: ...

    def relays_batches(self) -> bool: ...


class RelayQueue:
    """A host's notifications, sent to its relay by one sender in batches."""

    def __init__(self, relay: NotificationRelay) -> None:
        self.relay = relay
        self._queued: list[tuple[RequestContext | None, RelayedNotification]] = []
        self._sender: asyncio.Task[None] | None = None
        #: Notifications put so far, and of them handled (sent or dropped).
        self._put = 0
        self._handled = 0
        self._progress = asyncio.Condition()

    def put(
        self,
        ctxt: RequestContext | None,
        event_type: str,
        priority: str,
        payload: VersionedObject,
    ) -> None:
        """Queue one notification; the sender takes it with whatever else is queued."""
        request_id = None if ctxt is None else ctxt.request_id
        self._queued.append(
            (ctxt, RelayedNotification(
                event_type=event_type, priority=priority, request_id=request_id, payload=payload
            ))
        )  # fmt: skip
        self._put += 1
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())

    async def flush(self) -> None:
        """Return when every notification put so far has been sent (or dropped)."""
        target = self._put
        async with self._progress:
            await self._progress.wait_for(lambda: self._handled >= target)

    async def _send_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
            try:
                await self._send(batch)
            finally:
                async with self._progress:
                    self._handled += len(batch)
                    self._progress.notify_all()

    async def _send(self, batch: list[tuple[RequestContext | None, RelayedNotification]]) -> None:
        if not self.relay.relays_batches():
            # A conductor before 1.6 (during an upgrade): one call each, in order.
            for ctxt, note in batch:
                try:
                    await self.relay.relay_notification(
                        ctxt, note.event_type, note.priority, note.payload
                    )
                except Exception as exc:
                    LOG.warning("Could not send %s notification: %s", note.event_type, exc)
            return
        notes = [note for _, note in batch]
        try:
            refused = await self.relay.relay_notifications(NotificationBatch(notifications=notes))
        except Exception as exc:
            kinds = ", ".join(sorted({note.event_type for note in notes}))
            LOG.warning("Could not send %d notifications (%s): %s", len(notes), kinds, exc)
            return
        for reason in refused:
            LOG.warning("The conductor refused a notification: %s", reason)
