"""The fake driver's contract, the resource tracker, and a fleet of fake hosts."""

from __future__ import annotations

import asyncio

import pytest

from nubes import config, exception
from nubes.compute.launcher import fake_fleet
from nubes.compute.virt import load_driver
from nubes.compute.virt.fake import FAKE_BOOT_LOG, FakeDriver, FakeFaults
from nubes.context import RequestContext
from nubes.objects.compute_node import ComputeNode
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState
from nubes.testing.cloud import Cloud
from tests.unit.compute.conftest import ComputeHarness

UUID = "6f1c5b8e-9b8a-4e0a-9a8e-3c0d2b1f0a11"


def _inst() -> Instance:
    return Instance(uuid=UUID, vcpus=2, memory_mb=1024, root_gb=10)


async def test_fake_lifecycle_is_idempotent_where_it_says_so():
    driver = FakeDriver("h1", faults=FakeFaults())
    ctxt = RequestContext()
    inst = _inst()
    await driver.spawn(ctxt, inst, {}, {})
    assert await driver.list_instances() == [UUID]
    assert (await driver.get_info(inst)).state == PowerState.RUNNING
    with pytest.raises(exception.Conflict):
        await driver.spawn(ctxt, inst, {}, {})
    await driver.power_off(inst)
    await driver.power_off(inst)
    assert (await driver.get_info(inst)).state == PowerState.SHUTDOWN
    await driver.power_on(ctxt, inst)
    await driver.reboot(ctxt, inst, "HARD")
    metrics = await driver.get_host_metrics("h1")
    assert 0 < metrics["cpu.percent"] <= 100
    await driver.destroy(ctxt, inst)
    await driver.destroy(ctxt, inst)
    with pytest.raises(exception.InstanceNotFound):
        await driver.get_info(inst)


async def test_the_fake_console_log_tells_the_guests_life_and_is_tailed_by_lines():
    from nubes.compute.virt.driver import console_tail

    driver = FakeDriver("h1", faults=FakeFaults())
    ctxt = RequestContext()
    inst = _inst()
    with pytest.raises(exception.InstanceNotFound):
        await driver.get_console_output(inst)
    await driver.spawn(ctxt, inst, {}, {})
    await driver.reboot(ctxt, inst, "SOFT")
    await driver.power_off(inst)
    await driver.power_on(ctxt, inst)
    log = await driver.get_console_output(inst)
    events = [line.split(": ", 1)[1] for line in log.splitlines()]
    boot = [*FAKE_BOOT_LOG, "booted on h1"]
    assert events == [*boot, "rebooted (soft)", "powered off", "powered on"]
    assert console_tail(log, 2).splitlines() == log.splitlines()[-2:]
    # Three lines asked, three pieces between newlines (Tempest counts so).
    assert len(console_tail(log, 3).split("\n")) == 3
    assert console_tail(log, None) == console_tail(log, 0) == log
    assert console_tail(log, 99) == log
    # A real guest's log ends in a newline: still three pieces (Nova's tail).
    assert console_tail("a\r\nb\r\nc\r\n", 3) == "b\r\nc\r\n"
    assert len(console_tail(log + "\n", 3).split("\n")) == 3


async def test_live_migration_fails_halfway_when_told():
    faults = FakeFaults(fail_live_migration_hosts={"src"})
    src, dst = FakeDriver("src", faults=faults), FakeDriver("dst", faults=faults)
    ctxt = RequestContext()
    inst = _inst()
    await src.spawn(ctxt, inst, {}, {})
    data = await dst.check_can_live_migrate_destination(ctxt, inst)
    data = await src.check_can_live_migrate_source(ctxt, inst, data)
    data = await dst.pre_live_migration(ctxt, inst, data)
    seen: list[int] = []

    async def progress(percent: int) -> None:
        seen.append(percent)

    with pytest.raises(exception.VirtDriverError):
        await src.live_migration(ctxt, inst, "dst", data, progress)
    assert seen == [50]
    await dst.rollback_live_migration_at_destination(ctxt, inst, data)
    assert UUID in src.instances

    faults.fail_live_migration_hosts.clear()
    await src.live_migration(ctxt, inst, "dst", data, progress)
    assert seen == [50, 50, 100]
    await dst.post_live_migration_at_destination(ctxt, inst, data)
    await src.post_live_migration(ctxt, inst, data)
    assert UUID in dst.instances and UUID not in src.instances


async def test_each_driver_has_its_own_faults_unless_given_a_shared_registry():
    """No process-wide registry: faults set for one driver (one test's cloud) never
    reach another, and a fleet shares the one it was made with."""
    alone, other = FakeDriver("a"), FakeDriver("b")
    assert alone.faults is not other.faults
    alone.faults.fail_spawn = True
    with pytest.raises(exception.VirtDriverError):
        await alone.spawn(RequestContext(), _inst(), {}, {})
    await other.spawn(RequestContext(), _inst(), {}, {})
    assert await other.list_instances() == [UUID]


def test_a_fleet_shares_one_registry_loaded_from_fake_driver_options():
    conf = config.new_config()
    conf([], default_config_files=[])
    conf.set_override("transport_url", "memory:///fleet-faults")
    conf.set_override("fail_spawn_hosts", ["fleet-1"], group="fake_driver")
    conf.set_override("spawn_delay", 0.25, group="fake_driver")
    drivers = [svc.hooks[0].driver for svc in fake_fleet(conf, 3, "fleet-")]  # type: ignore[attr-defined]
    assert all(isinstance(d, FakeDriver) for d in drivers)
    (faults,) = {id(d.faults): d.faults for d in drivers}.values()
    assert faults.fail_spawn_hosts == {"fleet-1"} and faults.spawn_delay == 0.25
    # A second fleet (another cloud in the same process) starts from the options again.
    again = fake_fleet(conf, 1, "other-")[0].hooks[0].driver  # type: ignore[attr-defined]
    assert again.faults is not faults and again.faults == faults


