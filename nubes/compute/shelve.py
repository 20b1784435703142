"""A compute host's shelve steps (compute RPC 1.6): shelve_instance,
shelve_offload_instance, unshelve_instance.

An RPC endpoint of its own beside
:class:`~nubes.compute.manager.ComputeManager`, sharing its
:class:`~nubes.compute.steps.StepRunner`. The conductor's tasks
(``conductor/tasks/shelve.py``) decide what follows each step:

* ``shelve_instance`` powers the guest off, snapshots its disk to the
  shelved image the API recorded (1.9: ``image_id`` and the conductor's
  upload grant; the upload is createImage's,
  :func:`~nubes.compute.snapshots.upload_guest_disk`) and saves SHELVED
  (with ``shelving_offloading`` when the offload follows at once); a
  failure powers the guest on again if it ran and drops the task_state;
* ``shelve_offload_instance`` removes the guest; the conductor then gives its
  claim and host back and saves SHELVED_OFFLOADED (a host may not clear its
  own placement);
* ``unshelve_instance`` powers the guest on where it was shelved, or spawns
  it from the image (the shelved snapshot) on the host the conductor placed
  it on, and saves ACTIVE; the conductor then deletes the snapshot.

Each records its ``compute_<step>`` event and ``instance.<action>``
start/end (error) notifications; a failure drops the task_state it set and
records a fault (the conductor rolls the rest back).
"""

from __future__ import annotations

import logging
from typing import Any

from nubes.compute.reporting import utcnow
from nubes.compute.snapshots import upload_guest_disk
from nubes.compute.steps import ComputeEndpoint, Outcome, StepRunner, step_handler
from nubes.context import RequestContext
from nubes.objects.instance import Instance
from nubes.objects.states import SHELVE_TASK_STATES, PowerState, TaskState, VMState
from nubes.step_key import StepKey

LOG = logging.getLogger(__name__)

_T = TaskState
_V = VMState

#: The task_states of a shelve on its host, before the instance is SHELVED.
_SHELVING = SHELVE_TASK_STATES


class ShelveSteps(ComputeEndpoint):
    """The shelve, offload and unshelve steps of one host."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner

    @step_handler
    async def shelve_instance(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        offload: bool = False,
        image_id: str | None = None,
        grant: str | None = None,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._shelve(ctxt, instance, offload, image_id, grant)

        await self.runner.run_step(context, key, work)

    async def _shelve(
        self,
        ctxt: RequestContext,
        instance: Instance,
        offload: bool,
        image_id: str | None,
        grant: str | None,
    ) -> Outcome:
        reporter = self.runner.reporter
        end_task = _T.SHELVING_OFFLOADING if offload else None
        if instance.vm_state == _V.SHELVED and instance.task_state == end_task:
            return Outcome(True, details={"already_done": True})
        start_vm = _V(instance.vm_state)
        action = reporter.action(ctxt, instance, "compute_shelve_instance", "shelve")
        await action.start()
        power = await self.runner.power_state(instance)
        disk_format: str | None = None
        try:
            if instance.task_state not in _SHELVING:
                await reporter.save_state(
                    ctxt, instance, start_vm, _T.SHELVING, expected_task_state=[None]
                )
            # Off before the copy, as Nova: the snapshot is of a disk at rest.
            await self.runner.driver.power_off(instance)
            if image_id is not None:
                disk_format = await upload_guest_disk(
                    self.runner,
                    ctxt,
                    instance,
                    image_id,
                    grant or "",
                    vm_state=start_vm,
                    pending=_T.SHELVING_IMAGE_PENDING_UPLOAD,
                    uploading=_T.SHELVING_IMAGE_UPLOADING,
                    started=[_T.SHELVING],
                )
            details: dict[str, Any] = {"disk_format": disk_format} if disk_format else {}
            if end_task is None:
                # The shelve ends here: SHELVED in the commit that closes the
                # task (nubes/step_end.py).
                end = await reporter.end_state(ctxt, instance, _V.SHELVED, PowerState.SHUTDOWN)
                details.update(end.details())
            else:
                # The task goes on to the offload: the state is the host's to save.
                await reporter.save_state(
                    ctxt,
                    instance,
                    _V.SHELVED,
                    end_task,
                    expected_task_state=list(_SHELVING),
                    power_state=PowerState.SHUTDOWN,
                )
        except Exception as exc:
            await self._undo_shelve(ctxt, instance, power)
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True, details=details or None)

    async def _undo_shelve(
        self, ctxt: RequestContext, instance: Instance, power: PowerState | None
    ) -> None:
        """A shelve that failed (its upload, say) leaves the server as it was:
        the guest running again if it ran. The shelving task_state is the
        conductor's to drop, with the task's close (nubes/step_end.py); its
        power state was never saved as off, the end being the conductor's."""
        if power == PowerState.RUNNING:
            try:
                await self.runner.driver.power_on(ctxt, instance)
            except Exception as failure:
                LOG.warning("Could not power %s on again: %s", instance.uuid, failure)

    @step_handler
    async def shelve_offload_instance(
        self, context: RequestContext, instance: Instance, key: StepKey
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            action = self.runner.reporter.action(
                ctxt, instance, "compute_shelve_offload_instance", "shelve_offload"
            )
            await action.start()
            try:
                # Idempotent: a guest already gone (a repeat) is fine.
                await self.runner.driver.destroy(ctxt, instance)
            except Exception as exc:
                await action.fail(exc)
                return Outcome(False, str(exc), {"exception": type(exc).__name__})
            await action.succeed()
            return Outcome(True)

        await self.runner.run_step(context, key, work)

    @step_handler
    async def unshelve_instance(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        image: dict[str, Any],
        request: dict[str, Any],
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._unshelve(ctxt, instance, image, request)

        await self.runner.run_step(context, key, work)

    async def _unshelve(
        self,
        ctxt: RequestContext,
        instance: Instance,
        image: dict[str, Any],
        request: dict[str, Any],
    ) -> Outcome:
        reporter = self.runner.reporter
        power = await self.runner.power_state(instance)
        if instance.vm_state == _V.ACTIVE and power == PowerState.RUNNING:
            return Outcome(True, details={"already_done": True})
        action = reporter.action(ctxt, instance, "compute_unshelve_instance", "unshelve")
        await action.start()
        try:
            if power is None:
                # Offloaded: the guest is made anew from the image, here.
                drive = await self.runner.config_drive(ctxt, instance, None)
                await self.runner.driver.spawn(ctxt, instance, image, request, config_drive=drive)
            else:
                await self.runner.driver.power_on(ctxt, instance)
            # Still ours (an unshelve given up meanwhile refuses this save);
            # ACTIVE is the conductor's to write, with the task's close
            # (nubes/step_end.py).
            await reporter.save_state(
                ctxt,
                instance,
                _V(instance.vm_state),
                _T.UNSHELVING,
                expected_task_state=_T.UNSHELVING,
                power_state=PowerState.RUNNING,
                launched_at=utcnow(),
                launched_on=self.runner.host,
            )
            end = await reporter.end_state(ctxt, instance, _V.ACTIVE, PowerState.RUNNING)
        except Exception as exc:
            if power is None:
                try:
                    await self.runner.driver.destroy(ctxt, instance)
                except Exception as cleanup:
                    LOG.warning("Could not clean up unshelve of %s: %s", instance.uuid, cleanup)
            await action.fail(exc)
            return Outcome(False, str(exc), {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True, details=end.details())
