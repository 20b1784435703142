"""Shelve, shelve offload and unshelve (``docs/tasks.md``).

``shelve`` (first step ``shelve``): the instance's host powers the guest off,
snapshots its disk to the image the API recorded with the task
(``<name>-shelved``, queued; the upload is createImage's: a grant for that one
image and that host, :func:`~nubes.conductor.tasks.snapshot.upload_grant`)
and saves SHELVED; the conductor records the image's disk format and
``shelved_at`` / ``shelved_host`` / ``shelved_image_id`` in its system
metadata as Nova does. With ``[DEFAULT] shelved_offload_time = 0`` the host
saves ``shelving_offloading`` instead and the task goes on with the offload.
A failed shelve deletes the image (no half image; the host has the guest
running again). Hosts older than compute 1.9 take no snapshot: the image is
deleted and the server comes back from its original image.

``offload`` (``shelve`` with offload, and ``shelve_offload``'s first step): the
host removes the guest; then ``release``: the scheduler gives its claim back,
and the instance is saved SHELVED_OFFLOADED with no host, node or power and
its ports bound to no host, so it holds nothing anywhere.

``unshelve`` (first step ``schedule``): a SHELVED instance is powered on where
it is; a SHELVED_OFFLOADED one is scheduled anew (the availability zone the
API recorded, or an admin's host at 2.91, still filtered), placed (host,
node, ports bound) and spawned there from its shelved snapshot (the API put
it in the payload). Either way, once it runs the snapshot is deleted and the
shelve's system metadata dropped (Nova's unshelve and start of a shelved
server). Deleting a shelved server deletes its snapshot (``delete.py``).

Failures: the transitional task_state is dropped with a fault, a failed event
and ``instance.<action>.error``; an unshelve that placed an offloaded
instance gives its claim back and leaves it offloaded, on no host.
"""

from __future__ import annotations

from typing import Any

from nubes import exception, grants
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.base import Run, StepDef, Task, Writes, run_writes, task_kind
from nubes.conductor.tasks.build import request_spec
from nubes.conductor.tasks.helpers import (
    chain,
    end_writes,
    finish_action_writes,
    instance_object,
    load_instance,
    notify_error,
    reported_end,
    set_instance,
)
from nubes.conductor.tasks.payloads import (
    SHELVED_IMAGE_KEY,
    SHELVED_KEYS,
    SchedulingRequest,
    ShelvePayload,
    expect_report,
)
from nubes.conductor.tasks.snapshot import delete_image, record_disk_format, upload_grant
from nubes.conductor.tasks.states import Step, TaskKind
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Connection
from nubes.db.types import utcnow
from nubes.network import ports as network_ports
from nubes.objects.states import SHELVE_TASK_STATES, PowerState, TaskState, VMState

#: Every task_state these tasks may leave behind when they fail.
#: The host's own steps of a shelve among them: a failed shelve's host leaves
#: its task_state for the close to drop (nubes/step_end.py), wherever it failed.
_TASK_STATES = (*SHELVE_TASK_STATES, TaskState.SHELVING_OFFLOADING, TaskState.UNSHELVING)


