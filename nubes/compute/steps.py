"""Conductor task steps as a compute host sees them: once each, outcome reported.

Every cast from the conductor names its step: a :class:`~nubes.step_key.StepKey`
(task id, step, try), one ``key`` struct on the wire since compute RPC 1.5;
a conductor capped below sends ``task_id``, ``step`` and ``attempt``, which
:func:`step_handler` folds into the same key, so handlers see one form.
A host keeps the outcomes of the steps it finished (the last
``[compute] completed_steps_kept``) and the steps running now; a message for
a step it finished gets the same outcome sent again, one for a step still
running is dropped (its outcome goes out when it ends). After a restart the
record is empty: the operations then rely on the instance's state and the
driver to see what was already done (a build of an instance the driver runs
and the database shows ACTIVE reports success at once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from nubes import exception
from nubes.compute import authz, rpcapi
from nubes.compute.reporting import step_event
from nubes.injected_files import InjectedFiles
from nubes.metadata import configdrive
from nubes.notifications.relay import NotificationBatch
from nubes.objects.instance_metadata import InstanceMetadata
from nubes.step_end import EventEnd
from nubes.step_key import StepKey

if TYPE_CHECKING:
    from nubes.compute.reporting import Reporter
    from nubes.compute.snapshots import ImageUploader
    from nubes.compute.virt.driver import ComputeDriver
    from nubes.context import RequestContext
    from nubes.metadata.configdrive import ConfigDrive
    from nubes.objects.instance import Instance
    from nubes.objects.states import PowerState

LOG = logging.getLogger(__name__)


#: Backoff (seconds) of a report the bus could not take, and how long it is
#: retried: past that, the task it answers has long ended (deadline).
REPORT_RETRY_MIN = 0.5
REPORT_RETRY_MAX = 5.0
REPORT_RETRY_FOR = 3600.0


class StepReporter(Protocol):
    """The part of the conductor API compute reports to (``ConductorAPI``)."""

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
    ) -> None: ...

    def reports_events(self) -> bool:
        """Whether the conductors take a step's action event with its report."""
        ...

    def reports_injected_files(self) -> bool:
        """Whether the conductors take a guest's personality files with a report."""
        ...

    def reports_notifications(self) -> bool:
        """Whether the conductors take the host's notifications with a report."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str | None = None
    details: dict[str, Any] | None = None
    #: The end of the action event the step started, sent with the report
    #: (set by :meth:`StepRunner.run_step`, not by the step's work).
    event: EventEnd | None = None
    #: The guest's personality files, read back from its config drive for the
    #: conductor to carry on (a move's source: a live migration's check, a
    #: cold move's ``migrate_disk_and_power_off``; conductor 1.8).
    injected_files: InjectedFiles | None = None


class StepLog:
    """Steps running now and the outcomes of the last ``keep`` finished."""

    def __init__(self, keep: int = 4096) -> None:
        self.keep = keep
        self.running: set[StepKey] = set()
        self._done: OrderedDict[StepKey, Outcome] = OrderedDict()

    def outcome(self, key: StepKey) -> Outcome | None:
        return self._done.get(key)

    def record(self, key: StepKey, outcome: Outcome) -> None:
        self._done[key] = outcome
        self._done.move_to_end(key)
        while len(self._done) > self.keep:
            self._done.popitem(last=False)

    def __len__(self) -> int:
        return len(self._done)


class StepRunner:
    """What a host's step handlers share, and all they share: the host's name,
    driver, conductor (for reports) and reporter (for state saves), the step
    log, and the event set once the host's start is done.

    Not an RPC endpoint: the manager and each step group hold this one object
    and nothing on it is served.
    """

    def __init__(
        self,
        host: str,
        driver: ComputeDriver,
        conductor: StepReporter,
        reporter: Reporter,
        *,
        steps_kept: int = 4096,
        force_config_drive: bool = False,
        uploader: ImageUploader | None = None,
    ) -> None:
        self.host = host
        self.driver = driver
        #: Where snapshots go (``[compute] image_api_endpoint``); None: nowhere.
        self.uploader = uploader
        #: ``[DEFAULT] force_config_drive``: every guest built here gets one.
        self.force_config_drive = force_config_drive
        self.conductor = conductor
        self.reporter = reporter
        self.steps = StepLog(steps_kept)
        #: Set once the host's start (node records, repair) is done.
        self.ready = asyncio.Event()

    async def config_drive(
        self,
        ctxt: RequestContext,
        instance: Instance,
        asked: bool | None = None,
        injected: InjectedFiles | None = None,
    ) -> ConfigDrive | None:
        """The guest's config drive, built here from what the conductor tells this
        host about its own instance, when it gets one: asked for at create
        (``asked``, from the build's request; None: as the instance records it,
        for a rebuild or an evacuation), ``[DEFAULT] force_config_drive``, or
        personality files to write (``injected``, a build's or a rebuild's).

        The drive is the only way those files reach the guest (nubes does not
        write into guest disks, and the metadata service never serves them),
        so files given make a drive even where none was asked for: Nova's
        libvirt driver without one drops them, and an accepted parameter that
        does nothing would be a bug."""
        if asked is False and not self.force_config_drive and not injected:
            return None  # a build that asked for none: no question to the conductor
        meta = await InstanceMetadata.get_by_instance_uuid(ctxt, instance.uuid)
        if not (self.force_config_drive or asked or meta.config_drive or injected):
            return None
        return configdrive.build(meta, injected)

    async def guest_files(self, instance: Instance) -> InjectedFiles | None:
        """The personality files on the guest's config drive here (None: none,
        or no drive), read back for a move's destination (conductor 1.8).

        Given at the guest's build or last rebuild, they are on its drive and
        nowhere else once that task ended (never stored with the instance);
        Nova keeps them across a move by copying ``disk.config``. A drive
        that cannot be read raises (InstanceNotFound, Invalid): the move
        fails rather than lose them."""
        drive = await self.driver.attached_config_drive(instance)
        return (drive.injected_files() if drive is not None else None) or None

    async def report(self, ctxt: RequestContext, key: StepKey, outcome: Outcome) -> None:
        task_id, step, attempt = key.task_id, key.step, key.attempt
        # The step's notifications are published before its report is
        # recorded: whoever sees the step's end has been sent them. They ride
        # on the report (with whatever else is queued) to a conductor that
        # takes them; one capped below gets them first, by themselves.
        notifier = self.reporter.notifier
        notes = None
        if self.conductor.reports_notifications():
            notes = await notifier.take()
        else:
            await notifier.flush()
        delay = REPORT_RETRY_MIN
        give_up = asyncio.get_running_loop().time() + REPORT_RETRY_FOR
        while True:
            try:
                await self.conductor.step_finished(
                    ctxt,
                    task_id=task_id,
                    step=step,
                    attempt=attempt,
                    ok=outcome.ok,
                    error=outcome.error,
                    details=outcome.details,
                    event=outcome.event,
                    notifications=notes,
                    injected_files=outcome.injected_files,
                )
                return
            except exception.TRANSIENT_ERRORS as exc:
                # The bus is away: the report is held and sent when it is
                # back (the conductor records a repeat once), not dropped.
                if asyncio.get_running_loop().time() + delay > give_up:
                    LOG.warning(
                        "Gave up reporting task %s step %s after %.0f s: %s",
                        task_id,
                        step,
                        REPORT_RETRY_FOR,
                        exc,
                    )
                    return
                LOG.warning(
                    "Cannot report task %s step %s now (%s); trying again in %.1f s",
                    task_id,
                    step,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, REPORT_RETRY_MAX)
            except Exception as exc:
                # Refused for good: the conductor's task engine asks again
                # (same step) when a new owner resumes; the outcome is kept.
                LOG.warning("Could not report task %s step %s: %s", task_id, step, exc)
                return

    async def run_step(
        self,
        context: RequestContext,
        key: StepKey,
        work: Callable[[RequestContext], Awaitable[Outcome]],
    ) -> None:
        # The message's context names its sender as the caller; our own
        # calls to the conductor go out as this host, so that must go.
        context = dataclasses.replace(context, caller=None)
        await self.ready.wait()
        steps = self.steps
        done = steps.outcome(key)
        if done is not None:
            await self.report(context, key, done)
            return
        if key in steps.running:
            return
        steps.running.add(key)
        try:
            with step_event(self.conductor.reports_events()) as event:
                try:
                    outcome = await work(context)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    LOG.exception("Task %s step %s failed on %s", key.task_id, key.step, self.host)
                    outcome = Outcome(False, str(exc) or type(exc).__name__)
        finally:
            steps.running.discard(key)
        if event.end is not None:
            # Kept with the outcome: a repeat of the report carries it again.
            outcome = dataclasses.replace(outcome, event=event.end)
        steps.record(key, outcome)
        await self.report(context, key, outcome)

    async def power_state(self, instance: Instance) -> PowerState | None:
        """The driver's power state of the instance; None if it does not have it."""
        try:
            return (await self.driver.get_info(instance)).state
        except exception.InstanceNotFound:
            return None


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[None]])

