"""The conductor's RPC endpoint: the object proxy for hosts without a database.

Every call is authorised for the calling host first (:mod:`.authz`), then the
remotable method runs here against the database, and what goes back is
encoded at the object versions the caller runs, so an older compute host is
never sent a field it does not know.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from nubes import exception, hostnet
from nubes.access import COMPUTE_BINARY, Caller
from nubes.conductor import authz, consoles, dataplane, rpcapi
from nubes.conductor.authz import Authorizer, CallerKind, NodeLimits
from nubes.conductor.tasks import live_requests, reports
from nubes.context import RequestContext
from nubes.db.engine import Database
from nubes.injected_files import InjectedFiles
from nubes.notifications.notifier import Notifier, Priority
from nubes.notifications.relay import NotificationBatch
from nubes.objects import backend, codec, indirection
from nubes.objects.base import VersionedObject
from nubes.objects.registry import REGISTRY
from nubes.step_end import EventEnd

if TYPE_CHECKING:
    from nubes.conductor.tasks.engine import TaskEngine

LOG = logging.getLogger(__name__)

#: Lease a report hands over when this process runs no task engine (unused then).
_NO_ENGINE_LEASE = 0.0


def _at_versions(value: Any, object_versions: dict[str, str]) -> Any:
    """``value`` with every object in it backported to ``object_versions``."""
    if all(REGISTRY.runs(name, version) for name, version in object_versions.items()):
        return value  # the common case: the caller runs what we run
    return msgspec.to_builtins(
        value,
        builtin_types=(datetime.datetime,),
        enc_hook=codec.versioned_enc_hook(object_versions),
    )


def _versions(object_versions: Any) -> dict[str, str]:
    if type(object_versions) is not dict or not all(
        type(k) is str and type(v) is str for k, v in object_versions.items()
    ):
        raise exception.InvalidArguments(
            method="object_versions", reason="must map object names to versions"
        )
    return object_versions


class ConductorManager:
    #: Who may call which method (checked by the RPC server, deny by default).
    RPC_METHOD_RULES = authz.METHOD_RULES
    RPC_API_VERSION = rpcapi.VERSION
    RPC_EXPECTED_ERRORS = rpcapi.EXPECTED_ERRORS

    def __init__(
        self,
        db: Database,
        controller_identities: Iterable[str] = (),
        engine: TaskEngine | None = None,
        node_limits: NodeLimits | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.db = db
        self.authz = Authorizer(db, controller_identities, node_limits)
        #: The task engine of this process (None: reports are recorded for
        #: whichever conductor claims the task next).
        self.engine = engine
        #: Publishes the compute hosts' notifications (relay_notification);
        #: by default the task engine's. None: notifications are off here.
        self.notifier = notifier if notifier is not None or engine is None else engine.notifier

    async def object_action(
        self,
        context: RequestContext,
        objinst: VersionedObject,
        objmethod: str,
        args: list[Any],
        kwargs: dict[str, Any],
        object_versions: dict[str, str],
    ) -> Any:
        caller = self.authz.identify(context.caller)
        versions = _versions(object_versions)
        objname = objinst.obj_name()
        scope = await self.authz.authorize(caller, objname, objmethod, objinst, args, kwargs)
        imposed = self.authz.operator_values(caller, objname, objmethod)
        for name, value in imposed.items():
            setattr(objinst, name, value)
        token = backend.placement_scope.set(scope)
        try:
            updates, result = await indirection.serve_object_action(
                context, objinst, objmethod, args, kwargs, versions.get(objname)
            )
            # The caller did not send these: it learns them like any update.
            updates.update({name: getattr(objinst, name) for name in imposed})
        except (exception.InstanceNotOnHost, exception.InstanceNotFound):
            if scope is None:
                raise
            # One answer for both, as for reads: a host cannot probe uuids.
            self.authz.refuse(caller, objname, objmethod, objinst, "instance is not on this host")
        finally:
            backend.placement_scope.reset(token)
        return _at_versions([updates, result], versions)

    async def object_class_action_versions(
        self,
        context: RequestContext,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        caller = self.authz.identify(context.caller)
        versions = _versions(object_versions)
        scope = await self.authz.authorize(caller, objname, objmethod, None, args, kwargs)
        token = backend.placement_scope.set(scope)
        try:
            result = await indirection.serve_object_class_action(
                context, objname, objmethod, args, kwargs
            )
        except (exception.InstanceNotOnHost, exception.InstanceNotFound):
            if scope is None:
                raise
            # One answer for both, as for reads: a host cannot probe uuids.
            self.authz.refuse(caller, objname, objmethod, None, "instance is not on this host")
        finally:
            backend.placement_scope.reset(token)
        return _at_versions(result, versions)

    async def object_backport_versions(
        self, context: RequestContext, primitive: bytes, object_versions: dict[str, str]
    ) -> bytes:
        # Any known service may ask: it only gets back, older, what it sent.
        self.authz.identify(context.caller)
        older = indirection.backport_primitive(
            codec.decode_builtins(primitive), _versions(object_versions)
        )
        return codec.encode(older)

    # -- tasks -------------------------------------------------------------------------

    async def kick(self, context: RequestContext, task_ids: list[Any] | None = None) -> None:
        caller = self.authz.identify(context.caller)
        if caller.kind is not CallerKind.CONTROLLER:
            self.authz.refuse(
                caller, "ConductorTask", "kick", None, "the task API is for controllers"
            )
        ids = [i for i in task_ids or [] if type(i) is int]
        if self.engine is not None:
            self.engine.kick(ids)

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
        caller = self.authz.identify(context.caller)
        self.authz.check_report_size(caller, error, details, event, injected_files)
        if notifications is not None:
            # Published before the report is recorded (1.7), as the host's
            # flush before it did: whoever sees the step's end was sent them.
            # A notification is a report, never the step's: refused ones are
            # logged and the report is recorded all the same.
            try:
                refused = await self._publish(context, caller, notifications)
            except (exception.Forbidden, exception.Invalid) as exc:
                refused = [f"the batch: {exc}"]
            for reason in refused:
                LOG.warning("Refused a notification of %s: %s", caller.host, reason)
        engine = self.engine if self.engine is not None and self.engine.accepting else None
        row = await reports.record(
            self.db,
            self.authz,
            caller,
            task_id=task_id,
            step=step,
            attempt=attempt,
            ok=ok,
            error=error,
            details=details,
            event=event,
            injected_files=injected_files,
            owner=engine.owner if engine is not None else None,
            lease_seconds=engine.lease_seconds if engine is not None else _NO_ENGINE_LEASE,
        )
        if row is not None and engine is not None:
            engine.adopt(row)

    # -- notifications (1.2) -----------------------------------------------------------

    async def relay_notification(
        self,
        context: RequestContext,
        event_type: Any,
        priority: Any,
        payload: Any,
    ) -> None:
        """Publish a compute host's notification for it (its broker user may not)."""
        caller = self.authz.identify(context.caller)
        await self.authz.authorize_notification(caller, event_type, priority, payload)
        if self.notifier is None:
            LOG.debug("Notifications are off here; dropped %s from %s", event_type, caller.identity)
            return
        await self.notifier.notify(
            context,
            event_type,
            payload,
            Priority(priority),
            publisher_id=f"{COMPUTE_BINARY}:{caller.host}",
        )

    async def relay_notifications(
        self, context: RequestContext, batch: NotificationBatch
    ) -> list[str]:
        """Publish a batch of a compute host's notifications for it, in order (1.6).

        Each is judged on its own (a host's instance may have moved away
        since it queued one); the answer says why each refused one was.
        """
        caller = self.authz.identify(context.caller)
        return await self._publish(context, caller, batch)

    async def _publish(
        self, context: RequestContext, caller: Caller, batch: NotificationBatch
    ) -> list[str]:
        """Publish the host's notifications the rules allow, in order; why
        each refused one was (a batch as a whole may be refused: raised)."""
        verdicts = await self.authz.authorize_notifications(caller, batch)
        refused = []
        for index, (note, verdict) in enumerate(zip(batch.notifications, verdicts, strict=True)):
            if verdict is not None:
                refused.append(f"notification {index}: {verdict}")
            elif self.notifier is not None:
                # One after the other: consumers see the host's order.
                await self.notifier.notify(
                    dataclasses.replace(context, request_id=note.request_id or context.request_id),
                    note.event_type,
                    note.payload,
                    Priority(note.priority),
                    publisher_id=f"{COMPUTE_BINARY}:{caller.host}",
                )
        return refused

    # -- a host's network data plane (1.3) ---------------------------------------------

    async def get_host_network(self, context: RequestContext, host: Any) -> Any:
        caller = self.authz.identify(context.caller)
        view = await dataplane.host_network_view(self.db, self.authz, caller, host)
        return hostnet.to_wire(view)

    async def get_network_peers(self, context: RequestContext, network_ids: Any) -> Any:
        caller = self.authz.identify(context.caller)
        peers = await dataplane.network_peers(self.db, self.authz, caller, network_ids)
        return hostnet.to_wire(peers)

    # -- guest consoles (1.4) -------------------------------------------------------------

    async def open_console(self, context: RequestContext, token: str) -> dict[str, Any]:
        caller = self.authz.identify(context.caller)
        return await consoles.open_console(self.db, self.authz, caller, token)

    # -- live migration requests (1.1) ------------------------------------------------

    async def live_migration_abort(
        self, context: RequestContext, instance_uuid: str, migration_id: int
    ) -> None:
        await self._live_migration_request(
            context, live_requests.ABORT, instance_uuid, migration_id
        )

    async def live_migration_force_complete(
        self, context: RequestContext, instance_uuid: str, migration_id: int
    ) -> None:
        await self._live_migration_request(
            context, live_requests.FORCE_COMPLETE, instance_uuid, migration_id
        )

    async def _live_migration_request(
        self, context: RequestContext, method: str, instance_uuid: str, migration_id: int
    ) -> None:
        caller = self.authz.identify(context.caller)
        if caller.kind is not CallerKind.CONTROLLER:
            self.authz.refuse(caller, "Migration", method, None, "the task API is for controllers")
        compute = self.engine.compute if self.engine is not None else None
        if compute is None:
            LOG.warning(
                "%s of migration %s: this conductor cannot reach hosts", method, migration_id
            )
            return
        await live_requests.relay_request(
            self.db, compute, context, method, instance_uuid, migration_id
        )
