"""Cold migration, resize, confirm, revert and auto-confirm with every service in one process.

memory:// + SQLite, the real API side (:class:`~nubes.api.moves.MovesAPI`),
conductor task engine, scheduler and fake compute hosts. Every test ends
with the shared consistency check (:mod:`nubes.testing.moves`): the
instance on one host, claims matching, migrations final or waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import select

from nubes.api.moves import MovesAPI
from nubes.compute.host import ComputeHost
from nubes.compute.virt.fake import FakeDriver
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.api import actions, flavors, tasks
from nubes.db.api import migrations as migrations_api
from nubes.db.models import allocations, compute_nodes, instance_faults
from nubes.objects.states import PowerState
from nubes.rpc.transport import IncomingMessage, get_transport
from nubes.testing.allinone import AllInOne
from nubes.testing.moves import check_consistent, check_node_usage

pytestmark = pytest.mark.timeout(120)

IMAGE = {"id": "img-1", "properties": {}}
FLAVORS = {
    "small": (1, 512, 1),
    "medium": (2, 1024, 2),
    "huge": (1000, 1024, 1),
}


@pytest.fixture
def ctxt() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1")


class Moves:
    """A cloud with the moves API, and what the tests look at."""

    def __init__(self, cloud: AllInOne) -> None:
        self.cloud = cloud
        self.db = cloud.db
        self.api = MovesAPI(cloud.db, ConductorAPI(cloud.api_transport), conf=cloud.conf)

    def drivers(self) -> dict[str, FakeDriver]:
        found = {}
        for name, svc in self.cloud.computes.items():
            node: ComputeHost = svc.hooks[0]  # type: ignore[assignment]
            assert isinstance(node.driver, FakeDriver)
            found[name] = node.driver
        return found

    async def boot(self, ctxt: RequestContext, flavor: str = "small") -> dict[str, Any]:
        (inst,) = await self.cloud.api.create_servers(ctxt, name="vm", flavor=flavor, image=IMAGE)
        return await self.settle(inst.uuid)

    async def settle(self, uuid: str) -> dict[str, Any]:
        """The instance's row once no task works on it any more."""
        await self.cloud.wait_tasks([uuid], timeout=60)
        (row,) = await self.cloud.instances([uuid])
        return row

    async def migration(self, uuid: str) -> dict[str, Any]:
        async with self.db.reader() as conn:
            return (await migrations_api.list_by_instance(conn, uuid))[-1]

    async def claims(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(consumer, host) -> (vcpus, memory_mb, disk_gb) of every allocation."""
        a, cn = allocations.c, compute_nodes.c
        stmt = select(a.consumer_uuid, cn.host, a.vcpus, a.memory_mb, a.disk_gb).select_from(
            allocations.join(compute_nodes, cn.id == a.compute_node_id)
        )
        async with self.db.reader() as conn:
            return {(r[0], r[1]): (r[2], r[3], r[4]) for r in await conn.execute(stmt)}

    async def events(self, uuid: str, action: str) -> list[tuple[str, str, str]]:
        """(event, result, host) of the instance's newest ``action``."""
        async with self.db.reader() as conn:
            found = [a for a in await actions.actions_get(conn, uuid) if a["action"] == action]
            assert found, f"no {action} action"
            rows = await actions.events_get(conn, found[0]["id"])
        return [(e["event"], e["result"], e["host"]) for e in rows]

    async def action(self, uuid: str, action: str) -> dict[str, Any]:
        async with self.db.reader() as conn:
            return next(a for a in await actions.actions_get(conn, uuid) if a["action"] == action)

    async def faults(self, uuid: str) -> list[str]:
        f = instance_faults.c
        stmt = select(f.message).where(f.instance_uuid == uuid).order_by(f.id)
        async with self.db.reader() as conn:
            return list((await conn.execute(stmt)).scalars())

    async def tasks(self, uuid: str) -> list[tuple[str, str]]:
        async with self.db.reader() as conn:
            return [(t["kind"], t["status"]) for t in await tasks.list_for_instance(conn, uuid)]

    async def consistent(self, uuid: str) -> None:
        assert await check_consistent(self.db, uuid, drivers=self.drivers()) == []
        assert await check_node_usage(self.db) == []


async def _start(tmp_path: Path, hosts: int = 3, conductors: int = 1, **overrides: Any) -> Moves:
    """A cloud; ``overrides`` are options, ``group__name=value`` outside [DEFAULT]."""
    groups: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        group, _, name = key.rpartition("__")
        groups.setdefault(group or "DEFAULT", {})[name] = value
    cloud = await AllInOne.start(
        f"sqlite:///{tmp_path / 'resize.sqlite'}",
        hosts=hosts,
        conductors=conductors,
        overrides=groups,
    )
    async with cloud.db.writer() as conn:
        for name, (vcpus, ram, disk) in FLAVORS.items():
            await flavors.create(
                conn,
                {"flavorid": name, "name": name, "vcpus": vcpus, "memory_mb": ram, "root_gb": disk},
            )
    return Moves(cloud)


@pytest.fixture
async def moves(tmp_path: Path) -> AsyncIterator[Moves]:
    m = await _start(tmp_path)
    yield m
    await m.cloud.stop()


# -- what succeeds -----------------------------------------------------------------------------


async def test_cold_migrate_then_confirm(moves: Moves, ctxt: RequestContext):
    before = await moves.boot(ctxt)
    uuid, source = before["uuid"], before["host"]
    await moves.api.migrate_server(ctxt, uuid)
    row = await moves.settle(uuid)
    dest = row["host"]
    assert dest != source
    assert (row["vm_state"], row["task_state"], row["node"]) == ("resized", None, dest)
    assert row["power_state"] == PowerState.RUNNING
    mig = await moves.migration(uuid)
    assert (mig["status"], mig["migration_type"]) == ("finished", "migration")
    assert (mig["source_compute"], mig["dest_compute"], mig["dest_node"]) == (source, dest, dest)
    # While it waits: the destination is the instance's, the source the migration's.
    assert await moves.claims() == {(uuid, dest): (1, 512, 1), (mig["uuid"], source): (1, 512, 1)}
    drivers = moves.drivers()
    assert uuid in drivers[source].kept and uuid not in drivers[source].instances
    await moves.consistent(uuid)
    assert await moves.events(uuid, "migrate") == [
        ("conductor_migrate_server", "Success", "ctl-0"),
        ("compute_resize_instance", "Success", source),
        ("compute_finish_resize", "Success", dest),
    ]
    assert (await moves.action(uuid, "migrate"))["message"] is None

    await moves.api.confirm_resize(ctxt, uuid)
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["task_state"], row["host"]) == ("active", None, dest)
    assert (row["old_flavor"], row["new_flavor"]) == (None, None)
    assert (await moves.migration(uuid))["status"] == "confirmed"
    assert await moves.claims() == {(uuid, dest): (1, 512, 1)}
    assert uuid not in drivers[source].kept
    assert await moves.events(uuid, "confirmResize") == [
        ("compute_confirm_resize", "Success", source)
    ]
    await moves.consistent(uuid)
    assert await moves.tasks(uuid) == [
        ("build", "succeeded"),
        ("migrate", "succeeded"),
        ("confirm_resize", "succeeded"),
    ]


