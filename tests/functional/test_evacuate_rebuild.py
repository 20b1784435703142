"""Rebuild in place and evacuation with every service in one process.

memory:// + SQLite, the real conductor task engine, scheduler and fake
compute hosts. Each operation is started the way the API records it
(docs/moves.md, "What the API records": the instance's task_state, the
migration row, the action and the task in one transaction, then a kick),
so these tests depend on the conductor and compute sides only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from nubes.api import intents, move_records
from nubes.compute.host import ComputeHost
from nubes.compute.launcher import compute_service
from nubes.compute.repair import Row
from nubes.compute.virt.fake import FakeDriver
from nubes.conductor.tasks.states import FIRST_STEP, TaskKind
from nubes.context import RequestContext
from nubes.db.api import actions, flavors, services, tasks
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.api.tasks import TaskStatus
from nubes.db.models import allocations, compute_nodes, instance_faults
from nubes.db.types import utcnow
from nubes.objects.states import PowerState
from nubes.rpc.transport import get_transport
from nubes.service import service_identity
from nubes.testing.allinone import AllInOne
from nubes.testing.moves import check_consistent, check_node_usage

pytestmark = pytest.mark.timeout(120)

IMAGE = {"id": "img-1", "properties": {}}
NEW_IMAGE = {"id": "img-2", "properties": {}}


@pytest.fixture
def ctxt() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1")


async def _cloud(tmp_path: Path, hosts: int, **overrides: Any) -> AllInOne:
    cloud = await AllInOne.start(
        f"sqlite:///{tmp_path / 'moves.sqlite'}", hosts=hosts, overrides=overrides
    )
    async with cloud.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 512, "root_gb": 1}
        )
    return cloud


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[AllInOne]:
    c = await _cloud(tmp_path, hosts=3)
    yield c
    await c.stop()


# -- what the API records -------------------------------------------------------------------


async def _start(
    cloud: AllInOne,
    ctxt: RequestContext,
    uuid: str,
    kind: TaskKind,
    action: str,
    payload: dict[str, Any],
    deadline: float = 600.0,
    **instance: Any,
) -> None:
    """The instance rebuilding, the action and the task in one transaction; then a kick."""
    async with cloud.db.writer() as conn:
        row = await instances_api.get_by_uuid(conn, uuid)
        await instances_api.update(
            conn,
            uuid,
            {"task_state": "rebuilding", **instance},
            expected_vm_state=row["vm_state"],
            expected_task_state=None,
        )
        await intents.record_action(conn, ctxt, uuid, action)
        task = await tasks.create(
            conn,
            kind=kind.value,
            instance_uuid=uuid,
            step=FIRST_STEP[kind].value,
            # The API's rule (one home): running unless it was STOPPED.
            payload={**payload, "power_on": move_records.running(row)},
            context=ctxt.to_record(),
            deadline=utcnow() + dt.timedelta(seconds=deadline),
        )
    await cloud.api.conductor.kick(ctxt, [task["id"]])


async def rebuild(
    cloud: AllInOne,
    ctxt: RequestContext,
    uuid: str,
    image: dict[str, Any],
    deadline: float = 600.0,
) -> None:
    await _start(
        cloud,
        ctxt,
        uuid,
        TaskKind.REBUILD,
        "rebuild",
        {"image": image},
        deadline=deadline,
        image_ref=image["id"],
    )


async def evacuate(
    cloud: AllInOne,
    ctxt: RequestContext,
    uuid: str,
    host: str | None = None,
    deadline: float = 600.0,
) -> int:
    """An evacuation of the instance from its (down) host; the migration's id."""
    async with cloud.db.writer() as conn:
        row = await instances_api.get_by_uuid(conn, uuid)
        migration = await migrations_api.create(
            conn,
            {
                "instance_uuid": uuid,
                "source_compute": row["host"],
                "source_node": row["node"],
                "dest_compute": host,
                "migration_type": "evacuation",
                "status": "accepted",
            },
        )
    payload = {"migration_id": migration["id"], "host": host, "image": IMAGE}
    await _start(cloud, ctxt, uuid, TaskKind.EVACUATE, "evacuate", payload, deadline)
    return int(migration["id"])


# -- looking at the cloud ------------------------------------------------------------------


