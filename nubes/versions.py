"""Service versions, release names, and the RPC version caps ``[upgrade_levels]`` sets.

Every service records :data:`SERVICE_VERSION` in its ``services`` row at
start. :data:`SERVICE_VERSION_HISTORY` says, per service version, the newest
version of each RPC API that code serves, and :data:`RELEASES` names the
releases that shipped each service version.

``[upgrade_levels] conductor``, ``compute`` and ``scheduler`` cap what a
service sends to that API, and all three take the same values
(:func:`check_level`, :func:`resolve_cap`):

* nothing: no cap;
* a version (``1.0``): that version;
* a release name (``birch``): what that release's services of the API serve,
  so an operator upgrading from birch writes ``birch`` and needs no RPC
  version numbers;
* ``auto``: what the *oldest* service of the API's binary running serves, so
  during a rolling upgrade new conductors keep talking 1.0 to compute hosts
  that are not upgraded yet, and start using 1.1 once the last old one is
  gone (or deleted).

Each service keeps the caps of the clients it sends with by
:func:`apply_caps` (at start) and :func:`follow_caps` (every
:data:`REFRESH_INTERVAL` seconds, so ``auto`` follows the services running);
only where the oldest version comes from differs: the database for the
conductors and the API, the conductor (``Service.get_minimum_version``) for a
compute host.

A capped sender refuses a newer method locally, before anything leaves the
process (:class:`~nubes.exception.UnsupportedVersion`): a move asked while
an old compute host runs fails at its first host step with a fault saying
so, instead of reaching a host that would drop it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from nubes import exception

LOG = logging.getLogger(__name__)

#: Version of the service code, recorded with each service row.
SERVICE_VERSION = 15

#: Service version -> the newest version of each RPC API it serves.
SERVICE_VERSION_HISTORY: dict[int, dict[str, str]] = {
    # Builds, deletes, power actions.
    1: {"compute": "1.0", "conductor": "1.0", "scheduler": "1.0"},
    # Move operations: compute 1.1 (move steps), conductor 1.1 (abort and
    # force-complete of live migrations).
    2: {"compute": "1.1", "conductor": "1.1", "scheduler": "1.0"},
    # Host queries: compute 1.2 (get_host_uptime).
    3: {"compute": "1.2", "conductor": "1.1", "scheduler": "1.0"},
    # Guests of abandoned tries removed: compute 1.3 (remove_guest); hosts'
    # notifications published by the conductor: conductor 1.2
    # (relay_notification).
    4: {"compute": "1.3", "conductor": "1.2", "scheduler": "1.0"},
    # Guests' console logs: compute 1.4 (get_console_output).
    5: {"compute": "1.4", "conductor": "1.2", "scheduler": "1.0"},
    # Steps' keys as one struct: compute 1.5 (``key``, a StepKey); the hosts'
    # network data plane: conductor 1.3 (get_host_network, get_network_peers).
    6: {"compute": "1.5", "conductor": "1.3", "scheduler": "1.0"},
    # Lifecycle actions: compute 1.6 (pause ... set_admin_password steps);
    # guest diagnostics and consoles: compute 1.7 (get_instance_diagnostics,
    # get_vnc_console); conductor 1.4 (open_console, for a host's console relay).
    7: {"compute": "1.7", "conductor": "1.4", "scheduler": "1.0"},
    # Snapshots: compute 1.8 (snapshot_instance, uploading to one image with
    # the conductor's upload grant; createImage, createBackup).
    8: {"compute": "1.8", "conductor": "1.4", "scheduler": "1.0"},
    # Shelve with a snapshot: compute 1.9 (shelve_instance's image_id and grant).
    9: {"compute": "1.9", "conductor": "1.4", "scheduler": "1.0"},
    # A step's action event ends with its report: conductor 1.5
    # (step_finished's ``event``, written with the report).
    10: {"compute": "1.9", "conductor": "1.5", "scheduler": "1.0"},
    # Personality files reach the guest: compute 1.10 (build_and_run_instance's
    # and rebuild_instance's ``injected_files``, written on its config drive).
    11: {"compute": "1.10", "conductor": "1.5", "scheduler": "1.0"},
    # A host's notifications relayed in batches: conductor 1.6
    # (relay_notifications).
    12: {"compute": "1.10", "conductor": "1.6", "scheduler": "1.0"},
    # Fewer round trips per build: compute 1.11 (build_and_run_instance's
    # ``placed``: the placement commit wrote spawning, launched_on and the
    # host's event start); conductor 1.7 (step_finished's ``notifications``:
    # the host's queued notifications ride on its step reports).
    13: {"compute": "1.11", "conductor": "1.7", "scheduler": "1.0"},
    # Personality files survive a live migration: conductor 1.8 (step_finished's
    # ``injected_files``, the source's read back from its guest's config
    # drive); compute 1.12 (pre_live_migration's ``injected_files``).
    14: {"compute": "1.12", "conductor": "1.8", "scheduler": "1.0"},
    # Personality files survive a cold migration or resize: compute 1.13
    # (migrate_disk_and_power_off's ``carry_files``, finish_migration's
    # ``injected_files``).
    15: {"compute": "1.13", "conductor": "1.8", "scheduler": "1.0"},
}

#: A version is ``MAJOR.MINOR`` in ASCII digits, each part at most 9 of
#: them: ``str.isdigit`` would take "١.٠" (Arabic-Indic digits) as 1.0, and
#: an unbounded part costs a quadratic int() before failing on 5,000 digits.
_VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})", re.ASCII)
# Versions on the wire come from a handful of strings; parsing each once
# keeps the hot path cheap. Bounded, since peers choose the strings.
_parsed_versions: dict[str, tuple[int, int]] = {}
_MAX_CACHED_VERSIONS = 1024
#: How much of a refused version an error message quotes.
_MAX_QUOTED_CHARS = 40


def parse_version(version: object) -> tuple[int, int]:
    """``"1.4"`` -> ``(1, 4)`` (RPC API and object versions alike); anything
    else raises ValueError, whose message quotes a bounded part of it."""
    if type(version) is str:
        parsed = _parsed_versions.get(version)
        if parsed is not None:
            return parsed
        match = _VERSION_RE.fullmatch(version)
        if match is not None:
            parsed = (int(match[1]), int(match[2]))
            if len(_parsed_versions) < _MAX_CACHED_VERSIONS:
                _parsed_versions[version] = parsed
            return parsed
    raise ValueError(f"{quote_version(version)} is not a 'major.minor' version")


def quote_version(version: object) -> str:
    """A bounded repr of a version that may have come from an untrusted peer."""
    text = repr(version)
    if len(text) > _MAX_QUOTED_CHARS:
        text = text[: _MAX_QUOTED_CHARS - 3] + "..."
    return text


#: Release name -> the service version its services run (newest last).
RELEASES: dict[str, int] = {
    "alder": 1,
    "birch": 2,
    "cedar": 3,
    "dogwood": 4,
    "elm": 5,
    "fir": 6,
    "ginkgo": 7,
    "hawthorn": 8,
    "ironwood": 9,
    "juniper": 10,
    "kauri": 11,
    "linden": 12,
    "maple": 13,
    "nutmeg": 14,
    "oak": 15,
}

#: The oldest service version this code serves: a compute host older than
#: this is refused when it registers or reports
#: (:class:`~nubes.exception.ServiceTooOld`). One release back, so a cloud
#: upgrades one release at a time with its hosts serving throughout.
MINIMUM_SERVICE_VERSION = 4


def release_of(service_version: int) -> str:
    """The release that shipped ``service_version`` (the first such), or ``"unknown"``."""
    for name, number in RELEASES.items():
        if number == service_version:
            return name
    return "unknown"


def check_supported(binary: str, host: str, version: object) -> None:
    """ServiceTooOld when ``version`` is below :data:`MINIMUM_SERVICE_VERSION`."""
    if isinstance(version, int) and version < MINIMUM_SERVICE_VERSION:
        raise exception.ServiceTooOld(
            binary=binary,
            host=host,
            version=version,
            minimum=MINIMUM_SERVICE_VERSION,
            release=release_of(MINIMUM_SERVICE_VERSION),
        )


#: The RPC APIs ``[upgrade_levels]`` has an option for.
APIS = ("compute", "conductor", "scheduler")

#: ``[upgrade_levels]`` value that derives the cap from the services running.
AUTO = "auto"

#: Seconds between two reads of the oldest service version (``auto``).
REFRESH_INTERVAL = 60.0


#: ``oldest(api)``: the lowest service version among the running services of
#: ``api``'s binary, None when none is registered.
Oldest = Callable[[str], Awaitable[int | None]]


class Capped(Protocol):
    """What :func:`apply_caps` needs of an RPC client."""

    version_cap: str | None

    def set_version_cap(self, version_cap: str | None) -> None: ...


def check_level(value: str) -> str:
    """An ``[upgrade_levels]`` value as given, if it is one (the options' type).

    ValueError otherwise, naming what is accepted: oslo.config reports it
    as an invalid value of the option, so a typo stops the service at start.
    """
    text = str(value).strip()
    if not text or text == AUTO or text in RELEASES:
        return text
    try:
        parse_version(text)
        return text
    except ValueError:
        pass
    raise ValueError(
        f"{value!r} is neither an RPC version (such as 1.1), a release name "
        f"({', '.join(RELEASES)}) nor {AUTO!r}"
    )


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
    ConfigError for a value :func:`check_level` refuses.
    """
    if api not in APIS:
        raise exception.ConfigError(reason=f"no RPC API named {api!r}")
    try:
        text = check_level(value or "")
    except ValueError as exc:
        raise exception.ConfigError(reason=f"[upgrade_levels] {api}: {exc}") from None
    if not text:
        return None
    if text == AUTO:
        return None if oldest is None else api_version_of(oldest, api)
    if text in RELEASES:
        return api_version_of(RELEASES[text], api)
    return text


async def apply_caps(levels: Any, clients: Mapping[str, Capped], oldest: Oldest) -> None:
    """Cap each client of ``clients`` (by API name) as ``levels`` (the
    ``[upgrade_levels]`` group) says; ``oldest`` is asked only for ``auto``."""
    for api, client in clients.items():
        value = getattr(levels, api)
        version = await oldest(api) if value == AUTO else None
        cap = resolve_cap(value, api, version)
        if cap != client.version_cap:
            LOG.info("%s RPC API capped at %s (was %s)", api, cap, client.version_cap)
            client.set_version_cap(cap)


async def follow_caps(
    levels: Any,
    clients: Mapping[str, Capped],
    oldest: Oldest,
    interval: float = REFRESH_INTERVAL,
) -> None:
    """:func:`apply_caps` every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await apply_caps(levels, clients, oldest)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Keep the cap we have: lifting it on an error could reach an old service.
            LOG.warning("could not refresh the RPC version caps: %s", exc)