async def test_deleting_a_resized_instance_leaves_nothing_behind(
    moves: Moves, ctxt: RequestContext
):
    """Regression: the delete released only the instance's claims, so the
    migration's claim on the source (and the guest kept there) leaked."""
    before = await moves.boot(ctxt)
    uuid, source = before["uuid"], before["host"]
    await moves.api.resize_server(ctxt, uuid, "medium")
    row = await moves.settle(uuid)
    assert row["vm_state"] == "resized"
    drivers = moves.drivers()
    assert uuid in drivers[source].kept
    await moves.cloud.api.delete_server(ctxt, uuid)
    row = await moves.settle(uuid)
    assert row["vm_state"] == "deleted"
    assert await moves.claims() == {}
    assert all(uuid not in d.kept and uuid not in d.instances for d in drivers.values())
    assert await check_node_usage(moves.db) == []


async def test_resize_holds_the_new_flavor_on_the_destination_until_confirmed(
    moves: Moves, ctxt: RequestContext
):
    before = await moves.boot(ctxt)
    uuid, source = before["uuid"], before["host"]
    await moves.api.resize_server(ctxt, uuid, "medium")
    row = await moves.settle(uuid)
    dest = row["host"]
    assert (row["vm_state"], row["task_state"]) == ("resized", None)
    assert (row["vcpus"], row["memory_mb"], row["root_gb"]) == (2, 1024, 2)
    assert row["flavor"]["flavorid"] == "medium"
    assert row["old_flavor"]["flavorid"] == "small"
    mig = await moves.migration(uuid)
    assert (mig["status"], mig["migration_type"]) == ("finished", "resize")
    assert await moves.claims() == {(uuid, dest): (2, 1024, 2), (mig["uuid"], source): (1, 512, 1)}
    guest = moves.drivers()[dest].instances[uuid]
    assert (guest.vcpus, guest.memory_mb) == (2, 1024)
    await moves.consistent(uuid)

    await moves.api.confirm_resize(ctxt, uuid)
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["host"], row["flavor"]["flavorid"]) == ("active", dest, "medium")
    assert await moves.claims() == {(uuid, dest): (2, 1024, 2)}
    await moves.consistent(uuid)


