"""Named policies: loading from config, choosing per request, hint discovery."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from oslo_config import cfg

from nubes import config, exception
from nubes.context import RequestContext
from nubes.db.engine import Database
from nubes.objects.request_spec import RequestSpec
from nubes.scheduler import policies
from nubes.scheduler.manager import SchedulerManager
from nubes.testing.fleet import HostSpec, create_aggregate, create_hosts
from tests.unit.scheduler.helpers import flavor, make_view, request

CONF = """
[scheduler]
policies = gpu, pack, zonal

[scheduler_policy_gpu]
match = flavor_extra_spec:resources:gpu=1
enabled_filters = ComputeFilter, RamFilter

[scheduler_policy_pack]
match = aggregate_metadata:scheduling=pack
ram_weight_multiplier = -1.0
cpu_weight_multiplier = 0.0
disk_weight_multiplier = 0.0
cpu_utilization_weight_multiplier = 0.0

[scheduler_policy_zonal]
match = availability_zone:batch
host_subset_size = 3
"""


def _conf(tmp_path: Path, text: str = CONF) -> cfg.ConfigOpts:
    path = tmp_path / "nubes.conf"
    path.write_text(text)
    return config.load(["--config-file", str(path)], config.new_config())


def test_policies_load_and_inherit(tmp_path: Path):
    ps = policies.load(_conf(tmp_path))
    by_name = {p.name: p for p in ps.all()}
    assert set(by_name) == {"gpu", "pack", "zonal", "default"}
    assert [f.name() for f in by_name["gpu"].filters] == ["ComputeFilter", "RamFilter"]
    pack = {w.name(): m for w, m in by_name["pack"].weighers}
    assert pack["RAMWeigher"] == -1.0 and pack["ServerGroupSoftAffinityWeigher"] == 10.0
    assert by_name["zonal"].host_subset_size == 3
    assert len(by_name["zonal"].filters) == len(by_name["default"].filters)


def test_choice_by_rule(tmp_path: Path):
    ps = policies.load(_conf(tmp_path))
    view = make_view(
        {"a": {}, "b": {}},
        aggregates=[
            {"hosts": ["a"], "metadata": {"availability_zone": "dense", "scheduling": "pack"}},
            {"hosts": ["b"], "metadata": {"availability_zone": "batch"}},
        ],
    )
    gpu = request(flavor=flavor(extra_specs={"resources:gpu": "1"}))
    assert ps.choose(gpu, view).name == "gpu"
    assert ps.choose(request(availability_zone="dense"), view).name == "pack"
    assert ps.choose(request(availability_zone="batch"), view).name == "zonal"
    assert ps.choose(request(), view).name == "default"
    # The first listed policy whose rule matches wins.
    both = request(flavor=flavor(extra_specs={"resources:gpu": "1"}), availability_zone="batch")
    assert ps.choose(both, view).name == "gpu"


def test_default_policy_can_be_a_named_one(tmp_path: Path):
    ps = policies.load(
        _conf(tmp_path, CONF.replace("[scheduler]\n", "[scheduler]\ndefault_policy = pack\n"))
    )
    assert ps.default.name == "pack"


@pytest.mark.parametrize(
    "text",
    [
        "[scheduler]\ndefault_policy = missing\n",
        "[scheduler]\npolicies = x\n[scheduler_policy_x]\nmatch = colour:blue\n",
        "[scheduler]\npolicies = x\n[scheduler_policy_x]\nmatch = flavor_extra_spec:novalue\n",
        "[scheduler]\npolicies = x\n[scheduler_policy_x]\nenabled_filters = NoSuchFilter\n",
        "[filter_scheduler]\nenabled_filters = RamFilter, Bogus\n",
    ],
)
def test_bad_policy_config_is_refused(tmp_path: Path, text: str):
    with pytest.raises(exception.ConfigError):
        policies.load(_conf(tmp_path, text))


def test_hints_are_published_from_enabled_filters(tmp_path: Path):
    hints = policies.load(_conf(tmp_path)).hints()
    assert [h["name"] for h in hints] == ["different_host", "group", "same_host"]
    assert all(set(h) == {"name", "type", "description"} and h["description"] for h in hints)
    only_ram = _conf(
        tmp_path,
        "[filter_scheduler]\nenabled_filters = RamFilter\n"
        "soft_affinity_weight_multiplier = 0\nsoft_anti_affinity_weight_multiplier = 0\n",
    )
    assert policies.load(only_ram).hints() == []
    with_soft = _conf(tmp_path, "[filter_scheduler]\nenabled_filters = RamFilter\n")
    assert [h["name"] for h in policies.load(with_soft).hints()] == ["group"]


async def test_policy_changes_the_choice_end_to_end(db: Database, tmp_path: Path):
    await create_hosts(db, [HostSpec("roomy", memory_mb=65536), HostSpec("tight", memory_mb=8192)])
    await create_aggregate(
        db, "dense", ["roomy", "tight"], {"availability_zone": "dense", "scheduling": "pack"}
    )
    manager = SchedulerManager(db, _conf(tmp_path))
    fl = flavor(memory_mb=1024)
    try:
        spread = await manager.select_destinations(
            RequestContext(), RequestSpec(flavor=fl), [str(uuid.uuid4())]
        )
        packed = await manager.select_destinations(
            RequestContext(), RequestSpec(flavor=fl, availability_zone="dense"), [str(uuid.uuid4())]
        )
    finally:
        await manager.close()
    assert (spread[0][0].host, spread[0][0].policy) == ("roomy", "default")
    assert (packed[0][0].host, packed[0][0].policy) == ("tight", "pack")
