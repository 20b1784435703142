"""Telling a host to remove the guest of a try the conductor gave up on.

When a task stops waiting for a host without hearing it out (a build's
spawn timed out and goes to an alternate, or the build's deadline passed),
that host may still run, or still be spawning, a guest for it: its report
may simply have been lost. Nothing else would tell it (the host's restart
repair reaps guests the database does not place on it, but only at its next
restart), so the instance could run on two hosts. The give-up commits, in
the same transaction, a ``remove_guest`` task (:func:`remove_guest_writes`):
durable like any task, so a conductor that dies before sending it leaves it
to the next one.

One step, ``remove_guest``: commit the try, cast ``remove_guest`` to the
host carrying task id, step and try, wait for the host's confirmation
(``step_finished``, authorised like every report: only from that host). The
host removes the guest unless the database places the instance on it again
(``ComputeManager.remove_guest``), so a late or repeated instruction never
removes a guest that belongs there. No confirmation by ``[conductor]
compute_step_timeout`` is tried again, up to :data:`TRIES` times; then the
task fails, and the host's restart repair — a host that does not answer is
down or cut off, and it reaps on its way back — is what is left.
"""

from __future__ import annotations

import logging

from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.base import Run, StepDef, Task, Writes, task_kind
from nubes.conductor.tasks.payloads import RemoveGuestPayload, expect_report
from nubes.conductor.tasks.states import Step, TaskKind
from nubes.db.api import tasks
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection

LOG = logging.getLogger(__name__)

#: Times the host is asked before the task gives up on it.
TRIES = 5


class QueueRemoval:
    """A write that queues a ``remove_guest`` task for ``host`` in the caller's commit.

    It keeps the id of the task it created (once its transaction ran), so
    that after the commit :func:`kick_created` has this conductor claim it at
    once.
    """

    def __init__(self, run: Run, host: str, instance_uuid: str, reason: str) -> None:
        self.run, self.host, self.instance_uuid, self.reason = run, host, instance_uuid, reason
        self.created: list[int] = []

    async def __call__(self, conn: Connection) -> None:
        run, host, instance_uuid, reason = self.run, self.host, self.instance_uuid, self.reason
        row = await tasks.create(
            conn,
            kind=TaskKind.REMOVE_GUEST.value,
            step=Step.REMOVE_GUEST.value,
            payload=payloads.encode(
                RemoveGuestPayload(
                    host=host, instance_uuid=instance_uuid, reason=reason, for_task=run.id
                )
            ),
            context=run.ctxt.to_dict(),
        )
        # A commit retried the ordinary way runs the write again: the last run's id counts.
        self.created[:] = [row["id"]]


def remove_guest_writes(run: Run, host: str, instance_uuid: str, reason: str) -> QueueRemoval:
    """The write of :class:`QueueRemoval`, for the caller's commit."""
    return QueueRemoval(run, host, instance_uuid, reason)


def kick_created(run: Run, queued: Writes | None) -> None:
    """Claim the ``remove_guest`` task ``queued`` created (else: the next poll finds it)."""
    if isinstance(queued, QueueRemoval) and queued.created:
        run.engine.kick(list(queued.created))


@task_kind
class RemoveGuestTask(Task):
    kind = TaskKind.REMOVE_GUEST

    def step_defs(self) -> list[StepDef]:
        return [StepDef(Step.REMOVE_GUEST, self.remove)]

    async def remove(self, run: Run) -> str | None:
        payload = payloads.decode(run.payload, RemoveGuestPayload)
        host, uuid = payload.host, payload.instance_uuid
        awaited = payload.awaiting
        if awaited is None:
            return await self._ask(run, 1)

        async def send() -> None:
            await self.engine.compute.remove_guest(run.ctxt, host, uuid, awaited.key(run.id))

        outcome = await run.wait_for_report(send)
        if outcome is not None and outcome.ok:
            details = outcome.details
            LOG.info(
                "%r: %s %s the guest of %s (%s)",
                run,
                host,
                "removed" if details.get("removed") else "has no",
                uuid,
                payload.reason,
            )
            await run.finish(TaskStatus.SUCCEEDED)
            return None
        error = (outcome.error if outcome is not None else None) or "no answer"
        if awaited.attempt < TRIES:
            LOG.warning("%r: %s: %s; asking again", run, host, error)
            return await self._ask(run, awaited.attempt + 1)
        message = (
            f"{host} did not confirm the removal of the guest of {uuid} after {TRIES} tries "
            f"({error}); its restart repair removes it"
        )
        LOG.warning("%r: %s", run, message)
        await run.finish(TaskStatus.FAILED, last_error=message)
        return None

    async def _ask(self, run: Run, attempt: int) -> str:
        payload = expect_report(
            run.payload,
            step=Step.REMOVE_GUEST,
            attempt=attempt,
            host=payloads.decode(run.payload, RemoveGuestPayload).host,
            timeout=self.engine.compute_step_timeout,
        )
        return await run.commit(Step.REMOVE_GUEST, payload=payload)

    async def expire(self, run: Run) -> None:
        # It has no deadline; a row given one by hand just ends.
        await run.finish(TaskStatus.FAILED, last_error="deadline passed")
