"""The libvirt driver: real guests under QEMU (TCG) or KVM.

Chosen by ``[DEFAULT] compute_driver = libvirt``; ``[libvirt]`` options say
where libvirtd is (``connection_uri``), what kind of domain to make
(``virt_type``: ``qemu`` without hardware virtualisation, ``kvm`` with), and
where guests' files live (``instances_path``, see
:mod:`~nubes.compute.virt.libvirt.guest`).

Guests are persistent libvirt domains named ``nubes-<uuid>`` with the
instance's uuid as domain uuid, so after a restart of the compute agent (or
of libvirtd) the driver finds every guest it made and nothing else: the
domains are the state. A guest that powers itself off stays defined, shut
off; the lifecycle event reaches the compute host, which records it.

The driver is split by responsibility: this module has the host, the
guests' lifecycle (spawn, destroy, power, pause, suspend, snapshot ...) and
the helpers its parts share (a guest's domain, stopping and starting it);
cold migration, resize and live migration are :mod:`.moves`
(:class:`~.moves.GuestMoves`), rescue is :mod:`.rescue`
(:class:`~.rescue.GuestRescue`), each handed the driver's methods of the
contract with the same signatures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from nubes import exception
from nubes.compute.virt.driver import (
    ComputeDriver,
    Diagnostics,
    InstanceInfo,
    LifecycleEvent,
    ProgressCallback,
)
from nubes.compute.virt.fake import format_uptime
from nubes.compute.virt.libvirt.diagnostics import read_diagnostics
from nubes.compute.virt.libvirt.disks import GuestDisks, layout_of
from nubes.compute.virt.libvirt.diskserver import KEY_FILE, DiskServer
from nubes.compute.virt.libvirt.guest import (
    DEFAULT_CMDLINE,
    NAME_PREFIX,
    GuestSpec,
    InstanceFiles,
    domain_xml,
)
from nubes.compute.virt.libvirt.host import Host, power_state
from nubes.compute.virt.libvirt.imagecache import ImageCache, ImageSource
from nubes.compute.virt.libvirt.moves import GuestMoves
from nubes.compute.virt.libvirt.rescue import GuestRescue
from nubes.metadata.configdrive import ConfigDrive
from nubes.objects.states import PowerState

if TYPE_CHECKING:
    from nubes.compute.network.agent import NetworkAgent
    from nubes.context import RequestContext
    from nubes.objects.flavor import Flavor
    from nubes.objects.instance import Instance
    from nubes.objects.migration import Migration

LOG = logging.getLogger(__name__)

VIRT_TYPES = ("qemu", "kvm")
#: How often a clean shutdown is checked on while it is awaited.
_POLL = 0.2


def usable_virt_type() -> str:
    """``kvm`` when this machine can run KVM guests, else ``qemu`` (TCG).

    ``/dev/kvm`` alone is not enough: a container may show it on a CPU
    without vmx/svm, where KVM guests hang in their firmware.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "qemu"
    has_extensions = " vmx" in flags or " svm" in flags
    return "kvm" if has_extensions and os.path.exists("/dev/kvm") else "qemu"


