"""Filters decided by a host's aggregates: availability zone, tenant isolation,
and flavor extra specs matched against aggregate metadata.

Their answer depends on nothing else about the host, so each has an exact
vector form computed once per distinct set of aggregates (see
:meth:`~nubes.scheduler.host_state.HostStateView.aggregate_mask`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from nubes.db.api.groups import AVAILABILITY_ZONE_KEY
from nubes.scheduler.filters import BaseFilter, register

if TYPE_CHECKING:
    from nubes.scheduler.host_state import AggregateInfo, BoolArray, HostState, HostStateView
    from nubes.scheduler.request import SchedulingRequest

#: The zone of a host in no availability-zone aggregate (Nova's default name).
DEFAULT_AVAILABILITY_ZONE = "nova"
#: Aggregate metadata keys starting with this list the projects a host is kept for.
TENANT_KEY_PREFIX = "filter_tenant_id"
#: Flavor extra-spec scope AggregateInstanceExtraSpecsFilter reads (unscoped keys too).
EXTRA_SPECS_SCOPE = "aggregate_instance_extra_specs"


def _merged(aggregates: tuple[AggregateInfo, ...]) -> dict[str, set[str]]:
    merged: dict[str, set[str]] = {}
    for agg in aggregates:
        for key, value in agg.metadata.items():
            merged.setdefault(key, set()).add(value)
    return merged


def zones_of(aggregates: tuple[AggregateInfo, ...]) -> set[str]:
    zones = {
        a.metadata[AVAILABILITY_ZONE_KEY] for a in aggregates if AVAILABILITY_ZONE_KEY in a.metadata
    }
    return zones or {DEFAULT_AVAILABILITY_ZONE}


class _AggregateFilter(BaseFilter):
    mask_is_exact = True

    def _rule(
        self, req: SchedulingRequest
    ) -> tuple[object, Callable[[tuple[AggregateInfo, ...]], bool]]:
        """(cache key, predicate on a host's aggregates) for this request."""
        raise NotImplementedError

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        return self._rule(req)[1](host.aggregates)

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray:
        key, predicate = self._rule(req)
        return view.aggregate_mask((self.name(), key), predicate)


@register
class AvailabilityZoneFilter(_AggregateFilter):
    """The host is in the requested zone (hosts in no zone are in ``nova``)."""

    def applies(self, req: SchedulingRequest) -> bool:
        return bool(req.availability_zone)

    def _rule(
        self, req: SchedulingRequest
    ) -> tuple[object, Callable[[tuple[AggregateInfo, ...]], bool]]:
        zone = req.availability_zone
        return zone, lambda aggs: zone in zones_of(aggs)


def allowed_projects(aggregates: tuple[AggregateInfo, ...]) -> set[str] | None:
    """Projects a host is kept for (None: open to all)."""
    allowed: set[str] | None = None
    for agg in aggregates:
        for key, value in agg.metadata.items():
            if key.startswith(TENANT_KEY_PREFIX):
                allowed = allowed if allowed is not None else set()
                allowed.update(p.strip() for p in value.split(",") if p.strip())
    return allowed


@register
class AggregateMultiTenancyIsolation(_AggregateFilter):
    """A host in an aggregate with ``filter_tenant_id*`` metadata takes only
    those projects' instances: a host (or a whole aggregate) kept for a tenant."""

    def _rule(
        self, req: SchedulingRequest
    ) -> tuple[object, Callable[[tuple[AggregateInfo, ...]], bool]]:
        project = req.project_id

        def passes(aggs: tuple[AggregateInfo, ...]) -> bool:
            allowed = allowed_projects(aggs)
            return allowed is None or project in allowed

        return project, passes


def _relevant_specs(extra_specs: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    out = []
    for key, wanted in extra_specs.items():
        scope, sep, rest = key.partition(":")
        if not sep:
            out.append((key, wanted))
        elif scope == EXTRA_SPECS_SCOPE:
            out.append((rest, wanted))
    return tuple(sorted(out))


def spec_matches(value: str, wanted: str) -> bool:
    """Nova's extra-spec operators on an aggregate value: plain equality,
    ``<in> sub``, ``<or> a <or> b``, ``s== x``, ``s!= x``, and numeric
    ``= n`` (at least n), ``== n``, ``>= n``, ``<= n``."""
    words = wanted.split()
    if not words:
        return value == wanted
    op, args = words[0], words[1:]
    if op == "<or>":
        return value in [w for w in words if w != "<or>"]
    if op == "<in>":
        return bool(args) and " ".join(args) in value
    if op == "s==":
        return value == " ".join(args)
    if op == "s!=":
        return value != " ".join(args)
    if op in ("=", "==", ">=", "<=") and len(args) == 1:
        try:
            have, need = float(value), float(args[0])
        except ValueError:
            return False
        if op == "<=":
            return have <= need
        if op == "==":
            return have == need
        return have >= need
    return value == wanted


@register
class AggregateInstanceExtraSpecsFilter(_AggregateFilter):
    """Each unscoped or ``aggregate_instance_extra_specs:`` flavor extra spec
    must match a value of that key in the host's aggregates' metadata."""

    def applies(self, req: SchedulingRequest) -> bool:
        return bool(_relevant_specs(req.extra_specs))

    def _rule(
        self, req: SchedulingRequest
    ) -> tuple[object, Callable[[tuple[AggregateInfo, ...]], bool]]:
        specs = _relevant_specs(req.extra_specs)

        def passes(aggs: tuple[AggregateInfo, ...]) -> bool:
            metadata = _merged(aggs)
            for key, wanted in specs:
                values = metadata.get(key)
                if not values or not any(spec_matches(v, wanted) for v in values):
                    return False
            return True

        return specs, passes
