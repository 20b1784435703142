"""The virt driver interface: one abstract class a hypervisor driver implements.

The compute manager only ever talks to a hypervisor through these methods.
Every method is a coroutine and must not block the event loop (a driver for
a real hypervisor runs blocking library calls in a thread). Instances are
passed as :class:`~nubes.objects.instance.Instance` objects; a driver reads
them and never saves them: state changes are the manager's job.

Contract for every method:

* Idempotent where the name allows: ``destroy`` of an instance the driver
  does not have, ``power_off`` of one already off, ``power_on`` of one
  running all succeed without doing anything. The manager relies on this
  when a message is delivered twice or a compute host restarts mid-operation.
* Failures raise :class:`~nubes.exception.NubesError` subclasses (the
  manager records the message as the instance fault);
  :class:`~nubes.exception.InstanceNotFound` when the driver does not have
  the instance and the operation needs it.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nubes import exception
from nubes.objects.states import PowerState

if TYPE_CHECKING:
    from nubes.compute.network.agent import NetworkAgent
    from nubes.context import RequestContext
    from nubes.metadata.configdrive import ConfigDrive
    from nubes.objects.flavor import Flavor
    from nubes.objects.instance import Instance
    from nubes.objects.migration import Migration

#: Called with the percentage (0-100) of a live migration done so far.
ProgressCallback = Callable[[int], Awaitable[None]]


def console_tail(output: str, length: int | None) -> str:
    """The last ``length`` lines of a console log; all of it when ``length``
    is None or not positive (Nova's ``os-getConsoleOutput`` treats 0 as -1).
    Lines are what lies between newlines, as Nova's tail counts them: a log
    ending in a newline (a real guest's) ends in an empty piece, so its tail
    of N holds N-1 lines and the newline, and splits into N pieces again
    (Tempest's console output check counts them so)."""
    if length is None or length <= 0:
        return output
    return "\n".join(output.split("\n")[-length:])


@dataclasses.dataclass(slots=True)
class InstanceInfo:
    """What the hypervisor says about one instance."""

    state: PowerState
    #: Memory and vCPUs the guest has now.
    memory_mb: int = 0
    vcpus: int = 0
    #: CPU time used so far, nanoseconds.
    cpu_time_ns: int = 0


@dataclasses.dataclass(slots=True)
class CpuDiagnostics:
    id: int
    #: CPU time this vCPU used, nanoseconds (None when the hypervisor does not say).
    time: int | None = None
    #: Percent busy since the last sample (None when unknown).
    utilisation: int | None = None


@dataclasses.dataclass(slots=True)
class NicDiagnostics:
    mac_address: str | None = None
    rx_octets: int = 0
    rx_errors: int = 0
    rx_drop: int = 0
    rx_packets: int = 0
    rx_rate: int | None = None
    tx_octets: int = 0
    tx_errors: int = 0
    tx_drop: int = 0
    tx_packets: int = 0
    tx_rate: int | None = None


@dataclasses.dataclass(slots=True)
class DiskDiagnostics:
    read_bytes: int = 0
    read_requests: int = 0
    write_bytes: int = 0
    write_requests: int = 0
    errors_count: int = 0


@dataclasses.dataclass(slots=True)
class Diagnostics:
    """A guest's counters, in the driver-neutral shape of Nova's
    ``GET /servers/{id}/diagnostics`` from microversion 2.48 (the API derives
    the older, libvirt-flavoured flat shape from it). Travels over RPC as
    :meth:`to_dict`."""

    state: str
    driver: str
    hypervisor: str | None = None
    hypervisor_os: str | None = None
    #: Seconds since the guest started on this host.
    uptime: int | None = None
    config_drive: bool = False
    #: KiB: the guest's maximum and what it uses now.
    memory_maximum_kib: int | None = None
    memory_used_kib: int | None = None
    cpu_details: list[CpuDiagnostics] = dataclasses.field(default_factory=list)
    nic_details: list[NicDiagnostics] = dataclasses.field(default_factory=list)
    disk_details: list[DiskDiagnostics] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "driver": self.driver,
            "hypervisor": self.hypervisor,
            "hypervisor_os": self.hypervisor_os,
            "uptime": self.uptime,
            "config_drive": self.config_drive,
            "num_cpus": len(self.cpu_details),
            "num_nics": len(self.nic_details),
            "num_disks": len(self.disk_details),
            "cpu_details": [dataclasses.asdict(c) for c in self.cpu_details],
            "nic_details": [dataclasses.asdict(n) for n in self.nic_details],
            "disk_details": [dataclasses.asdict(d) for d in self.disk_details],
            "memory_details": {"maximum": self.memory_maximum_kib, "used": self.memory_used_kib},
        }


#: Nova's diagnostics ``state`` names, by power state.
DIAGNOSTICS_STATE = {
    PowerState.NOSTATE: "pending",
    PowerState.RUNNING: "running",
    PowerState.PAUSED: "paused",
    PowerState.SHUTDOWN: "shutdown",
    PowerState.CRASHED: "crashed",
    PowerState.SUSPENDED: "suspended",
}


@dataclasses.dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """The hypervisor saw an instance's guest change power (started, stopped,
    paused ...), whoever caused it. A listener re-reads the power state
    rather than trust the event: events of one guest may arrive late."""

    instance_uuid: str
    state: PowerState


#: Called in the event loop with each lifecycle event; must not block.
LifecycleListener = Callable[[LifecycleEvent], None]


class ComputeDriver(abc.ABC):
    """A hypervisor as the compute manager sees it.

    One driver object per compute host; it may manage several nodes
    (:meth:`get_available_nodes`), each with its own compute-node record.
    """

    #: ``hypervisor_type`` reported for this driver's nodes.
    hypervisor_type = "unknown"

    def __init__(self, host: str) -> None:
        self.host = host
        self._listener: LifecycleListener | None = None

    def register_event_listener(self, listener: LifecycleListener | None) -> None:
        """Call ``listener`` with every :class:`LifecycleEvent` from now on
        (None: stop). A driver whose hypervisor has no events never calls it."""
        self._listener = listener

    def emit_event(self, event: LifecycleEvent) -> None:
        """Hand ``event`` to the listener, if there is one (in the event loop)."""
        if self._listener is not None:
            self._listener(event)

    # -- host --------------------------------------------------------------

    async def init_host(self) -> None:
        """Prepare the hypervisor connection; called once before anything else."""
        return None

    #: Whether guests get network interfaces on the host's data plane
    #: (the launcher then runs a network agent and calls :meth:`use_network`).
    has_data_plane = False

    def use_network(self, network: NetworkAgent) -> None:
        """Plug guests' interfaces into the host's data plane through ``network``
        (before a guest starts, its bridges and rules are in place). A driver
        whose guests have no data plane refuses it."""
        raise exception.ConfigError(reason=f"the {type(self).__name__} keeps no network data plane")

    async def cleanup_host(self) -> None:
        """Release the hypervisor connection; called once when the service stops."""
        return None

    @abc.abstractmethod
    def get_available_nodes(self) -> list[str]:
        """Names of the nodes this host manages (each a ComputeNode's
        ``hypervisor_hostname``); most drivers have one, named like the host."""

    @abc.abstractmethod
    async def get_available_resource(self, nodename: str) -> dict[str, Any]:
        """Capacity and hypervisor facts of ``nodename``.

        Keys: ``vcpus``, ``memory_mb``, ``local_gb`` (totals),
        ``hypervisor_type``, ``hypervisor_version``, ``hypervisor_hostname``,
        ``cpu_info`` (JSON text). Usage is not the driver's to report: the
        resource tracker counts it from the instances placed on the node.
        """

    @abc.abstractmethod
    async def get_host_metrics(self, nodename: str) -> dict[str, float]:
        """Monitor readings of ``nodename`` now, e.g. ``{"cpu.percent": 12.5}``."""

    @abc.abstractmethod
    async def get_host_uptime(self) -> str:
        """The host's uptime as the ``uptime`` command prints it, e.g.
        ``" 17:37:14 up 2 days,  2:33,  3 users,  load average: 0.33, 0.36, 0.34"``
        (what ``os-hypervisors/{id}/uptime`` answers; clients parse that shape)."""

    # -- instances -----------------------------------------------------------

    @abc.abstractmethod
    async def list_instances(self) -> list[str]:
        """UUIDs of every instance the hypervisor has on this host, whatever its power."""

    @abc.abstractmethod
    async def get_info(self, instance: Instance) -> InstanceInfo:
        """The instance's power state and size; InstanceNotFound if the driver
        does not have it."""

    @abc.abstractmethod
    async def spawn(
        self,
        context: RequestContext,
        instance: Instance,
        image_meta: dict[str, Any],
        request: dict[str, Any],
        *,
        config_drive: ConfigDrive | None = None,
    ) -> None:
        """Create the guest and boot it; returns once it is running.

        ``image_meta`` describes the image (``id``, ``disk_format`` ...),
        ``request`` carries build details (networks, block devices, user
        data). ``config_drive``, when given, is attached to the guest as a
        read-only cdrom (``nubes/metadata/configdrive.py``). Spawning an
        instance the driver already has fails with InstanceExists-like
        Conflict; on failure nothing must be left behind that :meth:`destroy`
        could not remove.
        """

    @abc.abstractmethod
    async def destroy(self, context: RequestContext, instance: Instance) -> None:
        """Power off and remove the guest and its local disks. Succeeds when
        the driver does not have the instance (a half-done delete retried)."""

    @abc.abstractmethod
    async def reboot(self, context: RequestContext, instance: Instance, reboot_type: str) -> None:
        """Reboot the guest: ``"SOFT"`` asks the guest OS (and falls back to
        hard when it does not answer), ``"HARD"`` power-cycles it. Returns
        once it runs again."""

    @abc.abstractmethod
    async def power_off(
        self, instance: Instance, timeout: float = 0, retry_interval: float = 0
    ) -> None:
        """Stop the guest: a clean shutdown for up to ``timeout`` seconds
        (retrying every ``retry_interval``), then a hard one. Succeeds when
        it is already off."""

    @abc.abstractmethod
    async def power_on(self, context: RequestContext, instance: Instance) -> None:
        """Start a stopped guest. Succeeds when it already runs."""

    async def get_console_output(self, instance: Instance) -> str:
        """The end of the guest's serial console log (what
        ``os-getConsoleOutput`` shows). Drivers without one refuse."""
        raise exception.VirtOperationNotSupported(
            driver=type(self).__name__,
            operation="read the console of",
            instance_uuid=instance.uuid,
            reason="this driver keeps no console log",
        )

    async def get_vnc_endpoint(self, instance: Instance) -> tuple[str, int]:
        """Where the guest's VNC server listens on this host (address, port):
        only the host's console relay connects there. Drivers whose guests
        have none refuse."""
        raise exception.VirtOperationNotSupported(
            driver=type(self).__name__,
            operation="open the VNC console of",
            instance_uuid=instance.uuid,
            reason="this driver gives guests no VNC console",
        )

    async def get_instance_diagnostics(self, instance: Instance) -> Diagnostics:
        """The guest's CPU, memory, disk and NIC counters (``GET
        /servers/{id}/diagnostics``). Drivers that keep none refuse."""
        raise exception.VirtOperationNotSupported(
            driver=type(self).__name__,
            operation="read the diagnostics of",
            instance_uuid=instance.uuid,
            reason="this driver keeps no guest counters",
        )

    # -- lifecycle actions (pause ... set_admin_password) ---------------------
    # Not abstract: a driver that cannot do one refuses it (the step fails
    # with the reason as the instance's fault, the guest as it was).

    def _cannot(self, instance: Instance, operation: str, reason: str) -> exception.NubesError:
        return exception.VirtOperationNotSupported(
            driver=type(self).__name__,
            operation=operation,
            instance_uuid=instance.uuid,
            reason=reason,
        )

    async def pause(self, instance: Instance) -> None:
        """Stop the guest's vCPUs, keeping its memory (power state PAUSED).
        Succeeds when it is paused already."""
        raise self._cannot(instance, "pause", "not supported by this driver")

    async def unpause(self, instance: Instance) -> None:
        """Run a paused guest again. Succeeds when it runs already."""
        raise self._cannot(instance, "unpause", "not supported by this driver")

    async def suspend(self, instance: Instance) -> None:
        """Save the guest's memory to disk and stop it. Succeeds when it is
        suspended already."""
        raise self._cannot(instance, "suspend", "not supported by this driver")

    async def resume(self, instance: Instance) -> None:
        """Bring a suspended guest back from its saved memory. Succeeds when
        it runs already."""
        raise self._cannot(instance, "resume", "not supported by this driver")

    async def rescue(
        self, instance: Instance, rescue_image: dict[str, Any], admin_password: str | None
    ) -> None:
        """Boot the guest from ``rescue_image`` with its own disk attached
        second and its config drive, without its ephemeral and swap disks (a
        stable rescue, image properties ``hw_rescue_device`` or
        ``hw_rescue_bus``, keeps all its disks first and boots the rescue
        disk by them): :mod:`nubes.compute.virt.rescue_layout`."""
        raise self._cannot(instance, "rescue", "not supported by this driver")

    async def unrescue(self, instance: Instance) -> None:
        """Boot the guest from its own disk again, the rescue disk removed."""
        raise self._cannot(instance, "unrescue", "not supported by this driver")

    async def trigger_crash_dump(self, instance: Instance) -> None:
        """Send the guest a non-maskable interrupt (its kernel dumps and
        restarts, if set up so)."""
        raise self._cannot(instance, "trigger a crash dump of", "not supported by this driver")

    async def set_admin_password(self, instance: Instance, new_pass: str) -> None:
        """Set the guest's administrator password (through an agent in it)."""
        raise self._cannot(instance, "set the password of", "not supported by this driver")

    async def snapshot(self, context: RequestContext, instance: Instance, dest: Path) -> str:
        """Write a standalone copy of the guest's root disk to ``dest`` (no
        backing file: it boots on its own) and return its disk format
        (createImage, createBackup). Drivers without disks refuse."""
        raise exception.VirtOperationNotSupported(
            driver=type(self).__name__,
            operation="snapshot",
            instance_uuid=instance.uuid,
            reason="this driver cannot copy a guest's disk",
        )

    # -- cold migration and resize -------------------------------------------

    @abc.abstractmethod
    async def migrate_disk_and_power_off(
        self,
        context: RequestContext,
        instance: Instance,
        dest: str,
        flavor: Flavor,
    ) -> dict[str, Any]:
        """Source side of a resize or cold migration: power the guest off and
        copy its disks towards host ``dest``, sized for ``flavor``. Returns
        disk information :meth:`finish_migration` needs on the destination."""

    @abc.abstractmethod
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
        """Destination side: create the guest from the copied disks (grown
        when ``resize_instance``) and start it when ``power_on``.
        ``config_drive``: the guest's config drive (built here from the
        instance's metadata and the personality files the source's drive
        had), attached as at spawn; None: the guest has none."""

    @abc.abstractmethod
    async def confirm_migration(
        self, context: RequestContext, migration: Migration, instance: Instance
    ) -> None:
        """Source side of a confirmed resize: remove what was kept for a revert."""

    @abc.abstractmethod
    async def finish_revert_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migration: Migration,
        power_on: bool = True,
    ) -> None:
        """Source side of a reverted resize: bring the original guest back
        (and start it when ``power_on``)."""

    # -- live migration ------------------------------------------------------

    @abc.abstractmethod
    async def check_can_live_migrate_destination(
        self,
        context: RequestContext,
        instance: Instance,
        block_migration: bool = False,
    ) -> dict[str, Any]:
        """Destination side: can this host take the instance? Returns the
        data the source check needs; raises Invalid-like errors if not."""

    @abc.abstractmethod
    async def check_can_live_migrate_source(
        self,
        context: RequestContext,
        instance: Instance,
        dest_check_data: dict[str, Any],
    ) -> dict[str, Any]:
        """Source side: can the instance leave for the destination that
        answered ``dest_check_data``? Returns the migrate data to use."""

    @abc.abstractmethod
    async def attached_config_drive(self, instance: Instance) -> ConfigDrive | None:
        """The config drive the guest has here, as it was written (None: it has
        none), the guest running or kept off for a cold move's revert;
        InstanceNotFound if the driver has neither.

        A move's source reads its personality files from it
        (:meth:`ConfigDrive.injected_files`), for the destination's drive:
        the guest's copy is the only one left once its build has ended."""

    @abc.abstractmethod
    async def pre_live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migrate_data: dict[str, Any],
        *,
        config_drive: ConfigDrive | None = None,
    ) -> dict[str, Any]:
        """Destination side, before memory moves: plug networks and disks.
        ``config_drive``: the guest's config drive (built here from the
        conductor's answer, as at spawn), to be attached here as it was on the
        source; the memory copy does not carry it. Returns ``migrate_data``, updated."""

    @abc.abstractmethod
    async def live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        dest: str,
        migrate_data: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any] | None:
        """Source side: move the running guest to ``dest``, calling
        ``progress`` with the percentage done as memory copies. Returns when
        the guest runs on ``dest`` (with what to add to ``migrate_data`` for
        the steps after, if anything: the console log so far, say); on
        failure the guest still runs here."""

    @abc.abstractmethod
    async def post_live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        migrate_data: dict[str, Any],
    ) -> None:
        """Source side, after success: remove what is left of the guest here."""

    @abc.abstractmethod
    async def post_live_migration_at_destination(
        self,
        context: RequestContext,
        instance: Instance,
        migrate_data: dict[str, Any],
    ) -> None:
        """Destination side, after success: adopt the guest as its own."""

    @abc.abstractmethod
    async def rollback_live_migration_at_destination(
        self,
        context: RequestContext,
        instance: Instance,
        migrate_data: dict[str, Any],
    ) -> None:
        """Destination side, after a failure: undo :meth:`pre_live_migration`
        and remove any partial guest."""

    @abc.abstractmethod
    async def live_migration_abort(self, instance: Instance) -> bool:
        """Source side: stop the live migration of ``instance`` that
        :meth:`live_migration` is running here. That call then raises
        :class:`~nubes.exception.LiveMigrationAborted` and the guest keeps running here.
        Returns False when no live migration of the instance is in progress
        on this host (not begun yet, or over): nothing was done."""

    @abc.abstractmethod
    async def live_migration_force_complete(self, instance: Instance) -> bool:
        """Source side: make the running live migration of ``instance``
        finish now instead of copying until memory converges (a real
        hypervisor pauses the guest for the last copy, or switches to
        post-copy); :meth:`live_migration` then returns as a success.
        Returns False when no live migration of the instance is in progress
        on this host."""
