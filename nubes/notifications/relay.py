"""A compute host's notifications on their way to the conductor, in order and in batches.

A host's broker user may not publish notifications (docs/security.md): the
conductor publishes them for it (:mod:`nubes.notifications.notifier`). One
call per notification made every build pay three round trips to a conductor
(``instance.create.start``, ``instance.update``, ``instance.create.end``),
each checked against the database there. So a host queues its notifications
and one sender hands a conductor everything queued at once
(``relay_notifications``, conductor RPC 1.6).

Since conductor RPC 1.7 most of them need no call of their own: a
notification waits in the queue up to :data:`HOLD_SECONDS`, and a step report
sent meanwhile takes everything queued (:meth:`RelayQueue.take`) and carries
it (``step_finished``'s ``notifications``), which the conductor publishes
before it records the report. So a build's start, update and end ride on its
report when the build is quick, and what no report follows (a long spawn's
start, a periodic task's) goes by itself when its hold is over.

Order is the host's: one batch in flight at a time (a report's included: it
takes nothing before the batch in flight is answered), and the conductor
publishes a batch's notifications one after the other. A step's notifications
are published before its report is recorded (carried by it, or flushed before
it to a conductor capped below 1.7), so a consumer that sees a server ACTIVE
has already been sent the build's end, as when each notification was awaited.

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
#: How long a queued notification waits for a step report to carry it
#: before it is sent by itself (seconds). Long enough for a quick step (a
#: fake or a small guest's spawn, whose one call may wait on a busy
#: conductor) to end, short enough that a long one's start is seen while it
#: runs; a notification is a report, and consumers read them afterwards.
HOLD_SECONDS = 2.0


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
    """A host's notifications, sent to its relay by one sender in batches
    after a hold, or taken by a step report meanwhile."""

    def __init__(self, relay: NotificationRelay, hold: float | None = None) -> None:
        self.relay = relay
        self.hold = HOLD_SECONDS if hold is None else hold
        self._queued: list[tuple[RequestContext | None, RelayedNotification]] = []
        self._sender: asyncio.Task[None] | None = None
        #: Notifications put so far, and of them handled (sent, dropped or taken).
        self._put = 0
        self._handled = 0
        #: A batch is with the relay now.
        self._sending = False
        self._progress = asyncio.Condition()
        #: Set by a flush: the sender ends its hold at once.
        self._hurry = asyncio.Event()

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
        if self._handled < target:
            self._hurry.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._handled >= target)

    async def take(self) -> NotificationBatch | None:
        """Everything queued and not sent yet, for the caller to deliver (a
        step report that carries it); None when nothing is.

        The batch in flight, if any, is answered first: what is taken is
        newer, so the host's order holds. More than one batch's worth is
        sent the usual way instead (flushed) and nothing is taken.
        """
        async with self._progress:
            await self._progress.wait_for(lambda: not self._sending)
            taken = self._queued
            if not taken or len(taken) > MAX_BATCH:
                taken = []
            else:
                # The caller's now: the sender, at the end of its hold, finds
                # nothing left, and flush() counts them as handled.
                self._queued = []
                self._handled += len(taken)
                self._progress.notify_all()
        if not taken:
            await self.flush()
            return None
        return NotificationBatch(notifications=[note for _, note in taken])

    async def _send_queued(self) -> None:
        # The hold: a step report may take the queue meanwhile.
        if not self._hurry.is_set():
            try:
                await asyncio.wait_for(self._hurry.wait(), self.hold)
            except TimeoutError:
                pass
        self._hurry.clear()
        while self._queued:
            batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
            self._sending = True
            try:
                await self._send(batch)
            finally:
                async with self._progress:
                    self._sending = False
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