class _ShelveBase(Task):
    #: The notification event of a failure.
    error_event: str

    async def _host_step(
        self,
        run: Run,
        step: Step,
        send_method: str,
        *,
        grant_for: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Commit the try of ``step`` on the instance's host (first pass), then
        send ``send_method`` and wait; the outcome, or None (deadline).
        ``grant_for``: an image the host uploads to, with a grant for it and
        the host awaited (``grant``)."""
        awaited = run.awaiting
        if awaited is None or awaited.step != step.value:
            row = await load_instance(run)
            if row is None:
                await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
                return None
            if not row["host"]:
                await self.fail(run, "The instance is not on any host")
                return None
            payload = expect_report(
                run.payload,
                step=step,
                attempt=1,
                host=row["host"],
                node=row["node"],
                timeout=self.engine.compute_step_timeout,
            )
            await run.commit(step, payload=payload)
        awaited = run.awaited()

        async def send() -> None:
            row = await load_instance(run)
            if row is None:
                raise exception.InstanceNotFound(instance_id=run.instance_uuid)
            method = getattr(self.engine.compute, send_method)
            if grant_for is not None:
                kwargs["grant"] = upload_grant(self.engine, grant_for, awaited.host)
            await method(
                run.ctxt, awaited.host, instance_object(row), awaited.key(run.id), **kwargs
            )

        return await run.wait_for_report(send)

    async def offload(self, run: Run) -> str | None:
        outcome = await self._host_step(run, Step.OFFLOAD, "shelve_offload_instance")
        if outcome is None:
            return run.step
        if not outcome.ok:
            await self.fail(run, f"shelve offload on {outcome.host} failed: {outcome.error}")
            return None
        return await run.commit(Step.RELEASE)

    async def release(self, run: Run) -> str | None:
        """The claim given back, then the instance on no host (one commit)."""
        assert run.instance_uuid is not None
        await self.engine.scheduler.release(run.ctxt, run.instance_uuid)
        offloaded = set_instance(
            run,
            {
                "vm_state": VMState.SHELVED_OFFLOADED,
                "task_state": None,
                "host": None,
                "node": None,
                "power_state": PowerState.NOSTATE,
            },
            expected_task_state=[TaskState.SHELVING_OFFLOADING],
        )
        unbind = network_ports.unbind_writes(run.instance_uuid)
        await run.finish(
            TaskStatus.SUCCEEDED, writes=chain(offloaded, unbind, finish_action_writes(run))
        )
        return None

    async def revert(self, run: Run) -> None:
        """Drop the transitional task_state (if it is still ours)."""
        write = set_instance(run, {"task_state": None}, expected_task_state=_TASK_STATES)
        try:
            async with self.engine.db.writer() as conn:
                await run_writes(conn, write)
        except (exception.InstanceUpdateConflict, exception.InstanceNotFound):
            pass  # the host finished it, or someone else moved it on

    def fail_writes(self, run: Run) -> Writes:
        async def revert(conn: Connection) -> None:
            write = set_instance(run, {"task_state": None}, expected_task_state=_TASK_STATES)
            try:
                await run_writes(conn, write)
            except exception.InstanceUpdateConflict:
                pass

        return revert

    async def fail(self, run: Run, message: str, *, status: TaskStatus = TaskStatus.FAILED) -> None:
        async def history(conn: Connection) -> None:
            await run.fault(conn, message)
            await run.event(conn, f"conductor_{self.kind}_failed", ok=False, details=message)
            await run.finish_action(conn, ok=False)

        await run.finish(status, last_error=message, writes=chain(self.fail_writes(run), history))
        await notify_error(run, self.error_event, message)

    async def expire(self, run: Run) -> None:
        await self.fail(
            run,
            f"The {self.kind} did not finish before its deadline",
            status=TaskStatus.ROLLED_BACK,
        )


@task_kind
class ShelveTask(_ShelveBase):
    kind = TaskKind.SHELVE
    error_event = "instance.shelve.error"

    def step_defs(self) -> list[StepDef]:
        return [
            StepDef(Step.SHELVE, self.shelve, self.revert),
            StepDef(Step.OFFLOAD, self.offload),
            StepDef(Step.RELEASE, self.release),
        ]

    async def shelve(self, run: Run) -> str | None:
        payload = run.typed(ShelvePayload)
        image_id = payload.image_id
        if image_id is not None and not self.engine.compute.can_snapshot_on_shelve():
            # Hosts older than compute 1.9 shelve without a snapshot (the
            # server comes back from its original image): no image is kept
            # that nothing would fill.
            await delete_image(self.engine, image_id)
            image_id = None
        # With an image: the snapshot's, uploaded with a grant for the host asked.
        extra: dict[str, Any] = {} if image_id is None else {"image_id": image_id}
        outcome = await self._host_step(
            run,
            Step.SHELVE,
            "shelve_instance",
            offload=payload.offload,
            grant_for=image_id,
            **extra,
        )
        if outcome is None:
            return run.step
        if not outcome.ok:
            await self.fail(run, f"shelve on {outcome.host} failed: {outcome.error}")
            return None
        row = await load_instance(run)
        if row is None:
            await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
            return None
        try:
            end = reported_end(outcome, row, SHELVE_TASK_STATES)
        except exception.Invalid as exc:
            await self.fail(run, f"shelve on {outcome.host}: {exc}")
            return None
        sysmeta = {
            **(row["system_metadata"] or {}),
            "shelved_at": utcnow().isoformat(),
            "shelved_host": str(row["host"]),
        }
        if image_id is not None:
            await record_disk_format(self.engine, image_id, outcome.details)
            # What unshelve spawns from, and deletes once it did (Nova's key).
            sysmeta[SHELVED_IMAGE_KEY] = image_id
        recorded = set_instance(run, {"system_metadata": sysmeta})
        if payload.offload:
            waiting = expect_report(
                run.payload,
                step=Step.OFFLOAD,
                attempt=1,
                host=row["host"],
                node=row["node"],
                timeout=self.engine.compute_step_timeout,
            )
            return await run.commit(Step.OFFLOAD, payload=waiting, writes=recorded)
        # SHELVED in the commit that closes the task (nubes/step_end.py).
        writes = chain(end_writes(run, end, row), recorded, finish_action_writes(run))
        await run.finish(TaskStatus.SUCCEEDED, writes=writes)
        return None

    async def revert(self, run: Run) -> None:
        """The shelved image gone too: no half image outlives a failed shelve."""
        await self._drop_image(run)
        await super().revert(run)

    async def fail(self, run: Run, message: str, *, status: TaskStatus = TaskStatus.FAILED) -> None:
        if run.step == Step.SHELVE:
            # Past it (offload, release) the snapshot is whole and the server
            # SHELVED: it keeps it, as Nova's does.
            await self._drop_image(run)
        await super().fail(run, message, status=status)

    async def _drop_image(self, run: Run) -> None:
        image_id = run.typed(ShelvePayload).image_id
        if image_id is not None:
            await delete_image(self.engine, image_id)


@task_kind
class ShelveOffloadTask(_ShelveBase):
    kind = TaskKind.SHELVE_OFFLOAD
    error_event = "instance.shelve_offload.error"

    def step_defs(self) -> list[StepDef]:
        return [
            StepDef(Step.OFFLOAD, self.offload, self.revert),
            StepDef(Step.RELEASE, self.release),
        ]


@task_kind
class UnshelveTask(_ShelveBase):
    kind = TaskKind.UNSHELVE
    error_event = "instance.unshelve.error"

    def step_defs(self) -> list[StepDef]:
        return [
            StepDef(Step.SCHEDULE, self.schedule, self.revert),
            StepDef(Step.UNSHELVE, self.unshelve),
        ]

    async def schedule(self, run: Run) -> str | None:
        row = await load_instance(run)
        if row is None:
            await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
            return None
        payload = run.typed(ShelvePayload)
        timeout = self.engine.compute_step_timeout
        if row["vm_state"] == VMState.SHELVED and row["host"]:
            # Still on its host: powered on there.
            raw = expect_report(
                run.payload,
                step=Step.UNSHELVE,
                attempt=1,
                host=row["host"],
                node=row["node"],
                timeout=timeout,
            )
            return await run.commit(Step.UNSHELVE, payload=raw)
        try:
            chosen = await self.engine.scheduler.select_destinations(
                run.ctxt,
                request_spec(
                    row, SchedulingRequest(image=payload.image), host=payload.requested_host
                ),
                [row["uuid"]],
                False,
            )
        except exception.NoValidHost as exc:
            await self._fail_offloaded(run, exception.NoValidHost.FAULT_MESSAGE, str(exc))
            return None
        sel = chosen[0][0]
        raw = expect_report(
            run.payload,
            step=Step.UNSHELVE,
            attempt=1,
            host=sel.host,
            node=sel.nodename,
            timeout=timeout,
        )
        placed = payloads.decode(raw, ShelvePayload)
        # The only host and node the host may set the instance to (authz).
        placed.dest_host, placed.dest_node = sel.host, sel.nodename
        placement = set_instance(
            run,
            {"host": sel.host, "node": sel.nodename},
            expected_task_state=[TaskState.UNSHELVING],
        )
        bind = network_ports.bind_writes(run.instance_uuid or "", sel.host)
        return await run.commit(
            Step.UNSHELVE, payload=payloads.encode(placed, raw), writes=chain(placement, bind)
        )

    async def unshelve(self, run: Run) -> str | None:
        payload = run.typed(ShelvePayload)
        awaited = run.awaited()
        image = grants.attach(
            payload.image,
            awaited.host,
            self.engine.conf.image_grant_secret,
            self.engine.conf.image_grant_ttl,
        )

        async def send() -> None:
            row = await load_instance(run)
            if row is None:
                raise exception.InstanceNotFound(instance_id=run.instance_uuid)
            await self.engine.compute.unshelve_instance(
                run.ctxt, awaited.host, instance_object(row), awaited.key(run.id), image, {}
            )

        outcome = await run.wait_for_report(send)
        if outcome is None:
            return run.step
        if outcome.ok:
            try:
                reported_end(outcome, await load_instance(run), (TaskState.UNSHELVING,))
            except exception.Invalid as exc:
                outcome = awaited.failure(str(exc))
            else:
                await self._forget_shelve(run)
                return None
        message = f"unshelve on {outcome.host} failed: {outcome.error}"
        if payload.dest_host is not None:
            await self._fail_offloaded(run, message)
        else:
            await self.fail(run, message)
        return None

    async def _forget_shelve(self, run: Run) -> None:
        """The server runs again: its shelved snapshot deleted and the shelve's
        system metadata dropped, as Nova's unshelve (and start of a shelved
        server) does, then the task ends. A repeat finds the image gone."""
        row = await load_instance(run)
        if row is None:
            await run.finish(TaskStatus.CANCELLED, last_error="the instance was deleted")
            return
        sysmeta = dict(row["system_metadata"] or {})
        image_id = sysmeta.get(SHELVED_IMAGE_KEY)
        if image_id:
            await delete_image(self.engine, str(image_id))
        # ACTIVE, as the host reported it, in the commit that closes the task
        # (nubes/step_end.py).
        outcome = payloads.reported(run.payload)
        try:
            end = None if outcome is None else reported_end(outcome, row, (TaskState.UNSHELVING,))
        except exception.Invalid:
            end = None  # checked when the report came: moved on since
        writes: list[Writes] = [
            end_writes(run, end, row),
            finish_action_writes(run),
        ]
        if any(key in sysmeta for key in SHELVED_KEYS):
            for key in SHELVED_KEYS:
                sysmeta.pop(key, None)
            writes.insert(1, set_instance(run, {"system_metadata": sysmeta}))
        await run.finish(TaskStatus.SUCCEEDED, writes=chain(*writes))

    async def _fail_offloaded(self, run: Run, message: str, details: str | None = None) -> None:
        """An offloaded instance's unshelve failed: its claim given back, on no host again."""
        assert run.instance_uuid is not None
        await self.engine.scheduler.release(run.ctxt, run.instance_uuid)

        async def history(conn: Connection) -> None:
            await run.fault(conn, message, details=details)
            await run.event(conn, "conductor_unshelve_failed", ok=False, details=message)
            await run.finish_action(conn, ok=False)

        unbind = network_ports.unbind_writes(run.instance_uuid)
        back = set_instance(
            run,
            {
                "vm_state": VMState.SHELVED_OFFLOADED,
                "task_state": None,
                "host": None,
                "node": None,
                "power_state": PowerState.NOSTATE,
            },
            expected_task_state=[TaskState.UNSHELVING],
        )
        await run.finish(TaskStatus.FAILED, last_error=message, writes=chain(back, unbind, history))
        await notify_error(run, self.error_event, message)

    async def expire(self, run: Run) -> None:
        if run.typed(ShelvePayload).dest_host is not None:
            await self._fail_offloaded(run, "The unshelve did not finish before its deadline")
            return
        await super().expire(run)
