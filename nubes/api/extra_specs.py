"""Flavor extra spec validation (compute API 2.86): Nova's known specs and their values.

From 2.86 a spec in a namespace Nova recognises must be one Nova knows,
with a value of the right kind; specs outside those namespaces (and
without a namespace) are free-form, as in Nova. The table below holds the
specs by name pattern; each says its value's kind (an integer with
bounds, a boolean, one of a list, or a string matching a pattern).
"""

from __future__ import annotations

import dataclasses
import re
from typing import NoReturn

from nubes import exception

#: Namespaces whose specs are checked (Nova's list).
NAMESPACES = (
    "accel",
    "aggregate_instance_extra_specs",
    "capabilities",
    "hw",
    "hw_rng",
    "hw_video",
    "os",
    "pci_passthrough",
    "powervm",
    "quota",
    "resources(?:[a-zA-Z0-9_-]{1,64})?",
    "trait(?:[a-zA-Z0-9_-]{1,64})?",
    "vmware",
)

_TRUE = ("1", "t", "true", "on", "y", "yes")
_FALSE = ("0", "f", "false", "off", "n", "no")
_GROUP = r"(?:[a-zA-Z0-9_-]{1,64})?"


@dataclasses.dataclass(frozen=True)
class Spec:
    """One known spec: a full-match name pattern and what its value must be."""

    name: str
    kind: type = str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None

    def check(self, name: str, value: str) -> None:
        if self.kind is int:
            try:
                number = int(value)
            except ValueError:
                _fail(f"{name} must be an integer; got {value}.")
            if self.minimum is not None and number < self.minimum:
                _fail(f"{name} must be greater than or equal to {self.minimum}; got {value}.")
            if self.maximum is not None and number > self.maximum:
                _fail(f"{name} must be less than or equal to {self.maximum}; got {value}.")
        elif self.kind is bool:
            if value.strip().lower() not in (*_TRUE, *_FALSE):
                _fail(f"{name} must be a boolean; got {value}.")
        elif self.choices:
            if value not in self.choices:
                _fail(f"{name} must be one of {', '.join(self.choices)}; got {value}.")
        elif self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            _fail(f"{name} must match pattern {self.pattern}; got {value}.")


def _fail(reason: str) -> NoReturn:
    raise exception.Invalid(message=f"Validation failed; {reason}")


def _ints(prefix: str, names: tuple[str, ...], minimum: int = 0) -> list[Spec]:
    return [Spec(f"{prefix}:{n}", int, minimum) for n in names]


def _bools(prefix: str, names: tuple[str, ...]) -> list[Spec]:
    return [Spec(f"{prefix}:{n}", bool) for n in names]


_SHARES_LEVEL = ("custom", "high", "normal", "low")
_PAGE_SIZE = r"(?:large|small|any|\d+(?:[kKmMgGtT]i?[bB]?)?)"
_MASK = r"\^?\d+(?:-\d+)?(?:,\^?\d+(?:-\d+)?)*"