async def test_revert_restores_the_old_flavor_even_once_the_new_one_is_deleted(
    moves: Moves, ctxt: RequestContext
):
    before = await moves.boot(ctxt)
    uuid, source = before["uuid"], before["host"]
    await moves.api.resize_server(ctxt, uuid, "medium")
    dest = (await moves.settle(uuid))["host"]
    async with moves.db.writer() as conn:
        await flavors.destroy(conn, "medium")
    await moves.api.revert_resize(ctxt, uuid)
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["task_state"], row["host"], row["node"]) == (
        "active",
        None,
        source,
        source,
    )
    assert row["flavor"]["flavorid"] == "small"
    assert (row["vcpus"], row["memory_mb"], row["root_gb"]) == (1, 512, 1)
    assert (row["old_flavor"], row["new_flavor"]) == (None, None)
    assert (await moves.migration(uuid))["status"] == "reverted"
    assert await moves.claims() == {(uuid, source): (1, 512, 1)}
    drivers = moves.drivers()
    assert uuid not in drivers[dest].instances
    guest = drivers[source].instances[uuid]
    assert (guest.vcpus, guest.state) == (1, PowerState.RUNNING)
    assert await moves.events(uuid, "revertResize") == [
        ("compute_revert_resize", "Success", dest),
        ("compute_finish_revert_resize", "Success", source),
    ]
    await moves.consistent(uuid)


async def test_a_stopped_instance_moves_stopped_and_stays_stopped(
    moves: Moves, ctxt: RequestContext
):
    uuid = (await moves.boot(ctxt))["uuid"]
    await moves.cloud.api.stop_server(ctxt, uuid)
    await moves.settle(uuid)
    await moves.api.resize_server(ctxt, uuid, "medium")
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["power_state"]) == ("resized", PowerState.SHUTDOWN)
    assert moves.drivers()[row["host"]].instances[uuid].state == PowerState.SHUTDOWN
    await moves.api.confirm_resize(ctxt, uuid)
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["task_state"]) == ("stopped", None)
    await moves.consistent(uuid)


