"""Kill the conductor at each step boundary of a createImage, start another:
the snapshot is not lost.

Real processes on RabbitMQ and PostgreSQL: a scheduler, one compute host,
the API (the image API the host uploads to with the conductor's grant) and
a conductor started as ``nubes.testing.crash`` that dies (137) when the
snapshot task reaches the kill point. A second conductor then carries the
task on: the image ends active with the guest's bytes, the server ACTIVE
with no task_state, and no task is left active.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from nubes import config
from nubes.api.servers import ServersAPI
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.api import images as images_db
from nubes.db.api import instances as instances_api
from nubes.rpc.transport import get_transport
from nubes.testing.processes import ProcessCloud
from tests.functional.api.cli import free_port
from tests.integration.crash import checks
from tests.integration.crash.conftest import RESULTS, CloudFactory

KILL_POINTS = [
    # The try committed (host, until when), the host not asked yet.
    "snapshot:after:snapshot",
    # The host asked (it uploads while no conductor runs).
    "snapshot:sent:snapshot",
]


async def _snapshot(cloud: ProcessCloud, uuid: str) -> str:
    """createImage of ``uuid`` through ServersAPI, as the API service does."""
    assert cloud.db is not None
    conf = config.new_config()
    conf([])
    transport = get_transport(cloud.url_for(f"api.{cloud.api_host}"))
    await transport.connect()
    try:
        api = ServersAPI(cloud.db, ConductorAPI(transport), conf=conf)
        ctxt = RequestContext(user_id="crash-user", project_id="crash-project", roles=["member"])
        return await api.snapshot_server(ctxt, uuid, "crash-snap")
    finally:
        await transport.close()


async def _wait_image(cloud: ProcessCloud, image_id: str, uuid: str) -> dict[str, object]:
    assert cloud.db is not None
    deadline = time.monotonic() + 60
    while True:
        async with cloud.db.reader() as conn:
            image = await images_db.get(conn, image_id)
            row = await instances_api.get_by_uuid(conn, uuid)
        if image["status"] == "active" and row["task_state"] is None:
            return image
        assert time.monotonic() < deadline, (image["status"], row["task_state"], cloud.describe())
        await asyncio.sleep(0.2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("point", KILL_POINTS)
async def test_conductor_killed_mid_snapshot(
    process_cloud: CloudFactory, point: str, tmp_path: Path
) -> None:
    RESULTS[point] = "did not finish"
    port = free_port()
    image_dir = tmp_path / "images"
    cloud = await process_cloud(
        {
            "compute": {"image_api_endpoint": f"http://127.0.0.1:{port}/image"},
            "api": {"image_dir": str(image_dir)},
        },
        hosts=1,
    )
    cloud.controller_options = {"DEFAULT": {"image_grant_secret": "controllers-only"}}
    scheduler = await cloud.start_scheduler()
    first = await cloud.start_conductor("a", crash_at=point)
    api = await cloud.start_api(port, image_dir)
    await cloud.wait_serving([scheduler, first])
    await api.wait_log(r"API listening on", timeout=60)
    computes = await cloud.start_computes()
    await cloud.wait_serving(list(computes.values()))
    await cloud.wait_hosts_registered()

    (uuid,) = await checks.create_servers(cloud, 1)
    rows = await checks.wait_settled(cloud, [uuid])
    assert rows[uuid]["vm_state"] == "active"
    image_id = await _snapshot(cloud, uuid)
    code = await first.wait_exit(timeout=30)
    assert code == 137, f"the first conductor exited with {code}:\n{first.tail()}"
    assert f"crashing at {point}" in first.log()

    second = await cloud.start_conductor("b")
    await cloud.wait_serving([second])
    image = await _wait_image(cloud, image_id, uuid)
    data = (image_dir / image_id).read_bytes()
    assert uuid.encode() in data and image["size"] == len(data)
    rows = await checks.wait_settled(cloud, [uuid])
    assert rows[uuid]["vm_state"] == "active"
    RESULTS[point] = "consistent"
