"""Keeping the task engine's RPC version caps in step with the services running.

``[upgrade_levels] compute`` and ``scheduler`` cap what the engine sends
(:mod:`nubes.versions`). With ``auto`` the cap follows the oldest compute
host (or scheduler) registered: it is read when the engine starts and again
every :data:`REFRESH_INTERVAL` seconds, so the last old host leaving lifts
the cap without restarting the conductors.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from nubes import versions
from nubes.db.api import services as services_api

if TYPE_CHECKING:
    from nubes.conductor.tasks.engine import TaskEngine

LOG = logging.getLogger(__name__)

#: Seconds between two reads of the oldest service version.
REFRESH_INTERVAL = 60.0
#: The RPC APIs the engine sends, by the attribute holding each client.
_APIS = (("compute", "compute"), ("scheduler", "scheduler"))


async def refresh(engine: TaskEngine) -> None:
    """Apply the configured caps now (``auto``: from the oldest service running)."""
    levels = engine.conf.upgrade_levels
    for api, attribute in _APIS:
        client = getattr(getattr(engine, attribute), "client", None)
        if client is None:
            continue  # a test double without an RPC client
        value = getattr(levels, api)
        oldest = None
        if value == versions.AUTO:
            async with engine.db.reader() as conn:
                oldest = await services_api.minimum_version(conn, api)
        cap = versions.resolve_cap(value, api, oldest)
        if cap != client.version_cap:
            LOG.info("%s RPC API capped at %s (was %s)", api, cap, client.version_cap)
            client.set_version_cap(cap)


async def follow(engine: TaskEngine, interval: float = REFRESH_INTERVAL) -> None:
    """Refresh the caps every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await refresh(engine)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Keep the cap we have: lifting it on an error could reach an old host.
            LOG.warning("could not refresh the RPC version caps: %s", exc)
