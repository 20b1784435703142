"""The scheduler's in-memory view of the hosts, refreshed incrementally.

One :class:`HostState` per compute node holds what the filters and weighers
read; alongside them the view keeps numpy arrays of the numbers every
request looks at (free RAM, vCPUs and disk after allocation ratios, usable
or not, instance counts, CPU utilisation), so the common filters and all
weighers run as a handful of vector operations over 10,000 hosts instead of
a Python loop per host per request.

The view is only a guide for usage. A refresh reads what changed since the
previous one (nodes by timestamp, the hosts whose services stopped
reporting, and services and aggregates only when the host facts'
generation moved); a claim is always re-checked by the database's
conditional UPDATE, and this process applies its own claims to the view at
once so its next request does not pick a host it just filled.

What operators change (a service disabled or forced down, aggregates, their
hosts and metadata, availability zones) is never stale: every such write
bumps the ``host_facts`` generation in its transaction
(:mod:`nubes.db.api.generations`), each request reads it (one row) before
deciding (:meth:`HostStateView.ensure_fresh`), and a moved generation makes
the request wait for a refresh that reads the new facts. That holds for any
number of scheduler processes, since the generation lives in the database.

Filters whose answer depends only on a host's aggregates (availability
zone, tenant isolation, aggregate extra specs) are evaluated once per
*distinct set of aggregates* and mapped onto the hosts, and the result is
cached until the aggregates change: a fleet of 10,000 hosts usually has a
few dozen such sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from nubes import exception, liveness
from nubes.db.api import generations, host_views
from nubes.db.api import groups as groups_api
from nubes.db.api.compute_nodes import NO_RESERVED, Reserved
from nubes.db.engine import Database

LOG = logging.getLogger(__name__)

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

#: Metric key of the CPU utilisation hosts report (percent busy).
CPU_PERCENT_METRIC = "cpu.percent"
#: Nova's default of ``[scheduler] host_state_refresh_interval``.
DEFAULT_REFRESH_INTERVAL = 1.0
DEFAULT_CHANGE_MARGIN = 2.0
DEFAULT_SERVICE_DOWN_TIME = 60.0
#: How many ``service_down_time`` spans after the newest heartbeat a cloud
#: whose every host is silent still counts as coming back from an outage
#: (``silenced_by_outage``) rather than as one whose hosts are dead.
OUTAGE_GRACE = 3.0
#: Cached aggregate-derived masks kept per view before the cache starts over.
_MASK_CACHE_LIMIT = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class AggregateInfo:
    id: int
    name: str
    metadata: Mapping[str, str]


class HostState:
    """One compute node as the scheduler sees it (numbers after allocation ratios)."""

    __slots__ = (
        "aggregates",
        "cpu_allocation_ratio",
        "cpu_percent",
        "disk_allocation_ratio",
        "generation",
        "host",
        "hypervisor_type",
        "hypervisor_version",
        "index",
        "live",
        "local_gb",
        "local_gb_used",
        "memory_mb",
        "memory_mb_used",
        "metrics",
        "node_id",
        "nodename",
        "num_instances",
        "ram_allocation_ratio",
        "reserved",
        "service_disabled",
        "service_up",
        "uuid",
        "vcpus",
        "vcpus_used",
    )

    def __init__(self, index: int, row: Any, reserved: Reserved = NO_RESERVED) -> None:
        self.index = index
        #: The operator's reserved amounts (never the host's).
        self.reserved = reserved
        self.node_id: int = row.id
        self.uuid: str = row.uuid
        self.host: str = row.host
        self.nodename: str = row.hypervisor_hostname
        self.aggregates: tuple[AggregateInfo, ...] = ()
        self.service_up = False
        self.service_disabled = False
        self.live = True
        self.update(row)

    def update(self, row: Any) -> None:
        self.hypervisor_type: str | None = row.hypervisor_type
        self.hypervisor_version: int | None = row.hypervisor_version
        self.vcpus: int = row.vcpus
        self.memory_mb: int = row.memory_mb
        self.local_gb: int = row.local_gb
        self.vcpus_used: int = row.vcpus_used
        self.memory_mb_used: int = row.memory_mb_used
        self.local_gb_used: int = row.local_gb_used
        self.cpu_allocation_ratio: float = row.cpu_allocation_ratio
        self.ram_allocation_ratio: float = row.ram_allocation_ratio
        self.disk_allocation_ratio: float = row.disk_allocation_ratio
        self.metrics: dict[str, Any] = row.metrics or {}
        self.generation: int = row.generation
        self.num_instances: int = int(row.num_instances)
        self.live = not row.deleted
        try:
            self.cpu_percent = float(self.metrics.get(CPU_PERCENT_METRIC, 0.0))
        except (TypeError, ValueError):
            self.cpu_percent = 0.0

    @property
    def free_ram_mb(self) -> float:
        # (total - reserved) x ratio - used, as the claim checks it.
        total = self.memory_mb - self.reserved.memory_mb
        return total * self.ram_allocation_ratio - self.memory_mb_used

    @property
    def free_vcpus(self) -> float:
        return (self.vcpus - self.reserved.vcpus) * self.cpu_allocation_ratio - self.vcpus_used

    @property
    def free_disk_gb(self) -> float:
        total = self.local_gb - self.reserved.disk_gb
        return total * self.disk_allocation_ratio - self.local_gb_used

    @property
    def usable(self) -> bool:
        return self.live and self.service_up and not self.service_disabled

    def aggregate_metadata(self) -> dict[str, set[str]]:
        """Metadata of the host's aggregates, merged: key -> set of values."""
        merged: dict[str, set[str]] = {}
        for agg in self.aggregates:
            for key, value in agg.metadata.items():
                merged.setdefault(key, set()).add(value)
        return merged

    def __repr__(self) -> str:
        return (
            f"HostState({self.host}/{self.nodename} ram {self.free_ram_mb:.0f} "
            f"vcpus {self.free_vcpus:.1f} disk {self.free_disk_gb:.0f})"
        )