async def test_resize_on_the_same_host_when_allowed(tmp_path: Path, ctxt: RequestContext):
    moves = await _start(tmp_path, hosts=1, allow_resize_to_same_host=True)
    try:
        uuid = (await moves.boot(ctxt))["uuid"]
        await moves.api.resize_server(ctxt, uuid, "medium")
        row = await moves.settle(uuid)
        assert (row["vm_state"], row["host"]) == ("resized", "fake-0")
        mig = await moves.migration(uuid)
        assert (mig["source_compute"], mig["dest_compute"]) == ("fake-0", "fake-0")
        # Both on the one host: the new flavor for the instance, the old for the migration.
        assert await moves.claims() == {
            (uuid, "fake-0"): (2, 1024, 2),
            (mig["uuid"], "fake-0"): (1, 512, 1),
        }
        await moves.consistent(uuid)
        await moves.api.revert_resize(ctxt, uuid)
        row = await moves.settle(uuid)
        assert (row["vm_state"], row["host"], row["vcpus"]) == ("active", "fake-0", 1)
        guest = moves.drivers()["fake-0"].instances[uuid]
        assert (guest.vcpus, guest.state) == (1, PowerState.RUNNING)
        assert await moves.claims() == {(uuid, "fake-0"): (1, 512, 1)}
        await moves.consistent(uuid)
        # A cold migration never stays, allowed or not: one host is no host.
        await moves.api.migrate_server(ctxt, uuid)
        row = await moves.settle(uuid)
        assert (row["vm_state"], row["host"]) == ("active", "fake-0")
        assert (await moves.migration(uuid))["status"] == "error"
        assert "No valid host" in (await moves.faults(uuid))[-1]
        await moves.consistent(uuid)
    finally:
        await moves.cloud.stop()


async def test_migrate_to_a_named_host(moves: Moves, ctxt: RequestContext):
    row = await moves.boot(ctxt)
    uuid = row["uuid"]
    named = next(h for h in ("fake-0", "fake-1", "fake-2") if h != row["host"])
    await moves.api.migrate_server(ctxt, uuid, host=named)
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["host"]) == ("resized", named)
    await moves.api.confirm_resize(ctxt, uuid)
    await moves.settle(uuid)
    await moves.consistent(uuid)


async def test_a_named_host_that_cannot_take_it_is_refused_with_a_fault(
    moves: Moves, ctxt: RequestContext
):
    await moves.cloud.add_hosts(["tiny"], capacity={"vcpus": 1, "memory_mb": 256})
    row = await moves.boot(ctxt, "small")
    uuid, source = row["uuid"], row["host"]
    await moves.api.migrate_server(ctxt, uuid, host="tiny")
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["task_state"], row["host"]) == ("active", None, source)
    fault = (await moves.faults(uuid))[-1]
    assert fault.startswith("Host tiny cannot take the instance: No valid host")
    assert (await moves.migration(uuid))["status"] == "error"
    assert ("conductor_migrate_server", "Error", "ctl-0") in await moves.events(uuid, "migrate")
    assert (await moves.action(uuid, "migrate"))["message"] == actions.ACTION_ERROR_MESSAGE
    assert await moves.claims() == {(uuid, source): (1, 512, 1)}
    await moves.consistent(uuid)


async def test_no_valid_host_leaves_the_instance_as_it_was(moves: Moves, ctxt: RequestContext):
    row = await moves.boot(ctxt)
    uuid, source = row["uuid"], row["host"]
    await moves.api.resize_server(ctxt, uuid, "huge")
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["task_state"], row["host"]) == ("active", None, source)
    assert row["flavor"]["flavorid"] == "small"
    assert "No valid host" in (await moves.faults(uuid))[-1]
    assert (await moves.migration(uuid))["status"] == "error"
    assert await moves.tasks(uuid) == [("build", "succeeded"), ("migrate", "failed")]
    assert await moves.claims() == {(uuid, source): (1, 512, 1)}
    await moves.consistent(uuid)


