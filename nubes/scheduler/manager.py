"""The scheduler's RPC endpoint: select destinations, claim, release, list hints.

Only controller services may call it (a compute host asking for claims
could fill the cloud): the RPC server enforces :mod:`.authz`'s table before a
method runs. The work itself is in :mod:`.selector`.
"""

from __future__ import annotations

from typing import Any

from oslo_config import cfg

from nubes import exception, metrics
from nubes.context import RequestContext
from nubes.db.api.compute_nodes import Reserved
from nubes.db.engine import Database
from nubes.objects.request_spec import RequestSpec, Selection
from nubes.scheduler import authz, policies, rpcapi
from nubes.scheduler.host_state import HostStateView
from nubes.scheduler.selector import HostSelector


class SchedulerManager:
    #: Who may call which method (checked by the RPC server, deny by default).
    RPC_METHOD_RULES = authz.METHOD_RULES
    RPC_API_VERSION = rpcapi.VERSION
    RPC_EXPECTED_ERRORS = rpcapi.EXPECTED_ERRORS

    def __init__(self, db: Database, conf: cfg.ConfigOpts) -> None:
        self.db = db
        self.policies = policies.load(conf)
        self.view = HostStateView(
            db,
            refresh_interval=conf.scheduler.host_state_refresh_interval,
            change_margin=conf.scheduler.host_state_change_margin,
            service_down_time=conf.service_down_time,
            reserved=Reserved.from_conf(conf),
        )
        self.selector = HostSelector(
            db,
            self.view,
            self.policies,
            max_attempts=conf.scheduler.max_attempts,
            max_claim_attempts=conf.scheduler.max_claim_attempts,
        )

    async def close(self) -> None:
        await self.view.close()

    async def select_destinations(
        self,
        context: RequestContext,
        request_spec: RequestSpec,
        instance_uuids: list[str],
        return_alternates: bool = True,
    ) -> list[list[Selection]]:
        if not isinstance(request_spec, RequestSpec):
            raise exception.InvalidArguments(
                method="select_destinations", reason="request_spec must be a RequestSpec"
            )
        with metrics.timed(metrics.scheduler_seconds):
            return await self.selector.select(
                context, request_spec, instance_uuids, return_alternates
            )

    async def claim_alternate(self, context: RequestContext, selection: Selection) -> Selection:
        if not isinstance(selection, Selection):
            raise exception.InvalidArguments(
                method="claim_alternate", reason="selection must be a Selection"
            )
        return await self.selector.claim_alternate(selection)

    async def release(self, context: RequestContext, instance_uuid: str) -> int:
        return await self.selector.release(instance_uuid)

    async def get_scheduler_hints(self, context: RequestContext) -> list[dict[str, Any]]:
        return self.policies.hints()
