"""Cold migration, resize and live migration of fake guests.

The move half of :class:`~nubes.compute.virt.fake.FakeDriver`, which hands
its move methods (the driver contract's, same signatures) to a
:class:`FakeMoves` of its own and saves its guests after each. A cold move
keeps the source's guest off for a revert (``driver.kept``); a live
migration "copies memory" for ``migration_delay`` in ticks that report
progress, and can be aborted, forced to complete or made to fail halfway
through the fault registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from typing import TYPE_CHECKING, Any

from nubes import exception
from nubes.compute.virt.driver import ProgressCallback
from nubes.compute.virt.fake_faults import delay
from nubes.metadata.configdrive import ConfigDrive
from nubes.objects.states import PowerState

if TYPE_CHECKING:
    from nubes.compute.virt.fake import FakeDriver
    from nubes.context import RequestContext
    from nubes.objects.flavor import Flavor
    from nubes.objects.instance import Instance
    from nubes.objects.migration import Migration

#: Seconds between the progress reports of a fake live migration that takes
#: ``migration_delay``; also how soon it notices an abort or a force-complete.
LIVE_MIGRATION_TICK = 0.05


@dataclasses.dataclass(slots=True)
class FakeLiveMigration:
    """A fake live migration in progress on its source: what it was asked meanwhile."""

    #: Set when an abort or a force-complete arrives, to cut a tick short.
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    aborted: bool = False
    forced: bool = False


async def _delay(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


class FakeMoves:
    """The moves of one fake driver's guests."""

    def __init__(self, driver: FakeDriver) -> None:
        self.driver = driver

    # -- cold migration and resize -------------------------------------------

    async def migrate_disk_and_power_off(
        self,
        context: RequestContext,
        instance: Instance,
        dest: str,
        flavor: Flavor,
    ) -> dict[str, Any]:
        self.driver.check_injected("migrate_disk_and_power_off", instance)
        await delay(self.driver.faults.migration_delay)
        disk_info = {"source": self.driver.host, "root_gb": flavor.root_gb, "disks": ["disk"]}
        if instance.uuid not in self.driver.instances and instance.uuid in self.driver.kept:
            return disk_info  # done before (a repeat): the guest is off and kept
        found = self.driver.guest(instance)
        found.state = PowerState.SHUTDOWN
        self.driver.kept[instance.uuid] = self.driver.instances.pop(instance.uuid)
        return disk_info

    async def finish_migration(
        self,
        context: RequestContext,
        migration: Migration,
        instance: Instance,
        disk_info: dict[str, Any],
        image_meta: dict[str, Any],
        resize_instance: bool,
        power_on: bool = True,
        *,
        config_drive: ConfigDrive | None = None,
    ) -> None:
        self.driver.check_injected("finish_migration", instance)
        state = PowerState.RUNNING if power_on else PowerState.SHUTDOWN
        found = self.driver.instances.get(instance.uuid)
        if found is not None:
            found.state = state  # built before (a repeat): only the power to match
            return
        arrived = self.driver.new_guest(instance, state)
        arrived.config_drive = config_drive
        self.driver.instances[instance.uuid] = arrived

    async def confirm_migration(
        self, context: RequestContext, migration: Migration, instance: Instance
    ) -> None:
        self.driver.check_injected("confirm_migration", instance)
        self.driver.kept.pop(instance.uuid, None)

    async def finish_revert_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migration: Migration,
        power_on: bool = True,
    ) -> None:
        self.driver.check_injected("finish_revert_migration", instance)
        # The kept guest replaces whatever runs here (on the same host: the
        # resized one); nothing kept and a guest here: a repeat, or the move
        # never got to take it away.
        kept = (
            self.driver.kept.pop(instance.uuid, None)
            or self.driver.instances.get(instance.uuid)
            or self.driver.new_guest(instance)
        )
        kept.state = PowerState.RUNNING if power_on else PowerState.SHUTDOWN
        self.driver.instances[instance.uuid] = kept

    # -- live migration ------------------------------------------------------

    async def check_can_live_migrate_destination(
        self,
        context: RequestContext,
        instance: Instance,
        block_migration: bool = False,
    ) -> dict[str, Any]:
        self.driver.check_injected("check_can_live_migrate_destination", instance)
        if instance.uuid in self.driver.instances:
            raise exception.Conflict(
                reason=f"instance {instance.uuid} is already on {self.driver.host}"
            )
        return {"dest_host": self.driver.host, "block_migration": block_migration}

    async def check_can_live_migrate_source(
        self,
        context: RequestContext,
        instance: Instance,
        dest_check_data: dict[str, Any],
    ) -> dict[str, Any]:
        self.driver.check_injected("check_can_live_migrate_source", instance)
        self.driver.guest(instance)
        return {**dest_check_data, "source_host": self.driver.host}

    async def attached_config_drive(self, instance: Instance) -> ConfigDrive | None:
        self.driver.check_injected("attached_config_drive", instance)
        kept = self.driver.kept.get(instance.uuid)
        if instance.uuid not in self.driver.instances and kept is not None:
            return kept.config_drive  # moved away before (a repeat): the kept guest's
        return self.driver.guest(instance).config_drive

    async def pre_live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migrate_data: dict[str, Any],
        *,
        config_drive: ConfigDrive | None = None,
    ) -> dict[str, Any]:
        self.driver.check_injected("pre_live_migration", instance)
        if config_drive is not None:
            self.driver.arriving_config_drives[instance.uuid] = config_drive
        return {**migrate_data, "pre_live_migration_done": True}

    async def live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        dest: str,
        migrate_data: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> None:
        self.driver.check_injected("live_migration", instance)
        self.driver.guest(instance)
        if instance.uuid in self.driver.live_migrations:
            raise exception.Conflict(reason=f"instance {instance.uuid} is already migrating")
        # Registered before the first await, so an abort that comes at any
        # point after this call began finds it.
        job = self.driver.live_migrations[instance.uuid] = FakeLiveMigration()
        try:
            await self._copy_memory(instance, job, progress)
        finally:
            self.driver.live_migrations.pop(instance.uuid, None)

    async def _copy_memory(
        self, instance: Instance, job: FakeLiveMigration, progress: ProgressCallback | None
    ) -> None:
        """``migration_delay`` split into ticks, each reporting progress; fails at 50 %
        when the fault registry says so."""
        faults = self.driver.faults
        ticks = max(2, math.ceil(faults.migration_delay / LIVE_MIGRATION_TICK))
        tick = faults.migration_delay / ticks
        failing = faults.fail_live_migration or self.driver.host in faults.fail_live_migration_hosts
        for n in range(1, ticks + 1):
            if tick > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(tick):
                        await job.wake.wait()
            if job.aborted:
                raise exception.LiveMigrationAborted(
                    instance_uuid=instance.uuid, host=self.driver.host
                )
            if job.forced:
                break
            percent = n * 100 // ticks
            if progress is not None and percent < 100:
                await progress(percent)
            if failing and percent >= 50:
                raise self.driver.failure(
                    "live_migration", instance, f"failed halfway on {self.driver.host} (injected)"
                )
        if progress is not None:
            await progress(100)

    async def live_migration_abort(self, instance: Instance) -> bool:
        self.driver.check_injected("live_migration_abort", instance)
        job = self.driver.live_migrations.get(instance.uuid)
        if job is None:
            return False
        job.aborted = True
        job.wake.set()
        return True

    async def live_migration_force_complete(self, instance: Instance) -> bool:
        self.driver.check_injected("live_migration_force_complete", instance)
        job = self.driver.live_migrations.get(instance.uuid)
        if job is None:
            return False
        job.forced = True
        job.wake.set()
        return True

    async def post_live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migrate_data: dict[str, Any],
    ) -> None:
        self.driver.check_injected("post_live_migration", instance)
        self.driver.instances.pop(instance.uuid, None)

    async def post_live_migration_at_destination(
        self,
        context: RequestContext,
        instance: Instance,
        migrate_data: dict[str, Any],
    ) -> None:
        self.driver.check_injected("post_live_migration_at_destination", instance)
        # A paused guest moves paused (the conductor recorded that power state).
        paused = (
            instance.obj_attr_is_set("power_state") and instance.power_state == PowerState.PAUSED
        )
        state = PowerState.PAUSED if paused else PowerState.RUNNING
        arrived = self.driver.instances.setdefault(
            instance.uuid, self.driver.new_guest(instance, state)
        )
        drive = self.driver.arriving_config_drives.pop(instance.uuid, None)
        if drive is not None:
            arrived.config_drive = drive

    async def rollback_live_migration_at_destination(
        self,
        context: RequestContext,
        instance: Instance,
        migrate_data: dict[str, Any],
    ) -> None:
        self.driver.check_injected("rollback_live_migration_at_destination", instance)
        self.driver.instances.pop(instance.uuid, None)
        self.driver.arriving_config_drives.pop(instance.uuid, None)
