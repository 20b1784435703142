"""Each filter on its own, by host_passes and by its vector form (which must agree)."""

from __future__ import annotations

import pytest

from nubes import exception
from nubes.scheduler.filters import load_filters
from nubes.scheduler.filters.affinity import (
    DifferentHostFilter,
    SameHostFilter,
    ServerGroupAffinityFilter,
    ServerGroupAntiAffinityFilter,
)
from nubes.scheduler.filters.aggregates import (
    AggregateInstanceExtraSpecsFilter,
    AggregateMultiTenancyIsolation,
    AvailabilityZoneFilter,
    spec_matches,
)
from nubes.scheduler.filters.compute import (
    ComputeFilter,
    CoreFilter,
    DiskFilter,
    ImagePropertiesFilter,
    RamFilter,
    version_matches,
)
from tests.unit.scheduler.helpers import flavor, make_view, passing, request


def test_compute_filter_needs_an_enabled_service_that_reports():
    view = make_view(
        {"ok": {}, "down": {}, "off": {}, "nosvc": {}},
        down={"down"},
        disabled={"off"},
        no_service={"nosvc"},
    )
    assert passing(view, ComputeFilter(), request()) == {"ok"}


def test_compute_filter_follows_service_changes():
    view = make_view({"a": {}, "b": {}})
    view.set_services({"a": (False, False), "b": (False, True)}, set())  # b forced down
    assert passing(view, ComputeFilter(), request()) == {"a"}
    view.set_services({"a": (False, False), "b": (False, False)}, {"a"})  # a went silent
    assert passing(view, ComputeFilter(), request()) == {"b"}


def test_ram_filter_exactly_full_host_passes_one_more_mb_does_not():
    view = make_view(
        {
            "exact": {"memory_mb": 4096, "memory_mb_used": 3072},
            "short": {"memory_mb": 4096, "memory_mb_used": 3073},
        }
    )
    req = request(flavor=flavor(memory_mb=1024))
    assert passing(view, RamFilter(), req) == {"exact"}


def test_core_filter_ratio_one_versus_sixteen():
    view = make_view(
        {
            "r1": {"vcpus": 4, "vcpus_used": 4, "cpu_allocation_ratio": 1.0},
            "r16": {"vcpus": 4, "vcpus_used": 4, "cpu_allocation_ratio": 16.0},
            "r16full": {"vcpus": 4, "vcpus_used": 64, "cpu_allocation_ratio": 16.0},
        }
    )
    assert passing(view, CoreFilter(), request(flavor=flavor(vcpus=1))) == {"r16"}
    # 4 × 16 = 64 vCPUs: 60 used leaves exactly 4.
    view2 = make_view({"edge": {"vcpus": 4, "vcpus_used": 60, "cpu_allocation_ratio": 16.0}})
    assert passing(view2, CoreFilter(), request(flavor=flavor(vcpus=4))) == {"edge"}
    assert passing(view2, CoreFilter(), request(flavor=flavor(vcpus=5))) == set()


def test_disk_filter_with_ratio():
    view = make_view(
        {
            "plain": {"local_gb": 100, "local_gb_used": 95},
            "over": {"local_gb": 100, "local_gb_used": 95, "disk_allocation_ratio": 1.1},
        }
    )
    assert passing(view, DiskFilter(), request(flavor=flavor(root_gb=10))) == {"over"}
    assert passing(view, DiskFilter(), request(flavor=flavor(root_gb=5))) == {"plain", "over"}


def test_disk_counts_ephemeral_and_swap():
    req = request(flavor=flavor(root_gb=10, ephemeral_gb=5, swap=1536))
    assert req.disk_gb == 17  # 10 + 5 + 1.5 GiB of swap rounded up


def test_resource_filters_skip_zero_requests():
    req = request(flavor=flavor(vcpus=0, memory_mb=0, root_gb=0))
    assert not RamFilter().applies(req) and not CoreFilter().applies(req)
    assert not DiskFilter().applies(req)


def test_availability_zone_filter():
    view = make_view(
        {"a1": {}, "a2": {}, "b1": {}, "none": {}},
        aggregates=[
            {"hosts": ["a1", "a2"], "metadata": {"availability_zone": "az-a"}},
            {"hosts": ["b1"], "metadata": {"availability_zone": "az-b"}},
        ],
    )
    f = AvailabilityZoneFilter()
    assert passing(view, f, request(availability_zone="az-a")) == {"a1", "a2"}
    assert passing(view, f, request(availability_zone="nova")) == {"none"}
    assert passing(view, f, request(availability_zone="az-x")) == set()
    assert not f.applies(request())


def test_availability_zone_filter_empty_aggregate():
    view = make_view(
        {"h": {}}, aggregates=[{"hosts": [], "metadata": {"availability_zone": "empty"}}]
    )
    assert passing(view, AvailabilityZoneFilter(), request(availability_zone="empty")) == set()


def test_tenant_isolation_keeps_hosts_for_their_tenants():
    view = make_view(
        {"mine": {}, "shared": {}, "theirs": {}, "two": {}},
        aggregates=[
            {"hosts": ["mine"], "metadata": {"filter_tenant_id": "p1"}},
            {"hosts": ["theirs"], "metadata": {"filter_tenant_id": "p2"}},
            {"hosts": ["two"], "metadata": {"filter_tenant_id": "p1,p3"}},
            {"hosts": [], "metadata": {"filter_tenant_id": "p4"}},
        ],
    )
    f = AggregateMultiTenancyIsolation()
    assert passing(view, f, request(project_id="p1")) == {"mine", "shared", "two"}
    assert passing(view, f, request(project_id="p3")) == {"shared", "two"}
    assert passing(view, f, request(project_id="p4")) == {"shared"}  # its aggregate is empty
    assert passing(view, f, request(project_id=None)) == {"shared"}


