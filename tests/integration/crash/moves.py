"""Driving move operations in a ProcessCloud for the crash tests: ask, wait, check.

The moves are asked for the way the API asks for them (``MovesAPI``, as
``api.<host>`` on the run's broker), so the task rows, migration records and
kicks are the real ones; what happens next is up to the conductor, scheduler
and compute processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, update

from nubes import config, exception
from nubes.api.moves import MovesAPI
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.api import tasks as tasks_api
from nubes.db.models import services
from nubes.rpc.transport import get_transport
from nubes.testing.moves import check_consistent
from nubes.testing.processes import ProcessCloud
from tests.integration.crash import checks

#: The flavor a resize goes to (checks.FLAVOR is where servers start).
BIGGER: dict[str, Any] = {
    "flavorid": "crash-bigger", "name": "crash-bigger", "vcpus": 2, "memory_mb": 1024, "root_gb": 2,
}  # fmt: skip
#: A second active image for rebuilds (the API checks the image registry).
REBUILD_IMAGE = "5e1f0c3a-6b2d-4c41-9d0e-00000000cafe"

Ask = Callable[[MovesAPI, RequestContext, str], Awaitable[None]]


def context() -> RequestContext:
    return RequestContext(user_id="crash-user", project_id="crash-project", roles=["admin"])


async def ensure_records(cloud: ProcessCloud) -> None:
    """The bigger flavor and the rebuild image, once per cloud."""
    from nubes.db.api import images

    assert cloud.db is not None
    async with cloud.db.writer() as conn:
        try:
            await flavors.get_by_flavor_id(conn, BIGGER["flavorid"])
        except exception.NotFound:
            await flavors.create(conn, BIGGER)
        try:
            await images.get(conn, REBUILD_IMAGE)
        except exception.ImageNotFound:
            await images.create(
                conn,
                {
                    "id": REBUILD_IMAGE,
                    "name": "crash-rebuild",
                    "status": "active",
                    "disk_format": "qcow2",
                    "container_format": "bare",
                    "visibility": "public",
                    "min_disk": 0,
                    "min_ram": 0,
                    "size": 1024,
                },
            )


async def ask(cloud: ProcessCloud, request: Ask, instance_uuid: str) -> None:
    """Run ``request(api, ctxt, uuid)`` through a MovesAPI connected as the cloud's API."""
    assert cloud.db is not None
    conf = config.new_config()
    conf([])
    # Every kill point boots more servers in the one project; quotas are not under test.
    for resource in ("instances", "cores", "ram"):
        conf.set_override(resource, -1, "quota")
    transport = get_transport(cloud.url_for(f"api.{cloud.api_host}"))
    await transport.connect()
    try:
        api = MovesAPI(cloud.db, ConductorAPI(transport), conf=conf)
        await request(api, context(), instance_uuid)
    finally:
        await transport.close()


async def settled(cloud: ProcessCloud, instance_uuid: str, timeout: float = 60.0) -> dict[str, Any]:
    """The instance row once no task of it is active and it has no task_state."""
    assert cloud.db is not None
    deadline = time.monotonic() + timeout
    while True:
        async with cloud.db.reader() as conn:
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            active = await tasks_api.get_active_for_instance(conn, instance_uuid)
        if active is None and row["task_state"] is None:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{instance_uuid} still {row['vm_state']}/{row['task_state']} on {row['host']}, "
                f"task {active and (active['kind'], active['step'], active['owner'])} "
                f"after {timeout}s\n{cloud.describe()}"
            )
        await asyncio.sleep(0.2)


async def one_server(cloud: ProcessCloud, name: str) -> dict[str, Any]:
    """A new ACTIVE server (a conductor must be running)."""
    uuids = await checks.create_servers(cloud, 1, name=name)
    row = await settled(cloud, uuids[0])
    assert row["vm_state"] == "active", row
    return row


async def problems(cloud: ProcessCloud, instance_uuid: str) -> list[str]:
    assert cloud.db is not None
    return await check_consistent(cloud.db, instance_uuid)


async def migrations_of(cloud: ProcessCloud, instance_uuid: str) -> list[dict[str, Any]]:
    assert cloud.db is not None
    async with cloud.db.reader() as conn:
        return await migrations_api.list_by_instance(conn, instance_uuid)


async def force_down(cloud: ProcessCloud, host: str, down: bool = True) -> None:
    """What ``openstack compute service set --down`` writes."""
    assert cloud.db is not None
    async with cloud.db.writer() as conn:
        await conn.execute(
            update(services)
            .where(services.c.host == host, services.c.binary == "compute")
            .values(forced_down=down)
        )


async def awaiting(
    cloud: ProcessCloud, instance_uuid: str, step: str, timeout: float = 30.0
) -> None:
    """Until the instance's move task asked a host for ``step`` (or has gone past it).

    A quick step can start and end between two looks: once the task has
    asked for it (``payload.tries``), or ended, this returns all the same —
    a kill then lands at a later step boundary, which is as good a kill point.
    """
    assert cloud.db is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with cloud.db.reader() as conn:
            task = await tasks_api.get_active_for_instance(conn, instance_uuid)
        # Called once the move was asked for: no active task means it ended.
        if task is None or step in ((task.get("payload") or {}).get("tries") or {}):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{instance_uuid} never got to {step}:\n{cloud.describe()}")


async def task_rows(cloud: ProcessCloud, instance_uuid: str) -> list[dict[str, Any]]:
    from nubes.db.models import conductor_tasks

    assert cloud.db is not None
    async with cloud.db.reader() as conn:
        result = await conn.execute(
            select(conductor_tasks)
            .where(conductor_tasks.c.instance_uuid == instance_uuid)
            .order_by(conductor_tasks.c.id)
        )
        return [dict(r) for r in result.mappings()]