async def boot(cloud: AllInOne, ctxt: RequestContext, name: str = "vm") -> dict[str, Any]:
    (inst,) = await cloud.api.create_servers(ctxt, name=name, flavor="small", image=IMAGE)
    await cloud.wait_tasks([inst.uuid])
    (row,) = await cloud.instances([inst.uuid])
    assert row["vm_state"] == "active", row
    return row


async def instance(cloud: AllInOne, uuid: str) -> dict[str, Any]:
    (row,) = await cloud.instances([uuid])
    return row


async def last_task(cloud: AllInOne, uuid: str) -> dict[str, Any]:
    async with cloud.db.reader() as conn:
        return (await tasks.list_for_instance(conn, uuid))[-1]


async def migration(cloud: AllInOne, migration_id: int) -> dict[str, Any]:
    async with cloud.db.reader() as conn:
        return await migrations_api.get_by_id(conn, migration_id)


async def claims(cloud: AllInOne) -> dict[str, list[str]]:
    """Consumer uuid -> the nodes it holds resources on."""
    a, cn = allocations, compute_nodes
    stmt = select(a.c.consumer_uuid, cn.c.hypervisor_hostname).select_from(
        a.join(cn, cn.c.id == a.c.compute_node_id)
    )
    found: dict[str, list[str]] = {}
    async with cloud.db.reader() as conn:
        for consumer, node in (await conn.execute(stmt)).all():
            found.setdefault(consumer, []).append(node)
    return found


async def nodes_used(cloud: AllInOne) -> dict[str, int]:
    async with cloud.db.reader() as conn:
        rows = await conn.execute(
            select(compute_nodes.c.hypervisor_hostname, compute_nodes.c.vcpus_used)
        )
        return {r[0]: int(r[1]) for r in rows}


async def faults(cloud: AllInOne, uuid: str) -> list[str]:
    f = instance_faults
    async with cloud.db.reader() as conn:
        stmt = select(f.c.message).where(f.c.instance_uuid == uuid).order_by(f.c.id)
        return list((await conn.execute(stmt)).scalars().all())


async def events(cloud: AllInOne, uuid: str, action: str) -> list[tuple[str, str | None]]:
    async with cloud.db.reader() as conn:
        (found,) = [a for a in await actions.actions_get(conn, uuid) if a["action"] == action]
        return [(e["event"], e["result"]) for e in await actions.events_get(conn, found["id"])]


async def action_message(cloud: AllInOne, uuid: str, action: str) -> str | None:
    async with cloud.db.reader() as conn:
        (found,) = [a for a in await actions.actions_get(conn, uuid) if a["action"] == action]
    assert found["finish_time"] is not None
    return found["message"]


def driver(cloud: AllInOne, host: str) -> FakeDriver:
    node: ComputeHost = cloud.computes[host].hooks[0]  # type: ignore[assignment]
    assert isinstance(node.driver, FakeDriver)
    return node.driver


async def consistent(cloud: AllInOne, uuid: str, **down: FakeDriver) -> None:
    """docs/moves.md rule 4 (nubes/testing/moves.py), guests included: those of the
    running hosts, and of the hosts named in ``down`` (stopped, hypervisor kept)."""
    drivers = {host: driver(cloud, host) for host in cloud.computes} | down
    assert await check_consistent(cloud.db, uuid, drivers=drivers) == []
    assert await check_node_usage(cloud.db) == []


async def take_down(cloud: AllInOne, host: str) -> FakeDriver:
    """Stop the host's compute service and force it down, as an operator would before
    evacuating; its hypervisor (the fake driver, with its guests) is kept."""
    kept = driver(cloud, host)
    await cloud.stop_host(host)
    async with cloud.db.writer() as conn:
        svc = await services.get_by_host_and_binary(conn, host, "compute")
        await services.update(conn, svc["id"], {"forced_down": True})
    return kept


async def bring_back(cloud: AllInOne, host: str, hypervisor: FakeDriver) -> ComputeHost:
    """Start the host's compute service again on the same hypervisor; its start done."""
    transport = get_transport(cloud.bus, identity=service_identity("compute", host))
    svc = compute_service(cloud.conf, host, transport=transport, driver=hypervisor)
    cloud.computes[host] = svc
    await svc.start()
    node: ComputeHost = svc.hooks[0]  # type: ignore[assignment]
    deadline = time.monotonic() + 20
    while not node.manager.runner.ready.is_set():
        assert time.monotonic() < deadline, "the host did not finish its start"
        await asyncio.sleep(0.05)
    return node


