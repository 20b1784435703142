"""Per-host authorisation of the object calls compute hosts make.

The rule table below is the one ``docs/authorization.md`` shows; keep them
together. A compute host is identified by the identity the transport verified
(``compute.<host>``), never by anything in the message, and every check reads
the database, never the object the host sent: a compromised host can put any
value it likes in its copy of an object.

Default deny: an (object, method) pair that is not in :data:`RULES` is
refused to every compute host. Controller services are not restricted.
Every refusal raises :class:`~nubes.exception.Forbidden` and writes one line
to the ``nubes.audit`` logger.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import msgspec

from nubes import access, exception, metrics, versions
from nubes.access import COMPUTE_BINARY, Caller, CallerKind, identify
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.payloads import Awaited
from nubes.db.api import compute_nodes, instances, metadata, migrations, services, tasks
from nubes.db.engine import Database
from nubes.db.transaction_batch import TransactionBatcher
from nubes.injected_files import InjectedFiles
from nubes.notifications.objects import InstancePayload, ServiceStatusPayload
from nubes.notifications.relay import MAX_BATCH as MAX_RELAYED_BATCH
from nubes.notifications.relay import NotificationBatch, RelayedNotification
from nubes.objects.base import VersionedObject, bind_remotable
from nubes.objects.registry import REGISTRY
from nubes.objects.states import MigrationStatus, MigrationType
from nubes.step_end import EventEnd
from nubes.step_key import StepKey

AUDIT = logging.getLogger("nubes.audit")

#: Which services may call each conductor method (deny by default; checked by
#: the RPC server before the method runs). The object methods then check
#: each call against :data:`RULES`.
METHOD_RULES = access.rules(
    "conductor",
    {
        (None, "object_action"): access.EVERY_SERVICE,
        (None, "object_class_action_versions"): access.EVERY_SERVICE,
        (None, "object_backport_versions"): access.EVERY_SERVICE,
        (None, "step_finished"): access.EVERY_SERVICE,
        (None, "kick"): access.CONTROLLERS,
        (None, "live_migration_abort"): access.CONTROLLERS,
        (None, "live_migration_force_complete"): access.CONTROLLERS,
        # Controllers publish their notifications themselves.
        (None, "relay_notification"): frozenset({COMPUTE_BINARY}),
        (None, "relay_notifications"): frozenset({COMPUTE_BINARY}),
        # A host's network data plane (then: its own ports only, peers of
        # networks it has ports on only; nubes/conductor/dataplane.py).
        (None, "get_host_network"): access.EVERY_SERVICE,
        (None, "get_network_peers"): access.EVERY_SERVICE,
        # A host's console relay spending a user's console token (then: only
        # for a guest placed on that host; nubes/conductor/consoles.py).
        (None, "open_console"): frozenset({COMPUTE_BINARY}),
        # A compute host may probe the conductor it depends on.
        (access.BASE_NAMESPACE, "ping"): access.EVERY_SERVICE,
        (access.BASE_NAMESPACE, "whoami"): access.EVERY_SERVICE,
    },
)


# Fields a compute host owns on each object it may save. Anything else it
# changes is refused, whatever its value.
INSTANCE_FIELDS = frozenset(
    {
        "power_state",
        "vm_state",
        "task_state",
        "progress",
        "launched_at",
        "terminated_at",
        "launched_on",
    }
)
#: Instance fields a host may set only to what the active conductor task asked.
INSTANCE_PLACEMENT_FIELDS = frozenset({"host", "node"})
COMPUTE_NODE_FIELDS = frozenset(
    {
        "vcpus",
        "memory_mb",
        "local_gb",
        # Not *_used: the scheduler's atomic claims own those columns, and a
        # host rewriting them could hide its load and be over-committed.
        "free_ram_mb",
        "free_disk_gb",
        "running_vms",
        "current_workload",
        "cpu_utilization",
        "cpu_info",
        "metrics",
        "hypervisor_type",
        "hypervisor_version",
        "disk_available_least",
        "host_ip",
        "stats",
    }
)
SERVICE_FIELDS = frozenset({"version", "report_count"})
#: A live migration's copy counters: the only migration fields a compute host
#: may save, and only as the migration's source while it is under way (the
#: source copies the memory; docs/moves.md). Never ``status``: the conductor's
#: task writes that.
MIGRATION_PROGRESS_FIELDS = frozenset(
    {
        "memory_total",
        "memory_processed",
        "memory_remaining",
        "disk_total",
        "disk_processed",
        "disk_remaining",
    }
)


#: What a compute host may set when it creates a node: what it may save,
#: and the node's identity. Never the allocation ratios (the operator's), the
#: usage (the scheduler's claims) or ``service_id`` (the conductor's).
NEW_COMPUTE_NODE_FIELDS = COMPUTE_NODE_FIELDS | frozenset({"host", "hypervisor_hostname", "uuid"})
#: A node's capacity fields a host reports, each checked against the
#: operator's bound (:class:`NodeLimits`).
NODE_CAPACITY_FIELDS = ("vcpus", "memory_mb", "local_gb")
#: Counters a host reports that can never be negative.
NODE_COUNTER_FIELDS = ("running_vms", "hypervisor_version")

#: Size bounds for what a compute host writes (exception.TooLarge beyond).
#: A string field of an object: the database's short columns are 255 wide.
STRING_LIMIT = 255
#: The long text fields, any string argument, and a dict or list field
#: (metrics, stats) encoded as JSON.
TEXT_LIMIT = 64 * 1024
#: A guest's personality files reported by a host (a live migration's source):
#: many times what the default quotas allow (``[quota] injected_files`` 5 of
#: ``injected_file_content_bytes`` 10 KiB), base64 in JSON, with room for
#: raised quotas, while keeping a host from writing megabytes into a task row.
INJECTED_FILES_LIMIT = 1024 * 1024
TEXT_FIELDS = frozenset({("InstanceFault", "details"), ("ComputeNode", "cpu_info")})
#: A compute host's action event, as its step reports its end (``compute_<op>``).
_COMPUTE_EVENT = re.compile(r"compute_[a-z0-9_]{1,120}")
#: The results an action event ends with (Nova's).
EVENT_RESULTS = frozenset({"Success", "Error"})
#: A relayed notification's payload, encoded (a fault's traceback included).
NOTIFICATION_LIMIT = 4 * TEXT_LIMIT
#: Notification priorities a host may relay (Nova's).
NOTIFICATION_PRIORITIES = frozenset({"INFO", "WARN", "ERROR"})
#: What a relayed event type looks like (``instance.power_off.start``).
_EVENT_TYPE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)+")


@dataclass(frozen=True, slots=True)
class NodeLimits:
    """The operator's say over the nodes hosts register: the bounds of the
    capacity a host may report, and the allocation ratios a new node gets."""

    vcpus: int = 4096
    memory_mb: int = 64 * 1024 * 1024
    local_gb: int = 1024 * 1024
    cpu_allocation_ratio: float = 16.0
    ram_allocation_ratio: float = 1.5
    disk_allocation_ratio: float = 1.0

    @classmethod
    def from_conf(cls, conf: Any) -> NodeLimits:
        group = conf.conductor
        return cls(
            group.max_node_vcpus,
            group.max_node_memory_mb,
            group.max_node_local_gb,
            group.initial_cpu_allocation_ratio,
            group.initial_ram_allocation_ratio,
            group.initial_disk_allocation_ratio,
        )


#: The allocation ratios a new node gets from :class:`NodeLimits`.
NODE_RATIO_FIELDS = ("cpu_allocation_ratio", "ram_allocation_ratio", "disk_allocation_ratio")


def _at_zero(obj: VersionedObject, name: str) -> bool:
    """The field holds what a new object starts with (0, False, None)."""
    value = getattr(obj, name)
    return value is None or (type(value) in (int, bool) and not value)


#: Sizes what a host sends as compact JSON (anything else as its str()), in
#: C: every relayed notification's payload and every dict a host saves pass here.
_SIZE_ENCODER = msgspec.json.Encoder(enc_hook=str)


def _encoded_size(value: Any) -> int:
    try:
        return len(_SIZE_ENCODER.encode(value))
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError):
        # Unencodable is as bad as too large; the caller refuses it.
        return TEXT_LIMIT + 1


@dataclass(frozen=True, slots=True)
class Rule:
    #: Name of the Authorizer method that decides.
    check: str
    #: Fields a save-like call may change; None for reads and creates, whose
    #: checks look at the whole object instead.
    writable: frozenset[str] | None = None


RULES: dict[tuple[str, str], Rule] = {
    ("Instance", "get_by_uuid"): Rule("instance_uuid_arg"),
    ("Instance", "get_by_host"): Rule("host_arg"),
    ("Instance", "refresh"): Rule("instance_obj", frozenset()),
    ("Instance", "save"): Rule("instance_obj", INSTANCE_FIELDS | INSTANCE_PLACEMENT_FIELDS),
    ("ComputeNode", "get_by_host_and_nodename"): Rule("host_arg"),
    ("ComputeNode", "get_by_uuid"): Rule("compute_node_uuid_arg"),
    ("ComputeNode", "create"): Rule("new_compute_node", NEW_COMPUTE_NODE_FIELDS),
    ("ComputeNode", "save"): Rule("compute_node_obj", COMPUTE_NODE_FIELDS),
    ("Service", "get_by_host_and_binary"): Rule("service_args"),
    # Which versions run is no secret; a host caps what it sends by it.
    ("Service", "get_minimum_version"): Rule("anyone"),
    ("Service", "create"): Rule("new_service"),
    ("Service", "save"): Rule("service_obj", SERVICE_FIELDS),
    ("Service", "heartbeat"): Rule("service_obj", frozenset()),
    ("Migration", "get_by_id"): Rule("migration_id_arg"),
    ("Migration", "save"): Rule("migration_progress", MIGRATION_PROGRESS_FIELDS),
    # The evacuated-remains clean-up of a returning source host (docs/moves.md).
    ("Migration", "get_evacuations_from_host"): Rule("host_arg"),
    ("Migration", "complete_evacuation"): Rule("done_evacuation_from_caller", frozenset()),
    ("Flavor", "get_by_id"): Rule("anyone"),
    ("Flavor", "get_by_flavor_id"): Rule("anyone"),
    ("InstanceFault", "create"): Rule("fault_obj"),
    ("InstanceActionEvent", "event_start"): Rule("instance_uuid_arg"),
    ("InstanceActionEvent", "event_finish"): Rule("instance_uuid_arg"),
    # The metadata service (issue 14): a host reads what a guest is told
    # only for its own instances, and by address only for an address a port
    # bound to it holds on that network, of an instance placed on it.
    ("InstanceMetadata", "get_by_instance_uuid"): Rule("instance_uuid_arg"),
    ("InstanceMetadata", "get_by_address"): Rule("address_on_caller"),
    # A guest's password POST, relayed by its host's metadata proxy: only
    # for a guest of that host holding that address.
    ("InstanceMetadata", "set_password"): Rule("address_on_caller"),
}


#: Class methods whose writes check the placement themselves (see
#: ``backend.placement_scope``): authorised without a read first.
SCOPED_CLASS_CALLS = frozenset(
    {("InstanceActionEvent", "event_start"), ("InstanceActionEvent", "event_finish")}
)


@dataclass(slots=True)
class Call:
    """One object call as the authoriser sees it."""

    caller: Caller
    objname: str
    method: str
    #: The object the method runs on (instance methods only).
    obj: VersionedObject | None
    #: Arguments bound to the method's parameter names.
    arguments: dict[str, Any]
    _changed: set[str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def changed(self) -> set[str]:
        # Asked by several checks of one call: the object's change tracking
        # is walked once (the call is judged before anything changes it).
        if self._changed is None:
            self._changed = self.obj.obj_what_changed() if self.obj is not None else set()
        return self._changed

    def value(self, name: str) -> Any:
        """A field of the object, or None when it is not set."""
        obj = self.obj
        if obj is None or name not in obj.obj_fields or not obj.obj_attr_is_set(name):
            return None
        return getattr(self.obj, name)


def _bind(objname: str, method: str, args: Any, kwargs: Any) -> dict[str, Any]:
    try:
        cls = REGISTRY.get(objname)
    except exception.NubesError:
        return {}
    if type(args) not in (list, tuple) or type(kwargs) is not dict:
        return {}
    try:
        return bind_remotable(cls, method, tuple(args), kwargs)
    except TypeError:
        # serve_object_action refuses these with InvalidArguments afterwards.
        return {}


class Authorizer:
    def __init__(
        self,
        db: Database,
        controller_identities: Iterable[str] = (),
        node_limits: NodeLimits | None = None,
    ) -> None:
        self.db = db
        self.controller_identities = frozenset(controller_identities)
        self.node_limits = node_limits or NodeLimits()
        #: Placement checks of concurrent calls (a host's notifications,
        #: its reads by uuid) share one query: see _placed_on_caller.
        self._placements: TransactionBatcher[tuple[str, str], bool] = TransactionBatcher(
            db, instances.placed_on_hosts, read_only=True
        )
        self._checks: dict[str, Callable[[Call], Awaitable[None]]] = {
            name: getattr(self, f"_check_{name}")
            for name in {rule.check for rule in RULES.values()}
        }

    def identify(self, identity: str | None) -> Caller:
        return identify(identity, self.controller_identities)

    async def authorize(
        self,
        caller: Caller,
        objname: str,
        method: str,
        obj: VersionedObject | None,
        args: Any,
        kwargs: Any,
    ) -> str | None:
        """Return when ``caller`` may make this call; raise Forbidden otherwise.

        Returns the host the call's writes must be scoped to when the check
        was left to the write itself (see ``backend.placement_scope``).
        """
        if caller.kind is CallerKind.CONTROLLER:
            return None
        call = Call(caller, objname, method, obj, _bind(objname, method, args, kwargs))
        rule = RULES.get((objname, method))
        if rule is None:
            self._refuse(call, "not allowed for compute hosts")
        if obj is not None and rule.writable is not None:
            extra = call.changed - rule.writable
            if method == "create":
                # A new object has its defaults set (usage 0, not deleted):
                # only a value other than those is the host's choice.
                extra = {f for f in extra if not _at_zero(obj, f)}
            if extra:
                self._refuse(call, f"may not change {', '.join(sorted(extra))}")
        self._check_sizes(call)
        if (
            rule.check == "instance_obj"
            and method == "save"
            and not (call.changed & INSTANCE_PLACEMENT_FIELDS)
        ):
            # The UPDATE itself requires the instance to be on this host, in
            # the same statement: no read first, and no window between the
            # check and the write.
            return caller.host
        if (objname, method) in SCOPED_CLASS_CALLS:
            # Likewise the event's INSERT / UPDATE.
            if not isinstance(call.arguments.get("instance_uuid"), str):
                self._refuse(call, "no instance uuid")
            return caller.host
        await self._checks[rule.check](call)
        return None

    def operator_values(self, caller: Caller, objname: str, method: str) -> dict[str, Any]:
        """Fields the conductor sets on an authorised call, whatever the host sent.

        A node a compute host registers gets the operator's allocation
        ratios (the host may not send any: not in NEW_COMPUTE_NODE_FIELDS).
        """
        if caller.kind is CallerKind.COMPUTE and (objname, method) == ("ComputeNode", "create"):
            return {name: getattr(self.node_limits, name) for name in NODE_RATIO_FIELDS}
        return {}

    def refuse(
        self,
        caller: Caller,
        objname: str,
        method: str,
        obj: VersionedObject | None,
        reason: str,
    ) -> NoReturn:
        """Refuse a call found forbidden after it started (audit line + Forbidden)."""
        self._refuse(Call(caller, objname, method, obj, {}), reason)

    def authorize_step_report(
        self, caller: Caller, key: StepKey, task: dict[str, Any] | None
    ) -> Awaited:
        """Allow a report of a conductor task step (``step_finished``); what the task awaits.

        The task must be active and await exactly this step and try (``key``),
        and a compute host may report only what the task awaits *from it*:
        the host is the one the task itself recorded, never one named in the
        message. Controllers (tests, operators) may report for any host.
        The task's payload is read through its typed form (any payload
        version this release knows); one that does not fit is refused.
        """
        call = Call(caller, "ConductorTask", "step_finished", None, {"task_id": key.task_id})
        if task is None:
            self._refuse(call, "no such task")
        if task["status"] not in (tasks.TaskStatus.PENDING, tasks.TaskStatus.RUNNING):
            self._refuse(call, f"the task is {task['status']}")
        try:
            awaited = payloads.awaiting(task.get("payload"))
        except exception.Invalid as exc:
            self._refuse(call, f"the task's payload cannot be read: {exc}")
        if awaited is None:
            self._refuse(call, "the task awaits no report")
        if caller.kind is CallerKind.COMPUTE and awaited.host != caller.host:
            self._refuse(call, "the task awaits no report from this host")
        if awaited.key(key.task_id) != key:
            self._refuse(
                call,
                f"the task awaits {awaited.step} try {awaited.attempt}, "
                f"not {key.step} try {key.attempt}",
            )
        return awaited

    async def authorize_notification(
        self, caller: Caller, event_type: Any, priority: Any, payload: Any
    ) -> None:
        """Allow a compute host's notification to be published for it, or refuse it.

        It must be a well-formed instance notification about an instance
        placed on the caller, or a service notification about the caller's
        own compute service; bounded in size. The conductor then publishes
        it as ``compute:<caller's host>``, whatever the host claims.
        """
        obj = payload if isinstance(payload, VersionedObject) else None
        call = Call(caller, "Notification", "relay_notification", obj, {})
        if caller.kind is not CallerKind.COMPUTE:
            self._refuse(call, "controllers publish their notifications themselves")
        if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
            self._refuse(call, "not an event type")
        self._bound(call, "event_type", len(event_type.encode()), STRING_LIMIT)
        if priority not in NOTIFICATION_PRIORITIES:
            self._refuse(call, "not a notification priority")
        if isinstance(payload, InstancePayload):
            if not event_type.startswith("instance."):
                self._refuse(call, "an instance payload needs an instance.* event")
            size = _encoded_size(payload.obj_to_primitive())
            self._bound(call, "payload", size, NOTIFICATION_LIMIT)
            await self._placed_on_caller(call, call.value("uuid"))
        elif isinstance(payload, ServiceStatusPayload):
            if event_type != "service.update":
                self._refuse(call, "a service payload needs the service.update event")
            if call.value("host") != caller.host or call.value("binary") != COMPUTE_BINARY:
                self._refuse(call, "not the caller's own service")
            size = _encoded_size(payload.obj_to_primitive())
            self._bound(call, "payload", size, NOTIFICATION_LIMIT)
        else:
            self._refuse(call, "not an instance or service notification payload")

    async def authorize_notifications(
        self, caller: Caller, batch: NotificationBatch
    ) -> list[exception.Invalid | exception.Forbidden | None]:
        """Judge each notification of a batch as :meth:`authorize_notification`
        judges one: per notification, None (publish it) or why it is refused.

        A batch over :data:`MAX_RELAYED_BATCH` is refused whole. The
        placement reads of the batch's instances are asked together (one read).
        """
        call = Call(caller, "Notification", "relay_notifications", None, {})
        if caller.kind is not CallerKind.COMPUTE:
            self._refuse(call, "controllers publish their notifications themselves")
        if len(batch.notifications) > MAX_RELAYED_BATCH:
            self._refuse(call, f"more than {MAX_RELAYED_BATCH} notifications in one batch")

        async def judge(
            note: RelayedNotification,
        ) -> exception.Invalid | exception.Forbidden | None:
            try:
                if note.request_id is not None:
                    self._bound(call, "request_id", len(note.request_id.encode()), STRING_LIMIT)
                await self.authorize_notification(
                    caller, note.event_type, note.priority, note.payload
                )
            except (exception.Forbidden, exception.Invalid) as exc:
                return exc
            return None

        return list(await asyncio.gather(*(judge(note) for note in batch.notifications)))

    def _check_sizes(self, call: Call) -> None:
        """Every field a host changes and every argument it sends, bounded in size."""
        for name in sorted(call.changed):
            value = call.value(name)
            if isinstance(value, str):
                limit = TEXT_LIMIT if (call.objname, name) in TEXT_FIELDS else STRING_LIMIT
                self._bound(call, f"{call.objname}.{name}", len(value.encode()), limit)
            elif isinstance(value, dict | list):
                self._bound(call, f"{call.objname}.{name}", _encoded_size(value), TEXT_LIMIT)
        for name, value in call.arguments.items():
            if isinstance(value, str):
                self._bound(call, f"argument {name}", len(value.encode()), TEXT_LIMIT)
            elif isinstance(value, dict | list):
                self._bound(call, f"argument {name}", _encoded_size(value), TEXT_LIMIT)

    def _bound(self, call: Call, what: str, size: int, limit: int) -> None:
        if size > limit:
            AUDIT.warning(
                "REFUSED caller=%s object=%s method=%s reason=%s is %d bytes (limit %d)",
                call.caller.identity,
                call.objname,
                call.method,
                what,
                size,
                limit,
            )
            metrics.authz_refusals.labels("too_large").inc()
            raise exception.TooLarge(what=what, size=size, limit=limit)

    def check_report_size(
        self,
        caller: Caller,
        error: Any,
        details: Any,
        event: EventEnd | None = None,
        injected_files: InjectedFiles | None = None,
    ) -> None:
        """A step report's free-form parts, bounded like any host write.

        A guest's personality files (conductor 1.8) have a bound of their
        own, :data:`INJECTED_FILES_LIMIT`: what the default quotas let a user
        inject (five files of 10 KiB) would not fit in ``details``' bound
        once encoded, and files refused here would be lost to the guest."""
        call = Call(caller, "ConductorTask", "step_finished", None, {})
        if caller.kind is CallerKind.CONTROLLER:
            return
        if injected_files is not None:
            self._bound(call, "injected_files", _encoded_size(injected_files), INJECTED_FILES_LIMIT)
        if isinstance(error, str):
            self._bound(call, "error", len(error.encode()), TEXT_LIMIT)
        if details is not None:
            self._bound(call, "details", _encoded_size(details), TEXT_LIMIT)
        if event is not None:
            self._bound(call, "event", len(event.event.encode()), STRING_LIMIT)
            for name, text in (
                ("event traceback", event.traceback),
                ("event details", event.details),
            ):
                if text is not None:
                    self._bound(call, name, len(text.encode()), TEXT_LIMIT)

    def authorize_step_event(self, caller: Caller, key: StepKey, event: EventEnd) -> None:
        """Allow the end of a step's action event reported with the step (after
        :meth:`authorize_step_report` allowed the report), or refuse the report.

        What the report may name is only the event: a compute host's
        (``compute_<op>``) with Nova's result. Which instance and action it
        ends is the task's (its instance, its request), never the host's
        word; and the write ends only an event of that name the awaited host
        itself started and nobody finished
        (:func:`nubes.db.api.actions.reported_event_finish_writes`). So a
        host ends nothing of another instance's, another request's, another
        host's, nor a conductor's event.
        """
        call = Call(caller, "ConductorTask", "step_finished", None, {"task_id": key.task_id})
        if not _COMPUTE_EVENT.fullmatch(event.event):
            self._refuse(call, f"{event.event!r} is not a compute host's event")
        if event.result not in EVENT_RESULTS:
            self._refuse(call, f"{event.result!r} is not an event result")

    def _refuse(self, call: Call, reason: str) -> NoReturn:
        target = call.value("uuid") or call.value("id") or call.arguments or "-"
        # By the table's row: a pair not in it (the caller's choice) is "unlisted".
        listed = (call.objname, call.method) in RULES
        metrics.authz_refusals.labels(
            f"{call.objname}.{call.method}" if listed else "unlisted"
        ).inc()
        AUDIT.warning(
            "REFUSED caller=%s object=%s method=%s target=%s fields=%s reason=%s",
            call.caller.identity,
            call.objname,
            call.method,
            target,
            ",".join(sorted(call.changed)) or "-",
            reason,
        )
        raise exception.Forbidden(
            reason=f"{call.caller.identity} may not call {call.objname}.{call.method}: {reason}"
        )

    # -- the checks named in RULES ------------------------------------------

    async def _check_anyone(self, call: Call) -> None:
        return None

    async def _placed_on_caller(self, call: Call, uuid: Any) -> None:
        if not isinstance(uuid, str):
            self._refuse(call, "no instance uuid")
        ask = (uuid, call.caller.host or "")
        if self.db.in_block():
            # Inside a caller's transaction: read there, not in a batch's.
            async with self.db.reader() as conn:
                placed = (await instances.placed_on_hosts(conn, [ask]))[ask]
        else:
            placed = await self._placements.run(ask)
        if not placed:
            # One answer for missing and elsewhere, so a host cannot probe which uuids exist.
            self._refuse(call, f"instance {uuid} is not on this host")

    async def _check_instance_uuid_arg(self, call: Call) -> None:
        uuid = call.arguments.get("uuid", call.arguments.get("instance_uuid"))
        await self._placed_on_caller(call, uuid)

    async def _check_address_on_caller(self, call: Call) -> None:
        network_id, address = call.arguments.get("network_id"), call.arguments.get("address")
        if not isinstance(network_id, str) or not isinstance(address, str):
            self._refuse(call, "no network id and address")
        async with self.db.reader() as conn:
            holder = await metadata.holder_of_address(conn, network_id, address)
        host = call.caller.host or ""
        if holder is None or holder["binding_host"] != host:
            # One answer for both, so a host cannot probe which addresses are taken.
            self._refuse(call, f"no port bound to this host holds {address} on {network_id}")
        await self._placed_on_caller(call, holder["uuid"])

    async def _check_instance_obj(self, call: Call) -> None:
        uuid = call.value("uuid")
        await self._placed_on_caller(call, uuid)
        moving = call.changed & INSTANCE_PLACEMENT_FIELDS
        if moving:
            await self._check_instance_move(call, uuid, moving)

    async def _check_instance_move(self, call: Call, uuid: str, moving: set[str]) -> None:
        # host/node change only to where the instance's active conductor
        # task is taking it, and only by that destination host.
        async with self.db.reader() as conn:
            task = await tasks.get_active_for_instance(conn, uuid)
        try:
            typed = payloads.decode((task or {}).get("payload"), payloads.TaskPayload)
        except exception.Invalid as exc:
            self._refuse(call, f"the task's payload cannot be read: {exc}")
        dest = {"host": typed.dest_host, "node": typed.dest_node}
        if dest["host"] != call.caller.host:
            self._refuse(call, "no conductor task moves this instance to this host")
        for name in moving:
            if call.value(name) != dest[name]:
                self._refuse(call, f"{name} must be {dest[name]!r}, the task's destination")

    async def _check_host_arg(self, call: Call) -> None:
        if call.arguments.get("host") != call.caller.host:
            self._refuse(call, "may only list its own host")

    async def _check_compute_node_uuid_arg(self, call: Call) -> None:
        uuid = call.arguments.get("uuid")
        if not isinstance(uuid, str):
            self._refuse(call, "no compute node uuid")
        try:
            async with self.db.reader() as conn:
                node = await compute_nodes.get_by_uuid(conn, uuid)
        except exception.NotFound:
            self._refuse(call, "no such compute node")
        if node["host"] != call.caller.host:
            self._refuse(call, "not this host's compute node")

    async def _check_new_compute_node(self, call: Call) -> None:
        if call.value("host") != call.caller.host:
            self._refuse(call, "may only create compute nodes of its own host")
        self._check_node_values(call)
        name = call.value("hypervisor_hostname")
        async with self.db.reader() as conn:
            owners = await compute_nodes.hosts_of_node_name(conn, name)
            taken = call.value("uuid") is not None and await compute_nodes.uuid_exists(
                conn, call.value("uuid")
            )
        if set(owners) - {call.caller.host}:
            # A node name is its hypervisor's: one host may not take another's.
            self._refuse(call, f"node {name!r} belongs to another host")
        if taken:
            self._refuse(call, "that compute node uuid is taken")

    def _check_node_values(self, call: Call) -> None:
        """Capacity within the operator's bounds, counters never negative."""
        limits = self.node_limits
        for name in NODE_CAPACITY_FIELDS:
            value = call.value(name)
            if name in call.changed and not (
                type(value) is int and 0 <= value <= getattr(limits, name)
            ):
                self._refuse(call, f"{name} must be 0 to {getattr(limits, name)}, not {value!r}")
        for name in NODE_COUNTER_FIELDS:
            value = call.value(name)
            if name in call.changed and value is not None and value < 0:
                self._refuse(call, f"{name} may not be negative")

    async def _check_compute_node_obj(self, call: Call) -> None:
        node_id = call.value("id")
        try:
            async with self.db.reader() as conn:
                node = await compute_nodes.get_by_id(conn, node_id)
        except (exception.NotFound, TypeError):
            self._refuse(call, "no such compute node")
        if node["host"] != call.caller.host:
            self._refuse(call, "not this host's compute node")
        self._check_node_values(call)

    async def _check_service_args(self, call: Call) -> None:
        if (
            call.arguments.get("host") != call.caller.host
            or call.arguments.get("binary") != COMPUTE_BINARY
        ):
            self._refuse(call, "may only read its own compute service")

    async def _check_new_service(self, call: Call) -> None:
        if call.value("host") != call.caller.host or call.value("binary") != COMPUTE_BINARY:
            self._refuse(call, "may only create its own compute service")
        if call.value("disabled") or call.value("forced_down"):
            self._refuse(call, "may not create itself disabled or forced down")
        self._check_supported(call)

    async def _check_service_obj(self, call: Call) -> None:
        try:
            async with self.db.reader() as conn:
                row = await services.get_by_id(conn, call.value("id"))
        except (exception.NotFound, TypeError):
            self._refuse(call, "no such service")
        if row["host"] != call.caller.host or row["binary"] != COMPUTE_BINARY:
            self._refuse(call, "not this host's compute service")
        if "version" in call.changed:
            self._check_supported(call)

    def _check_supported(self, call: Call) -> None:
        """A host whose code is too old is refused when it registers: a new row,
        or its row's version written at its start (``Service._ensure_record``)."""
        try:
            versions.check_supported(COMPUTE_BINARY, call.caller.host or "?", call.value("version"))
        except exception.ServiceTooOld as exc:
            AUDIT.warning(
                "REFUSED caller=%s object=%s method=%s reason=%s",
                call.caller.identity,
                call.objname,
                call.method,
                exc,
            )
            raise

    async def _migration(self, call: Call, migration_id: Any) -> dict[str, Any]:
        if type(migration_id) is not int:
            # Checked before the read: a value the driver cannot bind would
            # fail the grouped batch it joined, everyone's writes with it.
            self._refuse(call, "no such migration")
        try:
            row = await migrations.current(self.db, migration_id)
        except exception.NotFound:
            self._refuse(call, "no such migration")
        if call.caller.host not in (row["source_compute"], row["dest_compute"]):
            self._refuse(call, "this host is neither source nor destination")
        return dict(row)

    async def _check_migration_id_arg(self, call: Call) -> None:
        await self._migration(call, call.arguments.get("migration_id", call.arguments.get("id")))

    async def _check_migration_progress(self, call: Call) -> None:
        row = await self._migration(call, call.value("id"))
        if call.changed & MIGRATION_PROGRESS_FIELDS:
            if row["source_compute"] != call.caller.host:
                self._refuse(call, "only the migration's source reports its progress")
            if row["status"] in migrations.FINISHED_STATUSES:
                self._refuse(call, f"the migration is {row['status']}")

    async def _check_done_evacuation_from_caller(self, call: Call) -> None:
        # Only done -> completed, only of an evacuation, only by its source:
        # the one status change a compute host may make (docs/moves.md).
        try:
            async with self.db.reader() as conn:
                row = await migrations.get_by_id(conn, call.value("id"))
        except (exception.NotFound, TypeError):
            self._refuse(call, "no such migration")
        if row["source_compute"] != call.caller.host:
            self._refuse(call, "not an evacuation from this host")
        if (
            row["migration_type"] != MigrationType.EVACUATION
            or row["status"] != MigrationStatus.DONE
        ):
            self._refuse(call, "only a done evacuation may be completed")

    async def _check_fault_obj(self, call: Call) -> None:
        if call.value("host") not in (None, call.caller.host):
            # A host records its own faults, never one in another host's name.
            self._refuse(call, "a fault's host must be the caller")
        await self._placed_on_caller(call, call.value("instance_uuid"))
