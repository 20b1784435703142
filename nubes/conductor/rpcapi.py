"""Client side of the conductor RPC API.

Compute hosts install :class:`ConductorAPI` as their objects' indirection API:
every remotable object method they call runs in a conductor, which checks it
against the calling host's rights first (see ``docs/authorization.md``).

The task side: the API tells conductors about new tasks with :meth:`kick`
(controllers only), and compute hosts report the outcome of each task step
they were asked to do with :meth:`step_finished` (authorised against the
task row: only what the task awaits from that host). The API asks a
conductor to abort or force-complete a running live migration with
:meth:`live_migration_abort` and :meth:`live_migration_force_complete`
(controllers only); the conductor relays them to the migration's source.

Version history:

    1.0 - object_action, object_class_action_versions, object_backport_versions,
          kick, step_finished (both added before 1.0 was released)
    1.1 - live_migration_abort, live_migration_force_complete (controllers only)
    1.2 - relay_notification (compute hosts: the conductor publishes their
          notifications, which their broker users may not)
    1.3 - get_host_network, get_network_peers (a host's network data plane,
          need-to-know: only its own ports, only networks it has ports on)
    1.4 - open_console (compute hosts: spend a console token for a guest
          placed on the calling host)
    1.5 - step_finished takes ``event`` (an EventEnd): the end of the action
          event the step started, written with the report; a host whose
          conductors are capped below 1.5 finishes the event itself first
    1.6 - relay_notifications (compute hosts: a batch of notifications in one
          call, published in order; a host whose conductors are capped below
          1.6 relays them one call each)
    1.7 - step_finished takes ``notifications`` (a NotificationBatch): the
          host's notifications queued and not sent yet, which the conductor
          publishes (judged as relay_notifications judges them) before it
          records the report; a host whose conductors are capped below 1.7
          sends them first (relay_notifications) and reports without
    1.8 - step_finished takes ``injected_files`` (an InjectedFiles): the
          personality files a live migration's source read back from its
          guest's config drive, which the conductor gives the destination
          (bounded on their own, not as ``details``); a host whose
          conductors are capped below 1.8 sends none, and the destination's
          drive is built without them, as before
"""

from __future__ import annotations

from typing import Any

from nubes import exception, hostnet
from nubes.context import RequestContext
from nubes.injected_files import InjectedFiles
from nubes.notifications.relay import NotificationBatch
from nubes.objects import codec
from nubes.objects.base import VersionedObject
from nubes.objects.serializer import ObjectSerializer
from nubes.rpc.client import RPCClient
from nubes.rpc.transport import DEFAULT_CALL_TIMEOUT, Target, Transport
from nubes.step_end import EventEnd

#: The RPC topic conductors listen on.
TOPIC = "conductor"
#: The newest version of the API this client knows.
VERSION = "1.8"
#: The first version whose step_finished takes the step's action event.
STEP_EVENT_VERSION = "1.5"
#: The first version that takes a batch of notifications.
RELAY_BATCH_VERSION = "1.6"
#: The first version whose step_finished carries the host's notifications.
REPORT_NOTIFICATIONS_VERSION = "1.7"
#: The first version whose step_finished carries a guest's personality files.
REPORT_INJECTED_FILES_VERSION = "1.8"

#: Errors a conductor raises on purpose; callers get them as their own class.
EXPECTED_ERRORS: tuple[type[exception.NubesError], ...] = (
    exception.NotFound,
    exception.Conflict,
    exception.Invalid,
    exception.Forbidden,
    exception.ObjectActionError,
    exception.InstanceUpdateConflict,
    exception.DatabaseAccessForbidden,
)


