"""Client side of the scheduler RPC API.

The scheduler is a service that gets *queried*: it picks hosts and claims
their resources, and never forwards work to compute hosts. Conductors (and
the API, for the hint list) call it; any number of scheduler processes serve
the topic, each deciding on its own view of the hosts, with the claims kept
consistent by the database.

Version history:

    1.0 - select_destinations, claim_alternate, release, get_scheduler_hints
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from nubes import exception
from nubes.context import RequestContext
from nubes.objects.request_spec import RequestSpec, Selection
from nubes.objects.serializer import ObjectSerializer
from nubes.rpc.client import RPCClient
from nubes.rpc.transport import DEFAULT_CALL_TIMEOUT, Target, Transport

#: The RPC topic schedulers listen on.
TOPIC = "scheduler"
#: The newest version of the API this client knows.
VERSION = "1.0"

LOG = logging.getLogger(__name__)

#: Seconds select_destinations keeps asking while every compute host is
#: silent after an outage (hosts beat again every 2 s at most while away:
#: ``nubes.service.HEARTBEAT_BACKOFF_MAX``), and the pause between tries.
SILENT_WAIT = 15.0
SILENT_RETRY = 1.0

#: Errors a scheduler raises on purpose; callers get them as their own class.
EXPECTED_ERRORS: tuple[type[exception.NubesError], ...] = (
    exception.NoValidHost,
    exception.ComputeHostsSilent,
    exception.InvalidSchedulerHint,
    exception.NotFound,
    exception.Invalid,
    exception.Forbidden,
    exception.Conflict,
)


class SchedulerAPI:
    def __init__(
        self,
        transport: Transport,
        *,
        version_cap: str | None = None,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        topic: str = TOPIC,
    ) -> None:
        self.client = RPCClient(
            transport,
            Target(topic),
            version="1.0",
            version_cap=version_cap,
            serializer=ObjectSerializer(),
            timeout=timeout,
            expected_errors=EXPECTED_ERRORS,
        )

    async def select_destinations(
        self,
        context: RequestContext,
        request_spec: RequestSpec,
        instance_uuids: Sequence[str],
        return_alternates: bool = True,
    ) -> list[list[Selection]]:
        """Per instance (in order): the chosen host, already claimed, then up to
        ``[scheduler] max_attempts - 1`` unclaimed alternates. NoValidHost if
        any instance finds no host (nothing stays claimed then).

        ComputeHostsSilent (every host silent right after an outage of the bus
        or the conductors) is asked again each ``SILENT_RETRY`` seconds for up
        to ``SILENT_WAIT``, enough for the hosts' next heartbeats; then it is
        raised, a transient error: the task resumes later."""
        deadline = asyncio.get_running_loop().time() + SILENT_WAIT
        while True:
            try:
                result: list[list[Selection]] = await self.client.call(
                    context,
                    "select_destinations",
                    request_spec=request_spec,
                    instance_uuids=list(instance_uuids),
                    return_alternates=return_alternates,
                )
            except exception.ComputeHostsSilent as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                LOG.info("%s: %s; asking again in %.0f s", context.request_id, exc, SILENT_RETRY)
                await asyncio.sleep(SILENT_RETRY)
                continue
            return result

    async def claim_alternate(self, context: RequestContext, selection: Selection) -> Selection:
        """Claim an alternate on a reschedule: releases what the instance holds
        elsewhere and claims on ``selection``'s node, re-checking capacity;
        NoValidHost when it is full now."""
        claimed: Selection = await self.client.call(context, "claim_alternate", selection=selection)
        return claimed

    async def release(self, context: RequestContext, instance_uuid: str) -> int:
        """Give back everything the instance holds (delete, failed build); returns
        the number of nodes it held resources on."""
        released: int = await self.client.call(context, "release", instance_uuid=instance_uuid)
        return released

    async def get_scheduler_hints(self, context: RequestContext) -> list[dict[str, Any]]:
        """The hints the scheduler understands: ``name``, ``type``, ``description``."""
        hints: list[dict[str, Any]] = await self.client.call(context, "get_scheduler_hints")
        return hints