#: What a conductor before compute RPC 1.5 sends in place of ``key``.
_SPELLED_OUT = (("task_id", "int"), ("step", "str"), ("attempt", "int"))


def step_handler(handler: Handler) -> Handler:
    """A compute step: ``handler(self, context, ..., key: StepKey, ...)`` as an RPC method.

    The method the RPC server sees takes ``key`` (1.5) or, from a conductor
    capped below 1.5, ``task_id``, ``step`` and ``attempt`` instead; either
    way the handler is called with the one :class:`StepKey`. (The dispatcher
    reads the signature and annotations set here: it checks and converts
    the arguments before the call.)
    """
    sig = inspect.signature(handler)
    params = list(sig.parameters.values())
    if "key" not in sig.parameters:
        raise TypeError(f"{handler.__qualname__} takes no key")
    optional = [
        p.replace(kind=p.KEYWORD_ONLY, default=None) if p.name == "key" else p
        for p in params
        if p.name == "key" or p.kind is p.KEYWORD_ONLY
    ]
    positional = [p for p in params if p.name != "key" and p.kind is not p.KEYWORD_ONLY]
    legacy = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
        for name, _ in _SPELLED_OUT
    ]
    annotations = dict(handler.__annotations__)
    annotations["key"] = "StepKey | None"
    annotations.update({name: f"{kind} | None" for name, kind in _SPELLED_OUT})

    @functools.wraps(handler)
    async def wrapper(
        self: Any,
        context: RequestContext,
        *args: Any,
        key: StepKey | None = None,
        task_id: int | None = None,
        step: str | None = None,
        attempt: int | None = None,
        **kwargs: Any,
    ) -> None:
        if key is None:
            if task_id is None or step is None or attempt is None:
                raise exception.InvalidArguments(
                    method=handler.__name__, reason="missing key (or task_id, step and attempt)"
                )
            key = StepKey(task_id=task_id, step=step, attempt=attempt)
        await handler(self, context, *args, key=key, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*positional, *optional, *legacy])  # type: ignore[attr-defined]
    wrapper.__annotations__ = annotations
    return wrapper  # type: ignore[return-value]


class ComputeEndpoint:
    """What every RPC endpoint of a compute host declares: one API version and
    one rule table (``compute/authz.py``) whichever object serves a method."""

    #: Who may call which method (checked by the RPC server, deny by default).
    RPC_METHOD_RULES = authz.METHOD_RULES
    RPC_API_VERSION = rpcapi.VERSION
    RPC_EXPECTED_ERRORS = (exception.Conflict, exception.NotFound, exception.Forbidden)
