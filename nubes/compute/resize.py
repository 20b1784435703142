"""Compute's steps of cold migration and resize (source and destination sides), confirm, revert.

An RPC endpoint of its own beside :class:`~nubes.compute.manager.ComputeManager`
(``ComputeManager.endpoints()``), holding its own state and sharing only the
manager's :class:`~nubes.compute.steps.StepRunner`; every method is a
conductor task step run through ``run_step`` (once per task id,
step and try; the outcome reported back). Move steps do driver work only:
the conductor writes the instance's and the migration's state
(``docs/moves.md``), so nothing here saves the instance.

Each step is safe to run again — a repeat after this host restarted (its
step log is then empty), or a new try the conductor sends after it heard
nothing — because it asks the driver what is already there:

============================  ==========================================
migrate_disk_and_power_off    the driver answers a guest it already moved
                              away and keeps with the same disk info (and
                              the kept guest's drive, the same files)
finish_migration              a guest already here is the one built
                              before: only its power is set to match
confirm_migration             nothing kept any more: nothing to remove
revert_migration_destination  nothing here: nothing to remove; on the
                              source host itself, nothing is removed (the
                              source's revert puts the kept guest back in
                              place of the resized one)
finish_revert_migration       the guest already back: only its power
============================  ==========================================

Personality files survive the move as Nova's copy of ``disk.config`` keeps
them: the source reads them back from its guest's config drive
(:meth:`StepRunner.guest_files`) and reports them with its outcome
(conductor 1.8); the conductor gives them to the destination's
``finish_migration`` (compute 1.13), whose new drive holds the instance's
metadata and those files. A source the conductor did not tell to report them
(``carry_files``: some host is older than 1.13) refuses to move a guest that
has files, before it powers it off. Revert and rollback start the source's
kept guest, drive and all, as it was.

The steps of one instance run one at a time on a host: a rollback the
conductor sends after giving up waiting must not race the step it gave up
on (the guest would be taken away after it was put back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nubes import exception
from nubes.compute.steps import ComputeEndpoint, Outcome, StepRunner, step_handler
from nubes.context import RequestContext
from nubes.injected_files import InjectedFiles
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.migration import Migration
from nubes.objects.states import PowerState
from nubes.step_key import StepKey

if TYPE_CHECKING:
    pass

LOG = logging.getLogger(__name__)

Work = Callable[[RequestContext], Awaitable[Outcome]]


class _InstanceLocks:
    """One lock per instance, dropped once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    async def run(self, uuid: str, work: Callable[[], Awaitable[Outcome]]) -> Outcome:
        lock = self._locks.setdefault(uuid, asyncio.Lock())
        self._users[uuid] = self._users.get(uuid, 0) + 1
        try:
            async with lock:
                return await work()
        finally:
            self._users[uuid] -= 1
            if not self._users[uuid]:
                del self._users[uuid]
                del self._locks[uuid]


#: Why a source refuses to move a guest with personality files when the
#: conductor did not ask for them (a host, or a conductor, is too old).
_CANNOT_CARRY = (
    "the guest has personality files on its config drive and the destination "
    "could not be given them: every compute host must serve compute RPC 1.13 "
    "(and the conductors 1.8) first; nothing was moved"
)


def _failed(exc: Exception) -> Outcome:
    return Outcome(False, str(exc) or type(exc).__name__, {"exception": type(exc).__name__})


