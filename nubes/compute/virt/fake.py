"""The fake virt driver: instances kept in a dict, for tests and scale runs.

Cheap enough for thousands of hosts in one process: no sleeps unless a delay
is configured, no per-call work beyond a dict operation. Failures are
injected through a :class:`FakeFaults` registry that whoever makes the
drivers hands them (a fleet shares one; ``nubes.testing.allinone.AllInOne``
has ``cloud.faults``), so a test can say "spawn fails on host X" or "live
migrations from Y fail halfway" while the cloud runs::

    cloud.faults.fail_spawn_hosts.add("host-x")
    driver.faults.fail_spawn = True          # every spawn on this driver's registry

There is no process-wide registry: each cloud starts with its own, so no test
leaves faults behind for the next one.

A hypervisor keeps its guests when the compute agent restarts; so does a
fake driver given a ``state_dir`` (``[fake_driver] state_path``; all-in-one
sets it under its state dir): after every call that changes its guests it
writes them (power state and size, and the ones kept for a revert) to
``<state_dir>/<host>.json`` by write-and-rename, and reads that file back
when it is made. Without a ``state_dir`` the guests live in memory only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import struct
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from nubes import exception
from nubes.compute.virt.driver import (
    DIAGNOSTICS_STATE,
    ComputeDriver,
    CpuDiagnostics,
    Diagnostics,
    DiskDiagnostics,
    InstanceInfo,
    ProgressCallback,
)
from nubes.compute.virt.fake_faults import FakeFaults, delay
from nubes.compute.virt.fake_moves import FakeLiveMigration, FakeMoves
from nubes.compute.virt.rescue_layout import GuestDisk, own_disks, rescued
from nubes.metadata.configdrive import ConfigDrive
from nubes.objects.states import PowerState

#: Re-exported: the fault registry and a live migration's record are part of
#: the fake driver's interface for tests (``from ...fake import FakeFaults``).
__all__ = ["FakeDriver", "FakeFaults", "FakeInstance", "FakeLiveMigration", "format_uptime"]

if TYPE_CHECKING:
    from nubes.context import RequestContext
    from nubes.objects.flavor import Flavor
    from nubes.objects.instance import Instance
    from nubes.objects.migration import Migration

FAKE_HYPERVISOR_VERSION = 1000
_CPU_INFO = json.dumps({"arch": "x86_64", "model": "fake", "vendor": "nubes"}, sort_keys=True)


@dataclasses.dataclass(slots=True)
class FakeInstance:
    uuid: str
    state: PowerState
    vcpus: int
    memory_mb: int
    root_gb: int
    started_at: float
    #: The guest's "serial console": a line per lifecycle event on this host,
    #: which ``get_console_output`` serves as a real driver serves its log.
    console: list[str] = dataclasses.field(default_factory=list)
    #: The config drive it was given (the functional tests read its files).
    config_drive: ConfigDrive | None = None
    #: The rescue image it runs from while rescued (None: its own disk).
    rescue_image: str | None = None
    #: That image's metadata (whether the rescue is stable decides its disks).
    rescue_image_meta: dict[str, Any] | None = None
    #: Whether its flavor gave it an ephemeral disk, and swap.
    ephemeral: bool = False
    swap: bool = False
    #: The administrator password last set (changePassword, a rescue's).
    admin_password: str | None = None
    #: NMIs received (trigger_crash_dump).
    nmis: int = 0
    #: The image it was spawned from (a shelved server comes back from its snapshot).
    image_id: str | None = None

    @property
    def disks(self) -> tuple[GuestDisk, ...]:
        """The disks it runs with now, in device order (rescued: Nova's rescue
        layout, :mod:`nubes.compute.virt.rescue_layout`)."""
        own = own_disks(
            ephemeral=self.ephemeral, swap=self.swap, config_drive=self.config_drive is not None
        )
        if self.rescue_image_meta is None:
            return own
        return rescued(own, self.rescue_image_meta)

    def log(self, event: str) -> None:
        self.console.append(
            f"[{time.strftime('%Y-%m-%dT%H:%M:%S')}] fake guest {self.uuid}: {event}"
        )


#: What a fake guest's console shows as it boots, before "booted on HOST": a
#: boot has several lines, as a real guest's serial log has (clients such as
#: Tempest read more than a couple of lines of a fresh server's console).
FAKE_BOOT_LOG = (
    "firmware: booting from the root disk",
    "kernel: started",
    "init: network configured",
)


#: The share of each vCPU a fake guest keeps busy (its diagnostics' CPU time).
FAKE_CPU_LOAD = 0.01
#: Bytes a fake guest reads from its config drive at boot (one ISO 9660 volume
#: descriptor set and the files of one metadata version, roughly).
FAKE_CONFIG_DRIVE_READ = 64 * 1024

#: Version of the guests file's layout.
STATE_FORMAT = 1

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _persists(
    method: Callable[Concatenate[FakeDriver, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[FakeDriver, _P], Coroutine[Any, Any, _R]]:
    """Save the guests once ``method`` ends, whether it succeeded or not: a
    call that fails halfway may already have changed them."""

    @functools.wraps(method)
    async def wrapper(self: FakeDriver, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(self, *args, **kwargs)
        finally:
            await self.save_state()

    return wrapper


#: What a fake guest's VNC server greets with (RFB protocol version 3.8).
RFB_GREETING = b"RFB 003.008\n"


#: A fake guest's framebuffer: 640x480, 32 bits per pixel (24-bit true colour,
#: little-endian, red at bit 16), and its desktop's name: RFB's ServerInit.
FAKE_DESKTOP = b"nubes fake guest"
RFB_SERVER_INIT = (
    struct.pack(">HH", 640, 480)
    + struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
    + struct.pack(">I", len(FAKE_DESKTOP))
    + FAKE_DESKTOP
)


async def _fake_rfb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An RFB 3.8 server up to its first framebuffer (RFC 6143, 7.1-7.3):
    greet, read the client's version, offer security type 1 (None), take the
    client's choice and answer success, read ClientInit, send ServerInit,
    then hold the connection until the client leaves. A client (noVNC,
    Tempest) sees a desktop it could ask updates of; none ever come."""
    try:
        writer.write(RFB_GREETING)
        await writer.drain()
        if not await reader.readline():
            return
        writer.write(bytes([1, 1]))
        await writer.drain()
        if await reader.read(1) != b"\x01":
            return  # a security type we did not offer: RFB closes
        writer.write(struct.pack(">I", 0))  # SecurityResult: OK
        await writer.drain()
        if not await reader.read(1):  # ClientInit (the shared flag)
            return
        writer.write(RFB_SERVER_INIT)
        await writer.drain()
        while await reader.read(4096):
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def format_uptime(now: float, seconds: float, load: tuple[float, float, float]) -> str:
    """``uptime``'s line for a host up ``seconds`` at ``now`` (epoch, local time)."""
    minutes = int(seconds) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    up = f"{hours:2d}:{minutes:02d}" if hours else f"{minutes} min"
    if days:
        up = f"{days} day{'s' if days != 1 else ''}, {up}"
    loads = ", ".join(f"{x:.2f}" for x in load)
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    return f" {clock} up {up},  0 users,  load average: {loads}"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class FakeDriver(ComputeDriver):
    """A hypervisor in memory. One node, named like the host."""

    hypervisor_type = "fake"

    def __init__(
        self,
        host: str,
        *,
        vcpus: int = 16,
        memory_mb: int = 65536,
        local_gb: int = 1000,
        faults: FakeFaults | None = None,
        state_dir: str | Path | None = None,
    ) -> None:
        super().__init__(host)
        self.vcpus = vcpus
        self.memory_mb = memory_mb
        self.local_gb = local_gb
        self.faults = faults if faults is not None else FakeFaults()
        self.instances: dict[str, FakeInstance] = {}
        #: Instances kept after a resize or migration left, for a revert.
        self.kept: dict[str, FakeInstance] = {}
        #: Live migrations running from this host, by instance uuid.
        self.live_migrations: dict[str, FakeLiveMigration] = {}
        #: Config drives given to pre_live_migration, attached when the guest arrives.
        self.arriving_config_drives: dict[str, ConfigDrive] = {}
        #: The guests' VNC listeners (:meth:`get_vnc_endpoint`), by instance uuid.
        self.vnc_servers: dict[str, asyncio.Server] = {}
        #: When this "hypervisor" came up (wall clock, for its uptime).
        self.booted_at = time.time()
        #: Where the guests are kept across restarts (None: in memory only).
        self.state_file = Path(state_dir) / f"{host}.json" if state_dir else None
        self._save_lock = asyncio.Lock()
        #: Cold and live migrations: a part of their own (fake_moves.py).
        self.moves = FakeMoves(self)
        if self.state_file is not None:
            self._load_state(self.state_file)

    # -- persistence ---------------------------------------------------------

    def _load_state(self, path: Path) -> None:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise exception.ConfigError(
                reason=f"cannot read the fake driver's guests from {path}: {exc}"
            ) from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise exception.ConfigError(
                reason=f"{path} is not a fake driver guests file of format {STATE_FORMAT}"
            )
        for attribute in ("instances", "kept"):
            table: dict[str, FakeInstance] = getattr(self, attribute)
            for row in data.get(attribute, []):
                table[row["uuid"]] = FakeInstance(
                    row["uuid"],
                    PowerState(row["state"]),
                    row["vcpus"],
                    row["memory_mb"],
                    row["root_gb"],
                    # Monotonic seconds mean nothing to another process: a
                    # guest found again counts as started now.
                    time.monotonic(),
                    ephemeral=bool(row.get("ephemeral")),
                    swap=bool(row.get("swap")),
                )

    def _state_bytes(self) -> bytes:
        def rows(table: dict[str, FakeInstance]) -> list[dict[str, Any]]:
            return [
                {
                    "uuid": i.uuid,
                    "state": int(i.state),
                    "vcpus": i.vcpus,
                    "memory_mb": i.memory_mb,
                    "root_gb": i.root_gb,
                    "ephemeral": i.ephemeral,
                    "swap": i.swap,
                }
                for i in table.values()
            ]

        data = {
            "format": STATE_FORMAT,
            "host": self.host,
            "instances": rows(self.instances),
            "kept": rows(self.kept),
        }
        return json.dumps(data, sort_keys=True).encode()

    async def save_state(self) -> None:
        """Write the guests to the state file (nothing without one).

        Saves run one at a time, each taking its snapshot once it holds the
        lock, so the file never goes back to an older state than one written.
        """
        path = self.state_file
        if path is None:
            return
        async with self._save_lock:
            await asyncio.to_thread(_write_atomically, path, self._state_bytes())

    # -- helpers -------------------------------------------------------------

    def failure(self, operation: str, instance: Instance, reason: str) -> exception.VirtDriverError:
        return exception.VirtDriverError(
            operation=operation, instance_uuid=instance.uuid, reason=reason
        )

    def check_injected(self, operation: str, instance: Instance) -> None:
        """Fail this call if the fault registry says so (``fail_calls``/``fail_next``)."""
        if self.faults.injected(operation, self.host):
            raise self.failure(operation, instance, f"{operation} fails on {self.host} (injected)")

    def guest(self, instance: Instance) -> FakeInstance:
        found = self.instances.get(instance.uuid)
        if found is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        return found

    def new_guest(self, instance: Instance, state: PowerState = PowerState.RUNNING) -> FakeInstance:
        flavor = instance.flavor if instance.obj_attr_is_set("flavor") else None
        ephemeral = instance.ephemeral_gb if instance.obj_attr_is_set("ephemeral_gb") else 0
        return FakeInstance(
            instance.uuid,
            state,
            instance.vcpus or 0,
            instance.memory_mb or 0,
            instance.root_gb or 0,
            time.monotonic(),
            ephemeral=bool(ephemeral),
            swap=bool(flavor.swap if flavor is not None else 0),
        )

    def add_instance(self, instance: Instance, state: PowerState = PowerState.RUNNING) -> None:
        """Put a guest on the hypervisor directly (tests of restart repair)."""
        self.instances[instance.uuid] = self.new_guest(instance, state)

    # -- host --------------------------------------------------------------

    async def cleanup_host(self) -> None:
        for uuid in list(self.vnc_servers):
            self._close_vnc(uuid)

    def get_available_nodes(self) -> list[str]:
        return [self.host]

    async def get_available_resource(self, nodename: str) -> dict[str, Any]:
        return {
            "vcpus": self.vcpus,
            "memory_mb": self.memory_mb,
            "local_gb": self.local_gb,
            "hypervisor_type": self.hypervisor_type,
            "hypervisor_version": FAKE_HYPERVISOR_VERSION,
            "hypervisor_hostname": nodename,
            "cpu_info": _CPU_INFO,
        }

    async def get_host_metrics(self, nodename: str) -> dict[str, float]:
        # Every running guest keeps one vCPU a quarter busy: enough to see
        # utilisation follow the load in tests and dashboards.
        busy = sum(i.vcpus for i in self.instances.values() if i.state == PowerState.RUNNING)
        percent = min(100.0, 25.0 * busy / self.vcpus) if self.vcpus else 0.0
        return {"cpu.percent": round(percent, 2)}

    async def get_host_uptime(self) -> str:
        # The fake "hypervisor" came up with this driver; the load is the host's.
        return format_uptime(time.time(), time.time() - self.booted_at, os.getloadavg())

    # -- instances -----------------------------------------------------------

    async def list_instances(self) -> list[str]:
        return list(self.instances)

    async def get_info(self, instance: Instance) -> InstanceInfo:
        found = self.guest(instance)
        return InstanceInfo(found.state, found.memory_mb, found.vcpus)

    @_persists
    async def spawn(
        self,
        context: RequestContext,
        instance: Instance,
        image_meta: dict[str, Any],
        request: dict[str, Any],
        *,
        config_drive: ConfigDrive | None = None,
    ) -> None:
        self.check_injected("spawn", instance)
        faults = self.faults
        await delay(faults.spawn_delay)
        if faults.fail_spawn or self.host in faults.fail_spawn_hosts:
            raise self.failure("spawn", instance, f"spawn fails on {self.host} (injected)")
        if instance.uuid in self.instances:
            raise exception.Conflict(reason=f"instance {instance.uuid} already exists")
        self.instances[instance.uuid] = self.new_guest(instance)
        self.instances[instance.uuid].config_drive = config_drive
        self.instances[instance.uuid].image_id = image_meta.get("id")
        for line in FAKE_BOOT_LOG:
            self.instances[instance.uuid].log(line)
        self.instances[instance.uuid].log(f"booted on {self.host}")

    @_persists
    async def destroy(self, context: RequestContext, instance: Instance) -> None:
        self.check_injected("destroy", instance)
        if self.host in self.faults.fail_destroy_hosts:
            raise self.failure("destroy", instance, f"destroy fails on {self.host} (injected)")
        self.instances.pop(instance.uuid, None)
        self.kept.pop(instance.uuid, None)
        self._close_vnc(instance.uuid)

    @_persists
    async def reboot(self, context: RequestContext, instance: Instance, reboot_type: str) -> None:
        self.check_injected("reboot", instance)
        found = self.guest(instance)
        await delay(self.faults.power_delay)
        if self.host in self.faults.fail_reboot_hosts:
            raise self.failure("reboot", instance, f"reboot fails on {self.host} (injected)")
        found.state = PowerState.RUNNING
        found.started_at = time.monotonic()
        found.log(f"rebooted ({reboot_type.lower()})")

    @_persists
    async def power_off(
        self, instance: Instance, timeout: float = 0, retry_interval: float = 0
    ) -> None:
        self.check_injected("power_off", instance)
        found = self.guest(instance)
        await delay(self.faults.power_delay)
        if self.host in self.faults.fail_power_hosts:
            raise self.failure("power_off", instance, f"power off fails on {self.host} (injected)")
        found.state = PowerState.SHUTDOWN
        found.log("powered off")

    @_persists
    async def power_on(self, context: RequestContext, instance: Instance) -> None:
        self.check_injected("power_on", instance)
        found = self.guest(instance)
        await delay(self.faults.power_delay)
        if self.host in self.faults.fail_power_hosts:
            raise self.failure("power_on", instance, f"power on fails on {self.host} (injected)")
        found.state = PowerState.RUNNING
        found.log("powered on")

    async def get_console_output(self, instance: Instance) -> str:
        # No newline after the last line, as Nova's fake console: a tail of
        # N lines then splits into N pieces, which clients such as Tempest count.
        return "\n".join(self.guest(instance).console)

    async def snapshot(self, context: RequestContext, instance: Instance, dest: Path) -> str:
        """The fake guest's "disk": what this driver keeps of it (its shape and
        its console so far), as JSON bytes, so an image made from it holds
        this guest's own data."""
        self.check_injected("snapshot", instance)
        found = self.guest(instance)
        disk = {
            "uuid": found.uuid,
            "vcpus": found.vcpus,
            "memory_mb": found.memory_mb,
            "root_gb": found.root_gb,
            "console": found.console,
        }
        await asyncio.to_thread(dest.write_bytes, json.dumps(disk, indent=1).encode())
        found.log(f"snapshot taken on {self.host}")
        return "raw"

    async def get_vnc_endpoint(self, instance: Instance) -> tuple[str, int]:
        """A running fake guest's "VNC server": a real listener on the
        loopback address that speaks the start of RFB 3.8 (the version
        greeting, then one security type, None), opened on first use and
        closed with the guest."""
        found = self.guest(instance)
        if found.state != PowerState.RUNNING:
            raise exception.InstanceInvalidState(
                action="get_vnc_console",
                instance_uuid=instance.uuid,
                attr="power_state",
                state=found.state.name.lower(),
            )
        server = self.vnc_servers.get(instance.uuid)
        if server is None:
            server = await asyncio.start_server(_fake_rfb, "127.0.0.1", 0)
            self.vnc_servers[instance.uuid] = server
        address, port = server.sockets[0].getsockname()[:2]
        return address, port

    def _close_vnc(self, uuid: str) -> None:
        server = self.vnc_servers.pop(uuid, None)
        if server is not None:
            server.close()

    async def get_instance_diagnostics(self, instance: Instance) -> Diagnostics:
        """Counters that follow the guest's real life here: CPU time grows at
        :data:`FAKE_CPU_LOAD` of each vCPU while it has been up, its root disk
        has had the console log written to it (a write per line), and the
        config drive, when it has one, is a second disk read once at boot."""
        found = self.guest(instance)
        running = found.state == PowerState.RUNNING
        up = max(0.0, time.monotonic() - found.started_at)
        cpu_ns = int(up * 1e9 * FAKE_CPU_LOAD) if running else 0
        written = sum(len(line.encode()) + 1 for line in found.console)
        disks = [DiskDiagnostics(write_bytes=written, write_requests=len(found.console))]
        if found.config_drive is not None:
            disks.append(DiskDiagnostics(read_bytes=FAKE_CONFIG_DRIVE_READ, read_requests=1))
        return Diagnostics(
            state=DIAGNOSTICS_STATE[found.state],
            # Nova's API names the driver from a closed list (libvirt, xenapi,
            # vmwareapi, ironic, hyperv) that clients validate; Nova's own
            # fake driver answers "libvirt" there, and so does this one. The
            # hypervisor (a free string) says what it really is.
            driver="libvirt",
            hypervisor="fake",
            hypervisor_os="fake-os",
            uptime=int(up) if running else None,
            config_drive=found.config_drive is not None,
            memory_maximum_kib=found.memory_mb * 1024,
            memory_used_kib=found.memory_mb * 1024 if running else 0,
            cpu_details=[
                CpuDiagnostics(id=i, time=cpu_ns, utilisation=round(FAKE_CPU_LOAD * 100))
                for i in range(found.vcpus)
            ],
            disk_details=disks,
        )

    # -- lifecycle actions ---------------------------------------------------

    async def _switch(
        self,
        operation: str,
        instance: Instance,
        start: tuple[PowerState, ...],
        end: PowerState,
    ) -> FakeInstance:
        """Move the guest from one of ``start`` to ``end`` (already ``end``: nothing)."""
        self.check_injected(operation, instance)
        found = self.guest(instance)
        await delay(self.faults.power_delay)
        if found.state == end:
            return found
        if found.state not in start:
            raise self.failure(operation, instance, f"the guest is {found.state.name.lower()}")
        found.state = end
        found.log(f"{operation} done")
        return found

    @_persists
    async def pause(self, instance: Instance) -> None:
        await self._switch("pause", instance, (PowerState.RUNNING,), PowerState.PAUSED)

    @_persists
    async def unpause(self, instance: Instance) -> None:
        await self._switch("unpause", instance, (PowerState.PAUSED,), PowerState.RUNNING)

    @_persists
    async def suspend(self, instance: Instance) -> None:
        await self._switch(
            "suspend", instance, (PowerState.RUNNING, PowerState.PAUSED), PowerState.SUSPENDED
        )

    @_persists
    async def resume(self, instance: Instance) -> None:
        await self._switch("resume", instance, (PowerState.SUSPENDED,), PowerState.RUNNING)

    @_persists
    async def rescue(
        self, instance: Instance, rescue_image: dict[str, Any], admin_password: str | None
    ) -> None:
        self.check_injected("rescue", instance)
        found = self.guest(instance)
        await delay(self.faults.power_delay)
        found.rescue_image = str(rescue_image.get("id") or "")
        found.rescue_image_meta = dict(rescue_image)
        if admin_password is not None:
            found.admin_password = admin_password
        found.state = PowerState.RUNNING
        found.log(f"rescued from image {found.rescue_image}")

    @_persists
    async def unrescue(self, instance: Instance) -> None:
        self.check_injected("unrescue", instance)
        found = self.guest(instance)
        await delay(self.faults.power_delay)
        found.rescue_image = None
        found.rescue_image_meta = None
        found.state = PowerState.RUNNING
        found.log("unrescued")

    async def trigger_crash_dump(self, instance: Instance) -> None:
        self.check_injected("trigger_crash_dump", instance)
        found = self.guest(instance)
        if found.state != PowerState.RUNNING:
            raise self.failure("trigger_crash_dump", instance, "the guest is not running")
        found.nmis += 1
        found.log("NMI received")

    async def set_admin_password(self, instance: Instance, new_pass: str) -> None:
        self.check_injected("set_admin_password", instance)
        found = self.guest(instance)
        if found.state != PowerState.RUNNING:
            raise self.failure("set_admin_password", instance, "the guest is not running")
        found.admin_password = new_pass
        found.log("administrator password changed")

    # -- cold migration and resize (fake_moves.py) ---------------------------------

    @_persists
    async def migrate_disk_and_power_off(
        self, context: RequestContext, instance: Instance, dest: str, flavor: Flavor
    ) -> dict[str, Any]:
        return await self.moves.migrate_disk_and_power_off(context, instance, dest, flavor)

    @_persists
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

    @_persists
    async def confirm_migration(
        self, context: RequestContext, migration: Migration, instance: Instance
    ) -> None:
        await self.moves.confirm_migration(context, migration, instance)

    @_persists
    async def finish_revert_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migration: Migration,
        power_on: bool = True,
    ) -> None:
        await self.moves.finish_revert_migration(context, instance, migration, power_on)

    # -- live migration (fake_moves.py) --------------------------------------------

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
    ) -> None:
        await self.moves.live_migration(context, instance, dest, migrate_data, progress)

    async def live_migration_abort(self, instance: Instance) -> bool:
        return await self.moves.live_migration_abort(instance)

    async def live_migration_force_complete(self, instance: Instance) -> bool:
        return await self.moves.live_migration_force_complete(instance)

    @_persists
    async def post_live_migration(
        self, context: RequestContext, instance: Instance, migrate_data: dict[str, Any]
    ) -> None:
        await self.moves.post_live_migration(context, instance, migrate_data)

    @_persists
    async def post_live_migration_at_destination(
        self, context: RequestContext, instance: Instance, migrate_data: dict[str, Any]
    ) -> None:
        await self.moves.post_live_migration_at_destination(context, instance, migrate_data)

    @_persists
    async def rollback_live_migration_at_destination(
        self, context: RequestContext, instance: Instance, migrate_data: dict[str, Any]
    ) -> None:
        await self.moves.rollback_live_migration_at_destination(context, instance, migrate_data)
