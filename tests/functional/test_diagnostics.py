"""A guest's diagnostics, asked by the API of the guest's host over the bus
(compute RPC 1.7 ``get_instance_diagnostics``), with every service in one
process (memory:// + SQLite, fake hosts under their own identities)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nubes import exception
from nubes.api.compute_v21.server_diagnostics import legacy
from nubes.api.state import ApiState
from nubes.compute.rpcapi import ComputeAPI
from nubes.compute.virt.fake import FAKE_BOOT_LOG
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.rpc.transport import get_transport
from nubes.service import service_identity
from nubes.testing.allinone import AllInOne

pytestmark = pytest.mark.timeout(120)

IMAGE = {"id": "img-1", "properties": {}}
CTXT = RequestContext(user_id="u1", project_id="p1", roles=["admin"])


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[AllInOne]:
    c = await AllInOne.start(f"sqlite:///{tmp_path / 'diag.sqlite'}", hosts=2)
    async with c.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "two", "name": "two", "vcpus": 2, "memory_mb": 512, "root_gb": 1}
        )
    yield c
    await c.stop()


async def _api(cloud: AllInOne) -> ComputeAPI:
    state = ApiState(conf=cloud.conf, db=cloud.db, transport=cloud.api_transport)
    await state.refresh_caps()
    api: ComputeAPI = state.compute_api()
    return api


async def test_the_api_reads_a_running_guests_counters_from_its_host(cloud: AllInOne) -> None:
    (inst,) = await cloud.api.create_servers(CTXT, name="d", flavor="two", image=IMAGE)
    await cloud.wait_tasks([inst.uuid])
    (row,) = await cloud.instances([inst.uuid])
    compute = await _api(cloud)
    diags = await compute.get_instance_diagnostics(CTXT, row["host"], inst.uuid)
    # "libvirt": Nova's closed list of driver names, as Nova's fake driver answers.
    assert diags["state"] == "running" and diags["driver"] == "libvirt"
    assert diags["hypervisor"] == "fake"
    assert diags["num_cpus"] == 2 == len(diags["cpu_details"])
    assert diags["memory_details"] == {"maximum": 512 * 1024, "used": 512 * 1024}
    # The root disk had the guest's console written to it: its boot lines.
    booted_lines = len(FAKE_BOOT_LOG) + 1
    assert diags["num_disks"] == 1
    assert diags["disk_details"][0]["write_requests"] == booted_lines
    booted = diags["disk_details"][0]["write_bytes"]
    assert booted > 0
    flat = legacy(diags)
    assert flat["memory"] == 512 * 1024 and flat["vda_write_req"] == booted_lines
    assert set(flat) >= {"cpu0_time", "cpu1_time", "vda_read", "vda_errors"}

    # A reboot writes another line: the counters follow the guest.
    await cloud.api.reboot_server(CTXT, inst.uuid, "HARD")
    await cloud.wait_tasks([inst.uuid])
    again = await compute.get_instance_diagnostics(CTXT, row["host"], inst.uuid)
    assert again["disk_details"][0]["write_requests"] == booted_lines + 1
    assert again["disk_details"][0]["write_bytes"] > booted

    # Asked of the other host, which does not run it: not found there.
    other = next(h for h in ("fake-0", "fake-1") if h != row["host"])
    with pytest.raises(exception.InstanceNotFound):
        await compute.get_instance_diagnostics(CTXT, other, inst.uuid)

    # A stopped guest has nothing to report: Nova's InstanceInvalidState (409).
    await cloud.api.stop_server(CTXT, inst.uuid)
    await cloud.wait_tasks([inst.uuid])
    with pytest.raises(exception.InstanceInvalidState, match="power_state shutdown"):
        await compute.get_instance_diagnostics(CTXT, row["host"], inst.uuid)


async def test_another_compute_host_may_not_ask_a_host_for_diagnostics(cloud: AllInOne) -> None:
    (inst,) = await cloud.api.create_servers(CTXT, name="d", flavor="two", image=IMAGE)
    await cloud.wait_tasks([inst.uuid])
    (row,) = await cloud.instances([inst.uuid])
    other = next(h for h in ("fake-0", "fake-1") if h != row["host"])
    transport = get_transport(cloud.conf.transport_url, identity=service_identity("compute", other))
    await transport.connect()
    try:
        with pytest.raises(exception.Forbidden):
            await ComputeAPI(transport).get_instance_diagnostics(CTXT, row["host"], inst.uuid)
    finally:
        await transport.close()