class ResizeSteps(ComputeEndpoint):
    """The resize steps of a compute host."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner
        self._move_locks = _InstanceLocks()

    async def _move_step(
        self,
        context: RequestContext,
        key: StepKey,
        instance: Instance,
        notify: str,
        work: Callable[[RequestContext], Awaitable[dict[str, Any] | Outcome]],
        phases: tuple[str, ...] = ("start", "end"),
    ) -> None:
        """Run ``work`` as the step ``key`` under the instance's lock; its result
        becomes the outcome's details (or is the outcome, for a step that
        reports more than details). ``instance.<notify>.start`` goes out
        before it and ``.end`` after it succeeded, for the ``phases`` named
        (the conductor sends ``.error``: it knows what the failure leads to)."""

        async def step(ctxt: RequestContext) -> Outcome:
            async def locked() -> Outcome:
                if "start" in phases:
                    await self._notify(ctxt, instance, notify, "start")
                try:
                    done = await work(ctxt)
                except Exception as exc:
                    LOG.warning(
                        "Step %s of task %s for %s failed on %s: %s",
                        key.step,
                        key.task_id,
                        instance.uuid,
                        self.runner.host,
                        exc,
                    )
                    return _failed(exc)
                if "end" in phases:
                    await self._notify(ctxt, instance, notify, "end")
                return done if isinstance(done, Outcome) else Outcome(True, details=done)

            return await self._move_locks.run(instance.uuid, locked)

        await self.runner.run_step(context, key, step)

    async def _notify(
        self, ctxt: RequestContext, instance: Instance, action: str, phase: str
    ) -> None:
        notifier = self.runner.reporter.notifier
        if not notifier.enabled:
            return
        from nubes.notifications.objects import InstanceActionPayload

        payload = InstanceActionPayload.from_instance_and_fault(instance, None)
        await notifier.info(ctxt, f"instance.{action}.{phase}", payload)

    # -- source: power off and copy the disks ----------------------------------------

    @step_handler
    async def migrate_disk_and_power_off(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
        flavor: Flavor,
        dest_host: str,
        carry_files: bool = False,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            # Read before anything is done: a guest whose files could not
            # reach the destination stays as it is, running here.
            files = await self.runner.guest_files(instance)
            if files and not (carry_files and self.runner.conductor.reports_injected_files()):
                raise exception.Conflict(reason=_CANNOT_CARRY)
            disk_info = await self.runner.driver.migrate_disk_and_power_off(
                ctxt, instance, dest_host, flavor
            )
            return Outcome(True, details={"disk_info": disk_info}, injected_files=files)

        await self._move_step(context, key, instance, "resize", work)

    # -- destination: build the guest from the disks ----------------------------------

    @step_handler
    async def finish_migration(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
        disk_info: dict[str, Any],
        image: dict[str, Any],
        resize_instance: bool,
        power_on: bool,
        injected_files: InjectedFiles | None = None,
    ) -> None:
        async def work(ctxt: RequestContext) -> dict[str, Any]:
            power = await self.runner.power_state(instance)
            if power is None:
                # The guest's drive, as the instance records it, with the
                # personality files the source's drive has (1.13): files make
                # a drive even where none was asked for, as at build.
                drive = await self.runner.config_drive(ctxt, instance, injected=injected_files)
                await self.runner.driver.finish_migration(
                    ctxt,
                    migration,
                    instance,
                    disk_info,
                    image,
                    resize_instance,
                    power_on,
                    config_drive=drive,
                )
                return {}
            # Built before this try (a repeat, or this host restarted): the
            # guest is the one the move made; its power is all that may differ.
            if power_on and power != PowerState.RUNNING:
                await self.runner.driver.power_on(ctxt, instance)
            elif not power_on and power != PowerState.SHUTDOWN:
                await self.runner.driver.power_off(instance)
            return {"already_done": True}

        await self._move_step(context, key, instance, "resize_finish", work)

    # -- confirm: the source forgets what it kept ---------------------------------------

    @step_handler
    async def confirm_migration(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
    ) -> None:
        async def work(ctxt: RequestContext) -> dict[str, Any]:
            await self.runner.driver.confirm_migration(ctxt, migration, instance)
            return {}

        await self._move_step(context, key, instance, "resize_confirm", work)

    # -- revert (or roll back): destination first, then the source -----------------------

    @step_handler
    async def revert_migration_destination(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
    ) -> None:
        async def work(ctxt: RequestContext) -> dict[str, Any]:
            if migration.source_compute == self.runner.host:
                # A resize on one host: the guest here is also what the
                # source's revert replaces with the kept one; removing it
                # would remove what was kept with it.
                return {"same_host": True}
            await self.runner.driver.destroy(ctxt, instance)
            return {}

        # As Nova: the revert starts on the destination and ends on the source.
        await self._move_step(context, key, instance, "resize_revert", work, ("start",))

    @step_handler
    async def finish_revert_migration(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
        power_on: bool,
    ) -> None:
        async def work(ctxt: RequestContext) -> dict[str, Any]:
            await self.runner.driver.finish_revert_migration(ctxt, instance, migration, power_on)
            return {}

        await self._move_step(context, key, instance, "resize_revert", work, ("end",))
