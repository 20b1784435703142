"""createImage and createBackup with every service in one process (memory://
+ SQLite, fake hosts under their own identities) and the image API served
over a real socket, where the hosts upload with the conductor's grants.

What the CLI tests (tests/functional/api/test_openstack_cli_snapshots.py)
cannot reach: a host whose snapshot fails, rotation of several backups, and
the image's data checked against the guest the host keeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from nubes import exception
from nubes.api.app import build_app
from nubes.api.server import bind_socket
from nubes.api.state import ApiState
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.db.api import images as images_db
from nubes.db.api import quotas as quotas_db
from nubes.db.models import instance_actions_events, instance_faults
from nubes.testing.allinone import AllInOne

pytestmark = pytest.mark.timeout(180)

IMAGE = {"id": "img-1", "properties": {}}
CTXT = RequestContext(user_id="u1", project_id="p1", roles=["member"])


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[AllInOne]:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    c = await AllInOne.start(
        f"sqlite:///{tmp_path / 'snap.sqlite'}",
        hosts=1,
        overrides={
            "DEFAULT": {"image_grant_secret": "controllers-only", "state_path": str(tmp_path)},
            "compute": {"image_api_endpoint": f"http://127.0.0.1:{port}/image"},
        },
    )
    async with c.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "one", "name": "one", "vcpus": 1, "memory_mb": 256, "root_gb": 1}
        )
    state = ApiState(conf=c.conf, db=c.db, transport=c.api_transport)
    server = uvicorn.Server(uvicorn.Config(build_app(state), log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    yield c
    server.should_exit = True
    await serving
    await c.stop()


async def _server(cloud: AllInOne) -> dict[str, Any]:
    (inst,) = await cloud.api.create_servers(CTXT, name="s", flavor="one", image=IMAGE)
    await cloud.wait_tasks([inst.uuid])
    (row,) = await cloud.instances([inst.uuid])
    assert row["vm_state"] == "active"
    return row


async def _image(cloud: AllInOne, image_id: str) -> dict[str, Any] | None:
    async with cloud.db.reader() as conn:
        rows = await images_db.get_all(conn, all_visible=True, ids=[image_id])
    return rows[0] if rows else None


async def test_a_snapshot_holds_the_guests_bytes_and_leaves_the_server_as_it_was(
    cloud: AllInOne, tmp_path: Path
) -> None:
    row = await _server(cloud)
    image_id = await cloud.api.snapshot_server(CTXT, row["uuid"], "snap", {"purpose": "test"})
    await cloud.wait_tasks([row["uuid"]])
    image = await _image(cloud, image_id)
    assert image is not None and image["status"] == "active", image
    assert image["disk_format"] == "raw" and image["container_format"] == "bare"
    assert image["owner"] == "p1" and image["visibility"] == "private"
    props = image["properties"]
    assert props == {
        "image_type": "snapshot",
        "instance_uuid": row["uuid"],
        "user_id": "u1",
        "base_image_ref": "img-1",
        "purpose": "test",
    }
    data = (tmp_path / "images" / image_id).read_bytes()
    assert image["size"] == len(data)
    guest = json.loads(data)
    assert guest["uuid"] == row["uuid"] and guest["vcpus"] == 1
    assert any("booted on" in line for line in guest["console"])
    (after,) = await cloud.instances([row["uuid"]])
    assert after["vm_state"] == "active" and after["task_state"] is None
    async with cloud.db.reader() as conn:
        events = (
            await conn.execute(
                select(instance_actions_events.c.event, instance_actions_events.c.result)
            )
        ).all()
    assert ("compute_snapshot_instance", "Success") in [tuple(e) for e in events]


async def test_a_failed_snapshot_deletes_the_image_and_records_a_fault(cloud: AllInOne) -> None:
    row = await _server(cloud)
    cloud.faults.fail_calls["snapshot"] = {"*"}
    image_id = await cloud.api.snapshot_server(CTXT, row["uuid"], "broken")
    await cloud.wait_tasks([row["uuid"]])
    assert await _image(cloud, image_id) is None
    (after,) = await cloud.instances([row["uuid"]])
    assert after["vm_state"] == "active" and after["task_state"] is None
    async with cloud.db.reader() as conn:
        faults = (
            await conn.execute(
                select(instance_faults.c.message).where(
                    instance_faults.c.instance_uuid == row["uuid"]
                )
            )
        ).all()
    assert any("snapshot" in f.message for f in faults), faults
    # The server is usable again: the next snapshot works.
    cloud.faults.fail_calls.clear()
    again = await cloud.api.snapshot_server(CTXT, row["uuid"], "fixed")
    await cloud.wait_tasks([row["uuid"]])
    image = await _image(cloud, again)
    assert image is not None and image["status"] == "active"


async def test_backups_rotate_per_type_keeping_the_newest(cloud: AllInOne) -> None:
    row = await _server(cloud)
    daily = []
    for n in range(4):
        daily.append(
            await cloud.api.snapshot_server(
                CTXT, row["uuid"], f"d{n}", backup_type="daily", rotation=2
            )
        )
        await cloud.wait_tasks([row["uuid"]])
    weekly = await cloud.api.snapshot_server(
        CTXT, row["uuid"], "w", backup_type="weekly", rotation=1
    )
    await cloud.wait_tasks([row["uuid"]])
    kept = [i for i in daily if await _image(cloud, i) is not None]
    assert kept == daily[2:]
    weekly_image = await _image(cloud, weekly)
    assert weekly_image is not None
    assert weekly_image["properties"]["backup_type"] == "weekly"
    assert weekly_image["properties"]["image_type"] == "backup"


async def test_image_metadata_counts_against_metadata_items(cloud: AllInOne) -> None:
    """Nova's image metadata quota: more properties than ``metadata_items``
    is refused (403) before anything is recorded."""
    row = await _server(cloud)
    cloud.conf.set_override("metadata_items", 2, group="quota")
    too_many = {f"k{i}": "v" for i in range(3)}
    with pytest.raises(exception.MetadataLimitExceeded):
        await cloud.api.snapshot_server(CTXT, row["uuid"], "big", too_many)
    async with cloud.db.reader() as conn:
        assert await images_db.get_all(conn, all_visible=True) == []
    (after,) = await cloud.instances([row["uuid"]])
    assert after["task_state"] is None


async def test_a_conductor_capped_below_1_8_fails_the_snapshot_before_any_host_is_sent_it(
    cloud: AllInOne,
) -> None:
    """A host still serving compute 1.7 would drop ``snapshot_instance``: the
    capped conductor refuses it locally, and the task fails with a fault
    saying so, the image deleted and the server left as it was."""
    row = await _server(cloud)
    for engine in cloud.engines:
        engine.compute.client.set_version_cap("1.7")
    image_id = await cloud.api.snapshot_server(CTXT, row["uuid"], "too-new")
    await cloud.wait_tasks([row["uuid"]])
    assert await _image(cloud, image_id) is None
    (after,) = await cloud.instances([row["uuid"]])
    assert after["vm_state"] == "active" and after["task_state"] is None
    async with cloud.db.reader() as conn:
        messages = [
            f.message
            for f in (
                await conn.execute(
                    select(instance_faults.c.message).where(
                        instance_faults.c.instance_uuid == row["uuid"]
                    )
                )
            ).all()
        ]
    assert any("1.8" in m for m in messages), messages


async def test_a_project_at_its_image_count_quota_gets_no_snapshot(cloud: AllInOne) -> None:
    """createImage records its image the way the image API's create does, so
    Glance's image_count_total refuses it (413) and nothing is left: no
    image, no task, the server idle."""
    row = await _server(cloud)
    async with cloud.db.writer() as conn:
        await quotas_db.limits_set(conn, "p1", {"image_count_total": 0})
    with pytest.raises(exception.ImageQuotaExceeded) as raised:
        await cloud.api.snapshot_server(CTXT, row["uuid"], "snap", None)
    assert raised.value.code == 413
    assert "image_count_total is over limit of 0" in str(raised.value)
    async with cloud.db.reader() as conn:
        assert await images_db.get_all(conn, all_visible=True) == []
    (after,) = await cloud.instances([row["uuid"]])
    assert after["vm_state"] == "active" and after["task_state"] is None
    # Within the quota the same request goes through.
    async with cloud.db.writer() as conn:
        await quotas_db.limits_set(conn, "p1", {"image_count_total": 1})
    image_id = await cloud.api.snapshot_server(CTXT, row["uuid"], "snap", None)
    await cloud.wait_tasks([row["uuid"]])
    image = await _image(cloud, image_id)
    assert image is not None and image["status"] == "active"
