"""How a compute host tells the cloud what it did to an instance.

Three records, all through the conductor:

* the instance's own state, saved with a compare-and-set on its task_state
  after the state table allowed the change (:meth:`Reporter.save_state`),
  except the end of a conductor task's step, which goes back with the step's
  report for the conductor to write with the task's close
  (:meth:`Reporter.end_state`);
* the action events Nova's os-instance-actions shows
  (``compute_build_and_run_instance`` ...: start, finish, result, traceback)
  and, on failure, an instance fault;
* versioned notifications (``instance.<action>.start|end|error`` and
  ``instance.update``).

None of the last two may fail an operation: an event that cannot be recorded
(no action row for the request, say) is logged and skipped.

An event started in a conductor task's step ends with the step's report
(:class:`StepEvent`, :mod:`nubes.step_end`): the conductor writes its end
in the commit that records the report, rather than the host making a
round trip of its own for it just before reporting.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import traceback
from collections.abc import Iterator
from typing import Any

from nubes import exception
from nubes.context import RequestContext
from nubes.notifications.notifier import Notifier
from nubes.notifications.objects import InstanceActionPayload
from nubes.notifications.state_change import NOTIFY_VM_STATE, update_payload
from nubes.objects.instance import Expected, Instance
from nubes.objects.instance_action import RESULT_ERROR, RESULT_SUCCESS, InstanceActionEvent
from nubes.objects.instance_fault import InstanceFault
from nubes.objects.states import (
    InstanceState,
    PowerState,
    TaskState,
    VMState,
    as_state,
    check_transition,
)
from nubes.step_end import EVENT_DETAILS_LENGTH, EVENT_TRACEBACK_LENGTH, EventEnd, InstanceEnd

LOG = logging.getLogger(__name__)

#: Errors that mean the instance row is gone or no longer on this host.
GONE = (exception.NotFound, exception.Forbidden)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StepEvent:
    """Where a step's action event ends: held here for the step's report.

    Set for the work of one step (:func:`step_event`); an :class:`ActionRecord`
    finishing inside it leaves its end here instead of sending it. One event
    per step: a second one finished in the same step (none does today) is
    sent as before, so nothing is ever dropped.
    """

    __slots__ = ("end",)

    def __init__(self) -> None:
        self.end: EventEnd | None = None


# A context variable rather than an argument: every step handler makes its
# ActionRecord deep in its own code, and none of them needs to know where the
# end goes. Tasks the step spawns copy the context, so they hold it too.
_STEP_EVENT: contextvars.ContextVar[StepEvent | None] = contextvars.ContextVar(
    "nubes_step_event", default=None
)


@contextlib.contextmanager
def step_event(reported: bool) -> Iterator[StepEvent]:
    """The holder of the action event the code run inside finishes, for its
    step's report. ``reported`` False (conductors capped below the RPC
    version that takes it): the holder stays empty and events end the
    old way, each with its own call."""
    holder = StepEvent()
    token = _STEP_EVENT.set(holder if reported else None)
    try:
        yield holder
    finally:
        _STEP_EVENT.reset(token)


class Reporter:
    def __init__(
        self, host: str, notifier: Notifier, notify_on_state_change: str = NOTIFY_VM_STATE
    ) -> None:
        self.host = host
        self.notifier = notifier
        self.notify_on_state_change = notify_on_state_change

    async def save_state(
        self,
        ctxt: RequestContext,
        instance: Instance,
        vm_state: VMState,
        task_state: TaskState | None,
        *,
        expected_task_state: Expected,
        **values: Any,
    ) -> None:
        """Move the instance to ``(vm_state, task_state)`` (and set ``values``)
        if the state table allows it and its task_state in the database is
        still ``expected_task_state``."""
        old = self._change(instance, vm_state, task_state, values)
        await instance.save(ctxt, expected_task_state=expected_task_state)
        await self._notify_update(ctxt, instance, old)

    async def end_state(
        self,
        ctxt: RequestContext,
        instance: Instance,
        vm_state: VMState,
        power_state: PowerState | None = None,
    ) -> InstanceEnd:
        """The end of a conductor task's step: ``(vm_state, None)`` with
        ``power_state``, checked against the state table as :meth:`save_state`
        checks a save, but not saved: it goes back with the step's report and
        the conductor writes it with the task's close (:mod:`nubes.step_end`)."""
        values = {} if power_state is None else {"power_state": power_state}
        old = self._change(instance, vm_state, None, values)
        await self._notify_update(ctxt, instance, old)
        return InstanceEnd(
            vm_state=vm_state.value,
            power_state=None if power_state is None else int(power_state),
        )

    @staticmethod
    def _change(
        instance: Instance,
        vm_state: VMState,
        task_state: TaskState | None,
        values: dict[str, Any],
    ) -> InstanceState:
        """Set the new state on ``instance`` if the table allows it; the old state."""
        old = as_state(instance.vm_state, instance.task_state)
        check_transition(old, (vm_state, task_state), instance.uuid)
        if instance.vm_state != vm_state:
            instance.vm_state = vm_state
        if instance.task_state != task_state:
            instance.task_state = task_state
        for name, value in values.items():
            setattr(instance, name, value)
        return old

    async def _notify_update(
        self, ctxt: RequestContext, instance: Instance, old: InstanceState
    ) -> None:
        if not self.notifier.enabled:
            return
        payload = update_payload(self.notify_on_state_change, instance, old[0], old[1])
        if payload is not None:
            await self.notifier.info(ctxt, "instance.update", payload)

    def action(
        self, ctxt: RequestContext, instance: Instance, event: str, notify_action: str
    ) -> ActionRecord:
        return ActionRecord(self, ctxt, instance, event, notify_action)

    async def record_fault(
        self, ctxt: RequestContext, instance: Instance, exc: BaseException
    ) -> None:
        code = exc.code if isinstance(exc, exception.NubesError) else 500
        fault = InstanceFault(
            instance_uuid=instance.uuid,
            code=code,
            message=str(exc) or type(exc).__name__,
            details="".join(traceback.format_exception(exc))[-8000:],
            host=self.host,
        )
        try:
            await fault.create(ctxt)
        except Exception as failure:
            LOG.warning("Could not record the fault of instance %s: %s", instance.uuid, failure)