async def test_an_unconfirmed_resize_is_confirmed_once_the_window_passes(
    tmp_path: Path, ctxt: RequestContext
):
    moves = await _start(tmp_path, hosts=2, resize_confirm_window=1)
    try:
        uuid = (await moves.boot(ctxt))["uuid"]
        await moves.api.resize_server(ctxt, uuid, "medium")
        await moves.cloud.wait_for([uuid], lambda r: r["vm_state"] == "resized", timeout=30)
        rows = await moves.cloud.wait_for(
            [uuid], lambda r: r["vm_state"] == "active" and r["task_state"] is None, timeout=30
        )
        assert rows[0]["flavor"]["flavorid"] == "medium"
        await moves.settle(uuid)
        assert (await moves.migration(uuid))["status"] == "confirmed"
        action = await moves.action(uuid, "confirmResize")
        assert action["finish_time"] is not None and action["message"] is None
        assert await moves.tasks(uuid) == [
            ("build", "succeeded"),
            ("migrate", "succeeded"),
            ("confirm_resize", "succeeded"),
        ]
        await moves.consistent(uuid)
    finally:
        await moves.cloud.stop()


# -- each driver call failing once --------------------------------------------------------------

#: (operation, driver call made to fail once, where the instance ends, task statuses)
FAIL_ONCE = [
    ("migrate", "migrate_disk_and_power_off", "source", ("failed",)),
    ("migrate", "finish_migration", "source", ("failed",)),
    ("resize", "migrate_disk_and_power_off", "source", ("failed",)),
    ("resize", "finish_migration", "source", ("failed",)),
    ("confirm", "confirm_migration", "dest", ("succeeded", "succeeded")),
    ("revert", "destroy", "source", ("succeeded", "succeeded")),
    ("revert", "finish_revert_migration", "source", ("succeeded", "succeeded")),
]


async def _move(moves: Moves, ctxt: RequestContext, operation: str, uuid: str) -> None:
    if operation == "migrate":
        await moves.api.migrate_server(ctxt, uuid)
    elif operation == "resize":
        await moves.api.resize_server(ctxt, uuid, "medium")
    else:
        await moves.api.resize_server(ctxt, uuid, "medium")
        await moves.settle(uuid)
        if operation == "confirm":
            moves.cloud.faults.fail_next["confirm_migration"] = 1
            await moves.api.confirm_resize(ctxt, uuid)
        else:
            await moves.api.revert_resize(ctxt, uuid)


@pytest.mark.parametrize("stopped", [False, True], ids=["active", "stopped"])
@pytest.mark.parametrize(("operation", "call", "ends_on", "statuses"), FAIL_ONCE)
async def test_a_driver_call_failing_once_ends_consistent(
    moves: Moves,
    ctxt: RequestContext,
    operation: str,
    call: str,
    ends_on: str,
    statuses: tuple[str, ...],
    stopped: bool,
):
    row = await moves.boot(ctxt)
    uuid, source = row["uuid"], row["host"]
    if stopped:
        await moves.cloud.api.stop_server(ctxt, uuid)
        await moves.settle(uuid)
    if operation in ("migrate", "resize", "revert"):
        moves.cloud.faults.fail_next[call] = 1
    await _move(moves, ctxt, operation, uuid)
    row = await moves.settle(uuid)
    assert moves.cloud.faults.fail_next[call] == 0, "the call never failed"

    mig = await moves.migration(uuid)
    host = source if ends_on == "source" else mig["dest_compute"]
    flavor = "medium" if operation == "confirm" else "small"
    assert (row["vm_state"], row["task_state"], row["host"]) == (
        "stopped" if stopped else "active",
        None,
        host,
    )
    assert row["flavor"]["flavorid"] == flavor
    guest = moves.drivers()[host].instances[uuid]
    assert guest.state == (PowerState.SHUTDOWN if stopped else PowerState.RUNNING)
    await moves.consistent(uuid)
    assert [s for _, s in (await moves.tasks(uuid))[-len(statuses) :]] == list(statuses)
    assert mig["status"] in {"error", "confirmed", "reverted"}

    # The failure left its trace: a fault naming the call, a failed event.
    assert any(call in f or "injected" in f for f in await moves.faults(uuid))
    action = {"migrate": "migrate", "resize": "resize"}.get(operation, f"{operation}Resize")
    failed = [e for e in await moves.events(uuid, action) if e[1] == "Error"]
    assert failed, await moves.events(uuid, action)
    if operation in ("migrate", "resize"):
        assert mig["status"] == "error"
        assert (await moves.action(uuid, action))["message"] == actions.ACTION_ERROR_MESSAGE


