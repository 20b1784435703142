"""Keeping the task engine's RPC version caps in step with the services running.

``[upgrade_levels] compute`` and ``scheduler`` cap what the engine sends
(:mod:`nubes.versions`, the one home of what each value means). With
``auto`` the cap follows the oldest compute host (or scheduler) registered:
it is read when the engine starts and again every
:data:`~nubes.versions.REFRESH_INTERVAL` seconds, so the last old host
leaving lifts the cap without restarting the conductors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nubes import versions
from nubes.db.api import services as services_api

if TYPE_CHECKING:
    from nubes.conductor.tasks.engine import TaskEngine
    from nubes.db.engine import Database

#: Seconds between two reads of the oldest service version.
REFRESH_INTERVAL = versions.REFRESH_INTERVAL
#: The RPC APIs the engine sends, by the attribute holding each client.
_APIS = (("compute", "compute"), ("scheduler", "scheduler"))


def oldest_in(db: Database) -> versions.Oldest:
    """``oldest(api)`` read from the ``services`` table of ``db``."""

    async def oldest(api: str) -> int | None:
        async with db.reader() as conn:
            return await services_api.minimum_version(conn, api)

    return oldest


def _clients(engine: TaskEngine) -> dict[str, versions.Capped]:
    found = {}
    for api, attribute in _APIS:
        client = getattr(getattr(engine, attribute), "client", None)
        if client is not None:  # a test double has no RPC client
            found[api] = client
    return found


async def refresh(engine: TaskEngine) -> None:
    """Apply the configured caps now (``auto``: from the oldest service running)."""
    await versions.apply_caps(engine.conf.upgrade_levels, _clients(engine), oldest_in(engine.db))


async def follow(engine: TaskEngine, interval: float = REFRESH_INTERVAL) -> None:
    """Refresh the caps every ``interval`` seconds until cancelled."""
    await versions.follow_caps(
        engine.conf.upgrade_levels, _clients(engine), oldest_in(engine.db), interval
    )
