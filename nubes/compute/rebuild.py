"""Compute's steps of rebuild in place and evacuation to this host; evacuated remains.

An RPC endpoint of its own beside :class:`~nubes.compute.manager.ComputeManager`
(``ComputeManager.endpoints()``), holding its own state and sharing only the
manager's :class:`~nubes.compute.steps.StepRunner`; every method is a
conductor task step run through ``run_step`` (once per task id,
step and try; the outcome reported back). Move steps do driver work only:
the conductor writes the instance's and the migration's state
(``docs/moves.md``). The host records its own action event
(``compute_rebuild_instance``), a fault when the driver fails, and the
``instance.rebuild.*`` / ``instance.evacuate.*`` notifications.

:func:`remove_evacuated_remains` is the other half of an evacuation: the
source host, when it starts again, removes the guest an evacuation left
behind on it — only for a migration record that says the instance was
evacuated from it (type ``evacuation``, status ``done``), never by guessing
from what the database places elsewhere. The restart repair
(:mod:`nubes.compute.repair`) runs it first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from nubes.compute.steps import ComputeEndpoint, Outcome, StepRunner, step_handler
from nubes.context import RequestContext
from nubes.injected_files import InjectedFiles
from nubes.objects.instance import Instance
from nubes.objects.migration import Migration
from nubes.objects.states import MigrationStatus, PowerState
from nubes.step_key import StepKey

if TYPE_CHECKING:
    from nubes.compute.virt.driver import ComputeDriver

LOG = logging.getLogger(__name__)

#: The action event a host records for both (Nova's name).
REBUILD_EVENT = "compute_rebuild_instance"


class RebuildSteps(ComputeEndpoint):
    """The rebuild steps of a compute host."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner
        self._evacuation_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @step_handler
    async def rebuild_instance(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        image: dict[str, Any],
        evacuate: bool,
        power_on: bool,
        injected_files: InjectedFiles | None = None,
    ) -> None:
        """Create the guest again from ``image``: in place (the old guest is
        destroyed first) or, with ``evacuate``, here for an instance whose
        host is down. Left powered off unless ``power_on``. A rebuild's
        personality files (``injected_files``, compute 1.10) go on its config
        drive; an evacuation has none (as Nova's, which passes none)."""

        async def work(ctxt: RequestContext) -> Outcome:
            if evacuate:
                return await self._evacuate_here(ctxt, instance, image, power_on)
            return await self._rebuild_in_place(ctxt, instance, image, power_on, injected_files)

        await self.runner.run_step(context, key, work)

    async def _rebuild_in_place(
        self,
        ctxt: RequestContext,
        instance: Instance,
        image: dict[str, Any],
        power_on: bool,
        injected_files: InjectedFiles | None,
    ) -> Outcome:
        action = self.runner.reporter.action(ctxt, instance, REBUILD_EVENT, "rebuild")
        await action.start()
        try:
            # Repeated after a restart, this rebuilds once more from the same
            # image: the same result, since a rebuild throws the old disk away.
            await self.runner.driver.destroy(ctxt, instance)
            drive = await self.runner.config_drive(ctxt, instance, injected=injected_files)
            await self.runner.driver.spawn(ctxt, instance, image, {}, config_drive=drive)
            if not power_on:
                await self.runner.driver.power_off(instance)
        except Exception as exc:
            # The old guest is gone either way; the conductor records ERROR.
            await action.fail(exc)
            return Outcome(False, str(exc) or type(exc).__name__, {"exception": type(exc).__name__})
        await action.succeed()
        return Outcome(True, details={"power_state": _power(power_on)})

    def _guest_lock(self, uuid: str) -> asyncio.Lock:
        """One lock per instance between an evacuation's spawn here and its rollback.

        A rollback sent because the spawn's report was late must remove the
        guest that spawn makes: it waits for the spawn to end first.
        """
        locks = self._evacuation_locks
        lock = locks.get(uuid)
        if lock is None:
            lock = locks[uuid] = asyncio.Lock()
        return lock

    async def _evacuate_here(
        self, ctxt: RequestContext, instance: Instance, image: dict[str, Any], power_on: bool
    ) -> Outcome:
        async with self._guest_lock(instance.uuid):
            return await self._spawn_evacuated(ctxt, instance, image, power_on)

    async def _spawn_evacuated(
        self, ctxt: RequestContext, instance: Instance, image: dict[str, Any], power_on: bool
    ) -> Outcome:
        already = await self.runner.power_state(instance) is not None
        action = self.runner.reporter.action(ctxt, instance, REBUILD_EVENT, "evacuate")
        await action.start()
        try:
            if not already:
                drive = await self.runner.config_drive(ctxt, instance)
                await self.runner.driver.spawn(ctxt, instance, image, {}, config_drive=drive)
            if not power_on:
                await self.runner.driver.power_off(instance)
        except Exception as exc:
            # A partial guest is left for the conductor's rollback step
            # (rollback_evacuation_at_destination), which also covers a
            # report that never reached it.
            await action.fail(exc)
            return Outcome(False, str(exc) or type(exc).__name__, {"exception": type(exc).__name__})
        await action.succeed()
        details: dict[str, Any] = {"power_state": _power(power_on)}
        if already:
            details["already_done"] = True
        return Outcome(True, details=details)

    @step_handler
    async def rollback_evacuation_at_destination(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
    ) -> None:
        """An evacuation to this host failed (or timed out): remove the guest it
        may have made here. The instance goes back to its source."""

        async def work(ctxt: RequestContext) -> Outcome:
            async with self._guest_lock(instance.uuid):
                await self.runner.driver.destroy(ctxt, instance)
            LOG.info(
                "Evacuation of %s to %s rolled back: guest removed", instance.uuid, self.runner.host
            )
            return Outcome(True)

        await self.runner.run_step(context, key, work)