class LibvirtDriver(ComputeDriver):
    """Guests of one libvirtd. One node, named like the host."""

    hypervisor_type = "QEMU"
    has_data_plane = True

    def __init__(
        self,
        host: str,
        *,
        connection_uri: str,
        virt_type: str,
        instances_path: str | Path,
        image_source: ImageSource,
        soft_reboot_wait: float = 120.0,
        migration_address: str | None = None,
        migration_bandwidth: int = 0,
        disk_server_port: int = 0,
        vnc_listen: str | None = None,
        ephemeral_format: str | None = None,
    ) -> None:
        super().__init__(host)
        #: The address guests' VNC servers listen on (None: guests get no VNC).
        self.vnc_listen = vnc_listen
        if virt_type not in VIRT_TYPES:
            raise exception.ConfigError(
                reason=f"[libvirt] virt_type {virt_type!r} is not one of {', '.join(VIRT_TYPES)}"
            )
        self.virt_type = virt_type
        self.instances_path = Path(instances_path)
        self.connection = Host(connection_uri)
        self.images = ImageCache(self.instances_path, image_source, host)
        self.disks = GuestDisks(self.instances_path, self.images, ephemeral_format)
        self.soft_reboot_wait = soft_reboot_wait
        self._cpu_sample: tuple[int, int] | None = None
        self._events: set[asyncio.Task[None]] = set()
        #: Where other hosts' libvirtd reach this one's (live migrations to here).
        self.migration_address = migration_address or host
        #: MiB/s a live migration from here may send (0: no limit).
        self.migration_bandwidth = migration_bandwidth
        #: Serves the disks of guests cold-migrating off this host (started when needed).
        self.disk_server: DiskServer | None = None
        self.disk_server_port = disk_server_port
        #: The host's data plane (None: guests get no network interface).
        self.network: NetworkAgent | None = None
        #: Cold and live migrations, rescue: parts of their own (moves.py, rescue.py).
        self.moves = GuestMoves(self)
        self.rescuer = GuestRescue(self)

    def use_network(self, network: NetworkAgent) -> None:
        self.network = network

    @property
    def libvirt(self) -> Any:
        return self.connection.libvirt

    # -- helpers -------------------------------------------------------------

    def files(self, uuid: str) -> InstanceFiles:
        return self.disks.files(uuid)

    def backing_files(self) -> set[Path]:
        return self.disks.backing_files()

    def error(self, operation: str, uuid: str, exc: BaseException) -> exception.VirtDriverError:
        return exception.VirtDriverError(operation=operation, instance_uuid=uuid, reason=str(exc))

    def lookup_sync(self, uuid: str) -> Any:
        """The domain of ``uuid`` (blocking), or None."""
        libvirt = self.libvirt
        try:
            return self.connection.conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    async def lookup(self, uuid: str) -> Any:
        return await self.connection.call(self.lookup_sync, uuid)

    async def domain(self, instance: Instance, operation: str) -> Any:
        try:
            dom = await self.lookup(instance.uuid)
        except self.libvirt.libvirtError as exc:
            raise self.error(operation, instance.uuid, exc) from None
        if dom is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        return dom

    async def state_of(self, dom: Any) -> PowerState:
        state, _reason = await self.connection.call(dom.state)
        return power_state(self.libvirt, state)

    def _on_domain_event(self, uuid: str, event: int, detail: int) -> None:
        # In the event loop. Re-read the state: events of one guest may be late.
        async def report() -> None:
            try:
                dom = await self.lookup(uuid)
                if dom is None or not dom.name().startswith(NAME_PREFIX):
                    return
                state = await self.state_of(dom)
            except self.libvirt.libvirtError as exc:
                LOG.debug("event for %s: state unreadable (%s)", uuid, exc)
                return
            self.emit_event(LifecycleEvent(uuid, state))

        task = asyncio.get_running_loop().create_task(report())
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    # -- host --------------------------------------------------------------

    async def init_host(self) -> None:
        await asyncio.to_thread(self.instances_path.mkdir, parents=True, exist_ok=True)
        await self.connection.open(self._on_domain_event)
        # A guest was leaving when the agent stopped: its destination may still fetch.
        if any(self.instances_path.glob(f"*/{KEY_FILE}")):
            await self.start_disk_server()

    async def cleanup_host(self) -> None:
        for task in list(self._events):
            task.cancel()
        if self.disk_server is not None:
            await self.disk_server.stop()
        await self.connection.close()

    def get_available_nodes(self) -> list[str]:
        return [self.host]

    def _resources_sync(self) -> dict[str, Any]:
        conn = self.connection.conn
        arch, memory_mb, cpus, *_ = conn.getInfo()
        caps = ET.fromstring(conn.getCapabilities())
        cpu = caps.find("host/cpu")
        model = cpu.findtext("model", "") if cpu is not None else ""
        vendor = cpu.findtext("vendor", "") if cpu is not None else ""
        disk = shutil.disk_usage(self.instances_path)
        return {
            "vcpus": cpus,
            "memory_mb": memory_mb,
            "local_gb": disk.total // (1 << 30),
            "hypervisor_type": self.hypervisor_type,
            "hypervisor_version": conn.getVersion(),
            "hypervisor_hostname": self.host,
            "cpu_info": json.dumps(
                {"arch": arch, "model": model, "vendor": vendor, "virt_type": self.virt_type},
                sort_keys=True,
            ),
        }

    async def get_available_resource(self, nodename: str) -> dict[str, Any]:
        return await self.connection.call(self._resources_sync)

    async def get_host_metrics(self, nodename: str) -> dict[str, float]:
        libvirt = self.libvirt
        stats = await self.connection.call(
            self.connection.conn.getCPUStats, libvirt.VIR_NODE_CPU_STATS_ALL_CPUS
        )
        idle = stats.get("idle", 0) + stats.get("iowait", 0)
        total = idle + stats.get("kernel", 0) + stats.get("user", 0)
        # Busy share since the previous reading (since boot for the first).
        before, self._cpu_sample = self._cpu_sample, (total, idle)
        if before is not None:
            total, idle = total - before[0], idle - before[1]
        percent = 100.0 * (total - idle) / total if total > 0 else 0.0
        return {"cpu.percent": round(min(100.0, max(0.0, percent)), 2)}

    async def get_host_uptime(self) -> str:
        text = await asyncio.to_thread(Path("/proc/uptime").read_text)
        return format_uptime(time.time(), float(text.split()[0]), os.getloadavg())

    # -- instances -----------------------------------------------------------

    async def list_instances(self) -> list[str]:
        def ours() -> list[str]:
            return [
                dom.UUIDString()
                for dom in self.connection.conn.listAllDomains()
                if dom.name().startswith(NAME_PREFIX)
            ]

        return await self.connection.call(ours)

    async def get_info(self, instance: Instance) -> InstanceInfo:
        dom = await self.domain(instance, "get_info")
        try:
            state, _max_kib, mem_kib, vcpus, cpu_time = await self.connection.call(dom.info)
        except self.libvirt.libvirtError as exc:
            if exc.get_error_code() == self.libvirt.VIR_ERR_NO_DOMAIN:
                raise exception.InstanceNotFound(instance_id=instance.uuid) from None
            raise self.error("get_info", instance.uuid, exc) from None
        return InstanceInfo(power_state(self.libvirt, state), mem_kib // 1024, vcpus, cpu_time)

    def console_log_path(self, instance: Instance) -> Path:
        return self.files(instance.uuid).console_log

    async def get_console_output(self, instance: Instance) -> str:
        await self.domain(instance, "get_console_output")

        return await asyncio.to_thread(self.disks.console_history, instance.uuid)

    async def get_vnc_endpoint(self, instance: Instance) -> tuple[str, int]:
        dom = await self.domain(instance, "get_vnc_endpoint")
        try:
            xml = await self.connection.call(dom.XMLDesc, 0)
        except self.libvirt.libvirtError as exc:
            raise self.error("get_vnc_endpoint", instance.uuid, exc) from None
        graphics = ET.fromstring(xml).find("./devices/graphics[@type='vnc']")
        port = int(graphics.get("port", "-1")) if graphics is not None else -1
        if graphics is None or port <= 0:
            # Defined without VNC ([vnc] enabled was off then), or not running.
            raise exception.VirtOperationNotSupported(
                driver=type(self).__name__,
                operation="open the VNC console of",
                instance_uuid=instance.uuid,
                reason="the guest has no VNC server running",
            )
        listen = graphics.find("listen")
        address = listen.get("address") if listen is not None else graphics.get("listen")
        return address or self.vnc_listen or "127.0.0.1", port

    async def get_instance_diagnostics(self, instance: Instance) -> Diagnostics:
        dom = await self.domain(instance, "get_instance_diagnostics")
        has_drive = await asyncio.to_thread(self.files(instance.uuid).config_drive.exists)
        try:
            return await self.connection.call(
                read_diagnostics, self.libvirt, dom, self.virt_type, has_drive
            )
        except self.libvirt.libvirtError as exc:
            if exc.get_error_code() == self.libvirt.VIR_ERR_NO_DOMAIN:
                raise exception.InstanceNotFound(instance_id=instance.uuid) from None
            raise self.error("get_instance_diagnostics", instance.uuid, exc) from None

    async def define_guest(
        self,
        context: RequestContext,
        instance: Instance,
        image_meta: dict[str, Any],
        disk_format: str,
        *,
        start: bool,
    ) -> None:
        """Define the instance's domain over the files it has here (and start
        it), its NICs plugged into this host's data plane first."""
        files = self.files(instance.uuid)
        has_drive = await asyncio.to_thread(files.config_drive.exists)
        vifs = await self.network.plug(context, instance.uuid) if self.network is not None else []
        properties = image_meta.get("properties") or {}
        kernel_id = properties.get("kernel_id")
        ramdisk_id = properties.get("ramdisk_id")
        spec = GuestSpec(
            uuid=instance.uuid,
            virt_type=self.virt_type,
            memory_mb=instance.memory_mb or 64,
            vcpus=instance.vcpus or 1,
            files=files,
            disk_format=disk_format,
            disks=layout_of(instance),
            direct_kernel=bool(kernel_id),
            with_ramdisk=bool(kernel_id and ramdisk_id),
            cmdline=properties.get("os_command_line") or DEFAULT_CMDLINE,
            config_drive=has_drive,
            vifs=tuple(vifs),
            vnc_listen=self.vnc_listen,
        )
        xml = domain_xml(spec)

        def define_and_start() -> None:
            dom = self.connection.conn.defineXML(xml)
            if start:
                dom.create()

        await self.connection.call(define_and_start)

    async def spawn(
        self,
        context: RequestContext,
        instance: Instance,
        image_meta: dict[str, Any],
        request: dict[str, Any],
        *,
        config_drive: ConfigDrive | None = None,
    ) -> None:
        if await self.lookup(instance.uuid) is not None:
            raise exception.Conflict(reason=f"instance {instance.uuid} already exists")
        try:
            disk_format = await self.disks.prepare(instance, image_meta)
            if config_drive is not None:
                drive = self.files(instance.uuid).config_drive
                await asyncio.to_thread(config_drive.write_iso, drive)
            await self.define_guest(context, instance, image_meta, disk_format, start=True)
        except BaseException as exc:
            raise await self.undo(instance, "spawn", exc) from None

    async def undo(self, instance: Instance, operation: str, exc: BaseException) -> BaseException:
        """After ``operation`` failed with ``exc`` making a guest here: remove
        what it made (nothing may be left that destroy could not remove), and
        return the error to raise (a libvirt error as a VirtDriverError)."""
        try:
            await asyncio.shield(self.destroy_guest(instance))
        except Exception as cleanup:
            LOG.warning("cleanup of failed %s %s: %s", operation, instance.uuid, cleanup)
        if isinstance(exc, self.libvirt.libvirtError):
            return self.error(operation, instance.uuid, exc)
        return exc

    async def destroy_guest(self, instance: Instance) -> None:
        libvirt = self.libvirt

        def remove() -> None:
            dom = self.lookup_sync(instance.uuid)
            if dom is not None:
                try:
                    if dom.isActive():
                        dom.destroy()
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise  # not "domain is not running" (a race with its own power off)
                try:
                    # A suspended guest's managed-save image goes with it
                    # (libvirt refuses a plain undefine while one exists).
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
            shutil.rmtree(self.files(instance.uuid).directory, ignore_errors=True)

        try:
            await self.connection.call(remove)
        except libvirt.libvirtError as exc:
            raise self.error("destroy", instance.uuid, exc) from None

    async def destroy(self, context: RequestContext, instance: Instance) -> None:
        await self.destroy_guest(instance)
        # As Nova's delete: what a resize on this host set aside goes too (a
        # server deleted while resized, or while its resize was cut short).
        aside = self.files(instance.uuid).aside.directory
        await asyncio.to_thread(shutil.rmtree, aside, True)

    async def start_domain(self, dom: Any, instance: Instance, operation: str) -> None:
        try:
            await self.connection.call(dom.create)
        except self.libvirt.libvirtError as exc:
            if exc.get_error_code() == self.libvirt.VIR_ERR_OPERATION_INVALID:
                return  # already running (started meanwhile)
            raise self.error(operation, instance.uuid, exc) from None

    async def hard_stop(self, dom: Any, instance: Instance, operation: str) -> None:
        try:
            await self.connection.call(dom.destroy)
        except self.libvirt.libvirtError as exc:
            if exc.get_error_code() == self.libvirt.VIR_ERR_OPERATION_INVALID:
                return  # not running any more
            raise self.error(operation, instance.uuid, exc) from None

    async def _clean_shutdown(self, dom: Any, timeout: float, retry_interval: float) -> bool:
        """Press the power button (again every ``retry_interval``) until the
        guest is off or ``timeout`` passes; whether it went off."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_press = loop.time()
        while loop.time() < deadline:
            if await self.state_of(dom) == PowerState.SHUTDOWN:
                return True
            if loop.time() >= next_press:
                try:
                    await self.connection.call(dom.shutdown)
                except self.libvirt.libvirtError as exc:
                    if exc.get_error_code() != self.libvirt.VIR_ERR_OPERATION_INVALID:
                        raise
                next_press = loop.time() + retry_interval if retry_interval > 0 else float("inf")
            await asyncio.sleep(_POLL)
        return await self.state_of(dom) == PowerState.SHUTDOWN

    async def reboot(self, context: RequestContext, instance: Instance, reboot_type: str) -> None:
        dom = await self.domain(instance, "reboot")
        if reboot_type == "SOFT" and await self.state_of(dom) == PowerState.RUNNING:
            try:
                if await self._clean_shutdown(dom, self.soft_reboot_wait, 0):
                    await self.start_domain(dom, instance, "reboot")
                    return
            except self.libvirt.libvirtError as exc:
                LOG.info("soft reboot of %s failed (%s); rebooting hard", instance.uuid, exc)
            LOG.info("instance %s did not shut down cleanly; rebooting hard", instance.uuid)
        await self.hard_stop(dom, instance, "reboot")
        await self.start_domain(dom, instance, "reboot")

    async def power_off(
        self, instance: Instance, timeout: float = 0, retry_interval: float = 0
    ) -> None:
        dom = await self.domain(instance, "power_off")
        if await self.state_of(dom) == PowerState.SHUTDOWN:
            return
        if timeout > 0:
            try:
                if await self._clean_shutdown(dom, timeout, retry_interval):
                    return
            except self.libvirt.libvirtError as exc:
                LOG.info("clean shutdown of %s failed (%s)", instance.uuid, exc)
        await self.hard_stop(dom, instance, "power_off")

    async def power_on(self, context: RequestContext, instance: Instance) -> None:
        dom = await self.domain(instance, "power_on")
        if await self.state_of(dom) in (PowerState.RUNNING, PowerState.PAUSED):
            return
        await self.start_domain(dom, instance, "power_on")

    # -- lifecycle actions ---------------------------------------------------

    async def _dom_call(self, instance: Instance, operation: str, method: str, *args: Any) -> None:
        dom = await self.domain(instance, operation)
        try:
            await self.connection.call(getattr(dom, method), *args)
        except self.libvirt.libvirtError as exc:
            raise self.error(operation, instance.uuid, exc) from None

    async def pause(self, instance: Instance) -> None:
        dom = await self.domain(instance, "pause")
        if await self.state_of(dom) == PowerState.PAUSED:
            return
        await self._dom_call(instance, "pause", "suspend")

    async def unpause(self, instance: Instance) -> None:
        dom = await self.domain(instance, "unpause")
        if await self.state_of(dom) == PowerState.RUNNING:
            return
        await self._dom_call(instance, "unpause", "resume")

    async def suspend(self, instance: Instance) -> None:
        """Managed save, as Nova's libvirt driver suspends: the memory goes to
        libvirt's save file and the domain stops (it then reads as shut down)."""
        dom = await self.domain(instance, "suspend")
        if await self.connection.call(dom.hasManagedSaveImage, 0):
            return
        await self._dom_call(instance, "suspend", "managedSave", 0)

    async def resume(self, instance: Instance) -> None:
        """Start the domain: libvirt restores it from its managed save image."""
        dom = await self.domain(instance, "resume")
        if await self.state_of(dom) == PowerState.RUNNING:
            return
        await self.start_domain(dom, instance, "resume")

    async def trigger_crash_dump(self, instance: Instance) -> None:
        dom = await self.domain(instance, "trigger_crash_dump")
        if await self.state_of(dom) != PowerState.RUNNING:
            raise exception.VirtDriverError(
                operation="trigger_crash_dump",
                instance_uuid=instance.uuid,
                reason="the guest is not running",
            )
        await self._dom_call(instance, "trigger_crash_dump", "injectNMI", 0)

    async def set_admin_password(self, instance: Instance, new_pass: str) -> None:
        """Through the QEMU guest agent, as Nova's libvirt driver does: only
        for an image that says it runs one (``hw_qemu_guest_agent``)."""
        agent = (instance.system_metadata or {}).get("image_hw_qemu_guest_agent", "")
        if str(agent).lower() not in ("yes", "true", "1"):
            raise self._cannot(instance, "set the password of", "QEMU guest agent is not enabled")
        user = (instance.system_metadata or {}).get("image_os_admin_user") or "root"
        await self._dom_call(instance, "set_admin_password", "setUserPassword", user, new_pass, 0)

    async def snapshot(self, context: RequestContext, instance: Instance, dest: Path) -> str:
        """``qemu-img convert`` of the guest's overlay (with its backing chain)
        into one standalone qcow2 at ``dest``. A running guest is paused for
        the copy, so the disk does not change under it, and resumed after."""
        dom = await self.domain(instance, "snapshot")
        disk = self.files(instance.uuid).disk
        paused = False
        try:
            if await self.state_of(dom) == PowerState.RUNNING:
                await self.connection.call(dom.suspend)
                paused = True
            # -U: qemu holds the disk's lock while the domain exists (paused
            # or not); the paused guest writes nothing, so a shared read is safe.
            command = ["qemu-img", "convert", "-U", "-q", "-O", "qcow2", str(disk), str(dest)]
            await self.disks.run(command, instance, "snapshot")
        except self.libvirt.libvirtError as exc:
            raise self.error("snapshot", instance.uuid, exc) from None
        finally:
            if paused:
                try:
                    await self.connection.call(dom.resume)
                except self.libvirt.libvirtError as exc:
                    LOG.warning("could not resume %s after its snapshot: %s", instance.uuid, exc)
        return "qcow2"

    # -- rescue (rescue.py) --------------------------------------------------------

    async def rescue(
        self, instance: Instance, rescue_image: dict[str, Any], admin_password: str | None
    ) -> None:
        # The password is not injected (see rescue.py, as Nova's default).
        await self.rescuer.rescue(instance, rescue_image)

    async def unrescue(self, instance: Instance) -> None:
        await self.rescuer.unrescue(instance)

    # -- cold migration and resize (moves.py) ----------------------------------------

    async def start_disk_server(self) -> DiskServer:
        """This host's disk server, started (guests leaving by cold migration)."""
        if self.disk_server is None:
            self.disk_server = DiskServer(
                self.instances_path, self.migration_address, self.disk_server_port
            )
        await self.disk_server.start()
        return self.disk_server

    async def migrate_disk_and_power_off(
        self, context: RequestContext, instance: Instance, dest: str, flavor: Flavor
    ) -> dict[str, Any]:
        return await self.moves.migrate_disk_and_power_off(context, instance, dest, flavor)

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
        await self.moves.finish_migration(
            context,
            migration,
            instance,
            disk_info,
            image_meta,
            resize_instance,
            power_on,
            config_drive=config_drive,
        )

    async def confirm_migration(
        self, context: RequestContext, migration: Migration, instance: Instance
    ) -> None:
        await self.moves.confirm_migration(context, migration, instance)

    async def finish_revert_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migration: Migration,
        power_on: bool = True,
    ) -> None:
        await self.moves.finish_revert_migration(context, instance, migration, power_on)

    # -- live migration (moves.py) -------------------------------------------------

    async def check_can_live_migrate_destination(
        self, context: RequestContext, instance: Instance, block_migration: bool = False
    ) -> dict[str, Any]:
        return await self.moves.check_can_live_migrate_destination(
            context, instance, block_migration
        )

    async def check_can_live_migrate_source(
        self, context: RequestContext, instance: Instance, dest_check_data: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.moves.check_can_live_migrate_source(context, instance, dest_check_data)

    async def attached_config_drive(self, instance: Instance) -> ConfigDrive | None:
        return await self.moves.attached_config_drive(instance)

    async def pre_live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migrate_data: dict[str, Any],
        *,
        config_drive: ConfigDrive | None = None,
    ) -> dict[str, Any]:
        return await self.moves.pre_live_migration(
            context, instance, migrate_data, config_drive=config_drive
        )

    async def live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        dest: str,
        migrate_data: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any] | None:
        return await self.moves.live_migration(context, instance, dest, migrate_data, progress)

    async def post_live_migration(
        self, context: RequestContext, instance: Instance, migrate_data: dict[str, Any]
    ) -> None:
        await self.moves.post_live_migration(context, instance, migrate_data)

    async def post_live_migration_at_destination(
        self, context: RequestContext, instance: Instance, migrate_data: dict[str, Any]
    ) -> None:
        await self.moves.post_live_migration_at_destination(context, instance, migrate_data)

    async def rollback_live_migration_at_destination(
        self, context: RequestContext, instance: Instance, migrate_data: dict[str, Any]
    ) -> None:
        await self.moves.rollback_live_migration_at_destination(context, instance, migrate_data)

    async def live_migration_abort(self, instance: Instance) -> bool:
        return await self.moves.live_migration_abort(instance)

    async def live_migration_force_complete(self, instance: Instance) -> bool:
        return await self.moves.live_migration_force_complete(instance)