# -- rebuild ----------------------------------------------------------------------------------


async def test_rebuild_runs_the_new_image(cloud: AllInOne, ctxt: RequestContext):
    row = await boot(cloud, ctxt)
    uuid, host = row["uuid"], row["host"]
    old_guest = driver(cloud, host).instances[uuid]
    await rebuild(cloud, ctxt, uuid, NEW_IMAGE)
    await cloud.wait_tasks([uuid])

    after = await instance(cloud, uuid)
    assert (after["vm_state"], after["task_state"], after["host"]) == ("active", None, host)
    assert after["image_ref"] == "img-2" and after["power_state"] == PowerState.RUNNING
    assert after["launched_at"] > row["launched_at"]
    guest = driver(cloud, host).instances[uuid]
    assert guest is not old_guest and guest.state == PowerState.RUNNING
    assert (await last_task(cloud, uuid))["status"] == TaskStatus.SUCCEEDED
    assert await events(cloud, uuid, "rebuild") == [
        ("compute_rebuild_instance", "Success"),
        ("conductor_rebuild_server", "Success"),
    ]
    assert await action_message(cloud, uuid, "rebuild") is None
    assert list(await claims(cloud)) == [uuid]
    await consistent(cloud, uuid)


async def test_rebuild_of_a_stopped_instance_stays_stopped(cloud: AllInOne, ctxt: RequestContext):
    row = await boot(cloud, ctxt)
    uuid, host = row["uuid"], row["host"]
    await cloud.api.stop_server(ctxt, uuid)
    await cloud.wait_tasks([uuid])
    await rebuild(cloud, ctxt, uuid, NEW_IMAGE)
    await cloud.wait_tasks([uuid])

    after = await instance(cloud, uuid)
    assert (after["vm_state"], after["task_state"]) == ("stopped", None)
    assert after["power_state"] == PowerState.SHUTDOWN and after["image_ref"] == "img-2"
    assert driver(cloud, host).instances[uuid].state == PowerState.SHUTDOWN
    await consistent(cloud, uuid)


async def test_a_failed_rebuild_ends_in_error_with_a_fault(cloud: AllInOne, ctxt: RequestContext):
    row = await boot(cloud, ctxt)
    uuid, host = row["uuid"], row["host"]
    cloud.faults.fail_next["spawn"] = 1
    await rebuild(cloud, ctxt, uuid, NEW_IMAGE)
    await cloud.wait_tasks([uuid])

    after = await instance(cloud, uuid)
    # As in Nova: the old guest is gone, so the instance is in ERROR, still on its host.
    assert (after["vm_state"], after["task_state"], after["host"]) == ("error", None, host)
    assert uuid not in driver(cloud, host).instances
    task = await last_task(cloud, uuid)
    assert task["status"] == TaskStatus.FAILED and "injected" in task["last_error"]
    messages = await faults(cloud, uuid)
    assert any(m.startswith(f"Rebuild on {host} failed") for m in messages), messages
    assert ("conductor_rebuild_server", "Error") in await events(cloud, uuid, "rebuild")
    assert await action_message(cloud, uuid, "rebuild") == actions.ACTION_ERROR_MESSAGE
    # It keeps its claim: the host is still its own (a rebuild or a delete follows).
    assert list(await claims(cloud)) == [uuid]


async def test_rebuild_of_an_instance_in_error_ends_active(cloud: AllInOne, ctxt: RequestContext):
    """Nova stops a rebuilt guest again only when it was STOPPED: a server in
    ERROR (here after a failed rebuild) is rebuilt running, ACTIVE."""
    row = await boot(cloud, ctxt)
    uuid, host = row["uuid"], row["host"]
    cloud.faults.fail_next["spawn"] = 1
    await rebuild(cloud, ctxt, uuid, NEW_IMAGE)
    await cloud.wait_tasks([uuid])
    assert (await instance(cloud, uuid))["vm_state"] == "error"

    await rebuild(cloud, ctxt, uuid, NEW_IMAGE)
    await cloud.wait_tasks([uuid])
    after = await instance(cloud, uuid)
    assert (after["vm_state"], after["task_state"], after["host"]) == ("active", None, host)
    assert after["power_state"] == PowerState.RUNNING
    assert driver(cloud, host).instances[uuid].state == PowerState.RUNNING
    await consistent(cloud, uuid)