def _power(power_on: bool) -> int:
    return int(PowerState.RUNNING if power_on else PowerState.SHUTDOWN)


# -- the source's side: removing what an evacuation left behind ------------------------


@dataclasses.dataclass
class EvacuatedRemains:
    """What :func:`remove_evacuated_remains` found and did, by instance uuid."""

    #: Evacuated from here (``done``): guest removed if it was here, migration completed.
    removed: list[str] = dataclasses.field(default_factory=list)
    #: ``done``, but the database places the instance on this host again: its
    #: guest is the live one, so only the migration was completed.
    placed_here: list[str] = dataclasses.field(default_factory=list)
    #: Being evacuated from here now (``accepted``/``pre-migrating``): left
    #: alone, since a failed evacuation brings the instance back to this host.
    in_progress: set[str] = dataclasses.field(default_factory=set)
    #: Removal or completion failed (retried at the next start), with why.
    failed: dict[str, str] = dataclasses.field(default_factory=dict)


async def remove_evacuated_remains(
    ctxt: RequestContext,
    host: str,
    driver: ComputeDriver,
    placed_here: Collection[str],
) -> EvacuatedRemains:
    """Remove the guests of instances evacuated from ``host``, by migration record.

    ``placed_here`` are the instances the database places on ``host`` now;
    their guests are never destroyed. Each ``done`` evacuation from ``host``
    is then ``completed`` (``Migration.complete_evacuation``, the one status
    change a compute host may make), after the guest is gone, so a
    failure in between is found and repeated at the next start.
    """
    result = EvacuatedRemains()
    for migration in await Migration.get_evacuations_from_host(ctxt, host):
        uuid = migration.instance_uuid
        if uuid is None:
            continue
        if migration.status != MigrationStatus.DONE:
            result.in_progress.add(uuid)
            continue
        here = uuid in placed_here
        try:
            if not here:
                LOG.info(
                    "Instance %s was evacuated from %s (migration %s): removing its remains",
                    uuid,
                    host,
                    migration.id,
                )
                await driver.destroy(ctxt, Instance(uuid=uuid))
            await migration.complete_evacuation(ctxt)
        except Exception as exc:
            LOG.warning("Could not clean up evacuated instance %s on %s: %s", uuid, host, exc)
            result.failed[uuid] = str(exc) or type(exc).__name__
            continue
        (result.placed_here if here else result.removed).append(uuid)
    return result
