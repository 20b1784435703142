"""Cold migration, resize and live migration of libvirt guests.

The move half of :class:`~nubes.compute.virt.libvirt.driver.LibvirtDriver`,
which hands its move methods to a :class:`GuestMoves` of its own (same
signatures, the driver contract's). Cold migration and resize: the source
stops the guest and serves its overlay, ephemeral disk and console log
from its disk server (:mod:`~nubes.compute.virt.libvirt.diskserver`) to
the one grant the conductor signs for the destination; the destination
makes the overlay's base from the image API as a spawn does, fetches the
disks (:mod:`~nubes.compute.virt.libvirt.disks` makes swap anew), and
defines the guest. Confirm removes the source's guest; revert starts it
again. Live migration is libvirt's peer-to-peer migration between the
hosts' libvirtd, with the guest's local disks (root overlay, ephemeral,
swap) copied along: see :mod:`~nubes.compute.virt.libvirt.migration`.

A resize on the guest's own host (``[DEFAULT] allow_resize_to_same_host``)
works as Nova's libvirt driver does it, on the whole instance directory:
the source powers the guest off, keeps its definition in the directory
(``resize.xml``), moves the directory aside (``<uuid>_resize``) and removes
the domain; the "destination" (the same host) copies the directory back,
makes swap anew, grows the root and ephemeral disks and defines the guest
with the new flavor; confirm
removes what was set aside; revert removes the resized guest, moves the
directory back and defines the kept definition again. Each step finds where
an earlier try stopped from what exists (the aside directory, the kept
definition, the domain), so a repeat after a crash at any point ends as one
whole try would:

==========================  ====================================================
migrate_disk_and_power_off  nothing aside yet: power off, keep the definition,
                            move aside; then the domain goes (if still defined);
                            an aside beside the guest's own directory is an
                            earlier resize's leftover and goes first
finish_migration            a domain: built before (only its power); else the
                            copy is made anew from the aside directory
confirm_migration           the aside directory goes (gone: nothing to do)
finish_revert_migration     aside directory there: the resized guest goes and it
                            moves back; then the kept definition is defined
                            (unless a domain is) and dropped; then the power
==========================  ====================================================
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from nubes import exception
from nubes.compute.virt.driver import ProgressCallback
from nubes.compute.virt.libvirt import migration
from nubes.compute.virt.libvirt.diskserver import KEY_FILE
from nubes.compute.virt.libvirt.guest import write_whole
from nubes.compute.virt.libvirt.migration import LiveCopy
from nubes.metadata import configdrive
from nubes.metadata.configdrive import ConfigDrive
from nubes.objects.states import PowerState

if TYPE_CHECKING:
    from nubes.compute.virt.libvirt.driver import LibvirtDriver
    from nubes.context import RequestContext
    from nubes.objects.flavor import Flavor
    from nubes.objects.instance import Instance
    from nubes.objects.migration import Migration

LOG = logging.getLogger(__name__)


class GuestMoves:
    """The moves of one driver's guests."""

    def __init__(self, driver: LibvirtDriver) -> None:
        self.driver = driver
        #: The live migrations running from this host, by instance uuid.
        self.live: dict[str, LiveCopy] = {}

    # -- cold migration and resize -----------------------------------------------

    def _same_host(self, migration: Migration) -> bool:
        """Whether ``migration`` goes from this host to this host (a resize here)."""
        return migration.source_compute == migration.dest_compute == self.driver.host

    async def _clean_power_off(self, instance: Instance) -> None:
        await self.driver.power_off(
            instance, timeout=min(self.driver.soft_reboot_wait, 60.0), retry_interval=10
        )

    async def migrate_disk_and_power_off(
        self, context: RequestContext, instance: Instance, dest: str, flavor: Flavor
    ) -> dict[str, Any]:
        if flavor.root_gb and instance.root_gb and flavor.root_gb < instance.root_gb:
            raise exception.VirtDriverError(
                operation="resize",
                instance_uuid=instance.uuid,
                reason=f"the root disk cannot shrink ({instance.root_gb} to {flavor.root_gb} GiB)",
            )
        if flavor.ephemeral_gb < (instance.ephemeral_gb or 0):
            raise exception.VirtDriverError(
                operation="resize",
                instance_uuid=instance.uuid,
                reason=f"the ephemeral disk cannot shrink ({instance.ephemeral_gb} to "
                f"{flavor.ephemeral_gb} GiB)",
            )
        if dest == self.driver.host:
            await self._set_aside(instance)
            # Nothing travels: finish_migration here builds from what was set aside.
            return {}
        await self._clean_power_off(instance)
        key_file = self.driver.files(instance.uuid).directory / KEY_FILE

        def key() -> str:
            # A repeat of this step keeps the key the conductor may have signed with.
            if key_file.exists():
                return key_file.read_text().strip()
            made = secrets.token_urlsafe(32)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(made)
            return made

        made = await asyncio.to_thread(key)
        server = await self.driver.start_disk_server()
        return {"url": f"{server.url}/{instance.uuid}", "key": made}

    async def _set_aside(self, instance: Instance) -> None:
        """The source half of a resize here: the guest off, its definition kept
        in its directory, the directory moved aside, the domain removed (the
        resized guest takes its uuid)."""
        files = self.driver.files(instance.uuid)
        aside = files.aside
        if await asyncio.to_thread(aside.directory.exists) and await asyncio.to_thread(
            files.directory.exists
        ):
            # Both: the aside is an earlier resize's whose confirm never ended
            # (a repeat of this step finds the directory moved, not copied).
            LOG.warning("removing what an earlier resize of %s left aside", instance.uuid)
            await asyncio.to_thread(_remove_tree, aside.directory)
        if not await asyncio.to_thread(aside.directory.exists):
            dom = await self.driver.domain(instance, "resize")
            await self._clean_power_off(instance)
            try:
                xml = await self.driver.connection.call(
                    dom.XMLDesc, self.driver.libvirt.VIR_DOMAIN_XML_INACTIVE
                )
            except self.driver.libvirt.libvirtError as exc:
                raise self.driver.error("resize", instance.uuid, exc) from None
            # Kept before the move, so that whatever is aside has it.
            await asyncio.to_thread(write_whole, files.kept_xml, xml)
            await asyncio.to_thread(os.rename, files.directory, aside.directory)
        # Moved before the domain goes: a repeat (or a revert) that finds the
        # directory aside knows the kept definition is there, domain or not.
        await self.driver.destroy_guest(instance)

    async def _finish_here(
        self,
        context: RequestContext,
        instance: Instance,
        image_meta: dict[str, Any],
        resize_instance: bool,
        power_on: bool,
        config_drive: ConfigDrive | None,
    ) -> None:
        """The destination half of a resize here: the guest's directory copied
        back from aside, its swap made anew, its root and ephemeral disks grown,
        its config drive written anew, defined with the new flavor."""
        files = self.driver.files(instance.uuid)
        aside = files.aside
        if not await asyncio.to_thread(aside.kept_xml.exists):
            raise exception.VirtDriverError(
                operation="finish_migration",
                instance_uuid=instance.uuid,
                reason=f"nothing set aside on {self.driver.host} to resize from",
            )
        kept = await asyncio.to_thread(aside.kept_xml.read_text)
        try:
            # No domain yet: a directory here is a copy cut off by a crash.
            await asyncio.to_thread(shutil.rmtree, files.directory, True)
            # A copy, not the files aside: a revert must find those untouched.
            await asyncio.to_thread(
                shutil.copytree,
                aside.directory,
                files.directory,
                # Swap holds nothing once the guest is off: made anew at the
                # new flavor's size, as a move to another host makes it.
                ignore=shutil.ignore_patterns(aside.kept_xml.name, files.swap_disk.name),
            )
            await self.driver.disks.make_local_disks(
                instance, image_meta, keep=True, operation="finish_migration"
            )
            await self._grow(instance, resize_instance)
            await self._write_drive(instance, config_drive)
            await self.driver.define_guest(
                context, instance, image_meta, _root_format(kept), start=power_on
            )
        except BaseException as exc:
            # Only the new guest and its copy go (undo): the files aside stay.
            raise await self.driver.undo(instance, "finish_migration", exc) from None

    async def _write_drive(self, instance: Instance, config_drive: ConfigDrive | None) -> None:
        """The guest's config drive here: the one given (the metadata and the
        personality files its source's drive had), or none. Written before the
        guest is defined, which attaches it when the file is there; a copy
        the directory brought along is replaced (the same metadata and files)."""
        path = self.driver.files(instance.uuid).config_drive
        if config_drive is None:
            await asyncio.to_thread(path.unlink, True)
            return
        await asyncio.to_thread(config_drive.write_iso, path)

    async def _grow(self, instance: Instance, resize_instance: bool) -> None:
        """The root and ephemeral disks grown to the new flavor's sizes (a
        resize; the source refused a shrink)."""
        if resize_instance:
            await self.driver.disks.grow(instance, "finish_migration")

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
        dom = await self.driver.lookup(instance.uuid)
        if dom is not None:  # built before (a repeat): only the power to match
            if power_on:
                await self.driver.start_domain(dom, instance, "finish_migration")
            else:
                await self.driver.hard_stop(dom, instance, "finish_migration")
            return
        if self._same_host(migration):
            await self._finish_here(
                context, instance, image_meta, resize_instance, power_on, config_drive
            )
            return
        url, grant = disk_info.get("url"), disk_info.get("grant")
        if not url or not grant:
            raise exception.VirtDriverError(
                operation="finish_migration",
                instance_uuid=instance.uuid,
                reason="no disk to fetch: the source's disk_info names no url or grant",
            )
        try:
            # The image, kernel and ramdisk from the image API (grants of the
            # conductor); the guest's own disks, and its console, from the source.
            disks = self.driver.disks
            disk_format = await disks.prepare(instance, image_meta, local_disks=False)
            await disks.fetch_from_source(instance, str(url), str(grant), image_meta)
            await self._grow(instance, resize_instance)
            # Nova copies the source's disk.config; the disk server serves no
            # drive, and the one written here has the same metadata and files.
            await self._write_drive(instance, config_drive)
            await self.driver.define_guest(
                context, instance, image_meta, disk_format, start=power_on
            )
        except BaseException as exc:
            raise await self.driver.undo(instance, "finish_migration", exc) from None

    async def confirm_migration(
        self, context: RequestContext, migration: Migration, instance: Instance
    ) -> None:
        if self._same_host(migration):
            # The resized guest is the instance now: only what was set aside
            # goes, wholly or the confirm fails (and is tried again).
            aside = self.driver.files(instance.uuid).aside.directory
            await asyncio.to_thread(_remove_tree, aside)
            return
        # The source's kept guest and its files, key included: nothing is served any more.
        await self.driver.destroy_guest(instance)

    async def _put_back(self, instance: Instance) -> None:
        """A resize here reverted: the resized guest gone, the directory set
        aside back in its place, the kept definition defined again."""
        files = self.driver.files(instance.uuid)
        if await asyncio.to_thread(files.aside.directory.exists):
            await self.driver.destroy_guest(instance)
            await asyncio.to_thread(os.rename, files.aside.directory, files.directory)
        if not await asyncio.to_thread(files.kept_xml.exists):
            return  # put back before (a repeat), or never set aside (a rollback)
        if await self.driver.lookup(instance.uuid) is None:
            kept = await asyncio.to_thread(files.kept_xml.read_text)
            conn = self.driver.connection
            try:
                await conn.call(conn.conn.defineXML, kept)
            except self.driver.libvirt.libvirtError as exc:
                raise self.driver.error("finish_revert_migration", instance.uuid, exc) from None
        # Dropped only once defined: until then a repeat finds it.
        await asyncio.to_thread(files.kept_xml.unlink, True)

    async def finish_revert_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migration: Migration,
        power_on: bool = True,
    ) -> None:
        if self._same_host(migration):
            await self._put_back(instance)
        key_file = self.driver.files(instance.uuid).directory / KEY_FILE
        await asyncio.to_thread(key_file.unlink, True)
        dom = await self.driver.domain(instance, "finish_revert_migration")
        if power_on:
            await self.driver.start_domain(dom, instance, "finish_revert_migration")

    # -- live migration ------------------------------------------------------------

    async def check_can_live_migrate_destination(
        self, context: RequestContext, instance: Instance, block_migration: bool = False
    ) -> dict[str, Any]:
        if await self.driver.lookup(instance.uuid) is not None:
            raise exception.Conflict(
                reason=f"instance {instance.uuid} is already on {self.driver.host}"
            )
        return {
            "dest_host": self.driver.host,
            "dest_uri": f"qemu+tcp://{self.driver.migration_address}/system",
            "dest_instances_path": str(self.driver.instances_path),
        }

    async def check_can_live_migrate_source(
        self, context: RequestContext, instance: Instance, dest_check_data: dict[str, Any]
    ) -> dict[str, Any]:
        dom = await self.driver.domain(instance, "live-migrate")
        state = await self.driver.state_of(dom)
        if state not in (PowerState.RUNNING, PowerState.PAUSED):
            raise exception.VirtDriverError(
                operation="live-migrate",
                instance_uuid=instance.uuid,
                reason=f"the guest is not running on {self.driver.host} ({state.name})",
            )
        return {**dest_check_data, "source_instances_path": str(self.driver.instances_path)}

    async def attached_config_drive(self, instance: Instance) -> ConfigDrive | None:
        files = self.driver.files(instance.uuid)
        path = files.config_drive
        if await self.driver.lookup(instance.uuid) is None:
            if not await asyncio.to_thread(files.aside.kept_xml.exists):
                raise exception.InstanceNotFound(instance_id=instance.uuid)
            # A resize here set the guest aside (a repeat of its source step):
            # its domain is gone, its drive is with its files.
            path = files.aside.config_drive
        if not await asyncio.to_thread(path.exists):
            return None
        return await asyncio.to_thread(configdrive.read_drive, path)

    async def pre_live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migrate_data: dict[str, Any],
        *,
        config_drive: ConfigDrive | None = None,
    ) -> dict[str, Any]:
        if await self.driver.lookup(instance.uuid) is not None:
            raise exception.Conflict(
                reason=f"instance {instance.uuid} is already on {self.driver.host}"
            )
        # The conductor sends the instance's image with grants for this host:
        # its disk is an overlay over the image here as on the source, and the
        # memory copy brings the overlay's blocks, and those of its ephemeral
        # and swap disks into blank ones of their size.
        image = migrate_data.get("image") or {}
        try:
            await self.driver.disks.prepare(instance, image, blank=True)
            if config_drive is not None:
                # The guest's XML names its cdrom here too, and the copy moves
                # only the writable disks: the same ISO, from the same metadata.
                drive = self.driver.files(instance.uuid).config_drive
                await asyncio.to_thread(config_drive.write_iso, drive)
            if self.driver.network is not None:
                # Its bridges, tap rules and tunnels here before the copy: the
                # guest arrives running and its NICs must land on something.
                await self.driver.network.plug(context, instance.uuid)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, self.driver.files(instance.uuid).directory, True)
            raise
        return {k: v for k, v in migrate_data.items() if k != "image"}

    async def live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        dest: str,
        migrate_data: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any] | None:
        libvirt = self.driver.libvirt
        dom = await self.driver.domain(instance, "live_migration")
        if instance.uuid in self.live:
            raise exception.Conflict(reason=f"instance {instance.uuid} is already migrating")
        copy = self.live[instance.uuid] = LiveCopy(dom)
        try:
            xml = await self.driver.connection.call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            dest_xml = migration.destination_xml(
                xml, self.driver.instances_path, migrate_data["dest_instances_path"]
            )
            params: dict[str, Any] = {
                libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml,
                libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: dest_xml,
                libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: migration.local_disks(xml),
            }
            if self.driver.migration_bandwidth:
                params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = self.driver.migration_bandwidth
            flags = (
                libvirt.VIR_MIGRATE_LIVE
                | libvirt.VIR_MIGRATE_PEER2PEER
                | libvirt.VIR_MIGRATE_PERSIST_DEST
                | libvirt.VIR_MIGRATE_NON_SHARED_INC
            )
            moving = asyncio.ensure_future(
                self.driver.connection.call(
                    dom.migrateToURI3, migrate_data["dest_uri"], params, flags
                )
            )
            while not moving.done():
                await asyncio.wait({moving}, timeout=migration.POLL_INTERVAL)
                if moving.done() or progress is None:
                    continue
                try:
                    stats = await self.driver.connection.call(dom.jobStats)
                except libvirt.libvirtError:
                    continue  # the job ended meanwhile
                percent = migration.percent_done(stats)
                if percent is not None:
                    await progress(percent)
            try:
                moving.result()
            except libvirt.libvirtError as exc:
                if copy.aborted:
                    raise exception.LiveMigrationAborted(
                        instance_uuid=instance.uuid, host=self.driver.host
                    ) from None
                raise self.driver.error("live_migration", instance.uuid, exc) from None
        finally:
            self.live.pop(instance.uuid, None)
        if progress is not None:
            await progress(100)
        # The guest's console history goes along: the destination shows it first.
        history = await asyncio.to_thread(self.driver.disks.console_history, instance.uuid)
        return {"console_log": history}

    async def post_live_migration(
        self, context: RequestContext, instance: Instance, migrate_data: dict[str, Any]
    ) -> None:
        # The guest runs on the destination: what is left here is a stopped
        # definition and the files.
        await self.driver.destroy_guest(instance)

    async def post_live_migration_at_destination(
        self, context: RequestContext, instance: Instance, migrate_data: dict[str, Any]
    ) -> None:
        dom = await self.driver.domain(instance, "post_live_migration_at_destination")
        files = self.driver.files(instance.uuid)
        history = migrate_data.get("console_log")
        if history is not None:
            await asyncio.to_thread(files.console_before.write_text, history)
        paused = instance.obj_attr_is_set("power_state") and instance.power_state == (
            PowerState.PAUSED
        )
        # A forced completion pauses the guest for the last copy; it runs on here.
        if not paused and await self.driver.state_of(dom) == PowerState.PAUSED:
            try:
                await self.driver.connection.call(dom.resume)
            except self.driver.libvirt.libvirtError as exc:
                raise self.driver.error(
                    "post_live_migration_at_destination", instance.uuid, exc
                ) from None

    async def rollback_live_migration_at_destination(
        self, context: RequestContext, instance: Instance, migrate_data: dict[str, Any]
    ) -> None:
        dom = await self.driver.lookup(instance.uuid)
        if dom is not None and await self.driver.state_of(dom) in (
            PowerState.RUNNING,
            PowerState.PAUSED,
        ):
            # The copy finished after all: this is the guest, not a leftover.
            raise exception.VirtDriverError(
                operation="rollback_live_migration_at_destination",
                instance_uuid=instance.uuid,
                reason=f"the guest runs on {self.driver.host}",
            )
        await self.driver.destroy_guest(instance)

    async def live_migration_abort(self, instance: Instance) -> bool:
        copy = self.live.get(instance.uuid)
        if copy is None:
            return False
        copy.aborted = True
        try:
            await self.driver.connection.call(copy.dom.abortJob)
        except self.driver.libvirt.libvirtError as exc:
            LOG.info("abort of the live migration of %s: %s", instance.uuid, exc)
            return False
        return True

    async def live_migration_force_complete(self, instance: Instance) -> bool:
        copy = self.live.get(instance.uuid)
        if copy is None:
            return False
        # Paused, the guest dirties no memory: the copy converges at once.
        try:
            await self.driver.connection.call(copy.dom.suspend)
        except self.driver.libvirt.libvirtError as exc:
            LOG.info("force complete of the live migration of %s: %s", instance.uuid, exc)
            return False
        return True


def _root_format(xml: str) -> str:
    """The format of the root disk a domain definition names (``qcow2``: an
    overlay, what :mod:`.disks` makes, when it names none)."""
    driver = ET.fromstring(xml).find("devices/disk[@device='disk']/driver")
    found = driver.get("type") if driver is not None else None
    return found or "qcow2"


def _remove_tree(path: Path) -> None:
    """``path`` and everything under it gone (already gone is fine; a file
    that cannot be removed is an error)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