def test_tenant_isolation_several_keys_union():
    view = make_view(
        {"h": {}},
        aggregates=[
            {"hosts": ["h"], "metadata": {"filter_tenant_id": "a", "filter_tenant_id2": "b"}}
        ],
    )
    f = AggregateMultiTenancyIsolation()
    assert passing(view, f, request(project_id="b")) == {"h"}
    assert passing(view, f, request(project_id="c")) == set()


def test_aggregate_instance_extra_specs():
    view = make_view(
        {"ssd": {}, "hdd": {}, "bare": {}},
        aggregates=[
            {"hosts": ["ssd"], "metadata": {"disk": "ssd", "gen": "5"}},
            {"hosts": ["hdd"], "metadata": {"disk": "hdd", "gen": "3"}},
        ],
    )
    f = AggregateInstanceExtraSpecsFilter()

    def spec(**specs: str) -> object:
        return request(flavor=flavor(extra_specs=specs))

    assert passing(view, f, spec(disk="ssd")) == {"ssd"}
    assert passing(view, f, spec(**{"aggregate_instance_extra_specs:disk": "hdd"})) == {"hdd"}
    assert passing(view, f, spec(gen=">= 4")) == {"ssd"}
    assert passing(view, f, spec(disk="<or> ssd <or> hdd")) == {"ssd", "hdd"}
    # Another scope is not this filter's business.
    assert not f.applies(spec(**{"hw:cpu_policy": "dedicated"}))


def test_spec_operators():
    assert spec_matches("ssd", "ssd") and not spec_matches("ssd", "hdd")
    assert spec_matches("fast-ssd", "<in> ssd")
    assert spec_matches("4", "= 4") and spec_matches("8", "= 4") and not spec_matches("2", "= 4")
    assert spec_matches("4", "<= 4") and not spec_matches("x", ">= 1")
    assert spec_matches("a b", "s== a b") and spec_matches("a", "s!= b")


def test_image_properties_hypervisor_type_and_version():
    view = make_view(
        {
            "kvm": {"hypervisor_type": "QEMU", "hypervisor_version": 6000},
            "old": {"hypervisor_type": "qemu", "hypervisor_version": 4000},
            "xen": {"hypervisor_type": "xen"},
        }
    )
    f = ImagePropertiesFilter()
    assert passing(view, f, request(image_properties={"hypervisor_type": "qemu"})) == {"kvm", "old"}
    req = request(image_properties={"img_hv_type": "qemu", "hypervisor_version_requires": ">=5000"})
    assert passing(view, f, req) == {"kvm"}
    assert not f.applies(request(image_properties={"os_distro": "debian"}))


def test_version_requirements():
    assert version_matches(5, ">=5") and version_matches(5, "==5") and version_matches(5, "5")
    assert not version_matches(5, ">5") and not version_matches(5, "<=x")


def test_server_group_anti_affinity():
    view = make_view({"a": {}, "b": {}, "c": {}})
    f = ServerGroupAntiAffinityFilter()
    req = request(instance_group_policy="anti-affinity", instance_group_hosts=["a"])
    assert passing(view, f, req) == {"b", "c"}
    req.placed("b")  # an earlier instance of the same request went to b
    assert passing(view, f, req) == {"c"}
    two = request(
        instance_group_policy="anti-affinity",
        instance_group_hosts=["a", "b"],
        instance_group_max_server_per_host=2,
    )
    assert passing(view, f, two) == {"a", "b", "c"}
    assert not f.applies(request(instance_group_policy="affinity"))


def test_server_group_affinity():
    view = make_view({"a": {}, "b": {}})
    f = ServerGroupAffinityFilter()
    first = request(instance_group_policy="affinity")
    assert not f.applies(first)  # the first member may go anywhere
    first.placed("b")
    assert passing(view, f, first) == {"b"}


def test_same_and_different_host():
    view = make_view({"a": {}, "b": {}, "c": {}})
    req = request()
    req.same_hosts = {"a", "b"}
    assert passing(view, SameHostFilter(), req) == {"a", "b"}
    req.same_hosts = set()  # the named instances are nowhere
    assert passing(view, SameHostFilter(), req) == set()
    req.different_hosts = {"a"}
    assert passing(view, DifferentHostFilter(), req) == {"b", "c"}
    assert not SameHostFilter().applies(request())


def test_unknown_filter_is_a_config_error():
    with pytest.raises(exception.ConfigError, match="NoSuchFilter"):
        load_filters(["RamFilter", "NoSuchFilter"])


def test_aggregate_masks_follow_aggregate_changes():
    view = make_view(
        {"a": {}, "b": {}}, aggregates=[{"hosts": ["a"], "metadata": {"availability_zone": "z"}}]
    )
    f = AvailabilityZoneFilter()
    assert passing(view, f, request(availability_zone="z")) == {"a"}
    view.set_aggregates(
        [{"id": 1, "name": "z", "hosts": ["b"], "metadata": {"availability_zone": "z"}}]
    )
    assert passing(view, f, request(availability_zone="z")) == {"b"}