# -- evacuate -----------------------------------------------------------------------------------


async def test_evacuate_from_a_forced_down_host_then_the_host_returns(
    tmp_path: Path, ctxt: RequestContext
):
    # Both instances on one host: only the evacuated one's guest may go when it returns.
    cloud = await _cloud(tmp_path, hosts=1)
    try:
        row = await boot(cloud, ctxt, "evacuee")
        stay = await boot(cloud, ctxt, "stays")
        uuid, source = row["uuid"], row["host"]
        assert stay["host"] == source
        await cloud.add_hosts(["fake-1", "fake-2"])
        # The scheduler decides on its view as it is; let it see the new hosts.
        await cloud.scheduler_manager.view.refresh()
        kept = await take_down(cloud, source)

        mid = await evacuate(cloud, ctxt, uuid)
        await cloud.wait_tasks([uuid])

        after = await instance(cloud, uuid)
        dest = after["host"]
        assert dest in ("fake-1", "fake-2")
        assert (after["vm_state"], after["task_state"], after["node"]) == ("active", None, dest)
        assert after["power_state"] == PowerState.RUNNING
        assert driver(cloud, dest).instances[uuid].state == PowerState.RUNNING
        assert (await last_task(cloud, uuid))["status"] == TaskStatus.SUCCEEDED
        mig = await migration(cloud, mid)
        assert (mig["status"], mig["dest_compute"], mig["dest_node"]) == ("done", dest, dest)
        # Claims: the instance's on the destination only; the migration holds nothing.
        held = await claims(cloud)
        assert held == {uuid: [dest], stay["uuid"]: [source]}
        assert (await nodes_used(cloud))[source] == 1
        assert await events(cloud, uuid, "evacuate") == [
            ("compute_rebuild_instance", "Success"),
            ("conductor_rebuild_server", "Success"),
        ]
        await consistent(cloud, uuid)
        # The source's hypervisor still has the old guest while it is down.
        assert {uuid, stay["uuid"]} <= set(kept.instances)

        node = await bring_back(cloud, source, kept)
        report = node.repair_report
        assert report is not None and not report.failed
        assert report.rows == {uuid: Row.EVACUATED, stay["uuid"]: Row.IN_SYNC}
        # Removed by the migration record; the other guest has none and stays.
        assert set(kept.instances) == {stay["uuid"]}
        assert (await migration(cloud, mid))["status"] == "completed"
        assert (await instance(cloud, uuid))["host"] == dest
        assert uuid in driver(cloud, dest).instances
        assert (await instance(cloud, stay["uuid"]))["vm_state"] == "active"
        # Every host up again: one guest per instance, where the database says.
        await consistent(cloud, uuid)
        await consistent(cloud, stay["uuid"])
    finally:
        await cloud.stop()


async def test_evacuate_a_stopped_instance_to_a_named_host(cloud: AllInOne, ctxt: RequestContext):
    row = await boot(cloud, ctxt)
    uuid, source = row["uuid"], row["host"]
    await cloud.api.stop_server(ctxt, uuid)
    await cloud.wait_tasks([uuid])
    target = sorted(set(cloud.computes) - {source})[-1]
    await take_down(cloud, source)

    mid = await evacuate(cloud, ctxt, uuid, host=target)
    await cloud.wait_tasks([uuid])

    after = await instance(cloud, uuid)
    assert (after["vm_state"], after["task_state"], after["host"]) == ("stopped", None, target)
    assert after["power_state"] == PowerState.SHUTDOWN
    assert driver(cloud, target).instances[uuid].state == PowerState.SHUTDOWN
    assert (await migration(cloud, mid))["dest_compute"] == target
    assert await claims(cloud) == {uuid: [target]}
    await consistent(cloud, uuid)


