"""What a compute step leaves behind, as the host reports it: the instance's
end state and the end of the step's action event.

A host that ends an operation (pause, stop, reboot ...) does not save the
instance's end state itself: it reports it with the step's outcome
(``details["end"]``), and the conductor writes it in the commit that closes
the task. So the instance shows its task_state until the task is closed,
and a client that sees task_state None may ask the next operation at once
(had the host saved it first, the task would still be open for a moment,
and the next operation refused 409). Neutral ground like
:mod:`nubes.step_key`: the conductor and the compute host both use it, and
it imports nothing of theirs.

The step's action event (``compute_<op>``, Nova's os-instance-actions)
ends the same way since conductor RPC 1.5: the host started it with an
object call, but sends its end (:class:`EventEnd`) with the step's report,
and the conductor writes it in the commit that records the report: one
round trip and one commit fewer per step. A host whose conductors are
capped below 1.5 finishes it itself, as before.
"""

from __future__ import annotations

from typing import Any

import msgspec

#: The key of :class:`InstanceEnd` in a step outcome's details.
DETAILS_KEY = "end"


class InstanceEnd(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where the step left the instance: its vm_state (task_state None) and,
    if the host read it, the power state."""

    vm_state: str
    power_state: int | None = None

    def details(self) -> dict[str, Any]:
        """This end as a step outcome's details carry it."""
        return {DETAILS_KEY: msgspec.to_builtins(self)}

    @classmethod
    def from_details(cls, details: dict[str, Any] | None) -> InstanceEnd | None:
        """The end a step's details carry (None: it reports none, as a host
        that saved the state itself); ValueError if it does not read as one."""
        raw = (details or {}).get(DETAILS_KEY)
        if raw is None:
            return None
        try:
            return msgspec.convert(raw, cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"the reported end state does not read: {exc}") from None


#: Longest event details kept (a step's error, for the instance action's event).
EVENT_DETAILS_LENGTH = 255
#: Longest event traceback kept (its end: where the error was raised).
EVENT_TRACEBACK_LENGTH = 8000


class EventEnd(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The end of the action event a step started (``compute_<op>``): its
    name, result ("Success" or "Error", Nova's) and, on failure, the error
    and its traceback as the instance action's event shows them to admins."""

    event: str
    result: str
    traceback: str | None = None
    details: str | None = None