async def test_a_rollback_call_failing_once_is_tried_again(moves: Moves, ctxt: RequestContext):
    row = await moves.boot(ctxt)
    uuid, source = row["uuid"], row["host"]
    moves.cloud.faults.fail_next.update(
        {"finish_migration": 1, "destroy": 1, "finish_revert_migration": 1}
    )
    await moves.api.resize_server(ctxt, uuid, "medium")
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["host"]) == ("active", source)
    events = await moves.events(uuid, "resize")
    dest = (await moves.migration(uuid))["dest_compute"]
    assert [e for e in events if e[0] != "conductor_migrate_server"] == [
        ("compute_resize_instance", "Success", source),
        ("compute_finish_resize", "Error", dest),
        ("compute_revert_resize", "Error", dest),
        ("compute_revert_resize", "Success", dest),
        ("compute_finish_revert_resize", "Error", source),
        ("compute_finish_revert_resize", "Success", source),
    ]
    await moves.consistent(uuid)


# -- giving up ---------------------------------------------------------------------------------


async def test_a_source_that_cannot_bring_the_guest_back_leaves_error_there(
    moves: Moves, ctxt: RequestContext
):
    row = await moves.boot(ctxt)
    uuid, source = row["uuid"], row["host"]
    moves.cloud.faults.fail_next["finish_migration"] = 1
    moves.cloud.faults.fail_calls["finish_revert_migration"] = {"*"}
    await moves.api.migrate_server(ctxt, uuid)
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["task_state"], row["host"]) == ("error", None, source)
    assert "could not be brought back" in (await moves.faults(uuid))[-1]
    tries = [e for e in await moves.events(uuid, "migrate") if e[0].endswith("revert_resize")]
    assert tries.count(("compute_finish_revert_resize", "Error", source)) == 3
    assert await moves.claims() == {(uuid, source): (1, 512, 1)}
    await moves.consistent(uuid)


async def test_a_revert_the_destination_cannot_do_leaves_error_there(
    moves: Moves, ctxt: RequestContext
):
    uuid = (await moves.boot(ctxt))["uuid"]
    await moves.api.resize_server(ctxt, uuid, "medium")
    dest = (await moves.settle(uuid))["host"]
    moves.cloud.faults.fail_calls["destroy"] = {dest}
    await moves.api.revert_resize(ctxt, uuid)
    row = await moves.settle(uuid)
    assert (row["vm_state"], row["task_state"], row["host"]) == ("error", None, dest)
    assert (await moves.migration(uuid))["status"] == "error"
    assert await moves.claims() == {(uuid, dest): (2, 1024, 2)}
    await moves.consistent(uuid)


async def test_a_migration_past_its_deadline_is_rolled_back(tmp_path: Path, ctxt: RequestContext):
    moves = await _start(tmp_path, conductor__task_deadline=1.0)
    try:
        row = await moves.boot(ctxt)
        uuid, source = row["uuid"], row["host"]
        moves.cloud.faults.migration_delay = 2.0
        await moves.api.migrate_server(ctxt, uuid)
        row = await moves.settle(uuid)
        assert (row["vm_state"], row["task_state"], row["host"]) == ("active", None, source)
        assert moves.drivers()[source].instances[uuid].state == PowerState.RUNNING
        assert (await moves.tasks(uuid))[-1] == ("migrate", "rolled_back")
        assert "deadline" in (await moves.faults(uuid))[-1]
        events = await moves.events(uuid, "migrate")
        assert ("conductor_migrate_deadline", "Error", "ctl-0") in events
        assert ("compute_finish_revert_resize", "Success", source) in events
        await moves.consistent(uuid)
    finally:
        await moves.cloud.stop()


