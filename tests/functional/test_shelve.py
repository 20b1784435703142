"""Shelve, shelve offload and unshelve with every service in one process
(memory:// + SQLite, fake hosts) and the image API over a real socket, where
a shelve's host uploads the guest's disk, as Nova's shelve snapshots it.

A fake guest's "disk" is what its driver keeps of it (its console so far):
the shelved image holds it, and an offloaded server comes back from that
image, which is deleted once the server runs again.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from nubes import exception
from nubes.compute.virt.fake import FakeDriver
from nubes.context import RequestContext
from nubes.db.api import actions, flavors, images
from nubes.db.api import compute_nodes as compute_nodes_api
from nubes.db.api import instances as instances_api
from nubes.db.api import quotas as quotas_db
from nubes.network import ports as network_ports
from nubes.network.resources import NetworkService
from nubes.testing.allinone import AllInOne
from nubes.testing.moves import check_consistent
from tests.functional.image_api import cloud_with_image_api

pytestmark = pytest.mark.timeout(120)

IMAGE = {"id": "img-1", "properties": {}}


@pytest.fixture
def ctxt() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1", roles=["member"])


async def _prepare(cloud: AllInOne) -> None:
    async with cloud.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 512}
        )
        await images.create(
            conn,
            {
                "id": IMAGE["id"],
                "name": "base",
                "status": "active",
                "disk_format": "qcow2",
                "container_format": "bare",
                "visibility": "public",
                "size": 1024,
            },
        )


def _drivers(cloud: AllInOne) -> dict[str, FakeDriver]:
    found = {}
    for name, svc in cloud.computes.items():
        node: Any = svc.hooks[0]
        found[name] = node.driver
    return found


def _guests(cloud: AllInOne) -> dict[str, set[str]]:
    return {name: set(d.instances) for name, d in _drivers(cloud).items()}


async def _boot(cloud: AllInOne, ctxt: RequestContext) -> str:
    (inst,) = await cloud.api.create_servers(ctxt, name="a", flavor="small", image=IMAGE)
    await cloud.wait_tasks([inst.uuid])
    return inst.uuid


async def _boot_with_port(cloud: AllInOne, ctxt: RequestContext) -> str:
    service = NetworkService(cloud.db, cloud.conf)
    net = await service.create_network(ctxt, {"name": "net"})
    await service.create_subnet(ctxt, {"network_id": net["id"], "cidr": "10.9.0.0/24"})
    nics = await network_ports.resolve(service, ctxt, [{"uuid": net["id"]}], None, 1)
    (inst,) = await cloud.api.create_servers(
        ctxt, name="a", flavor="small", image=IMAGE, network_requests=nics
    )
    await cloud.wait_tasks([inst.uuid])
    return inst.uuid


async def _events(cloud: AllInOne, uuid: str) -> dict[str, list[str]]:
    """Action name -> the names of its events, for every action of the instance."""
    found: dict[str, list[str]] = {}
    async with cloud.db.reader() as conn:
        for action in await actions.actions_get(conn, uuid):
            events = await actions.events_get(conn, action["id"])
            found.setdefault(action["action"], []).extend(e["event"] for e in events)
    return found


async def _image(cloud: AllInOne, image_id: str) -> dict[str, Any] | None:
    async with cloud.db.reader() as conn:
        rows = await images.get_all(conn, all_visible=True, ids=[image_id])
    return rows[0] if rows else None


async def _images_named(cloud: AllInOne, name: str) -> list[dict[str, Any]]:
    async with cloud.db.reader() as conn:
        rows = await images.get_all(conn, all_visible=True)
    return [r for r in rows if r["name"] == name]


async def test_shelve_keeps_the_guest_then_offload_frees_the_host_and_unshelve_schedules(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    overrides = {"DEFAULT": {"shelved_offload_time": -1}}
    async with cloud_with_image_api(tmp_path, hosts=2, overrides=overrides) as cloud:
        await _prepare(cloud)
        uuid = await _boot_with_port(cloud, ctxt)
        (row,) = await cloud.instances([uuid])
        first_host = row["host"]
        await cloud.api.shelve_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        assert (row["vm_state"], row["task_state"], row["power_state"]) == ("shelved", None, 4)
        assert row["host"] == first_host
        sysmeta = row["system_metadata"]
        assert sysmeta["shelved_host"] == first_host
        assert "shelved_at" in sysmeta
        snapshot = await _image(cloud, sysmeta["shelved_image_id"])
        assert snapshot is not None and snapshot["name"] == "a-shelved", snapshot
        assert snapshot["status"] == "active" and snapshot["disk_format"] == "raw"
        assert snapshot["properties"]["image_type"] == "snapshot"
        assert snapshot["properties"]["instance_uuid"] == uuid
        # Shelved, not offloaded: unshelve powers it on where it is, and the
        # snapshot it no longer needs is deleted (Nova's start of a shelved server).
        with pytest.raises(exception.UnshelveInstanceInvalidState):
            await cloud.api.unshelve_server(ctxt, uuid, set_zone=True, zone="nova")
        await cloud.api.unshelve_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        assert (row["vm_state"], row["power_state"], row["host"]) == ("active", 1, first_host)
        assert await _image(cloud, snapshot["id"]) is None
        assert not {"shelved_at", "shelved_host", "shelved_image_id"} & set(row["system_metadata"])

        await cloud.api.shelve_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        await cloud.api.shelve_offload_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        assert (row["vm_state"], row["task_state"], row["power_state"]) == (
            "shelved_offloaded",
            None,
            0,
        )
        assert (row["host"], row["node"]) == (None, None)
        shelved_id = row["system_metadata"]["shelved_image_id"]
        assert all(uuid not in g for g in _guests(cloud).values())
        async with cloud.db.reader() as conn:
            assert not await compute_nodes_api.holds_allocations(conn, uuid)
        assert await check_consistent(cloud.db, uuid, drivers=_drivers(cloud)) == []
        other = next(h for h in cloud.computes if h != first_host)
        await cloud.api.unshelve_server(ctxt, uuid, host=other)
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        assert (row["vm_state"], row["task_state"], row["host"]) == ("active", None, other)
        assert uuid in _guests(cloud)[other]
        # Spawned from the snapshot, which is gone now; its image_ref is still
        # the image it was built from, as in Nova.
        assert _drivers(cloud)[other].instances[uuid].image_id == shelved_id
        assert row["image_ref"] == IMAGE["id"]
        assert await _image(cloud, shelved_id) is None
        assert "shelved_image_id" not in row["system_metadata"]
        assert await check_consistent(cloud.db, uuid, drivers=_drivers(cloud)) == []
        events = await _events(cloud, uuid)
        assert events["shelveOffload"] == ["compute_shelve_offload_instance"]
        assert events["unshelve"] == ["compute_unshelve_instance"] * 2


async def test_shelve_with_offload_time_zero_offloads_at_once_and_keeps_the_disk(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    async with cloud_with_image_api(tmp_path, hosts=1) as cloud:
        await _prepare(cloud)
        uuid = await _boot(cloud, ctxt)
        (host,) = cloud.computes
        await cloud.api.shelve_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        assert (row["vm_state"], row["host"]) == ("shelved_offloaded", None)
        events = await _events(cloud, uuid)
        assert events["shelve"] == ["compute_shelve_instance", "compute_shelve_offload_instance"]
        # The image holds the guest's disk as it was when shelved.
        image_id = row["system_metadata"]["shelved_image_id"]
        disk = json.loads((tmp_path / "images" / image_id).read_bytes())
        assert disk["uuid"] == uuid
        assert f"fake guest {uuid}: booted on {host}" in disk["console"][-2]
        assert disk["console"][-1].endswith("powered off")
        # No host can take it: the unshelve fails, and it stays offloaded with its image.
        await cloud.api.unshelve_server(ctxt, uuid, host="no-such-host")
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        assert (row["vm_state"], row["task_state"], row["host"]) == (
            "shelved_offloaded",
            None,
            None,
        )
        assert (await _image(cloud, image_id) or {}).get("status") == "active"
        assert await check_consistent(cloud.db, uuid, drivers=_drivers(cloud)) == []
        await cloud.api.unshelve_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        assert (row["vm_state"], row["host"]) == ("active", host)
        assert _drivers(cloud)[host].instances[uuid].image_id == image_id
        assert await _image(cloud, image_id) is None
        assert not (tmp_path / "images" / image_id).exists()


async def test_a_failed_upload_leaves_the_server_active_and_no_image(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    async with cloud_with_image_api(tmp_path, hosts=1) as cloud:
        await _prepare(cloud)
        uuid = await _boot(cloud, ctxt)
        (host,) = cloud.computes
        cloud.faults.fail_calls["snapshot"] = {"*"}
        await cloud.api.shelve_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        assert (row["vm_state"], row["task_state"], row["power_state"]) == ("active", None, 1)
        assert row["host"] == host and "shelved_image_id" not in row["system_metadata"]
        # Running again on its host, and no half image left behind.
        assert _drivers(cloud)[host].instances[uuid].state == 1
        assert await _images_named(cloud, "a-shelved") == []
        assert list((tmp_path / "images").glob("*")) == []
        async with cloud.db.reader() as conn:
            faults = await instances_api.faults_get_by_instance_uuids(conn, [uuid])
        assert "snapshot fails" in str(faults), faults
        events = await _events(cloud, uuid)
        assert events["shelve"] == ["compute_shelve_instance", "conductor_shelve_failed"]
        # It shelves once the host can snapshot again.
        cloud.faults.fail_calls.clear()
        await cloud.api.shelve_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        assert row["vm_state"] == "shelved_offloaded"


async def test_deleting_a_shelved_server_deletes_its_snapshot(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    async with cloud_with_image_api(tmp_path, hosts=1) as cloud:
        await _prepare(cloud)
        uuid = await _boot(cloud, ctxt)
        await cloud.api.shelve_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        image_id = row["system_metadata"]["shelved_image_id"]
        assert await _image(cloud, image_id) is not None
        await cloud.api.delete_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        assert await _image(cloud, image_id) is None
        assert not (tmp_path / "images" / image_id).exists()


async def test_unshelve_refuses_when_the_snapshot_is_gone(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    async with cloud_with_image_api(tmp_path, hosts=1) as cloud:
        await _prepare(cloud)
        uuid = await _boot(cloud, ctxt)
        await cloud.api.shelve_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        (row,) = await cloud.instances([uuid])
        async with cloud.db.writer() as conn:
            await images.destroy(conn, row["system_metadata"]["shelved_image_id"])
        with pytest.raises(exception.ShelvedImageNotFound) as caught:
            await cloud.api.unshelve_server(ctxt, uuid)
        assert caught.value.code == 409
        (after,) = await cloud.instances([uuid])
        assert (after["vm_state"], after["task_state"]) == ("shelved_offloaded", None)


async def test_conductors_offload_what_was_shelved_long_enough(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    overrides = {"DEFAULT": {"shelved_offload_time": 1}}
    async with cloud_with_image_api(tmp_path, hosts=1, overrides=overrides) as cloud:
        await _prepare(cloud)
        uuid = await _boot(cloud, ctxt)
        await cloud.api.shelve_server(ctxt, uuid)
        for _ in range(600):
            (row,) = await cloud.instances([uuid])
            if row["vm_state"] == "shelved_offloaded":
                break
            await asyncio.sleep(0.1)
        assert (row["vm_state"], row["host"]) == ("shelved_offloaded", None)
        assert "shelved_image_id" in row["system_metadata"]


async def test_shelve_past_the_image_count_quota_is_refused_and_the_server_stays(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    """Shelve's snapshot is an image like createImage's: a project at its
    image_count_total cannot shelve (413), and the server is left running."""
    async with cloud_with_image_api(tmp_path, hosts=1) as cloud:
        await _prepare(cloud)
        uuid = await _boot(cloud, ctxt)
        assert ctxt.project_id
        async with cloud.db.writer() as conn:
            await quotas_db.limits_set(conn, ctxt.project_id, {"image_count_total": 0})
        with pytest.raises(exception.ImageQuotaExceeded):
            await cloud.api.shelve_server(ctxt, uuid)
        (row,) = await cloud.instances([uuid])
        assert (row["vm_state"], row["task_state"]) == ("active", None)
        assert await _images_named(cloud, "a-shelved") == []
