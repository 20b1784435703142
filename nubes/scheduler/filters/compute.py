"""Filters on a host's own state: its service, and room for the flavor.

RAM, vCPU and disk room is what the node has times its allocation ratio,
minus what is claimed: a host with exactly the requested amount left passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nubes.scheduler.filters import BaseFilter, register

if TYPE_CHECKING:
    from nubes.scheduler.host_state import BoolArray, HostState, HostStateView
    from nubes.scheduler.request import SchedulingRequest


@register
class ComputeFilter(BaseFilter):
    """The host's compute service exists, is enabled, and reported within
    ``service_down_time`` (and is not forced down)."""

    mask_is_exact = True

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        return host.usable

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray:
        return view.usable


@register
class RamFilter(BaseFilter):
    mask_is_exact = True

    def applies(self, req: SchedulingRequest) -> bool:
        return req.memory_mb > 0

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        return host.free_ram_mb >= req.memory_mb

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray:
        return np.greater_equal(view.free_ram, req.memory_mb)


@register
class CoreFilter(BaseFilter):
    mask_is_exact = True

    def applies(self, req: SchedulingRequest) -> bool:
        return req.vcpus > 0

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        return host.free_vcpus >= req.vcpus

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray:
        return np.greater_equal(view.free_vcpus, req.vcpus)


@register
class DiskFilter(BaseFilter):
    mask_is_exact = True

    def applies(self, req: SchedulingRequest) -> bool:
        return req.disk_gb > 0

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        return host.free_disk_gb >= req.disk_gb

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray:
        return np.greater_equal(view.free_disk, req.disk_gb)


@register
class ImagePropertiesFilter(BaseFilter):
    """The image's ``hypervisor_type`` (or ``img_hv_type``) names the host's
    hypervisor, and ``hypervisor_version_requires`` (``>=N``, ``<=N``, ``==N``,
    ``>N``, ``<N``) holds for its version."""

    def applies(self, req: SchedulingRequest) -> bool:
        props = req.image_properties
        return bool(
            props.get("hypervisor_type")
            or props.get("img_hv_type")
            or props.get("hypervisor_version_requires")
        )

    @staticmethod
    def _hv_type(req: SchedulingRequest) -> str | None:
        props = req.image_properties
        return props.get("hypervisor_type") or props.get("img_hv_type")

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        wanted = self._hv_type(req)
        if wanted and (host.hypervisor_type or "").lower() != wanted.lower():
            return False
        requires = req.image_properties.get("hypervisor_version_requires")
        if requires:
            if host.hypervisor_version is None:
                return False
            return version_matches(host.hypervisor_version, requires)
        return True

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray | None:
        wanted = self._hv_type(req)
        if not wanted:
            return None
        # Case-insensitive like host_passes: union over the spellings hosts report.
        mask = np.zeros(len(view), dtype=bool)
        for hv_type in view.hypervisor_types():
            if (hv_type or "").lower() == wanted.lower():
                mask |= view.hypervisor_type_mask(hv_type)
        return mask


_OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


def version_matches(version: int, requires: str) -> bool:
    """``requires`` like ``>=6000``; an unparsable requirement matches nothing."""
    text = requires.strip()
    for op in (">=", "<=", "==", ">", "<"):
        if text.startswith(op):
            try:
                return bool(_OPS[op](version, int(text[len(op) :].strip())))
            except ValueError:
                return False
    try:
        return version == int(text)
    except ValueError:
        return False
