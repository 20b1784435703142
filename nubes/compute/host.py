"""A compute host's life: start, repair, periodic reports, stop.

:class:`ComputeHost` holds one host's driver, manager (the RPC endpoint),
resource tracker and repairer. The :class:`~nubes.service.Service` that runs
it calls :meth:`start` once its RPC server listens and :meth:`stop` before it
stops listening. Start work runs in the background and is retried while the
conductor is away, so a host comes up (and heartbeats) without a conductor;
RPC work waits until the start is done (``manager.runner.ready``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from nubes import exception, versions
from nubes.compute.manager import ComputeManager
from nubes.compute.network.agent import NetworkAgent
from nubes.compute.repair import Repairer, RepairReport
from nubes.compute.reporting import Reporter
from nubes.compute.resource_tracker import ResourceTracker
from nubes.compute.snapshots import ImageUploader
from nubes.compute.steps import StepReporter, StepRunner
from nubes.compute.virt.driver import ComputeDriver, LifecycleEvent
from nubes.context import get_admin_context
from nubes.metadata.proxy import MetadataProxy
from nubes.notifications.notifier import Notifier
from nubes.notifications.objects import ServiceStatusPayload
from nubes.objects.service import Service as ServiceRecord

LOG = logging.getLogger(__name__)

#: Failures that mean "the conductor is away": retried quietly.
_AWAY = exception.TRANSIENT_ERRORS
#: Failures of a question to the conductor that say nothing of its version.
_ASK_AGAIN: tuple[type[exception.NubesError], ...] = (*_AWAY, exception.RemoteError)
_RETRY_MAX = 30.0


async def _oldest_by_conductor(api: str) -> int | None:
    try:
        return await ServiceRecord.get_minimum_version(get_admin_context(), api)
    except _ASK_AGAIN:
        # Away, or a failure on the conductor's side (its database pool
        # exhausted): asked again, never taken for an old conductor, whose
        # cap would hold until the next refresh.
        raise
    except exception.NubesError as exc:
        # A conductor too old to answer (before Service 1.1) is older than
        # any we could name: cap at what the first release served.
        LOG.warning("cannot learn the oldest %s running (%s); assuming the oldest", api, exc)
        return min(versions.SERVICE_VERSION_HISTORY)


#: Seconds a stopping host waits for its start-up / periodic task to end.
_STOP_GRACE = 5.0


class ComputeHost:
    def __init__(
        self,
        host: str,
        driver: ComputeDriver,
        conductor: StepReporter,
        notifier: Notifier,
        *,
        resource_update_interval: float = 60.0,
        notify_on_state_change: str = "vm_state",
        steps_kept: int = 4096,
        upgrade_levels: Any = None,
        network: NetworkAgent | None = None,
        host_ip: str | None = None,
        force_config_drive: bool = False,
        uploader: ImageUploader | None = None,
    ) -> None:
        self.host = host
        #: The data plane of a libvirt host (None: the fake driver keeps none).
        self.network = network
        #: ``[upgrade_levels]``: caps what this host sends the conductors (None: no cap).
        self.upgrade_levels = upgrade_levels
        client = getattr(conductor, "client", None)
        self._capped: dict[str, versions.Capped] = {} if client is None else {"conductor": client}
        self.driver = driver
        self.notifier = notifier
        self.reporter = Reporter(host, notifier, notify_on_state_change)
        runner = StepRunner(
            host,
            driver,
            conductor,
            self.reporter,
            steps_kept=steps_kept,
            force_config_drive=force_config_drive,
            uploader=uploader,
        )
        self.manager = ComputeManager(runner)
        self.tracker = ResourceTracker(host, driver, host_ip)
        self.repairer = Repairer(host, driver, self.reporter)
        self.resource_update_interval = resource_update_interval
        #: The host's metadata proxy (set by the launcher; its own service hook).
        self.metadata: MetadataProxy | None = None
        self.repair_report: RepairReport | None = None
        self._task: asyncio.Task[None] | None = None
        self._event_tasks: set[asyncio.Task[None]] = set()
        self._event_lock = asyncio.Lock()

    async def has_guest(self, instance_uuid: str) -> bool:
        """Whether this host's hypervisor runs (or keeps) a guest of the instance."""
        return instance_uuid in await self.driver.list_instances()

    async def start(self) -> None:
        """Begin the start work in the background (in the caller's context,
        so objects go through this host's conductor client)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"compute-host-{self.host}")
        if self.network is not None:
            await self.network.start()

    def _on_lifecycle_event(self, event: LifecycleEvent) -> None:
        task = asyncio.get_running_loop().create_task(self._sync_power(event.instance_uuid))
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def _sync_power(self, uuid: str) -> None:
        # One at a time: a start sends several events, each would save the same.
        async with self._event_lock:
            try:
                row = await self.repairer.sync_power_state(get_admin_context(), uuid)
            except asyncio.CancelledError:
                raise
            except exception.InstanceUpdateConflict:
                return  # an operation began meanwhile: it records the outcome
            except Exception as exc:
                LOG.warning("compute on %s: power of %s not recorded (%s)", self.host, uuid, exc)
                return
        if row is not None:
            LOG.info("compute on %s: instance %s recorded as %s (event)", self.host, uuid, row)

    async def stop(self) -> None:
        self.driver.register_event_listener(None)
        # Notifications queued for the conductor go out first (bounded: the
        # bus may be gone).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.notifier.flush(), _STOP_GRACE)
        for task in list(self._event_tasks):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            # Bounded: a cancellation can be lost on 3.11 when it lands as
            # an awaited call completes; stopping must not hang on that.
            await asyncio.wait({self._task}, timeout=_STOP_GRACE)
            self._task = None
        if self.network is not None:
            await self.network.stop()
        await self.driver.cleanup_host()

    async def refresh_caps(self) -> None:
        """Cap what this host sends the conductors as ``[upgrade_levels] conductor``
        says; ``auto`` asks the conductor for the oldest conductor running."""
        if self.upgrade_levels is None or not self._capped:
            return
        await versions.apply_caps(self.upgrade_levels, self._capped, _oldest_by_conductor)

    async def init_host(self) -> None:
        """Caps set, driver ready, node records there, instances repaired; then
        RPC work may run."""
        ctxt = get_admin_context()
        await self.refresh_caps()
        await self.driver.init_host()
        await self.tracker.update_available_resource(ctxt)
        self.repair_report = await self.repairer.repair_host(ctxt)
        # From now on power changes the hypervisor reports (a guest that shut
        # itself down) are recorded as they happen; repair covered the past.
        self.driver.register_event_listener(self._on_lifecycle_event)
        self.manager.runner.ready.set()
        await self._notify_service()

    async def _notify_service(self) -> None:
        if not self.notifier.enabled:
            return
        admin = get_admin_context()
        try:
            record = await ServiceRecord.get_by_host_and_binary(admin, self.host, "compute")
            payload = ServiceStatusPayload.from_service(record)
        except exception.NotFound:
            payload = ServiceStatusPayload(host=self.host, binary="compute", topic="compute")
        await self.notifier.info(admin, "service.update", payload)

    async def _run(self) -> None:
        delay = 0.5
        warned = False
        while True:
            try:
                await self.init_host()
                break
            except asyncio.CancelledError:
                raise
            except _AWAY as exc:
                if not warned:
                    LOG.warning(
                        "compute on %s waits for the conductor to start (%s)", self.host, exc
                    )
                    warned = True
            except Exception:
                LOG.exception("compute on %s: start failed; retrying", self.host)
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, _RETRY_MAX)
        if warned:
            LOG.info("compute on %s started", self.host)
        interval = self.resource_update_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                # With the resource report: ``auto`` follows conductors upgraded meanwhile.
                await self.refresh_caps()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep the cap we have: lifting it on an error could reach an old conductor.
                LOG.warning("compute on %s: RPC caps not refreshed (%s)", self.host, exc)
            try:
                await self.tracker.update_available_resource(get_admin_context())
            except asyncio.CancelledError:
                raise
            except _AWAY as exc:
                LOG.debug("compute on %s: resource report skipped (%s)", self.host, exc)
            except Exception:
                LOG.exception("compute on %s: resource report failed", self.host)