async def test_many_moves_at_once_keep_the_claims_exact(moves: Moves, ctxt: RequestContext):
    uuids = [(await moves.boot(ctxt))["uuid"] for _ in range(6)]
    for i, uuid in enumerate(uuids):
        if i % 2:
            await moves.api.migrate_server(ctxt, uuid)
        else:
            await moves.api.resize_server(ctxt, uuid, "medium")
    await asyncio.gather(*(moves.settle(u) for u in uuids))
    for i, uuid in enumerate(uuids):
        if i % 3:
            await moves.api.confirm_resize(ctxt, uuid)
        else:
            await moves.api.revert_resize(ctxt, uuid)
    await asyncio.gather(*(moves.settle(u) for u in uuids))
    for uuid in uuids:
        await moves.consistent(uuid)
    assert len(await moves.claims()) == len(uuids)


async def test_a_move_goes_on_when_its_conductor_stops(tmp_path: Path, ctxt: RequestContext):
    moves = await _start(tmp_path, conductors=2)
    cloud = moves.cloud
    try:
        row = await moves.boot(ctxt)
        uuid, source = row["uuid"], row["host"]
        moves.cloud.faults.migration_delay = 1.0
        await moves.api.resize_server(ctxt, uuid, "medium")
        # Wait until the source is copying, then stop the conductor driving it.
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            async with moves.db.reader() as conn:
                task = await tasks.get_active_for_instance(conn, uuid)
            if task is not None and task["step"] == "migrate_source" and task["owner"]:
                break
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        (owner,) = [e for e in cloud.engines if e.owner == task["owner"]]
        await owner.stop()
        row = await moves.settle(uuid)
        assert (row["vm_state"], row["task_state"]) == ("resized", None)
        assert row["host"] != source
        (other,) = [e for e in cloud.engines if e is not owner]
        async with moves.db.reader() as conn:
            done = [t for t in await tasks.list_for_instance(conn, uuid) if t["kind"] == "migrate"]
        assert done[0]["status"] == "succeeded" and done[0]["attempt"] > 1
        await moves.api.confirm_resize(ctxt, uuid)
        await moves.settle(uuid)
        await moves.consistent(uuid)
        assert other.accepting
    finally:
        await cloud.stop()


async def test_notifications_of_a_failed_resize_and_a_failed_migration(
    tmp_path: Path, ctxt: RequestContext
):
    moves = await _start(tmp_path, notifications__driver="messaging")
    seen: list[tuple[str, str, str]] = []

    async def on(msg: IncomingMessage) -> None:
        body = msgspec.json.decode(msg.body)
        data = body["payload"]["nubes_object.data"]
        seen.append((body["event_type"], body["publisher_id"], data.get("uuid")))

    sink = get_transport(moves.cloud.bus, identity="conductor.sink")
    await sink.connect()
    await sink.listen("notifications", "sink", on)
    try:
        row = await moves.boot(ctxt)
        uuid, source = row["uuid"], row["host"]
        moves.cloud.faults.fail_next["finish_migration"] = 1
        await moves.api.resize_server(ctxt, uuid, "medium")
        await moves.settle(uuid)
        dest = (await moves.migration(uuid))["dest_compute"]
        await moves.api.resize_server(ctxt, uuid, "huge")
        await moves.settle(uuid)
        await asyncio.sleep(0.2)
        moved = [(e, p) for e, p, u in seen if u == uuid and not e.startswith("instance.create")]
        moved = [m for m in moved if m[0] != "instance.update"]
        assert moved == [
            ("instance.resize.start", f"compute:{source}"),
            ("instance.resize.end", f"compute:{source}"),
            ("instance.resize_finish.start", f"compute:{dest}"),
            ("instance.resize_revert.start", f"compute:{dest}"),
            ("instance.resize_revert.end", f"compute:{source}"),
            ("instance.resize.error", "conductor:ctl-0"),
            ("instance.resize.error", "conductor:ctl-0"),
        ]
        await moves.consistent(uuid)
    finally:
        await sink.close()
        await moves.cloud.stop()
