"""Filters on where other instances are: server group (anti-)affinity and
the ``same_host``/``different_host`` hints.

Where a group's members are comes from the database (hosts where they hold
resources) when the request is prepared, plus the hosts this request has
already chosen for its earlier instances. The rule itself is
:func:`nubes.db.api.group_claims.host_allowed`, which the claim applies
again, atomically, against what the database holds then.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from nubes.db.api.group_claims import host_allowed
from nubes.group_policy import AFFINITY, ANTI_AFFINITY
from nubes.scheduler.filters import BaseFilter, HintSpec, register

if TYPE_CHECKING:
    from nubes.scheduler.host_state import BoolArray, HostState, HostStateView
    from nubes.scheduler.request import SchedulingRequest

GROUP_HINT = HintSpec(
    "group",
    "uuid",
    "Server group the instance joins; its policy (affinity, anti-affinity, "
    "soft-affinity, soft-anti-affinity) constrains or weighs the hosts.",
)
SAME_HOST_HINT = HintSpec(
    "same_host",
    "list of uuids",
    "Place the instance on a host running one of these instances.",
)
DIFFERENT_HOST_HINT = HintSpec(
    "different_host",
    "list of uuids",
    "Place the instance on a host running none of these instances.",
)


def _set_at(view: HostStateView, hosts: Iterable[str], value: bool) -> BoolArray:
    mask = np.full(len(view), not value, dtype=bool)
    indices = view.host_indices(hosts)
    if indices:
        mask[indices] = value
    return mask


@register
class ServerGroupAntiAffinityFilter(BaseFilter):
    """Anti-affinity: fewer than ``max_server_per_host`` members on the host."""

    hints = (GROUP_HINT,)
    mask_is_exact = True

    def applies(self, req: SchedulingRequest) -> bool:
        return req.group_policy == ANTI_AFFINITY

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        return host_allowed(req.group_policy, req.max_server_per_host, req.group_hosts, host.host)

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray:
        full = [h for h, n in req.group_hosts.items() if n >= req.max_server_per_host]
        return _set_at(view, full, False)


@register
class ServerGroupAffinityFilter(BaseFilter):
    """Affinity: on a host that has members already (any host for the first)."""

    hints = (GROUP_HINT,)
    mask_is_exact = True

    def applies(self, req: SchedulingRequest) -> bool:
        return req.group_policy == AFFINITY and bool(req.group_hosts)

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        return host_allowed(req.group_policy, req.max_server_per_host, req.group_hosts, host.host)

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray:
        return _set_at(view, req.group_hosts, True)


#: The filter a hard group policy needs enabled.
GROUP_FILTERS = {
    ANTI_AFFINITY: ServerGroupAntiAffinityFilter.name(),
    AFFINITY: ServerGroupAffinityFilter.name(),
}


@register
class SameHostFilter(BaseFilter):
    hints = (SAME_HOST_HINT,)
    mask_is_exact = True

    def applies(self, req: SchedulingRequest) -> bool:
        return req.same_hosts is not None

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        return req.same_hosts is None or host.host in req.same_hosts

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray:
        return _set_at(view, req.same_hosts or (), True)


@register
class DifferentHostFilter(BaseFilter):
    hints = (DIFFERENT_HOST_HINT,)
    mask_is_exact = True

    def applies(self, req: SchedulingRequest) -> bool:
        return bool(req.different_hosts)

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        return host.host not in req.different_hosts

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray:
        return _set_at(view, req.different_hosts, False)