async def test_evacuate_with_no_other_host_rolls_back(tmp_path: Path, ctxt: RequestContext):
    cloud = await _cloud(tmp_path, hosts=1)
    try:
        row = await boot(cloud, ctxt)
        uuid, source = row["uuid"], row["host"]
        kept = await take_down(cloud, source)
        mid = await evacuate(cloud, ctxt, uuid)
        await cloud.wait_tasks([uuid])
        await _check_rolled_back(cloud, kept, uuid, source, mid, "No host to evacuate to")
        assert (await nodes_used(cloud))[source] == 1
    finally:
        await cloud.stop()


async def test_evacuate_failing_on_the_destination_rolls_back(
    cloud: AllInOne, ctxt: RequestContext
):
    row = await boot(cloud, ctxt)
    uuid, source = row["uuid"], row["host"]
    kept = await take_down(cloud, source)
    cloud.faults.fail_next["spawn"] = 1
    mid = await evacuate(cloud, ctxt, uuid)
    await cloud.wait_tasks([uuid])

    mig = await migration(cloud, mid)
    dest = mig["dest_compute"]
    assert dest not in (None, source)
    await _check_rolled_back(cloud, kept, uuid, source, mid, f"Evacuation to {dest} failed")
    # The destination ran the rollback step: nothing of the instance is left there.
    assert uuid not in driver(cloud, dest).instances
    assert (await nodes_used(cloud))[dest] == 0
    names = await events(cloud, uuid, "evacuate")
    assert ("compute_rebuild_instance", "Error") in names
    assert ("conductor_rebuild_server", "Error") in names


async def test_evacuate_whose_destination_reports_too_late_rolls_back(
    tmp_path: Path, ctxt: RequestContext
):
    cloud = await _cloud(tmp_path, hosts=2, conductor={"compute_step_timeout": 1.0})
    try:
        row = await boot(cloud, ctxt)
        uuid, source = row["uuid"], row["host"]
        (dest,) = set(cloud.computes) - {source}
        kept = await take_down(cloud, source)
        cloud.faults.spawn_delay = 2.0
        mid = await evacuate(cloud, ctxt, uuid)
        await cloud.wait_tasks([uuid])
        await _check_rolled_back(cloud, kept, uuid, source, mid, f"{dest} did not report rebuild")
        # The rollback waited for the late spawn, then removed its guest.
        await _both_steps_ended(cloud, dest)
        assert uuid not in driver(cloud, dest).instances
    finally:
        await cloud.stop()


async def test_evacuate_past_its_deadline_rolls_back(tmp_path: Path, ctxt: RequestContext):
    cloud = await _cloud(tmp_path, hosts=2)
    try:
        row = await boot(cloud, ctxt)
        uuid, source = row["uuid"], row["host"]
        (dest,) = set(cloud.computes) - {source}
        kept = await take_down(cloud, source)
        cloud.faults.spawn_delay = 2.0
        mid = await evacuate(cloud, ctxt, uuid, deadline=1.0)
        await cloud.wait_tasks([uuid])
        await _check_rolled_back(
            cloud, kept, uuid, source, mid, "deadline", status=TaskStatus.ROLLED_BACK
        )
        # Asked without waiting, the destination still removes what the late
        # spawn makes: the rollback ends after the spawn.
        await _both_steps_ended(cloud, dest)
        assert uuid not in driver(cloud, dest).instances
    finally:
        await cloud.stop()


async def _both_steps_ended(cloud: AllInOne, host: str) -> None:
    """Until the host finished two steps (the evacuation's rebuild and rollback)."""
    node: ComputeHost = cloud.computes[host].hooks[0]  # type: ignore[assignment]
    deadline = time.monotonic() + 10
    while len(node.manager.runner.steps) < 2:
        assert time.monotonic() < deadline, f"{host} did not finish both steps"
        await asyncio.sleep(0.1)


async def test_rebuild_past_its_deadline_ends_in_error(tmp_path: Path, ctxt: RequestContext):
    cloud = await _cloud(tmp_path, hosts=1)
    try:
        row = await boot(cloud, ctxt)
        uuid = row["uuid"]
        cloud.faults.spawn_delay = 2.0
        await rebuild(cloud, ctxt, uuid, NEW_IMAGE, deadline=1.0)
        await cloud.wait_tasks([uuid])
        after = await instance(cloud, uuid)
        assert (after["vm_state"], after["task_state"]) == ("error", None)
        task = await last_task(cloud, uuid)
        assert task["status"] == TaskStatus.FAILED and "deadline" in task["last_error"]
        assert any("deadline" in m for m in await faults(cloud, uuid))
    finally:
        await cloud.stop()


