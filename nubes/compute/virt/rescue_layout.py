"""Which disks a rescued guest boots with: Nova's rule, for every driver.

A rescue (Nova's ``rescue``, before 2.87 or with a rescue image that sets
neither ``hw_rescue_device`` nor ``hw_rescue_bus``) boots the rescue image as
the first disk with the guest's own root disk second, and its config drive;
nothing else of the guest's: Nova's libvirt driver lays a rescue out as
``disk.rescue``, ``disk`` and ``disk.config.rescue`` only
(``blockinfo.get_disk_mapping`` returns before the flavor's ephemeral and
swap disks), so a rescue system does not find them, and the guest gets them
back at unrescue.

A stable rescue (2.87, the image sets one of those properties) keeps every
disk of the guest where it is and attaches the rescue disk after them.

The fake driver keeps the layout on its guests and the libvirt driver turns
it into the rescue domain's disks (:mod:`.libvirt.rescue`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any


class GuestDisk(enum.StrEnum):
    """A disk of a guest, by what it holds."""

    ROOT = "root"
    EPHEMERAL = "ephemeral"
    SWAP = "swap"
    CONFIG_DRIVE = "config_drive"
    #: The rescue image's disk, while rescued.
    RESCUE = "rescue"


#: What a (non-stable) rescue keeps of the guest's own disks, in its order after
#: the rescue disk.
_RESCUE_KEEPS = (GuestDisk.ROOT, GuestDisk.CONFIG_DRIVE)


def is_stable(image_meta: dict[str, Any]) -> bool:
    """Whether the rescue image asks for a stable rescue (2.87)."""
    props = image_meta.get("properties") or {}
    return bool(props.get("hw_rescue_device") or props.get("hw_rescue_bus"))


def own_disks(*, ephemeral: bool, swap: bool, config_drive: bool) -> tuple[GuestDisk, ...]:
    """A guest's own disks in device order: root, ephemeral, swap, config drive."""
    present = {
        GuestDisk.EPHEMERAL: ephemeral,
        GuestDisk.SWAP: swap,
        GuestDisk.CONFIG_DRIVE: config_drive,
    }
    return (GuestDisk.ROOT, *(d for d, has in present.items() if has))


def rescued(own: Iterable[GuestDisk], image_meta: dict[str, Any]) -> tuple[GuestDisk, ...]:
    """The disks a guest with ``own`` boots with, rescued from ``image_meta``, in
    device order."""
    own = tuple(own)
    if is_stable(image_meta):
        return (*own, GuestDisk.RESCUE)
    return (GuestDisk.RESCUE, *(d for d in _RESCUE_KEEPS if d in own))
