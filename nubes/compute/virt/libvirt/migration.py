"""Live migration of a libvirt guest: what the source asks its libvirtd for.

The source's libvirtd migrates peer to peer: it connects to the
destination's (``dest_uri``, from the destination's check, made of its
``[libvirt] live_migration_inbound_addr``), and QEMU sends memory, and the
blocks of the guest's local disks (:func:`local_disks`:
``VIR_MIGRATE_NON_SHARED_INC``: the destination made the same overlay over
its own copy of the image, and blank ephemeral and swap disks of the same
size, in ``pre_live_migration``), straight to the destination's QEMU. The compute
agents never talk to each other; the conductor relays what each side says.

Hosts may keep their guests' files under different ``instances_path``: the
domain XML the destination defines is the source's with that prefix
replaced (:func:`destination_xml`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

#: Seconds between two progress readings of a running migration.
POLL_INTERVAL = 0.5


@dataclasses.dataclass(slots=True)
class LiveCopy:
    """A live migration running from this host: its domain, and whether an
    abort was asked (so the failure it causes is reported as an abort)."""

    dom: Any
    aborted: bool = False


def destination_xml(xml: str, source_path: Path, dest_path: str) -> str:
    """The domain XML for the destination: every file under the source's
    instances path moved under the destination's."""
    source = str(source_path).rstrip("/") + "/"
    return xml.replace(source, dest_path.rstrip("/") + "/")


def local_disks(xml: str) -> list[str]:
    """The devices whose blocks the copy carries: every writable file disk of
    the domain (root, ephemeral, swap), not the read-only config drive, which
    the destination writes itself."""
    found = []
    for disk in ET.fromstring(xml).findall("./devices/disk"):
        target = disk.find("target")
        if disk.get("type") != "file" or disk.get("device") != "disk" or target is None:
            continue
        if disk.find("readonly") is None and target.get("dev"):
            found.append(str(target.get("dev")))
    return found


def percent_done(stats: dict[str, Any]) -> int | None:
    """How far the job is (0–99) from libvirt's job statistics; None before
    it knows how much there is to copy."""
    total = stats.get("data_total") or 0
    if total <= 0:
        return None
    remaining = stats.get("data_remaining", total)
    return max(0, min(99, int(100 * (total - remaining) / total)))