async def _check_rolled_back(
    cloud: AllInOne,
    kept: FakeDriver,
    uuid: str,
    source: str,
    migration_id: int,
    reason: str,
    *,
    status: TaskStatus = TaskStatus.FAILED,
) -> None:
    after = await instance(cloud, uuid)
    assert (after["vm_state"], after["task_state"]) == ("active", None)
    assert (after["host"], after["node"]) == (source, source)
    task = await last_task(cloud, uuid)
    assert task["status"] == status and reason in task["last_error"], task
    mig = await migration(cloud, migration_id)
    assert mig["status"] == "failed"
    assert await claims(cloud) == {uuid: [source]}
    assert any(reason in m for m in await faults(cloud, uuid))
    assert await action_message(cloud, uuid, "evacuate") == actions.ACTION_ERROR_MESSAGE
    async with cloud.db.reader() as conn:
        used = (await conn.execute(select(func.sum(compute_nodes.c.vcpus_used)))).scalar_one()
    assert used == 1
    # Its guest is the one on the (down) source, and only there.
    assert kept.instances[uuid].state == PowerState.RUNNING
    await consistent(cloud, uuid, **{source: kept})


# -- each driver call failing once --------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "stopped"),
    [("destroy", False), ("spawn", False), ("power_off", True)],
)
async def test_each_rebuild_driver_call_failing_once_ends_consistent(
    cloud: AllInOne, ctxt: RequestContext, call: str, stopped: bool
):
    """Whichever driver call of a rebuild fails, the instance ends in ERROR with a
    fault on its host, claims unchanged, no task left (Nova's rebuild failure)."""
    row = await boot(cloud, ctxt)
    uuid, host = row["uuid"], row["host"]
    if stopped:
        await cloud.api.stop_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
    cloud.faults.fail_next[call] = 1
    await rebuild(cloud, ctxt, uuid, NEW_IMAGE)
    await cloud.wait_tasks([uuid])

    after = await instance(cloud, uuid)
    assert (after["vm_state"], after["task_state"], after["host"]) == ("error", None, host)
    assert cloud.faults.fail_next[call] == 0, f"{call} was never called"
    assert any("injected" in m for m in await faults(cloud, uuid))
    assert (await last_task(cloud, uuid))["status"] == TaskStatus.FAILED
    assert list(await claims(cloud)) == [uuid]
    assert await check_consistent(cloud.db, uuid) == []
    assert await check_node_usage(cloud.db) == []


@pytest.mark.parametrize(
    ("call", "stopped"),
    [("spawn", False), ("power_off", True), ("destroy", False)],
)
async def test_each_evacuate_driver_call_failing_once_ends_consistent(
    cloud: AllInOne, ctxt: RequestContext, call: str, stopped: bool
):
    """A failing spawn or power-off on the destination rolls the evacuation back;
    a destroy failing once in that rollback is tried again. Either way the
    instance ends consistent: back on its source (or on the destination when the
    evacuation went through), claims only where it is."""
    row = await boot(cloud, ctxt)
    uuid, source = row["uuid"], row["host"]
    if stopped:
        await cloud.api.stop_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
    kept = await take_down(cloud, source)
    if call == "destroy":
        # The rollback's destroy fails once after the spawn failed once.
        cloud.faults.fail_next.update({"spawn": 1, "destroy": 1})
    else:
        cloud.faults.fail_next[call] = 1
    mid = await evacuate(cloud, ctxt, uuid)
    await cloud.wait_tasks([uuid])

    assert cloud.faults.fail_next[call] == 0, f"{call} was never called"
    after = await instance(cloud, uuid)
    mig = await migration(cloud, mid)
    assert after["task_state"] is None
    assert mig["status"] == "failed", mig
    assert after["host"] == source
    assert any("injected" in m for m in await faults(cloud, uuid))
    assert uuid not in driver(cloud, mig["dest_compute"]).instances
    await consistent(cloud, uuid, **{source: kept})
