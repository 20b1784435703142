"""Which step of which conductor task, and which try of it: the name a compute step travels by.

The conductor sends it with every step it asks of a compute host (compute
RPC 1.5: the ``key`` argument, one struct), the host files its work and
its outcome under it, and the report back names it again
(``ConductorAPI.step_finished``), where the conductor checks it against
the step and try the task awaits. Neutral ground: the conductor, the
compute host and the RPC layer all use it, and it imports nothing of theirs.
"""

from __future__ import annotations

import msgspec


class StepKey(msgspec.Struct, frozen=True, kw_only=True):
    """One report of one compute step of one task: which task, which step, which try."""

    task_id: int
    step: str
    attempt: int
