"""Service versions, and the RPC version caps derived from the oldest service running.

Every service records :data:`SERVICE_VERSION` in its ``services`` row at
start. :data:`SERVICE_VERSION_HISTORY` says, per service version, the newest
version of each RPC API that code serves. A sender whose ``[upgrade_levels]
<api>`` option is ``auto`` caps what it sends at what the *oldest* service
of that API's binary serves (:func:`resolve_cap`), so during a rolling
upgrade new conductors keep talking 1.0 to compute hosts that are not
upgraded yet, and start using 1.1 once the last old one is gone (or
deleted). An explicit version (``1.0``) caps at that version; no value
means no cap.

A capped sender refuses a newer method locally, before anything leaves the
process (:class:`~nubes.exception.UnsupportedVersion`): a move asked while
an old compute host runs fails at its first host step with a fault saying
so, instead of reaching a host that would drop it.
"""

from __future__ import annotations

#: Version of the service code, recorded with each service row.
SERVICE_VERSION = 3

#: Service version -> the newest version of each RPC API it serves.
SERVICE_VERSION_HISTORY: dict[int, dict[str, str]] = {
    # Builds, deletes, power actions.
    1: {"compute": "1.0", "conductor": "1.0", "scheduler": "1.0"},
    # Move operations: compute 1.1 (move steps), conductor 1.1 (abort and
    # force-complete of live migrations).
    2: {"compute": "1.1", "conductor": "1.1", "scheduler": "1.0"},
    # Host queries: compute 1.2 (get_host_uptime).
    3: {"compute": "1.2", "conductor": "1.1", "scheduler": "1.0"},
}

#: ``[upgrade_levels]`` value that derives the cap from the services running.
AUTO = "auto"


def api_version_of(service_version: int, api: str) -> str:
    """The newest version of ``api`` a service at ``service_version`` serves."""
    known = [v for v in SERVICE_VERSION_HISTORY if v <= service_version]
    if not known:
        # Older than any version we know: only the first API version.
        return "1.0"
    return SERVICE_VERSION_HISTORY[max(known)][api]


def resolve_cap(value: str | None, api: str, oldest: int | None) -> str | None:
    """The version cap ``[upgrade_levels] <api> = value`` means now.

    ``oldest`` is the lowest service version among the running services of
    the API's binary (``nubes.db.api.services.minimum_version``); with
    ``auto`` and none registered there is no cap (nothing old can receive).
    """
    if not value:
        return None
    if value != AUTO:
        return value
    if oldest is None:
        return None
    return api_version_of(oldest, api)
