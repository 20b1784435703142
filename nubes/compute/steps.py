"""Conductor task steps as a compute host sees them: once each, outcome reported.

Every cast from the conductor names its step: ``(task_id, step, attempt)``.
A host keeps the outcomes of the steps it finished (the last
``[compute] completed_steps_kept``) and the steps running now; a message for
a step it finished gets the same outcome sent again, one for a step still
running is dropped (its outcome goes out when it ends). After a restart the
record is empty: the operations then rely on the instance's state and the
driver to see what was already done (a build of an instance the driver runs
and the database shows ACTIVE reports success at once).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from nubes.context import RequestContext

StepKey = tuple[int, str, int]


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
    ) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str | None = None
    details: dict[str, Any] | None = None


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
