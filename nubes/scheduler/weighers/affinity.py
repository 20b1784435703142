"""Soft server-group policies: prefer hosts with (or without) members."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nubes.scheduler.filters.affinity import GROUP_HINT
from nubes.scheduler.weighers import BaseWeigher, register

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from nubes.scheduler.host_state import FloatArray, HostState, HostStateView
    from nubes.scheduler.request import SchedulingRequest


class _GroupWeigher(BaseWeigher):
    policy = ""
    #: +1 prefers hosts with more members, -1 fewer.
    sign = 1.0
    hints = (GROUP_HINT,)

    def applies(self, req: SchedulingRequest) -> bool:
        return req.group_policy == self.policy

    def host_value(self, host: HostState, req: SchedulingRequest) -> float:
        return self.sign * req.group_hosts.get(host.host, 0)

    def raw(self, view: HostStateView, idx: NDArray[np.intp], req: SchedulingRequest) -> FloatArray:
        if not req.group_hosts:
            return np.zeros(len(idx))
        # Few members, many hosts: look the members' hosts up, not every host.
        counts = np.zeros(len(view))
        for host, n in req.group_hosts.items():
            for i in view.by_host.get(host, ()):
                counts[i] = self.sign * n
        return counts[idx]


@register
class ServerGroupSoftAffinityWeigher(_GroupWeigher):
    multiplier_option = "soft_affinity_weight_multiplier"
    policy = "soft-affinity"


@register
class ServerGroupSoftAntiAffinityWeigher(_GroupWeigher):
    multiplier_option = "soft_anti_affinity_weight_multiplier"
    policy = "soft-anti-affinity"
    sign = -1.0