def test_unknown_driver_is_a_config_error():
    with pytest.raises(exception.ConfigError):
        load_driver("libvirt-someday", "h1")
    assert isinstance(load_driver("fake", "h1", vcpus=4), FakeDriver)


async def test_resource_tracker_reports_capacity_and_metrics(compute: ComputeHarness):
    ctxt = RequestContext()
    node = await ComputeNode.get_by_host_and_nodename(ctxt, compute.name, compute.name)
    assert (node.vcpus, node.memory_mb, node.local_gb) == (16, 65536, 1000)
    assert node.hypervisor_type == "fake" and node.metrics == {"cpu.percent": 0.0}
    inst = await compute.instance(vm_state="active", vcpus=4, power_state=1)
    compute.driver.add_instance(inst)
    await compute.run(compute.node.tracker.update_available_resource, ctxt)
    node = await ComputeNode.get_by_host_and_nodename(ctxt, compute.name, compute.name)
    assert node.running_vms == 1
    assert node.metrics == {"cpu.percent": 6.25}
    assert node.stats is not None and node.stats["instances_vcpus"] == 4


async def test_resource_tracker_counts_swap_in_local_disk_as_claims_do(compute: ComputeHarness):
    # Regression: the stats left swap out, so they fell short of the
    # scheduler's disk claims (root + ephemeral + swap rounded up to GiB).
    ctxt = RequestContext()
    flavor = {"name": "swapped", "vcpus": 1, "memory_mb": 512, "swap": 1536}
    inst = await compute.instance(
        vm_state="active", root_gb=2, ephemeral_gb=1, power_state=1, flavor=flavor
    )
    compute.driver.add_instance(inst)
    await compute.run(compute.node.tracker.update_available_resource, ctxt)
    node = await ComputeNode.get_by_host_and_nodename(ctxt, compute.name, compute.name)
    assert node.stats is not None and node.stats["instances_local_gb"] == 2 + 1 + 2
    # Usage columns belong to the scheduler's claims.
    assert node.vcpus_used == 0


async def test_a_fleet_of_fake_hosts_each_with_its_own_identity_and_node(cloud: Cloud):
    conf = config.new_config()
    conf([], default_config_files=[])
    conf.set_override("transport_url", cloud.url_for("compute.x"))
    conf.set_override("report_interval", 60)
    conf.set_override("resource_update_interval", 0, group="compute")
    services = fake_fleet(conf, 5, "fleet-")
    ctxt = RequestContext()

    async def nodes() -> list[ComputeNode]:
        found = []
        for i in range(5):
            try:
                found.append(
                    await ComputeNode.get_by_host_and_nodename(ctxt, f"fleet-{i}", f"fleet-{i}")
                )
            except exception.ComputeHostNotFound:
                pass
        return found

    try:
        for svc in services:
            await svc.start()
        assert [svc.transport.identity for svc in services] == [
            f"compute.fleet-{i}" for i in range(5)
        ]
        for _ in range(250):
            if len(await nodes()) == 5:
                break
            await asyncio.sleep(0.02)
        assert sorted(n.host for n in await nodes()) == [f"fleet-{i}" for i in range(5)]
    finally:
        for svc in services:
            await svc.stop()


async def test_a_fake_driver_with_a_state_dir_keeps_its_guests_across_a_restart(tmp_path):
    ctxt = RequestContext()
    inst = _inst()
    other = Instance(uuid="0b7f3c1e-1d2a-4f5b-8c6d-7e8f9a0b1c2d", vcpus=1, memory_mb=512, root_gb=1)
    driver = FakeDriver("h1", faults=FakeFaults(), state_dir=tmp_path)
    await driver.spawn(ctxt, inst, {}, {})
    await driver.spawn(ctxt, other, {}, {})
    await driver.power_off(other)
    assert not list(tmp_path.glob(".*.tmp"))  # written by rename, nothing left half-way

    again = FakeDriver("h1", faults=FakeFaults(), state_dir=tmp_path)
    assert sorted(await again.list_instances()) == sorted([UUID, other.uuid])
    info = await again.get_info(inst)
    assert (info.state, info.vcpus, info.memory_mb) == (PowerState.RUNNING, 2, 1024)
    assert (await again.get_info(other)).state == PowerState.SHUTDOWN
    await again.destroy(ctxt, other)
    assert await FakeDriver("h1", state_dir=tmp_path).list_instances() == [UUID]
    # Each host has its own file; a host never sees another's guests.
    assert await FakeDriver("h2", state_dir=tmp_path).list_instances() == []


async def test_a_fake_driver_refuses_a_guests_file_it_cannot_read(tmp_path):
    (tmp_path / "h1.json").write_text("{not json")
    with pytest.raises(exception.ConfigError, match=r"h1\.json"):
        FakeDriver("h1", state_dir=tmp_path)


async def test_the_fake_driver_reports_an_uptime_line_like_the_uptime_command():
    from nubes.compute.virt.fake import format_uptime

    line = format_uptime(0.0, 2 * 86400 + 3 * 3600 + 4 * 60 + 5, (0.5, 0.25, 0.125))
    assert line.endswith(" up 2 days,  3:04,  0 users,  load average: 0.50, 0.25, 0.12")
    assert "up 0 min," in await FakeDriver("h1").get_host_uptime()
