"""Weighers: normalisation, each weigher's preference, multipliers."""

from __future__ import annotations

import numpy as np
import pytest

from nubes.scheduler.weighers import combined_weights, load_weighers, normalize
from nubes.scheduler.weighers.affinity import (
    ServerGroupSoftAffinityWeigher,
    ServerGroupSoftAntiAffinityWeigher,
)
from nubes.scheduler.weighers.resources import (
    CPUUtilizationWeigher,
    CPUWeigher,
    DiskWeigher,
    NumInstancesWeigher,
    RAMWeigher,
)
from tests.unit.scheduler.helpers import make_view, request

HOSTS = {
    "big": {"memory_mb": 16384, "vcpus": 16, "local_gb": 1000, "metrics": {"cpu.percent": 90.0}},
    "mid": {"memory_mb": 8192, "vcpus": 8, "local_gb": 500, "num_instances": 3},
    "small": {
        "memory_mb": 4096,
        "vcpus": 4,
        "cpu_allocation_ratio": 16.0,
        "local_gb": 100,
        "num_instances": 7,
        "metrics": {"cpu.percent": 5.0},
    },
}


def _best(weigher: object, multiplier: float, **req: object) -> list[str]:
    view = make_view(HOSTS)
    idx = np.arange(len(view))
    r = request(**req)
    weights = combined_weights([(weigher, multiplier)], view, idx, r)  # type: ignore[list-item]
    # The vector form agrees with the per-host one.
    raw = weigher.raw(view, idx, r)  # type: ignore[attr-defined]
    assert list(raw) == [weigher.host_value(h, r) for h in view.hosts]  # type: ignore[attr-defined]
    order = np.argsort(-weights, kind="stable")
    return [view.hosts[i].host for i in order]


def test_normalize():
    assert list(normalize(np.array([2.0, 4.0, 6.0]))) == [0.0, 0.5, 1.0]
    assert list(normalize(np.array([3.0, 3.0]))) == [0.0, 0.0]
    assert len(normalize(np.array([]))) == 0


def test_ram_weigher_spreads_and_stacks():
    assert _best(RAMWeigher(), 1.0)[0] == "big"
    assert _best(RAMWeigher(), -1.0)[0] == "small"


def test_cpu_weigher_counts_the_ratio():
    # small: 4 × 16 = 64 vCPUs free beats big's 16.
    assert _best(CPUWeigher(), 1.0)[0] == "small"


def test_disk_weigher():
    assert _best(DiskWeigher(), 1.0) == ["big", "mid", "small"]


def test_cpu_utilization_weigher_prefers_idle_hosts_by_default():
    assert _best(CPUUtilizationWeigher(), -1.0)[0] == "mid"  # reports nothing: 0 %
    assert _best(CPUUtilizationWeigher(), -1.0)[-1] == "big"


def test_num_instances_weigher():
    assert _best(NumInstancesWeigher(), -1.0) == ["big", "mid", "small"]


def test_soft_affinity_and_anti_affinity():
    hosts = ["small", "small", "mid"]
    assert (
        _best(
            ServerGroupSoftAffinityWeigher(),
            1.0,
            instance_group_policy="soft-affinity",
            instance_group_hosts=hosts,
        )[0]
        == "small"
    )
    assert (
        _best(
            ServerGroupSoftAntiAffinityWeigher(),
            1.0,
            instance_group_policy="soft-anti-affinity",
            instance_group_hosts=hosts,
        )[0]
        == "big"
    )
    assert not ServerGroupSoftAffinityWeigher().applies(request(instance_group_policy="affinity"))


def test_multipliers_combine():
    view = make_view(HOSTS)
    idx = np.arange(len(view))
    weighers = load_weighers(
        {
            "ram_weight_multiplier": 1.0,
            "cpu_weight_multiplier": 0.0,
            "disk_weight_multiplier": 0.0,
            "cpu_utilization_weight_multiplier": -2.0,
            "num_instances_weight_multiplier": 0.0,
            "soft_affinity_weight_multiplier": 1.0,
            "soft_anti_affinity_weight_multiplier": 1.0,
        }
    )
    weights = combined_weights(weighers, view, idx, request())
    by_host = {view.hosts[i].host: w for i, w in zip(idx, weights, strict=True)}
    # big: ram 1, util -2 × 1 = -1; mid: ram 1/3, util 0; small: ram 0, util -2 × 5/90.
    assert by_host["big"] == pytest.approx(-1.0)
    assert by_host["mid"] == pytest.approx(1 / 3)
    assert by_host["small"] == pytest.approx(-2 * 5 / 90)
