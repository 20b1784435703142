"""Pause, suspend, rescue, crash dumps and password changes, with every service
in one process (memory://, SQLite, the conductor's task engine, fake hosts).

Each action is a task with one host step: the instance walks the state
table's edges, the host's driver does the work, the action and its
``compute_<action>`` event are recorded, and a failure leaves a fault and
the task_state dropped (a failed rescue: ERROR, as Nova).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nubes import exception
from nubes.compute.virt.fake import FakeDriver
from nubes.compute.virt.rescue_layout import GuestDisk
from nubes.context import RequestContext
from nubes.db.api import actions, flavors, images, tasks
from nubes.db.api import compute_nodes as compute_nodes_api
from nubes.db.api import instances as instances_api
from nubes.db.api.tasks import TaskStatus
from nubes.testing.allinone import AllInOne

pytestmark = pytest.mark.timeout(120)

IMAGE = {"id": "img-1", "properties": {}}


@pytest.fixture
def ctxt() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1", roles=["member"])


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[AllInOne]:
    c = await AllInOne.start(f"sqlite:///{tmp_path / 'actions.sqlite'}", hosts=1)
    async with c.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 512}
        )
    yield c
    await c.stop()


async def _boot(cloud: AllInOne, ctxt: RequestContext) -> str:
    (inst,) = await cloud.api.create_servers(ctxt, name="a", flavor="small", image=IMAGE)
    await cloud.wait_tasks([inst.uuid])
    return inst.uuid


def _driver(cloud: AllInOne) -> FakeDriver:
    (svc,) = cloud.computes.values()
    node: Any = svc.hooks[0]
    assert isinstance(node.driver, FakeDriver)
    return node.driver


async def _state(cloud: AllInOne, uuid: str) -> tuple[str, str | None, int]:
    (row,) = await cloud.instances([uuid])
    return row["vm_state"], row["task_state"], row["power_state"]


async def _events(cloud: AllInOne, uuid: str) -> dict[str, list[str]]:
    """Action name -> the names of its events, for every action of the instance."""
    found: dict[str, list[str]] = {}
    async with cloud.db.reader() as conn:
        for action in await actions.actions_get(conn, uuid):
            events = await actions.events_get(conn, action["id"])
            found.setdefault(action["action"], []).extend(e["event"] for e in events)
    return found


async def test_pause_suspend_and_back_walk_nova_states(cloud: AllInOne, ctxt: RequestContext):
    uuid = await _boot(cloud, ctxt)
    steps = [
        (cloud.api.pause_server, ("paused", None, 3)),
        (cloud.api.unpause_server, ("active", None, 1)),
        (cloud.api.suspend_server, ("suspended", None, 7)),
        (cloud.api.resume_server, ("active", None, 1)),
    ]
    for call, expected in steps:
        await call(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        assert await _state(cloud, uuid) == expected, call.__name__
    guest = _driver(cloud).instances[uuid]
    assert any("suspend done" in line for line in guest.console)
    events = await _events(cloud, uuid)
    assert events["pause"] == ["compute_pause_instance"]
    assert events["unpause"] == ["compute_unpause_instance"]
    assert events["suspend"] == ["compute_suspend_instance"]
    assert events["resume"] == ["compute_resume_instance"]
    async with cloud.db.reader() as conn:
        kinds = [(t["kind"], t["status"]) for t in await tasks.list_for_instance(conn, uuid)]
    assert kinds[1:] == [
        ("pause", "succeeded"),
        ("unpause", "succeeded"),
        ("suspend", "succeeded"),
        ("resume", "succeeded"),
    ]


async def test_wrong_states_are_refused_before_anything_is_written(
    cloud: AllInOne, ctxt: RequestContext
):
    uuid = await _boot(cloud, ctxt)
    for call in (cloud.api.unpause_server, cloud.api.resume_server, cloud.api.unrescue_server):
        with pytest.raises(exception.InstanceInvalidState) as info:
            await call(ctxt, uuid)
        assert info.value.code == 409
    await cloud.api.pause_server(ctxt, uuid)
    await cloud.wait_tasks([uuid])
    with pytest.raises(exception.InstanceInvalidState):
        await cloud.api.suspend_server(ctxt, uuid)
    with pytest.raises(exception.InstanceInvalidState):
        await cloud.api.change_password(ctxt, uuid, "pw")
    # A paused guest takes an NMI (Nova's list), but it is not running: 409.
    with pytest.raises(exception.InstanceNotRunning):
        await cloud.api.trigger_crash_dump(ctxt, uuid)
    assert "suspend" not in await _events(cloud, uuid)


RESCUE_IMAGE = "6b7b1d2e-9f3a-4c61-8e57-0c9a4a1b2c3d"


async def _rescue_image(cloud: AllInOne) -> None:
    async with cloud.db.writer() as conn:
        await images.create(
            conn,
            {
                "id": RESCUE_IMAGE,
                "name": "rescue",
                "status": "active",
                "disk_format": "qcow2",
                "container_format": "bare",
                "visibility": "public",
                "size": 1024,
            },
        )


async def test_rescue_and_unrescue(cloud: AllInOne, ctxt: RequestContext):
    uuid = await _boot(cloud, ctxt)
    await _rescue_image(cloud)
    await cloud.api.rescue_server(ctxt, uuid, "rescue-pw", RESCUE_IMAGE)
    await cloud.wait_tasks([uuid])
    assert await _state(cloud, uuid) == ("rescued", None, 1)
    guest = _driver(cloud).instances[uuid]
    assert (guest.rescue_image, guest.admin_password) == (RESCUE_IMAGE, "rescue-pw")
    # Rescued: no pause, no second rescue; unrescue brings its own disk back.
    with pytest.raises(exception.InstanceInvalidState):
        await cloud.api.pause_server(ctxt, uuid)
    await cloud.api.unrescue_server(ctxt, uuid)
    await cloud.wait_tasks([uuid])
    assert await _state(cloud, uuid) == ("active", None, 1)
    assert guest.rescue_image is None
    events = await _events(cloud, uuid)
    assert events["rescue"] == ["compute_rescue_instance"]
    assert events["unrescue"] == ["compute_unrescue_instance"]
    # The image it was built from is not in the image service: 404 as Nova.
    with pytest.raises(exception.ImageNotFound):
        await cloud.api.rescue_server(ctxt, uuid, "pw")
    async with cloud.db.writer() as conn:
        await instances_api.update(conn, uuid, {"image_ref": ""})
    with pytest.raises(exception.InstanceNotRescuable) as info:
        await cloud.api.rescue_server(ctxt, uuid, "pw")
    assert info.value.code == 400


async def test_rescue_boots_without_the_ephemeral_and_swap_disks_as_nova(
    cloud: AllInOne, ctxt: RequestContext
) -> None:
    # Regression: a (non-stable) rescue kept them attached after the root
    # disk; Nova's rescue has the rescue disk, the root disk and the config
    # drive only, and the guest gets the others back at unrescue.
    async with cloud.db.writer() as conn:
        await flavors.create(
            conn,
            {
                "flavorid": "local",
                "name": "local",
                "vcpus": 1,
                "memory_mb": 512,
                "ephemeral_gb": 1,
                "swap": 64,
            },
        )
    (inst,) = await cloud.api.create_servers(
        ctxt, name="l", flavor="local", image=IMAGE, config_drive=True
    )
    await cloud.wait_tasks([inst.uuid])
    guest = _driver(cloud).instances[inst.uuid]
    own = (GuestDisk.ROOT, GuestDisk.EPHEMERAL, GuestDisk.SWAP, GuestDisk.CONFIG_DRIVE)
    assert guest.disks == own
    await _rescue_image(cloud)
    await cloud.api.rescue_server(ctxt, inst.uuid, None, RESCUE_IMAGE)
    await cloud.wait_tasks([inst.uuid])
    assert await _state(cloud, inst.uuid) == ("rescued", None, 1)
    assert guest.disks == (GuestDisk.RESCUE, GuestDisk.ROOT, GuestDisk.CONFIG_DRIVE)
    await cloud.api.unrescue_server(ctxt, inst.uuid)
    await cloud.wait_tasks([inst.uuid])
    assert guest.disks == own


async def test_a_stop_cut_off_by_its_hosts_death_leaves_no_event_open(
    cloud: AllInOne, ctxt: RequestContext
) -> None:
    # Regression: the host died mid-stop (its compute_stop_instance event
    # started); at its restart the repair finished the stop and the bus gave
    # the step back, whose repeat opened a second event and closed that one
    # with its report: the first stayed open for good.
    uuid = await _boot(cloud, ctxt)
    (name,) = cloud.computes
    driver = _driver(cloud)
    cloud.faults.power_delay = 3600.0  # the power off never ends: the host dies in it
    await cloud.api.stop_server(ctxt, uuid)
    for _ in range(600):  # its event started: the host is in the step
        if await _open_events(cloud, uuid, "stop"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the host never started its compute_stop_instance event")
    # Its service stops without finishing the step (the transport gives the
    # message back after its grace), and starts again on the same hypervisor.
    await cloud.stop_host(name)
    cloud.faults.power_delay = 0.0
    await cloud.add_hosts([name], driver_factory=lambda _: driver)
    await cloud.wait_tasks([uuid])
    assert await _state(cloud, uuid) == ("stopped", None, 4)
    async with cloud.db.reader() as conn:
        (stop,) = [a for a in await actions.actions_get(conn, uuid) if a["action"] == "stop"]
        events = await actions.events_get(conn, stop["id"])
    assert [(e["event"], e["result"]) for e in events] == [("compute_stop_instance", "Success")]
    assert all(e["finish_time"] is not None for e in events)


async def _open_events(cloud: AllInOne, uuid: str, action: str) -> bool:
    async with cloud.db.reader() as conn:
        for found in await actions.actions_get(conn, uuid):
            if found["action"] == action:
                events = await actions.events_get(conn, found["id"])
                return any(e["finish_time"] is None for e in events)
    return False


async def test_crash_dump_and_password_reach_the_guest(cloud: AllInOne, ctxt: RequestContext):
    uuid = await _boot(cloud, ctxt)
    await cloud.api.trigger_crash_dump(ctxt, uuid)
    await cloud.wait_tasks([uuid])
    await cloud.api.change_password(ctxt, uuid, "s3cret")
    await cloud.wait_tasks([uuid])
    guest = _driver(cloud).instances[uuid]
    assert guest.nmis == 1
    assert guest.admin_password == "s3cret"
    assert await _state(cloud, uuid) == ("active", None, 1)
    events = await _events(cloud, uuid)
    assert events["trigger_crash_dump"] == ["compute_trigger_crash_dump"]
    assert events["changePassword"] == ["compute_set_admin_password"]
    async with cloud.db.reader() as conn:
        (pw_task,) = [
            t for t in await tasks.list_for_instance(conn, uuid) if t["kind"] == "set_password"
        ]
    # The password was the host's to use once; the finished task keeps none.
    assert "s3cret" not in str(pw_task["payload"])


async def test_a_failed_pause_and_a_failed_rescue_leave_faults(
    cloud: AllInOne, ctxt: RequestContext
):
    uuid = await _boot(cloud, ctxt)
    await _rescue_image(cloud)
    cloud.faults.fail_next["pause"] = 1
    await cloud.api.pause_server(ctxt, uuid)
    await cloud.wait_tasks([uuid])
    assert await _state(cloud, uuid) == ("active", None, 1)
    async with cloud.db.reader() as conn:
        (pause,) = [t for t in await tasks.list_for_instance(conn, uuid) if t["kind"] == "pause"]
        faults = await _fault_messages(conn, uuid)
    assert pause["status"] == TaskStatus.FAILED
    assert any("pause fails" in f for f in faults)
    cloud.faults.fail_next["rescue"] = 1
    await cloud.api.rescue_server(ctxt, uuid, "pw", RESCUE_IMAGE)
    await cloud.wait_tasks([uuid])
    vm_state, task_state, _power = await _state(cloud, uuid)
    assert (vm_state, task_state) == ("error", None)


async def _fault_messages(conn: Any, uuid: str) -> list[str]:
    from sqlalchemy import select

    from nubes.db.models import instance_faults as f

    rows = await conn.execute(select(f.c.message).where(f.c.instance_uuid == uuid))
    return [r[0] for r in rows.all()]


async def _soft_cloud(tmp_path: Path, reclaim: int) -> AllInOne:
    c = await AllInOne.start(
        f"sqlite:///{tmp_path / 'soft.sqlite'}",
        hosts=1,
        overrides={"DEFAULT": {"reclaim_instance_interval": reclaim}},
    )
    async with c.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 512}
        )
    return c


async def test_soft_delete_restore_and_force_delete(tmp_path: Path, ctxt: RequestContext):
    cloud = await _soft_cloud(tmp_path, 3600)
    try:
        uuid = await _boot(cloud, ctxt)
        await cloud.api.delete_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        assert await _state(cloud, uuid) == ("soft-delete", None, 4)
        guest = _driver(cloud).instances[uuid]
        assert guest.state == 4  # off, but kept with its claim
        async with cloud.db.reader() as conn:
            assert await compute_nodes_api.holds_allocations(conn, uuid)
        # Deleting it again changes nothing (Nova); other actions are refused.
        await cloud.api.delete_server(ctxt, uuid)
        with pytest.raises(exception.InstanceInvalidState):
            await cloud.api.start_server(ctxt, uuid)
        await cloud.api.restore_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        assert await _state(cloud, uuid) == ("active", None, 1)
        with pytest.raises(exception.InstanceInvalidState) as info:
            await cloud.api.restore_server(ctxt, uuid)
        assert "restore" in str(info.value)
        await cloud.api.delete_server(ctxt, uuid)
        await cloud.wait_tasks([uuid])
        await cloud.api.delete_server(ctxt, uuid, force=True)
        await cloud.wait_tasks([uuid])
        assert uuid not in _driver(cloud).instances
        async with cloud.db.reader() as conn:
            assert not await compute_nodes_api.holds_allocations(conn, uuid)
            kinds = [t["kind"] for t in await tasks.list_for_instance(conn, uuid)]
        assert kinds == ["build", "soft_delete", "restore", "soft_delete", "delete"]
        events = await _events(cloud, uuid)
        assert "compute_soft_delete_instance" in events["delete"]
        assert events["restore"] == ["compute_restore_instance"]
    finally:
        await cloud.stop()


async def test_a_server_that_never_ran_is_deleted_at_once(tmp_path: Path, ctxt: RequestContext):
    cloud = await _soft_cloud(tmp_path, 3600)
    try:
        (inst,) = await cloud.api.create_servers(ctxt, name="a", flavor="small", image=IMAGE)
        await cloud.api.delete_server(ctxt, inst.uuid)
        await cloud.wait_tasks([inst.uuid])
        async with cloud.db.reader() as conn:
            kinds = [t["kind"] for t in await tasks.list_for_instance(conn, inst.uuid)]
        assert "soft_delete" not in kinds and "delete" in kinds
    finally:
        await cloud.stop()


async def test_conductors_reclaim_what_was_soft_deleted_long_enough(
    tmp_path: Path, ctxt: RequestContext
):
    cloud = await _soft_cloud(tmp_path, 1)
    try:
        uuid = await _boot(cloud, ctxt)
        await cloud.api.delete_server(ctxt, uuid)
        for _ in range(600):
            async with cloud.db.reader() as conn:
                kinds = [
                    (t["kind"], t["status"]) for t in await tasks.list_for_instance(conn, uuid)
                ]
            if ("delete", "succeeded") in kinds:
                break
            await asyncio.sleep(0.1)
        assert kinds == [
            ("build", "succeeded"),
            ("soft_delete", "succeeded"),
            ("delete", "succeeded"),
        ]
        assert uuid not in _driver(cloud).instances
    finally:
        await cloud.stop()


async def _event_rows(cloud: AllInOne, uuid: str, action: str) -> list[dict[str, Any]]:
    async with cloud.db.reader() as conn:
        (found,) = [a for a in await actions.actions_get(conn, uuid) if a["action"] == action]
        return [
            {**e, "message": found["message"]} for e in await actions.events_get(conn, found["id"])
        ]


async def test_a_steps_event_ends_with_its_report(cloud: AllInOne, ctxt: RequestContext):
    """The host's event (compute_<op>) ends in the commit that records its
    step's report (nubes/step_end.py): closed with its result when the task
    is, and a failed step's error and traceback kept for admins."""
    uuid = await _boot(cloud, ctxt)
    create = await _event_rows(cloud, uuid, "create")
    (event,) = [e for e in create if e["event"].startswith("compute_")]
    assert event["event"] == "compute_build_and_run_instance" and event["result"] == "Success"
    assert event["finish_time"] is not None and event["host"] is not None
    assert event["traceback"] is None and event["message"] is None

    cloud.faults.fail_next["pause"] = 1
    await cloud.api.pause_server(ctxt, uuid)
    await cloud.wait_tasks([uuid])
    (paused,) = [
        e for e in await _event_rows(cloud, uuid, "pause") if e["event"].startswith("compute_")
    ]
    assert paused["event"] == "compute_pause_instance" and paused["result"] == "Error"
    assert paused["finish_time"] is not None
    assert paused["details"] and "pause fails" in paused["details"]
    assert paused["traceback"] and "VirtDriverError" in paused["traceback"]
    assert paused["message"] == "Error"  # the action marked failed in the same commit
