"""Weighers on a host's own numbers: free RAM, vCPUs and disk (after
allocation ratios), reported CPU utilisation, and instance count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nubes.scheduler.weighers import BaseWeigher, register

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from nubes.scheduler.host_state import FloatArray, HostState, HostStateView
    from nubes.scheduler.request import SchedulingRequest


@register
class RAMWeigher(BaseWeigher):
    multiplier_option = "ram_weight_multiplier"

    def host_value(self, host: HostState, req: SchedulingRequest) -> float:
        return host.free_ram_mb

    def raw(self, view: HostStateView, idx: NDArray[np.intp], req: SchedulingRequest) -> FloatArray:
        return view.free_ram[idx]


@register
class CPUWeigher(BaseWeigher):
    multiplier_option = "cpu_weight_multiplier"

    def host_value(self, host: HostState, req: SchedulingRequest) -> float:
        return host.free_vcpus

    def raw(self, view: HostStateView, idx: NDArray[np.intp], req: SchedulingRequest) -> FloatArray:
        return view.free_vcpus[idx]


@register
class DiskWeigher(BaseWeigher):
    multiplier_option = "disk_weight_multiplier"

    def host_value(self, host: HostState, req: SchedulingRequest) -> float:
        return host.free_disk_gb

    def raw(self, view: HostStateView, idx: NDArray[np.intp], req: SchedulingRequest) -> FloatArray:
        return view.free_disk[idx]


@register
class CPUUtilizationWeigher(BaseWeigher):
    """The ``cpu.percent`` metric hosts report (0 when they report none)."""

    multiplier_option = "cpu_utilization_weight_multiplier"

    def host_value(self, host: HostState, req: SchedulingRequest) -> float:
        return host.cpu_percent

    def raw(self, view: HostStateView, idx: NDArray[np.intp], req: SchedulingRequest) -> FloatArray:
        return view.cpu_percent[idx]


@register
class NumInstancesWeigher(BaseWeigher):
    """Instances (allocations) on the host."""

    multiplier_option = "num_instances_weight_multiplier"

    def host_value(self, host: HostState, req: SchedulingRequest) -> float:
        return float(host.num_instances)

    def raw(self, view: HostStateView, idx: NDArray[np.intp], req: SchedulingRequest) -> FloatArray:
        return view.num_instances[idx]
