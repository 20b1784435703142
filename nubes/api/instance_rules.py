"""The rules an API request about an instance is checked against, each in one place.

Boot, the lifecycle actions (``nubes.api.servers``) and the moves
(``nubes.api.moves``) ask the same questions: is the instance locked, does
its state allow the action, does the image fit the flavor, may the disks
change so. Each answer is a function here raising an error of
:mod:`nubes.exception` (400 or 409 with Nova's text), so two operations can
never disagree on one rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nubes import exception
from nubes.context import RequestContext
from nubes.objects import states

GiB = 1024**3


def check_lock(ctxt: RequestContext, row: Mapping[str, Any]) -> None:
    """Nova's check_instance_lock: a locked instance is changed by admins only."""
    if row["locked"] and not ctxt.is_admin:
        raise exception.InstanceIsLocked(instance_uuid=row["uuid"])


def check_state(action: str, row: Mapping[str, Any], target: states.InstanceState) -> None:
    """``action`` may take the instance to ``target`` (the state table allows it)."""
    current = states.as_state(row["vm_state"], row["task_state"])
    if not states.is_allowed(current, target):
        attr, state = (
            ("task_state", row["task_state"])
            if row["task_state"] is not None
            else ("vm_state", row["vm_state"])
        )
        raise exception.InstanceInvalidState(
            action=action, instance_uuid=row["uuid"], attr=attr, state=state
        )


def check_idle(action: str, row: Mapping[str, Any], task_state: states.TaskState) -> None:
    """Nova's check_instance_state for an action that starts a task on the
    instance's host: a vm_state the action starts from, no task running (a
    task_state), and a host to run it on."""
    check_state(action, row, (states.VMState(row["vm_state"]), task_state))
    if row["task_state"] is not None:
        raise exception.InstanceInvalidState(
            action=action,
            instance_uuid=row["uuid"],
            attr="task_state",
            state=row["task_state"],
        )
    if not row["host"]:
        raise exception.Conflict(reason=f"instance {row['uuid']} is not on any host")


def check_host_task(
    ctxt: RequestContext, row: dict[str, Any], action: str, task_state: states.TaskState
) -> None:
    """May ``action`` start a task on the instance's host: not locked against
    the caller, and idle (:func:`check_idle`)."""
    check_lock(ctxt, row)
    check_idle(action, row, task_state)


def pinned_zone(row: Mapping[str, Any], requested: str | None, current_zone: str) -> str | None:
    """The zone the instance is pinned to once a user asks for ``requested``
    (2.104; null unpins): a pinned instance must be unpinned before it is
    pinned to another zone, and an unpinned one is pinned only to the zone it
    is in (``current_zone``); asking for the pin it has changes nothing."""
    pinned = row["availability_zone"]
    if requested is None:
        return None
    if pinned is not None:
        if requested != pinned:
            raise exception.PinnedZoneChange()
        return pinned
    if requested != current_zone:
        raise exception.PinnedZoneMismatch(current_az=current_zone, requested_az=requested)
    return requested


def check_image_fits(image: Mapping[str, Any], flavor: Mapping[str, Any]) -> None:
    """Nova's flavor-against-image checks (memory, min_disk, image size), for boot,
    rebuild and resize alike.

    A flavor without a root disk (volume-backed in Nova) is not held to the
    disk sizes.
    """
    if (flavor.get("memory_mb") or 0) < (image.get("min_ram") or 0):
        raise exception.FlavorMemoryTooSmall()
    root_gb = flavor.get("root_gb") or 0
    if not root_gb:
        return
    flavor_size = root_gb * GiB
    min_disk = (image.get("min_disk") or 0) * GiB
    if flavor_size < min_disk:
        raise exception.FlavorDiskSmallerThanMinDisk(
            flavor_size=flavor_size, image_min_disk=min_disk
        )
    size = image.get("virtual_size") or image.get("size") or 0
    if flavor_size < size:
        raise exception.FlavorDiskSmallerThanImage(flavor_size=flavor_size, image_size=size)


def check_disks(current: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """A resize may not shrink a disk.

    Nova's API refuses only a zero root disk and leaves shrinking to the
    driver, which fails the resize afterwards ("Unable to resize disk
    down."); no driver here can shrink a disk either, so the request is
    refused before anything moves.
    """
    if new.get("root_gb") == 0 and (current.get("root_gb") or 0) != 0:
        raise exception.CannotResizeDisk(reason="Resize to zero disk flavor is not allowed.")
    for disk in ("root_gb", "ephemeral_gb"):
        if (new.get(disk) or 0) < (current.get(disk) or 0):
            raise exception.CannotResizeDisk(reason="Unable to resize disk down.")


#: Where the instance keeps its image's properties (Nova's system metadata keys).
IMAGE_PREFIX = "image_"


def with_image_properties(
    system_metadata: Mapping[str, Any] | None, image: Mapping[str, Any]
) -> dict[str, Any]:
    """System metadata holding ``image``'s properties instead of the previous image's.

    Kept at create and rebuild, so the server body shows them (2.98) without
    asking the image service.
    """
    kept = {k: val for k, val in (system_metadata or {}).items() if not k.startswith(IMAGE_PREFIX)}
    props = image.get("properties") or {}
    return {**kept, **{f"{IMAGE_PREFIX}{k}": str(val) for k, val in props.items()}}


def image_properties(system_metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The image properties :func:`with_image_properties` kept."""
    return {
        k[len(IMAGE_PREFIX) :]: str(val)
        for k, val in (system_metadata or {}).items()
        if k.startswith(IMAGE_PREFIX)
    }


#: Where the instance keeps the scheduler hints it was created with (JSON).
HINTS_KEY = "scheduler_hints"


def with_scheduler_hints(
    system_metadata: Mapping[str, Any] | None, hints: Mapping[str, Any]
) -> dict[str, Any]:
    """System metadata holding the create's hints, each a list of strings as Nova keeps
    them, so the server body shows them (2.100)."""
    as_lists = {
        str(k): [str(x) for x in val] if isinstance(val, list) else [str(val)]
        for k, val in hints.items()
    }
    return {**(system_metadata or {}), HINTS_KEY: json.dumps(as_lists, sort_keys=True)}


def scheduler_hints(system_metadata: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The hints :func:`with_scheduler_hints` kept ({} for none)."""
    raw = (system_metadata or {}).get(HINTS_KEY)
    found: dict[str, list[str]] = json.loads(raw) if raw else {}
    return found