class ActionRecord:
    """One operation's event (``compute_<op>``) and notifications (``instance.<x>.*``)."""

    def __init__(
        self,
        reporter: Reporter,
        ctxt: RequestContext,
        instance: Instance,
        event: str,
        notify_action: str,
    ) -> None:
        self.reporter = reporter
        self.ctxt = ctxt
        self.instance = instance
        self.event = event
        self.notify_action = notify_action
        self._event_started = False

    async def _notify(self, phase: str, exc: BaseException | None = None) -> None:
        notifier = self.reporter.notifier
        if not notifier.enabled:
            return
        payload = InstanceActionPayload.from_instance_and_fault(self.instance, exc)
        event_type = f"instance.{self.notify_action}.{phase}"
        if exc is None:
            await notifier.info(self.ctxt, event_type, payload)
        else:
            await notifier.error(self.ctxt, event_type, payload)

    async def start(self, *, recorded: bool = False) -> None:
        """Start the event and send ``instance.<action>.start``.

        ``recorded``: the conductor already wrote the event's start in this
        host's name (a placed build, compute 1.11), so no call for it; its
        end goes with the step's report as any other's.
        """
        if recorded:
            self._event_started = True
        else:
            try:
                await InstanceActionEvent.event_start(
                    self.ctxt, self.instance.uuid, self.event, host=self.reporter.host
                )
                self._event_started = True
            except (exception.NotFound, exception.Forbidden) as exc:
                # No action row for this request (an internal operation), or
                # the row is gone: the operation goes on without its history.
                LOG.debug("No %s event for instance %s: %s", self.event, self.instance.uuid, exc)
        await self._notify("start")

    async def _finish(self, end: EventEnd) -> None:
        if not self._event_started:
            return
        holder = _STEP_EVENT.get()
        if holder is not None and holder.end is None:
            holder.end = end  # it goes with the step's report
            return
        try:
            await InstanceActionEvent.event_finish(
                self.ctxt,
                self.instance.uuid,
                end.event,
                result=end.result,
                traceback=end.traceback,
                details=end.details,
            )
        except Exception as exc:
            LOG.warning("Could not finish event %s of %s: %s", self.event, self.instance.uuid, exc)

    async def succeed(self) -> None:
        await self._finish(EventEnd(event=self.event, result=RESULT_SUCCESS))
        await self._notify("end")

    def found_done(self) -> None:
        """The step found its work done already, so it starts no event and
        sends no notification: a repeat, after an earlier try's report was
        lost or after the restart repair finished what a try its host's death
        cut off. Its report still carries this event's success, which ends
        the event such a cut-off try of the step on this host left open (the
        conductor's write ends only that: with none open it writes nothing).
        Nothing for a conductor capped below 1.5 (no report carries events)."""
        holder = _STEP_EVENT.get()
        if holder is not None and holder.end is None:
            holder.end = EventEnd(event=self.event, result=RESULT_SUCCESS)

    async def fail(self, exc: BaseException) -> None:
        await self.reporter.record_fault(self.ctxt, self.instance, exc)
        await self._finish(
            EventEnd(
                event=self.event,
                result=RESULT_ERROR,
                traceback="".join(traceback.format_exception(exc))[-EVENT_TRACEBACK_LENGTH:],
                details=str(exc)[:EVENT_DETAILS_LENGTH],
            )
        )
        await self._notify("error", exc)
