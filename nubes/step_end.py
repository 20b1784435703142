"""The state a compute step leaves its instance in, as the host reports it.

A host that ends an operation (pause, stop, reboot ...) does not save the
instance's end state itself: it reports it with the step's outcome
(``details["end"]``), and the conductor writes it in the commit that closes
the task. So the instance shows its task_state until the task is closed,
and a client that sees task_state None may ask the next operation at once
(had the host saved it first, the task would still be open for a moment,
and the next operation refused 409). Neutral ground like
:mod:`nubes.step_key`: the conductor and the compute host both use it, and
it imports nothing of theirs.
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
