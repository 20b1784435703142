"""Named scheduling policies and the rules that pick one per request.

A policy is a filter list plus weigher multipliers (and a host subset
size). ``default`` is built from ``[filter_scheduler]``; others are listed
in ``[scheduler] policies`` and configured each in its own section, where
an unset option inherits ``[filter_scheduler]``::

    [scheduler]
    policies = gpu, pack
    default_policy = default

    [scheduler_policy_gpu]
    match = flavor_extra_spec:resources:gpu=1
    enabled_filters = ComputeFilter, RamFilter, CoreFilter, AggregateInstanceExtraSpecsFilter

    [scheduler_policy_pack]
    match = availability_zone:batch, aggregate_metadata:scheduling=pack
    ram_weight_multiplier = -1.0

A rule is ``KIND:ARGUMENT``; the policies are tried in the listed order and
the first with a matching rule wins:

``availability_zone:ZONE``
    the request asks for that availability zone;
``flavor_extra_spec:KEY=VALUE``
    the flavor has that extra spec;
``aggregate_metadata:KEY=VALUE``
    an aggregate of the requested availability zone carries that metadata
    (operators tag a zone's aggregate to change how it is packed).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.db.api.groups import AVAILABILITY_ZONE_KEY
from nubes.scheduler.filters import BaseFilter, HintSpec, load_filters
from nubes.scheduler.host_state import HostStateView
from nubes.scheduler.request import SchedulingRequest
from nubes.scheduler.weighers import BaseWeigher, load_weighers

#: Name of the policy built from [filter_scheduler].
DEFAULT_POLICY = "default"
#: Section of a named policy: ``[scheduler_policy_NAME]``.
POLICY_GROUP_PREFIX = "scheduler_policy_"
RULE_KINDS = ("availability_zone", "flavor_extra_spec", "aggregate_metadata")
#: [filter_scheduler] options a policy may override, besides enabled_filters.
MULTIPLIER_OPTIONS = (
    "ram_weight_multiplier",
    "cpu_weight_multiplier",
    "disk_weight_multiplier",
    "cpu_utilization_weight_multiplier",
    "num_instances_weight_multiplier",
    "soft_affinity_weight_multiplier",
    "soft_anti_affinity_weight_multiplier",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    kind: str
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Rule:
        kind, sep, arg = text.strip().partition(":")
        if not sep or kind not in RULE_KINDS or not arg:
            raise exception.ConfigError(
                reason=f"policy rule {text!r} must be KIND:ARGUMENT with KIND one of {RULE_KINDS}"
            )
        if kind == "availability_zone":
            return cls(kind, arg, "")
        key, sep, value = arg.rpartition("=")
        if not sep or not key:
            raise exception.ConfigError(reason=f"policy rule {text!r} needs KEY=VALUE")
        return cls(kind, key, value)

    def matches(self, req: SchedulingRequest, view: HostStateView) -> bool:
        if self.kind == "availability_zone":
            return req.availability_zone == self.key
        if self.kind == "flavor_extra_spec":
            return req.extra_specs.get(self.key) == self.value
        zone = req.availability_zone
        if not zone:
            return False
        return any(
            agg.metadata.get(AVAILABILITY_ZONE_KEY) == zone
            and agg.metadata.get(self.key) == self.value
            for agg in view.aggregates
        )

    def __str__(self) -> str:
        if self.kind == "availability_zone":
            return f"{self.kind}:{self.key}"
        return f"{self.kind}:{self.key}={self.value}"


@dataclasses.dataclass(slots=True)
class Policy:
    name: str
    filters: list[BaseFilter]
    weighers: list[tuple[BaseWeigher, float]]
    host_subset_size: int = 1
    rules: tuple[Rule, ...] = ()

    def hints(self) -> list[HintSpec]:
        seen: dict[str, HintSpec] = {}
        for f in self.filters:
            for h in f.hints:
                seen.setdefault(h.name, h)
        for w, multiplier in self.weighers:
            if multiplier:
                for h in w.hints:
                    seen.setdefault(h.name, h)
        return list(seen.values())


@dataclasses.dataclass(slots=True)
class PolicySet:
    #: Named policies with rules, in the order they are tried.
    ordered: list[Policy]
    default: Policy

    def choose(self, req: SchedulingRequest, view: HostStateView) -> Policy:
        for policy in self.ordered:
            if any(rule.matches(req, view) for rule in policy.rules):
                return policy
        return self.default

    def all(self) -> list[Policy]:
        names = {p.name for p in self.ordered}
        return [*self.ordered, *([self.default] if self.default.name not in names else [])]

    def hints(self) -> list[dict[str, str]]:
        """Every hint an enabled filter or weigher of any policy reads."""
        seen: dict[str, HintSpec] = {}
        for policy in self.all():
            for h in policy.hints():
                seen.setdefault(h.name, h)
        return [h.to_dict() for h in sorted(seen.values(), key=lambda h: h.name)]


def _policy_opts() -> list[cfg.Opt]:
    opts: list[cfg.Opt] = [
        cfg.ListOpt("match", default=[], help="Rules (KIND:ARGUMENT) that select this policy."),
        cfg.ListOpt("enabled_filters", help="Filters, in order (default: [filter_scheduler])."),
        cfg.IntOpt("host_subset_size", min=1, help="Default: [filter_scheduler]."),
    ]
    opts += [cfg.FloatOpt(name, help="Default: [filter_scheduler].") for name in MULTIPLIER_OPTIONS]
    return opts


def build_policy(
    name: str,
    filter_names: list[str],
    multipliers: dict[str, float],
    *,
    host_subset_size: int = 1,
    rules: tuple[Rule, ...] = (),
) -> Policy:
    return Policy(
        name, load_filters(filter_names), load_weighers(multipliers), host_subset_size, rules
    )


def load(conf: cfg.ConfigOpts) -> PolicySet:
    """The policies ``conf`` configures (registers each policy's section)."""
    fs = conf.filter_scheduler
    base_multipliers = {o: float(fs[o]) for o in MULTIPLIER_OPTIONS}
    default = build_policy(
        DEFAULT_POLICY,
        list(fs.enabled_filters),
        base_multipliers,
        host_subset_size=fs.host_subset_size,
    )
    policies: dict[str, Policy] = {}
    for name in conf.scheduler.policies:
        group = POLICY_GROUP_PREFIX + name
        if group not in conf:
            conf.register_opts(_policy_opts(), group=group)
        section: Any = conf[group]
        try:
            rules = tuple(Rule.parse(r) for r in section.match)
            multipliers = {
                o: (float(section[o]) if section[o] is not None else base_multipliers[o])
                for o in MULTIPLIER_OPTIONS
            }
            filters = section.enabled_filters
            subset = section.host_subset_size
        except (cfg.ConfigFileValueError, ValueError) as exc:
            raise exception.ConfigError(reason=f"[{group}]: {exc}") from None
        policies[name] = build_policy(
            name,
            list(filters) if filters is not None else list(fs.enabled_filters),
            multipliers,
            host_subset_size=subset if subset is not None else fs.host_subset_size,
            rules=rules,
        )
    wanted = conf.scheduler.default_policy
    if wanted != DEFAULT_POLICY and wanted not in policies:
        raise exception.ConfigError(
            reason=f"[scheduler] default_policy {wanted!r} is not listed in policies"
        )
    chosen_default = default if wanted == DEFAULT_POLICY else policies[wanted]
    ordered = [p for p in policies.values() if p.rules]
    return PolicySet(ordered, chosen_default)
