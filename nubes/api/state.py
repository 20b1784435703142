"""What every request handler of the API service can reach: config, DB, bus clients."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from oslo_config import cfg

from nubes import config, versions
from nubes.db.engine import Database
from nubes.rpc.transport import Transport

#: Seconds the scheduler's hint list is reused before it is asked again.
HINTS_CACHE_SECONDS = 30.0


@dataclasses.dataclass
class ApiState:
    conf: cfg.ConfigOpts
    db: Database
    #: The API service's bus connection (identity ``api.<host>``); None in
    #: tests that exercise the HTTP layer without a bus.
    transport: Transport | None = None
    _hints: tuple[float, list[dict[str, Any]]] | None = None
    #: Per-service objects created on first use (ServersAPI, SchedulerAPI ...).
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def public_endpoint(self) -> str:
        api = self.conf.api
        if api.public_endpoint:
            return str(api.public_endpoint).rstrip("/")
        host = api.bind_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{api.bind_port}"

    @property
    def image_dir(self) -> Path:
        return config.image_data_dir(self.conf)

    def scheduler_api(self) -> Any:
        if "scheduler" not in self.extras:
            if self.transport is None:
                return None
            from nubes.scheduler.rpcapi import SchedulerAPI

            self.extras["scheduler"] = SchedulerAPI(
                self.transport, timeout=self.conf.rpc_response_timeout
            )
        return self.extras["scheduler"]

    def network_service(self) -> Any:
        """The network service's rules (:class:`nubes.network.resources.NetworkService`)."""
        if "network" not in self.extras:
            from nubes.network.resources import NetworkService

            self.extras["network"] = NetworkService(self.db, self.conf)
        return self.extras["network"]

    def compute_api(self) -> Any:
        """The compute client for questions the API asks a host directly (its uptime)."""
        if "compute" not in self.extras:
            if self.transport is None:
                return None
            from nubes.compute.rpcapi import ComputeAPI

            self.extras["compute"] = ComputeAPI(self.transport)
        return self.extras["compute"]

    def conductor_api(self) -> Any:
        """The conductor client the servers and moves APIs share."""
        if "conductor" not in self.extras:
            from nubes.conductor.rpcapi import ConductorAPI

            self.extras["conductor"] = (
                ConductorAPI(self.transport, timeout=self.conf.rpc_response_timeout)
                if self.transport is not None
                else _NoConductor()
            )
        return self.extras["conductor"]

    def flavor_cache(self) -> Any:
        """The flavors this process keeps for boots (:mod:`nubes.api.flavor_cache`)."""
        if "flavor_cache" not in self.extras:
            from nubes.api.flavor_cache import FlavorCache

            self.extras["flavor_cache"] = FlavorCache()
        return self.extras["flavor_cache"]

    def servers_api(self) -> Any:
        """The :class:`~nubes.api.servers.ServersAPI` of this API service."""
        if "servers" not in self.extras:
            from nubes.api.servers import ServersAPI

            self.extras["servers"] = ServersAPI(self.db, self.conductor_api(), conf=self.conf)
        return self.extras["servers"]

    def moves_api(self) -> Any:
        """The :class:`~nubes.api.moves.MovesAPI` (migrations, resizes, rebuilds)."""
        if "moves" not in self.extras:
            from nubes.api.moves import MovesAPI

            self.extras["moves"] = MovesAPI(self.db, self.conductor_api(), conf=self.conf)
        return self.extras["moves"]

    def rpc_clients(self) -> dict[str, Any]:
        """The RPC clients this API service sends with, by API (none without a bus)."""
        if self.transport is None:
            return {}
        return {
            "conductor": self.conductor_api().client,
            "scheduler": self.scheduler_api().client,
            "compute": self.compute_api().client,
        }

    async def oldest_service(self, api: str) -> int | None:
        """The lowest version among the running services of ``api`` (for ``auto``)."""
        from nubes.db.api import services

        async with self.db.reader() as conn:
            return await services.minimum_version(conn, api)

    async def refresh_caps(self) -> None:
        """Cap the RPC clients as ``[upgrade_levels]`` says (:mod:`nubes.versions`)."""
        await versions.apply_caps(self.conf.upgrade_levels, self.rpc_clients(), self.oldest_service)

    async def follow_caps(self) -> None:
        levels = self.conf.upgrade_levels
        await versions.follow_caps(
            levels, self.rpc_clients(), self.oldest_service, levels.refresh_interval
        )

    async def scheduler_hints(self, context: Any) -> list[dict[str, Any]]:
        """The hints the schedulers publish (cached for a short while)."""
        now = time.monotonic()
        if self._hints is not None and now - self._hints[0] < HINTS_CACHE_SECONDS:
            return self._hints[1]
        api = self.scheduler_api()
        hints: list[dict[str, Any]] = [] if api is None else await api.get_scheduler_hints(context)
        self._hints = (now, hints)
        return hints


class _NoConductor:
    """Without a bus (tests of the HTTP layer) tasks wait for a conductor's poll.

    The casts about a live migration in progress go nowhere: its migration
    record already says what was asked (``cancelling``), or nothing changes.
    """

    async def kick(self, context: Any, task_ids: list[int] | None = None) -> None:
        return None

    async def live_migration_abort(
        self, context: Any, instance_uuid: str, migration_id: int
    ) -> None:
        return None

    async def live_migration_force_complete(
        self, context: Any, instance_uuid: str, migration_id: int
    ) -> None:
        return None