class HostStateView:
    """Every compute node, as :class:`HostState` objects and parallel arrays."""

    def __init__(
        self,
        db: Database | None = None,
        *,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        change_margin: float = DEFAULT_CHANGE_MARGIN,
        service_down_time: float = DEFAULT_SERVICE_DOWN_TIME,
        reserved: Reserved = NO_RESERVED,
    ) -> None:
        self.db = db
        #: What the operator keeps back on every node ([DEFAULT] reserved_host_*).
        self.reserved = reserved
        self.refresh_interval = refresh_interval
        self.change_margin = change_margin
        self.service_down_time = service_down_time
        self.hosts: list[HostState] = []
        self.by_node_id: dict[int, HostState] = {}
        self.by_node_uuid: dict[str, HostState] = {}
        #: host name -> indices of its nodes (usually one).
        self.by_host: dict[str, list[int]] = {}
        self.free_ram: FloatArray = np.zeros(0)
        self.free_vcpus: FloatArray = np.zeros(0)
        self.free_disk: FloatArray = np.zeros(0)
        self.num_instances: FloatArray = np.zeros(0)
        self.cpu_percent: FloatArray = np.zeros(0)
        self.usable: BoolArray = np.zeros(0, dtype=bool)
        self.hypervisor_type_code: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._hv_codes: dict[str | None, int] = {}
        self.aggregates: list[AggregateInfo] = []
        self._host_aggregates: dict[str, tuple[AggregateInfo, ...]] = {}
        # Hosts grouped by their set of aggregates (see the module docstring).
        self._agg_sets: list[tuple[AggregateInfo, ...]] = []
        self._agg_set_ids: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._mask_cache: dict[Hashable, BoolArray] = {}
        self._services: dict[str, tuple[bool, bool]] = {}
        self._silent: set[str] = set()
        #: The newest heartbeat of any compute service not forced down (see
        #: :meth:`silenced_by_outage`); None until read.
        self.newest_heartbeat: dt.datetime | None = None
        #: The host facts' generation the cached services and aggregates are from.
        self._facts_generation: int | None = None
        self._last_refresh_start: dt.datetime | None = None
        self._last_refresh_mono = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None
        self._loading: asyncio.Task[None] | None = None
        self._loaded = False

    def __len__(self) -> int:
        return len(self.hosts)

    # --- refresh -----------------------------------------------------------------

    async def ensure_fresh(self) -> None:
        """Load on first use; afterwards start a background refresh when due.

        A request never waits for a routine refresh: it decides on the view
        as it is, and the claim re-checks usage in the database anyway. It
        waits only when the host facts' generation moved (an operator's
        change), so that change holds from this request on, and when the
        view is older than half ``service_down_time`` (its refreshes
        failed): which hosts are up must be known to place on one.
        """
        if not self._loaded:
            # One load for every request that comes before it is done (the
            # first burst of builds after a start would each read every node).
            if self._loading is None or self._loading.done():
                self._loading = asyncio.create_task(self.refresh())
            await asyncio.shield(self._loading)
            return
        age = time.monotonic() - self._last_refresh_mono
        if age >= self.refresh_interval and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._background_refresh())
        too_old = max(self.service_down_time / 2, self.refresh_interval * 2)
        if self.db is not None and age >= too_old:
            # Refreshes kept failing: which hosts are up is no longer known
            # well enough to place on any of them (a dead one would look up).
            await self.catch_up()
            if time.monotonic() - self._last_refresh_mono >= too_old:
                raise exception.NoValidHost(
                    reason="the scheduler cannot read which hosts are up now."
                )
        await self._ensure_current_facts()

    async def _ensure_current_facts(self) -> None:
        """Refresh before deciding if an operator changed host facts since they were read."""
        assert self.db is not None
        generation = await generations.current(self.db, generations.HOST_FACTS)
        # A refresh in flight may have read the facts before the change: join
        # it, then, if still behind, one that starts after the read above.
        for _ in range(2):
            if self._facts_generation == generation:
                return
            await self.catch_up()

    async def catch_up(self) -> None:
        """Refresh now, joining a refresh already in flight (after a lost claim race,
        the view is likely stale beyond the one host that was full)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._background_refresh())
        await asyncio.shield(self._refreshing)

    async def close(self) -> None:
        """Stop a background refresh in flight (before the database goes away)."""
        for task in (self._refreshing, self._loading):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refreshing = self._loading = None

    async def _background_refresh(self) -> None:
        try:
            await self.refresh()
        except Exception:
            # The next request starts another; the view only gets staler meanwhile.
            LOG.exception("Refreshing the scheduler's host view failed")

    async def refresh(self) -> None:
        """Read what changed since the last refresh and apply it."""
        assert self.db is not None, "a view without a database is fed by hand"
        started = dt.datetime.now(dt.UTC)
        mono = time.monotonic()
        since = None
        if self._last_refresh_start is not None:
            since = self._last_refresh_start - dt.timedelta(seconds=self.change_margin)
        window = liveness.window(self.service_down_time, started)
        aggs: list[dict[str, Any]] | None = None
        services: dict[str, tuple[bool, bool]] | None = None
        async with self.db.reader() as conn:
            # Read first: the facts read after it are at least this new.
            generation = await generations.get(conn, generations.HOST_FACTS)
            rows = await host_views.nodes_changed_since(conn, since)
            if generation != self._facts_generation:
                aggs = await groups_api.aggregate_get_all(conn)
                services = await host_views.compute_service_hosts(conn)
            silent = await host_views.down_compute_hosts(conn, window)
            newest = await host_views.newest_compute_heartbeat(conn)
        # Applied without an await in between: a request sees all of it or none.
        added = self.apply_nodes(rows)
        if aggs is not None:
            self.set_aggregates(aggs)
        elif added:
            self._rebuild_aggregate_sets()
        self._facts_generation = generation
        self.set_services(services if services is not None else self._services, silent)
        self.newest_heartbeat = newest
        self._last_refresh_start = started
        self._last_refresh_mono = mono
        self._loaded = True
        LOG.debug(
            "Host view refreshed: %d node rows, %d hosts, %.1f ms",
            len(rows),
            len(self.hosts),
            (time.monotonic() - mono) * 1000,
        )

    async def refresh_nodes(self, node_ids: Iterable[int]) -> None:
        """Re-read a few nodes now (after a lost claim race, say)."""
        assert self.db is not None
        async with self.db.reader() as conn:
            rows = await host_views.node_usage(conn, list(node_ids))
        self.apply_nodes(rows)

    # --- applying changes ------------------------------------------------------

    def apply_nodes(self, rows: Iterable[Any]) -> int:
        """Apply node rows (see host_views.NODE_COLUMNS); returns how many were new."""
        new: list[HostState] = []
        for row in rows:
            hs = self.by_node_id.get(row.id)
            if hs is None:
                if row.deleted:
                    continue
                hs = HostState(len(self.hosts) + len(new), row, self.reserved)
                new.append(hs)
                continue
            if hs.generation == row.generation and hs.live == (not row.deleted):
                continue  # seen already (the margin re-reads recent changes)
            hs.update(row)
            self._sync(hs)
        if new:
            self._grow(new)
        return len(new)

    def _grow(self, new: list[HostState]) -> None:
        extra = len(new)
        self.free_ram = np.concatenate([self.free_ram, np.zeros(extra)])
        self.free_vcpus = np.concatenate([self.free_vcpus, np.zeros(extra)])
        self.free_disk = np.concatenate([self.free_disk, np.zeros(extra)])
        self.num_instances = np.concatenate([self.num_instances, np.zeros(extra)])
        self.cpu_percent = np.concatenate([self.cpu_percent, np.zeros(extra)])
        self.usable = np.concatenate([self.usable, np.zeros(extra, dtype=bool)])
        self.hypervisor_type_code = np.concatenate(
            [self.hypervisor_type_code, np.zeros(extra, dtype=np.int32)]
        )
        self._agg_set_ids = np.concatenate([self._agg_set_ids, np.zeros(extra, dtype=np.int32)])
        for hs in new:
            self.hosts.append(hs)
            self.by_node_id[hs.node_id] = hs
            self.by_node_uuid[hs.uuid] = hs
            self.by_host.setdefault(hs.host, []).append(hs.index)
            hs.aggregates = self._host_aggregates.get(hs.host, ())
            self._apply_service(hs)
            self._sync(hs)

    def _sync(self, hs: HostState) -> None:
        """Copy one host's numbers into the arrays."""
        i = hs.index
        self.free_ram[i] = hs.free_ram_mb
        self.free_vcpus[i] = hs.free_vcpus
        self.free_disk[i] = hs.free_disk_gb
        self.num_instances[i] = hs.num_instances
        self.cpu_percent[i] = hs.cpu_percent
        self.usable[i] = hs.usable
        code = self._hv_codes.setdefault(hs.hypervisor_type, len(self._hv_codes))
        self.hypervisor_type_code[i] = code

    def hypervisor_types(self) -> set[str | None]:
        return set(self._hv_codes)

    def hypervisor_type_mask(self, hv_type: str | None) -> BoolArray:
        code = self._hv_codes.get(hv_type)
        if code is None:
            return np.zeros(len(self.hosts), dtype=bool)
        return self.hypervisor_type_code == code

    def consume(
        self, hs: HostState, vcpus: int, memory_mb: int, disk_gb: int, generation: int | None
    ) -> None:
        """Apply a claim this process made (the database already holds it)."""
        hs.vcpus_used += vcpus
        hs.memory_mb_used += memory_mb
        hs.local_gb_used += disk_gb
        hs.num_instances += 1
        if generation is not None:
            hs.generation = generation
        self._sync(hs)

    def confirm(self, hs: HostState, generation: int) -> None:
        """The database took a claim already consumed here: its new generation."""
        hs.generation = generation

    def give_back(self, hs: HostState, vcpus: int, memory_mb: int, disk_gb: int) -> None:
        """Apply a release this process made."""
        hs.vcpus_used = max(0, hs.vcpus_used - vcpus)
        hs.memory_mb_used = max(0, hs.memory_mb_used - memory_mb)
        hs.local_gb_used = max(0, hs.local_gb_used - disk_gb)
        hs.num_instances = max(0, hs.num_instances - 1)
        # The generation moved on in the database; forget ours so the next
        # refresh applies the row whatever its generation.
        hs.generation = -1
        self._sync(hs)

    def set_services(self, services: dict[str, tuple[bool, bool]], silent: set[str]) -> None:
        """Compute services (host -> (disabled, forced_down)) and the silent hosts."""
        changed = set(self._services.items()) ^ set(services.items())
        hosts = {h for h, _ in changed} | (self._silent ^ silent)
        self._services = services
        self._silent = silent
        for host in hosts:
            for i in self.by_host.get(host, ()):
                hs = self.hosts[i]
                self._apply_service(hs)
                self.usable[i] = hs.usable

    def silenced_by_outage(self, now: dt.datetime | None = None) -> float | None:
        """The newest heartbeat's age when every compute host not forced down is
        silent yet one reported within ``OUTAGE_GRACE`` x ``service_down_time``
        (the bus or the conductors were away: every host stops at once); else None.

        Hosts that died one by one, or long ago, are not an outage: their
        silence stays a plain "down" and requests fail with NoValidHost.
        """
        live = [h for h, (_, forced) in self._services.items() if not forced]
        if not live or any(h not in self._silent for h in live):
            return None
        if self.newest_heartbeat is None:
            return None
        age = ((now or dt.datetime.now(dt.UTC)) - self.newest_heartbeat).total_seconds()
        if age > OUTAGE_GRACE * self.service_down_time:
            return None
        return age

    def _apply_service(self, hs: HostState) -> None:
        state = self._services.get(hs.host)
        if state is None:
            hs.service_up, hs.service_disabled = False, False
            return
        disabled, forced_down = state
        hs.service_disabled = disabled
        hs.service_up = not forced_down and hs.host not in self._silent

    def set_aggregates(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Aggregates as groups.aggregate_get_all returns them (with hosts, metadata)."""
        self.aggregates = []
        by_host: dict[str, list[AggregateInfo]] = {}
        for row in rows:
            info = AggregateInfo(int(row["id"]), str(row["name"]), dict(row["metadata"]))
            self.aggregates.append(info)
            for host in row["hosts"]:
                by_host.setdefault(host, []).append(info)
        self._host_aggregates = {h: tuple(a) for h, a in by_host.items()}
        for hs in self.hosts:
            hs.aggregates = self._host_aggregates.get(hs.host, ())
        self._rebuild_aggregate_sets()

    def _rebuild_aggregate_sets(self) -> None:
        ids: dict[tuple[int, ...], int] = {}
        self._agg_sets = []
        set_ids = np.zeros(len(self.hosts), dtype=np.int32)
        for hs in self.hosts:
            key = tuple(a.id for a in hs.aggregates)
            set_id = ids.get(key)
            if set_id is None:
                set_id = ids[key] = len(self._agg_sets)
                self._agg_sets.append(hs.aggregates)
            set_ids[hs.index] = set_id
        self._agg_set_ids = set_ids
        self._mask_cache.clear()

    def aggregate_mask(
        self, key: Hashable, passes: Callable[[tuple[AggregateInfo, ...]], bool]
    ) -> BoolArray:
        """Hosts for which ``passes(host's aggregates)`` holds; cached under ``key``
        until the aggregates change, so ``key`` must determine ``passes``."""
        mask = self._mask_cache.get(key)
        if mask is None:
            per_set = np.fromiter((passes(s) for s in self._agg_sets), dtype=bool)
            mask = per_set[self._agg_set_ids] if len(per_set) else np.zeros(0, dtype=bool)
            if len(self._mask_cache) >= _MASK_CACHE_LIMIT:
                self._mask_cache.clear()
            self._mask_cache[key] = mask
        return mask

    def host_indices(self, hosts: Iterable[str]) -> list[int]:
        out: list[int] = []
        for host in hosts:
            out.extend(self.by_host.get(host, ()))
        return out