class ConductorAPI:
    """Talks to the conductors; implements :class:`~nubes.objects.base.IndirectionAPI`."""

    def __init__(
        self,
        transport: Transport,
        *,
        version_cap: str | None = None,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        topic: str = TOPIC,
    ) -> None:
        self.client = RPCClient(
            transport,
            Target(topic),
            version="1.0",
            version_cap=version_cap,
            serializer=ObjectSerializer(),
            timeout=timeout,
            expected_errors=EXPECTED_ERRORS,
        )

    async def object_action(
        self,
        context: RequestContext,
        objinst: VersionedObject,
        objmethod: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[dict[str, Any], Any]:
        reply = await self.client.call(
            context,
            "object_action",
            objinst=objinst,
            objmethod=objmethod,
            args=list(args),
            kwargs=kwargs,
            # So the conductor answers in the versions this host runs.
            object_versions=objinst.obj_tree_versions(),
        )
        updates, result = reply
        return updates, result

    async def object_class_action_versions(
        self,
        context: RequestContext,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        return await self.client.call(
            context,
            "object_class_action_versions",
            objname=objname,
            objmethod=objmethod,
            object_versions=object_versions,
            args=list(args),
            kwargs=kwargs,
        )

    async def object_backport_versions(
        self,
        context: RequestContext,
        primitive: dict[str, Any],
        object_versions: dict[str, str],
    ) -> dict[str, Any]:
        # The primitive travels as msgpack bytes so that neither side's
        # serializer rebuilds it: this process could not read it as an
        # object, which is why it asks.
        reply = await self.client.call(
            context,
            "object_backport_versions",
            primitive=codec.encode(primitive),
            object_versions=object_versions,
        )
        older = codec.decode_builtins(reply)
        if not isinstance(older, dict):
            raise exception.MalformedObject(reason="backport reply is not an object primitive")
        return older

    async def kick(
        self, context: RequestContext, task_ids: list[int] | None = None, *, fanout: bool = False
    ) -> None:
        """Tell a conductor to claim these new tasks now (any conductor; controllers only).

        ``fanout``: every conductor running (a stopping one handing its tasks over).
        """
        client = self.client.prepare(fanout=True) if fanout else self.client
        await client.cast(context, "kick", task_ids=list(task_ids or []))

    async def step_finished(
        self,
        context: RequestContext,
        task_id: int,
        step: str,
        attempt: int,
        ok: bool,
        error: str | None = None,
        details: dict[str, Any] | None = None,
        event: EventEnd | None = None,
        notifications: NotificationBatch | None = None,
        injected_files: InjectedFiles | None = None,
    ) -> None:
        """Report the outcome of the task step this host was asked to do (a cast).

        ``step`` and ``attempt`` are the ones the conductor's message carried;
        a report of anything the task does not await from this host is refused.
        ``event``: the end of the action event the step started (1.5; only
        sent when :meth:`reports_events`), written with the report.
        ``notifications``: the host's queued notifications (1.7; only sent
        when :meth:`reports_notifications`), published before the report is
        recorded. ``injected_files``: the guest's personality files (1.8;
        only sent when :meth:`reports_injected_files`), recorded with the
        outcome for the task's next step.
        """
        fields: dict[str, Any] = {
            "task_id": task_id,
            "step": step,
            "attempt": attempt,
            "ok": ok,
            "error": error,
            "details": details,
        }
        client = self.client
        if event is not None:
            client = client.prepare(version=STEP_EVENT_VERSION)
            fields["event"] = event
        if notifications is not None:
            client = client.prepare(version=REPORT_NOTIFICATIONS_VERSION)
            fields["notifications"] = notifications
        if injected_files:
            client = client.prepare(version=REPORT_INJECTED_FILES_VERSION)
            fields["injected_files"] = injected_files
        await client.cast(context, "step_finished", **fields)

    def reports_injected_files(self) -> bool:
        """Whether the conductors take a guest's personality files with a
        step's report (1.8); during an upgrade an older one may not, and the
        host then sends none."""
        return self.client.can_send_version(REPORT_INJECTED_FILES_VERSION)

    def reports_notifications(self) -> bool:
        """Whether the conductors take a host's notifications with a step's
        report (1.7); during an upgrade an older one may not, and the host
        then sends them first, on their own."""
        return self.client.can_send_version(REPORT_NOTIFICATIONS_VERSION)

    def reports_events(self) -> bool:
        """Whether the conductors take a step's action event with its report
        (1.5); during an upgrade an older one may not, and the host then
        finishes the event itself."""
        return self.client.can_send_version(STEP_EVENT_VERSION)

    async def relay_notification(
        self,
        context: RequestContext | None,
        event_type: str,
        priority: str,
        payload: VersionedObject,
    ) -> None:
        """Have a conductor publish this host's notification (1.2).

        The conductor publishes it as ``compute:<caller's host>`` if the
        payload concerns the caller's own instance or service; otherwise it
        refuses it. A call, not a cast: the conductor checks each one against
        the database, so casts handled side by side could publish a host's
        ``.end`` before its ``.start``; waiting for each keeps the host's order.
        See :mod:`nubes.notifications.notifier`.
        """
        await self.client.prepare(version="1.2").call(
            context or RequestContext(),
            "relay_notification",
            event_type=event_type,
            priority=priority,
            payload=payload,
        )

    async def relay_notifications(self, batch: NotificationBatch) -> list[str]:
        """Have a conductor publish a batch of this host's notifications, in order (1.6).

        Each is judged as :meth:`relay_notification` judges one; the answer
        says why each refused one was (the others were published). One
        batch in flight at a time keeps the host's order
        (:mod:`nubes.notifications.relay`).
        """
        refused = await self.client.prepare(version=RELAY_BATCH_VERSION).call(
            RequestContext(), "relay_notifications", batch=batch
        )
        return [str(reason) for reason in refused or ()]

    def relays_batches(self) -> bool:
        """Whether the conductors take batches of notifications (1.6)."""
        return self.client.can_send_version(RELAY_BATCH_VERSION)

    def serves_host_network(self) -> bool:
        """Whether the conductors run 1.3 (during an upgrade an older one may not)."""
        return self.client.can_send_version("1.3")

    async def get_host_network(self, context: RequestContext, host: str) -> hostnet.HostNetwork:
        """The ports bound to ``host`` (the caller's own), their networks,
        subnets and security groups' rules (1.3; see ``nubes/conductor/dataplane.py``)."""
        reply = await self.client.prepare(version="1.3").call(
            context, "get_host_network", host=host
        )
        return hostnet.host_network_from_wire(reply)

    async def get_network_peers(
        self, context: RequestContext, network_ids: list[str]
    ) -> hostnet.NetworkPeers:
        """The other hosts' tunnel addresses on networks the caller has ports on (1.3)."""
        reply = await self.client.prepare(version="1.3").call(
            context, "get_network_peers", network_ids=list(network_ids)
        )
        return hostnet.network_peers_from_wire(reply)

    async def live_migration_abort(
        self, context: RequestContext, instance_uuid: str, migration_id: int
    ) -> None:
        """Abort a live migration the API set ``cancelling`` (a cast; 1.1).

        If its memory copy has begun, the conductor asks the source to stop
        it; otherwise the migration's task cancels it at its next step.
        """
        await self.client.prepare(version="1.1").cast(
            context, "live_migration_abort", instance_uuid=instance_uuid, migration_id=migration_id
        )

    async def live_migration_force_complete(
        self, context: RequestContext, instance_uuid: str, migration_id: int
    ) -> None:
        """Make a running live migration finish now (a cast; 1.1): relayed to its source."""
        await self.client.prepare(version="1.1").cast(
            context,
            "live_migration_force_complete",
            instance_uuid=instance_uuid,
            migration_id=migration_id,
        )

    async def open_console(self, context: RequestContext, token: str) -> dict[str, Any]:
        """Spend the console token ``token`` for one of the calling host's own
        guests (1.4): its instance uuid, console type and access path.
        ConsoleTokenNotFound when it is unknown, expired or spent; Forbidden
        when it is another host's."""
        reply = await self.client.prepare(version="1.4").call(context, "open_console", token=token)
        return dict(reply)