SPECS: tuple[Spec, ...] = (
    # hw: guest hardware and placement on the host.
    Spec("hw:cpu_policy", choices=("shared", "dedicated", "mixed")),
    Spec("hw:cpu_thread_policy", choices=("prefer", "isolate", "require")),
    Spec("hw:emulator_threads_policy", choices=("share", "isolate")),
    Spec("hw:cpu_realtime_mask", pattern=_MASK),
    Spec("hw:cpu_dedicated_mask", pattern=_MASK),
    Spec("hw:mem_page_size", pattern=_PAGE_SIZE),
    Spec("hw:numa_nodes", int, 1),
    Spec(r"hw:numa_cpus\.\d+", pattern=_MASK),
    Spec(r"hw:numa_mem\.\d+", int, 0),
    Spec("hw:pci_numa_affinity_policy", choices=("required", "preferred", "legacy", "socket")),
    *_ints("hw", ("cpu_sockets", "cpu_cores", "cpu_threads"), 1),
    *_ints("hw", ("cpu_max_sockets", "cpu_max_cores", "cpu_max_threads"), 1),
    Spec("hw:serial_port_count", int, 0),
    Spec("hw:watchdog_action", choices=("none", "pause", "poweroff", "reset", "disabled")),
    Spec("hw:tpm_model", choices=("tpm-tis", "tpm-crb")),
    Spec("hw:tpm_version", choices=("1.2", "2.0")),
    Spec("hw:viommu_model", choices=("intel", "smmuv3", "virtio", "auto")),
    Spec("hw:maxphysaddr_mode", choices=("emulate", "passthrough")),
    Spec("hw:maxphysaddr_bits", int, 1),
    Spec("hw:ephemeral_encryption_format", choices=("luks", "plain")),
    Spec("hw:pmem", pattern=r"[a-zA-Z0-9_-]+(?:,[a-zA-Z0-9_-]+)*"),
    Spec("hw:vif_model", pattern=r"[a-z0-9_-]+"),
    *_bools(
        "hw",
        (
            "cpu_realtime",
            "hide_hypervisor_id",
            "boot_menu",
            "vif_multiqueue_enabled",
            "mem_encryption",
            "pmu",
            "locked_memory",
            "virtio_packed_ring",
            "ephemeral_encryption",
        ),
    ),
    # hw_rng, hw_video: the random number generator and video card.
    Spec("hw_rng:allowed", bool),
    *_ints("hw_rng", ("rate_bytes", "rate_period")),
    Spec("hw_video:ram_max_mb", int, 0),
    # os: firmware.
    Spec("os:secure_boot", choices=("required", "disabled", "optional")),
    # quota: limits on the guest's CPU, disks and network.
    *_ints(
        "quota",
        (
            "cpu_shares",
            "cpu_period",
            "cpu_quota",
            "cpu_limit",
            "cpu_reservation",
            "cpu_shares_share",
            "memory_limit",
            "memory_reservation",
            "memory_shares_share",
            "disk_read_bytes_sec",
            "disk_read_iops_sec",
            "disk_write_bytes_sec",
            "disk_write_iops_sec",
            "disk_total_bytes_sec",
            "disk_total_iops_sec",
            "disk_io_limit",
            "disk_io_reservation",
            "disk_io_shares_share",
            "vif_inbound_average",
            "vif_inbound_peak",
            "vif_inbound_burst",
            "vif_outbound_average",
            "vif_outbound_peak",
            "vif_outbound_burst",
            "vif_limit",
            "vif_reservation",
            "vif_shares_share",
        ),
    ),
    *[
        Spec(f"quota:{n}_shares_level", choices=_SHARES_LEVEL)
        for n in ("cpu", "memory", "disk_io", "vif")
    ],
    # resources and traits: what placement is asked for.
    Spec(f"resources{_GROUP}:[A-Z0-9_]+", int, 0),
    Spec(f"trait{_GROUP}:[A-Z0-9_]+", choices=("required", "forbidden")),
    Spec("group_policy", choices=("isolate", "none")),
    # Free-form in their namespace: any key, any value.
    Spec("aggregate_instance_extra_specs:.+"),
    Spec("capabilities:.+"),
    Spec("accel:device_profile"),
    Spec("pci_passthrough:alias", pattern=r"[^:,]+:\d+(?:,[^:,]+:\d+)*"),
    Spec("vmware:hw_version"),
    Spec("vmware:storage_policy"),
    Spec("powervm:.+"),
)


def validate(name: str, value: str) -> None:
    """Refuse ``name``/``value`` as Nova does from 2.86 (Invalid, a 400)."""
    for spec in SPECS:
        if re.fullmatch(spec.name, name):
            spec.check(name, value)
            return
    if ":" not in name:
        return
    namespace = name.split(":", 1)[0]
    if any(re.fullmatch(ns, namespace) for ns in NAMESPACES):
        _fail(f"extra spec '{name}' does not appear to be a valid extra spec.")
