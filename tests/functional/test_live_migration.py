"""Live migration, abort and force complete with every service in one process.

memory:// + SQLite, the real conductor task engine, scheduler and fake
compute hosts (each under its own bus identity, without database access).
What the API would record for ``os-migrateLive`` and the DELETE of a
migration is written here by :func:`live_migrate` and :func:`abort`
(``docs/moves.md``), unless ``nubes.api.servers`` offers it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import select

from nubes.api import intents
from nubes.compute.virt.fake import FakeDriver
from nubes.conductor.tasks.states import FIRST_STEP, TaskKind
from nubes.context import RequestContext
from nubes.db.api import actions, flavors, tasks
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.api.tasks import TaskStatus
from nubes.db.models import instance_faults
from nubes.db.types import utcnow
from nubes.objects.states import MigrationStatus, PowerState, TaskState
from nubes.rpc.transport import IncomingMessage, get_transport
from nubes.testing.allinone import AllInOne
from nubes.testing.moves import check_consistent, check_node_usage

pytestmark = pytest.mark.timeout(120)

IMAGE = {"id": "img-1", "properties": {}}
ACTION = "live-migration"
CANCEL_ACTION = "live_migration_cancel"
FORCE_ACTION = "live_migration_force_complete"


def _ctxt() -> RequestContext:
    # One per request: actions are found by request id.
    return RequestContext(user_id="u1", project_id="p1")


async def _start(tmp_path: Path, conductors: int = 1, **overrides: Any) -> AllInOne:
    c = await AllInOne.start(
        f"sqlite:///{tmp_path / 'live.sqlite'}",
        hosts=3,
        conductors=conductors,
        overrides=overrides,
    )
    async with c.db.writer() as conn:
        await flavors.create(
            conn,
            {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 512, "root_gb": 1},
        )
    return c


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[AllInOne]:
    c = await _start(tmp_path)
    yield c
    await c.stop()


def _drivers(cloud: AllInOne) -> dict[str, FakeDriver]:
    return {name: svc.hooks[0].driver for name, svc in cloud.computes.items()}  # type: ignore[attr-defined]


async def _boot(cloud: AllInOne) -> dict[str, Any]:
    (inst,) = await cloud.api.create_servers(_ctxt(), name="vm", flavor="small", image=IMAGE)
    await cloud.wait_tasks([inst.uuid])
    (row,) = await cloud.instances([inst.uuid])
    assert (row["vm_state"], row["task_state"]) == ("active", None)
    return row


async def live_migrate(
    cloud: AllInOne,
    uuid: str,
    *,
    host: str | None = None,
    block_migration: bool | str = "auto",
    deadline: float = 1800.0,
    kick: bool = True,
) -> int:
    """Record what ``os-migrateLive`` records, in one transaction, and kick; the migration id."""
    ctxt = _ctxt()
    async with cloud.db.writer() as conn:
        row = await instances_api.get_by_uuid(conn, uuid)
        await instances_api.update(
            conn,
            uuid,
            {"task_state": TaskState.MIGRATING.value},
            expected_vm_state=row["vm_state"],
            expected_task_state=None,
        )
        migration = await migrations_api.create(
            conn,
            {
                "instance_uuid": uuid,
                "migration_type": "live-migration",
                "status": MigrationStatus.ACCEPTED.value,
                "source_compute": row["host"],
                "source_node": row["node"],
                "dest_compute": host,
                "project_id": row["project_id"],
                "user_id": row["user_id"],
            },
        )
        await intents.record_action(conn, ctxt, uuid, ACTION)
        task = await tasks.create(
            conn,
            kind=TaskKind.LIVE_MIGRATE.value,
            instance_uuid=uuid,
            step=FIRST_STEP[TaskKind.LIVE_MIGRATE].value,
            payload={
                "migration_id": migration["id"],
                "host": host,
                "block_migration": block_migration,
            },
            context=ctxt.to_record(),
            deadline=utcnow() + dt.timedelta(seconds=deadline),
        )
    if kick:
        await cloud.api.conductor.kick(ctxt, [task["id"]])
    return int(migration["id"])


async def abort(cloud: AllInOne, uuid: str, migration_id: int) -> None:
    """What DELETE of a live migration records: ``cancelling`` (only from accepted,
    preparing, running) and Nova's ``live_migration_cancel`` action; then the cast."""
    ctxt = _ctxt()
    async with cloud.db.writer() as conn:
        row = await migrations_api.get_by_id(conn, migration_id)
        assert row["status"] in ("accepted", "preparing", "running"), row["status"]
        await migrations_api.update(conn, migration_id, {"status": "cancelling"})
        await intents.record_action(conn, ctxt, uuid, CANCEL_ACTION)
    await cloud.api.conductor.live_migration_abort(ctxt, uuid, migration_id)


async def force_complete(cloud: AllInOne, uuid: str, migration_id: int) -> None:
    ctxt = _ctxt()
    async with cloud.db.writer() as conn:
        await intents.record_action(conn, ctxt, uuid, FORCE_ACTION)
    await cloud.api.conductor.live_migration_force_complete(ctxt, uuid, migration_id)


async def _migration(cloud: AllInOne, migration_id: int) -> dict[str, Any]:
    async with cloud.db.reader() as conn:
        return await migrations_api.get_by_id(conn, migration_id)


async def _task(cloud: AllInOne, uuid: str) -> dict[str, Any]:
    async with cloud.db.reader() as conn:
        found = [
            t for t in await tasks.list_for_instance(conn, uuid) if t["kind"] == "live_migrate"
        ]
    return found[-1]


async def _action(cloud: AllInOne, uuid: str, name: str = ACTION) -> dict[str, Any]:
    """The instance's newest action of that name."""
    async with cloud.db.reader() as conn:
        found = [a for a in await actions.actions_get(conn, uuid) if a["action"] == name]
    return max(found, key=lambda a: a["id"])


async def _events(
    cloud: AllInOne, uuid: str, name: str = ACTION
) -> list[tuple[str, str | None, str | None]]:
    """(event, result, host) of the newest action of that name."""
    action = await _action(cloud, uuid, name)
    async with cloud.db.reader() as conn:
        events = await actions.events_get(conn, action["id"])
    return [(e["event"], e["result"], e["host"]) for e in events]


async def _faults_of(cloud: AllInOne, uuid: str) -> list[str]:
    f = instance_faults
    async with cloud.db.reader() as conn:
        stmt = select(f.c.message).where(f.c.instance_uuid == uuid).order_by(f.c.id)
        return list((await conn.execute(stmt)).scalars())


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


async def _consistent(cloud: AllInOne, uuid: str) -> None:
    assert await check_consistent(cloud.db, uuid, drivers=_drivers(cloud)) == []
    assert await check_node_usage(cloud.db) == []


async def _assert_rolled_back(
    cloud: AllInOne,
    source: dict[str, Any],
    migration_id: int,
    *,
    status: str = "failed",
    task_status: str = TaskStatus.FAILED,
    fault: str = "",
) -> dict[str, Any]:
    """Back where it was: ACTIVE on the source only, claims there, the migration final."""
    uuid = source["uuid"]
    await cloud.wait_tasks([uuid])
    (row,) = await cloud.instances([uuid])
    assert (row["vm_state"], row["task_state"]) == ("active", None)
    assert (row["host"], row["node"]) == (source["host"], source["node"])
    assert row["power_state"] == PowerState.RUNNING and row["progress"] is None
    await _consistent(cloud, uuid)
    assert (await _migration(cloud, migration_id))["status"] == status
    task = await _task(cloud, uuid)
    assert task["status"] == task_status, task["last_error"]
    faults = await _faults_of(cloud, uuid)
    assert any(fault in f for f in faults), faults
    events = await _events(cloud, uuid)
    assert ("conductor_live_migrate_instance", "Error", "ctl-0") in events, events
    assert (await _action(cloud, uuid))["message"] == "Error"
    return row


async def _assert_moved(
    cloud: AllInOne, source: dict[str, Any], migration_id: int, *, clean: bool = True
) -> dict[str, Any]:
    """On the destination only, claims there, the migration completed.

    ``clean``: no step failed on the way (a failed event marks the action
    ``Error`` for good, as in Nova, even when a retry then worked).
    """
    uuid = source["uuid"]
    await cloud.wait_tasks([uuid])
    (row,) = await cloud.instances([uuid])
    task = await _task(cloud, uuid)
    assert task["status"] == TaskStatus.SUCCEEDED, task["last_error"]
    assert (row["vm_state"], row["task_state"]) == ("active", None)
    assert row["host"] != source["host"] and row["node"] == row["host"]
    assert row["power_state"] == PowerState.RUNNING and row["progress"] == 100
    await _consistent(cloud, uuid)
    migration = await _migration(cloud, migration_id)
    assert migration["status"] == "completed"
    assert (migration["source_compute"], migration["dest_compute"]) == (source["host"], row["host"])
    assert (migration["source_node"], migration["dest_node"]) == (source["node"], row["node"])
    action = await _action(cloud, uuid)
    assert action["finish_time"] is not None
    if clean:
        assert action["message"] is None
    return row


# -- success ------------------------------------------------------------------------------


async def test_live_migrate_to_the_schedulers_choice(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    migration_id = await live_migrate(cloud, source["uuid"])
    row = await _assert_moved(cloud, source, migration_id)
    events = await _events(cloud, source["uuid"])
    src, dst = source["host"], row["host"]
    for expected in [
        ("compute_check_can_live_migrate_destination", "Success", dst),
        ("compute_check_can_live_migrate_source", "Success", src),
        ("compute_pre_live_migration", "Success", dst),
        ("compute_live_migration", "Success", src),
        ("compute_post_live_migration_at_destination", "Success", dst),
        ("compute_post_live_migration", "Success", src),
        ("conductor_live_migrate_instance", "Success", "ctl-0"),
    ]:
        assert expected in events, events
    assert await _faults_of(cloud, source["uuid"]) == []


async def test_live_migrate_to_a_named_host(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    target = sorted(set(cloud.computes) - {source["host"]})[-1]
    migration_id = await live_migrate(cloud, source["uuid"], host=target, block_migration=True)
    row = await _assert_moved(cloud, source, migration_id)
    assert row["host"] == target
    task = await _task(cloud, source["uuid"])
    assert task["payload"]["block"] is True
    assert task["payload"]["migrate_data"]["block_migration"] is True


async def test_a_named_host_that_cannot_take_it_is_no_valid_host(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    migration_id = await live_migrate(cloud, source["uuid"], host="nowhere")
    await _assert_rolled_back(cloud, source, migration_id, fault="No valid host")
    # The source is never a destination, even when named.
    migration_id = await live_migrate(cloud, source["uuid"], host=source["host"])
    await _assert_rolled_back(cloud, source, migration_id, fault="No valid host")


async def test_progress_lands_on_the_migration_and_the_instance(cloud: AllInOne) -> None:
    cloud.faults.migration_delay = 2.0
    source = await _boot(cloud)
    migration_id = await live_migrate(cloud, source["uuid"])

    async def copying() -> dict[str, Any] | None:
        m = await _migration(cloud, migration_id)
        return m if m["status"] == "running" and (m["memory_processed"] or 0) > 0 else None

    during = await _until(copying)
    total = 512 * 1024 * 1024
    assert during["memory_total"] == total
    assert during["memory_processed"] + during["memory_remaining"] == total
    (row,) = await cloud.instances([source["uuid"]])
    assert row["task_state"] == "migrating" and 0 < row["progress"] < 100
    await _assert_moved(cloud, source, migration_id)


# -- failures ------------------------------------------------------------------------------


BEFORE_THE_COPY = [
    "check_can_live_migrate_destination",
    "check_can_live_migrate_source",
    "pre_live_migration",
    "live_migration",
]


@pytest.mark.parametrize("call", BEFORE_THE_COPY)
async def test_a_failing_driver_call_rolls_back_to_the_source(cloud: AllInOne, call: str) -> None:
    source = await _boot(cloud)
    cloud.faults.fail_next[call] = 1
    migration_id = await live_migrate(cloud, source["uuid"])
    await _assert_rolled_back(cloud, source, migration_id, fault="injected")
    assert cloud.faults.fail_next[call] == 0
    # Nothing is left half done: the next live migration works.
    migration_id = await live_migrate(cloud, source["uuid"])
    await _assert_moved(cloud, source, migration_id)


async def test_a_migration_failing_halfway_rolls_back(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    cloud.faults.fail_live_migration_hosts.add(source["host"])
    migration_id = await live_migrate(cloud, source["uuid"])
    await _assert_rolled_back(cloud, source, migration_id, fault="failed halfway")
    events = await _events(cloud, source["uuid"])
    assert ("compute_live_migration", "Error", source["host"]) in events
    # The destination was asked to undo its preparation.
    assert any(e[0] == "compute_rollback_live_migration_at_destination" for e in events), events


async def test_a_failing_rollback_is_retried(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    cloud.faults.fail_next["pre_live_migration"] = 1
    cloud.faults.fail_next["rollback_live_migration_at_destination"] = 1
    migration_id = await live_migrate(cloud, source["uuid"])
    await _assert_rolled_back(cloud, source, migration_id, fault="injected")
    task = await _task(cloud, source["uuid"])
    assert task["payload"]["tries"]["rollback_dest"] == 2


async def test_a_rollback_that_keeps_failing_still_ends_on_the_source(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    cloud.faults.fail_next["pre_live_migration"] = 1
    cloud.faults.fail_calls["rollback_live_migration_at_destination"] = {"*"}
    migration_id = await live_migrate(cloud, source["uuid"])
    await _assert_rolled_back(cloud, source, migration_id, fault="injected")
    task = await _task(cloud, source["uuid"])
    assert task["payload"]["tries"]["rollback_dest"] == 3
    assert task["payload"]["rollback"]["details"].startswith("The clean-up on")


@pytest.mark.parametrize("call", ["post_live_migration_at_destination", "post_live_migration"])
async def test_a_failing_call_after_the_copy_is_retried_forwards(
    cloud: AllInOne, call: str
) -> None:
    source = await _boot(cloud)
    cloud.faults.fail_next[call] = 1
    migration_id = await live_migrate(cloud, source["uuid"])
    await _assert_moved(cloud, source, migration_id, clean=False)
    assert cloud.faults.fail_next[call] == 0
    task = await _task(cloud, source["uuid"])
    step = "post_dest" if call == "post_live_migration_at_destination" else "post_source"
    assert task["payload"]["tries"][step] == 2


async def test_a_destination_that_never_adopts_leaves_an_error_there(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    cloud.faults.fail_calls["post_live_migration_at_destination"] = {"*"}
    migration_id = await live_migrate(cloud, source["uuid"])
    await cloud.wait_tasks([source["uuid"]])
    (row,) = await cloud.instances([source["uuid"]])
    # Nova's answer: the guest's memory is on the destination; ERROR there.
    assert (row["vm_state"], row["task_state"]) == ("error", None)
    assert row["host"] != source["host"]
    await _consistent(cloud, source["uuid"])
    assert (await _migration(cloud, migration_id))["status"] == "error"
    assert (await _task(cloud, source["uuid"]))["status"] == TaskStatus.FAILED
    assert any("adoption" in f for f in await _faults_of(cloud, source["uuid"]))


async def test_the_deadline_during_the_copy_aborts_and_rolls_back(cloud: AllInOne) -> None:
    cloud.faults.migration_delay = 30.0
    source = await _boot(cloud)
    started = time.monotonic()
    migration_id = await live_migrate(cloud, source["uuid"], deadline=1.5)
    await _assert_rolled_back(
        cloud,
        source,
        migration_id,
        task_status=TaskStatus.ROLLED_BACK,
        fault="did not finish before its deadline",
    )
    assert time.monotonic() - started < 15
    # The source was told to stop: nothing keeps copying.
    assert not any(d.live_migrations for d in _drivers(cloud).values())


async def test_a_silent_source_is_told_to_stop_and_rolled_back(tmp_path: Path) -> None:
    cloud = await _start(tmp_path, conductor={"compute_step_timeout": 1.5})
    try:
        source = await _boot(cloud)
        cloud.faults.migration_delay = 30.0  # far longer than the conductor waits for a report
        migration_id = await live_migrate(cloud, source["uuid"])
        await _assert_rolled_back(cloud, source, migration_id, fault="did not report")
        # Whatever the source was doing, it was told to stop (not left to finish).

        async def stopped() -> bool:
            return not any(d.live_migrations for d in _drivers(cloud).values())

        await _until(stopped, timeout=5)
    finally:
        await cloud.stop()


async def test_a_conductor_dying_mid_copy_is_taken_over(tmp_path: Path) -> None:
    cloud = await _start(tmp_path, conductors=2, conductor={"task_lease_seconds": 1.5})
    try:
        source = await _boot(cloud)
        cloud.faults.migration_delay = 3.0
        migration_id = await live_migrate(cloud, source["uuid"])

        async def copying() -> dict[str, Any] | None:
            task = await _task(cloud, source["uuid"])
            return task if task["step"] == "live_migrate" and task["owner"] else None

        task = await _until(copying)
        (dying,) = [e for e in cloud.engines if e.owner == task["owner"]]
        # As kill -9 would leave it: no lease given up, nothing more driven.
        dying._stopping = True
        for coro in (*dying._loops, *dying._coros.values()):
            coro.cancel()
        dying._loops = []
        dying._runs.clear()
        await _assert_moved(cloud, source, migration_id)
        done = await _task(cloud, source["uuid"])
        assert done["attempt"] > task["attempt"]  # carried on under a newer claim
        assert done["payload"]["tries"]["live_migrate"] == 1  # the copy was not asked twice
    finally:
        await cloud.stop()


async def test_the_deadline_after_the_copy_finishes_the_move(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    gate = asyncio.Event()
    for driver in _drivers(cloud).values():

        async def never_adopts(*args: Any, **kwargs: Any) -> None:
            await gate.wait()

        driver.post_live_migration_at_destination = never_adopts  # type: ignore[method-assign]
    try:
        migration_id = await live_migrate(cloud, source["uuid"], deadline=2.0)
        await cloud.wait_tasks([source["uuid"]], timeout=30)
    finally:
        gate.set()
    (row,) = await cloud.instances([source["uuid"]])
    # The guest's memory is on the destination: never undone, ERROR there.
    assert (row["vm_state"], row["task_state"]) == ("error", None)
    assert row["host"] != source["host"]
    assert await check_consistent(cloud.db, source["uuid"]) == []
    assert await check_node_usage(cloud.db) == []
    assert (await _migration(cloud, migration_id))["status"] == "error"
    assert (await _task(cloud, source["uuid"]))["status"] == TaskStatus.FAILED
    assert any("deadline" in f for f in await _faults_of(cloud, source["uuid"]))


async def test_a_paused_instance_moves_paused(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    uuid = source["uuid"]
    async with cloud.db.writer() as conn:
        await instances_api.update(
            conn, uuid, {"vm_state": "paused", "power_state": int(PowerState.PAUSED)}
        )
    drivers = _drivers(cloud)
    drivers[source["host"]].instances[uuid].state = PowerState.PAUSED
    migration_id = await live_migrate(cloud, uuid)
    await cloud.wait_tasks([uuid])
    (row,) = await cloud.instances([uuid])
    assert (row["vm_state"], row["task_state"], row["power_state"]) == (
        "paused",
        None,
        PowerState.PAUSED,
    )
    assert row["host"] != source["host"]
    assert (await _migration(cloud, migration_id))["status"] == "completed"
    assert drivers[row["host"]].instances[uuid].state == PowerState.PAUSED
    assert uuid not in drivers[source["host"]].instances
    assert await check_consistent(cloud.db, uuid, drivers=drivers) == []
    assert await check_node_usage(cloud.db) == []


async def test_notifications(tmp_path: Path) -> None:
    cloud = await _start(tmp_path, notifications={"driver": "messaging"})
    seen: list[tuple[str, str]] = []
    sink = get_transport(cloud.bus, identity="conductor.sink")
    await sink.connect()

    async def note(msg: IncomingMessage) -> None:
        body = msgspec.json.decode(msg.body)
        seen.append((body["event_type"], body["publisher_id"].split(":")[0]))

    await sink.listen("notifications", "sink", note)
    try:
        source = await _boot(cloud)
        migration_id = await live_migrate(cloud, source["uuid"])
        await _assert_moved(cloud, source, migration_id)
        await asyncio.sleep(0.2)
        moved = [e for e in seen if "live_migration" in e[0]]
        assert moved == [
            ("instance.live_migration_pre.start", "compute"),
            ("instance.live_migration_pre.end", "compute"),
            ("instance.live_migration_post_dest.start", "compute"),
            ("instance.live_migration_post_dest.end", "compute"),
            ("instance.live_migration_post.start", "compute"),
            ("instance.live_migration_post.end", "compute"),
        ]
        seen.clear()
        (source,) = await cloud.instances([source["uuid"]])  # where it runs now
        cloud.faults.fail_next["pre_live_migration"] = 1
        migration_id = await live_migrate(cloud, source["uuid"])
        await _assert_rolled_back(cloud, source, migration_id, fault="injected")
        await asyncio.sleep(0.2)
        assert ("instance.live_migration.error", "conductor") in seen
        assert ("instance.live_migration_pre.error", "compute") in seen
        seen.clear()
        migration_id = await live_migrate(cloud, source["uuid"], kick=False)
        await abort(cloud, source["uuid"], migration_id)
        await cloud.api.conductor.kick(_ctxt(), [])
        await _assert_rolled_back(
            cloud,
            source,
            migration_id,
            status="cancelled",
            task_status=TaskStatus.CANCELLED,
            fault="was cancelled",
        )
        await asyncio.sleep(0.2)
        assert [e for e in seen if "live_migration" in e[0]] == [
            ("instance.live_migration_abort.end", "conductor")
        ]
    finally:
        await sink.close()
        await cloud.stop()


# -- abort and force complete ---------------------------------------------------------------


async def test_abort_mid_migration_cancels_it(cloud: AllInOne) -> None:
    cloud.faults.migration_delay = 30.0
    source = await _boot(cloud)
    migration_id = await live_migrate(cloud, source["uuid"])

    async def copying() -> bool:
        m = await _migration(cloud, migration_id)
        return m["status"] == "running" and (m["memory_processed"] or 0) > 0

    await _until(copying)
    started = time.monotonic()
    await abort(cloud, source["uuid"], migration_id)
    await _assert_rolled_back(
        cloud,
        source,
        migration_id,
        status="cancelled",
        task_status=TaskStatus.CANCELLED,
        fault="was cancelled",
    )
    assert time.monotonic() - started < 10  # stopped, not waited out
    events = await _events(cloud, source["uuid"])
    assert ("compute_live_migration", "Error", source["host"]) in events
    cancel = await _events(cloud, source["uuid"], CANCEL_ACTION)
    assert cancel == [("compute_live_migration_abort", "Success", source["host"])]


async def test_abort_before_the_copy_cancels_at_the_next_step(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    migration_id = await live_migrate(cloud, source["uuid"], kick=False)
    await abort(cloud, source["uuid"], migration_id)
    await cloud.api.conductor.kick(_ctxt(), [])
    await _assert_rolled_back(
        cloud,
        source,
        migration_id,
        status="cancelled",
        task_status=TaskStatus.CANCELLED,
        fault="was cancelled",
    )
    events = await _events(cloud, source["uuid"])
    # No host was asked anything.
    assert [e for e in events if e[0].startswith("compute_")] == []


async def test_abort_while_the_destination_prepares(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    gate = asyncio.Event()
    drivers = _drivers(cloud)
    reached = asyncio.Event()
    for driver in drivers.values():
        real = driver.pre_live_migration

        async def held(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            reached.set()
            await gate.wait()
            return await _real(*args, **kwargs)

        driver.pre_live_migration = held  # type: ignore[method-assign]
    migration_id = await live_migrate(cloud, source["uuid"])
    await asyncio.wait_for(reached.wait(), 20)
    await abort(cloud, source["uuid"], migration_id)
    gate.set()
    await _assert_rolled_back(
        cloud,
        source,
        migration_id,
        status="cancelled",
        task_status=TaskStatus.CANCELLED,
        fault="was cancelled",
    )
    events = await _events(cloud, source["uuid"])
    # The copy never started; the destination undid its preparation.
    assert not any(e[0] == "compute_live_migration" for e in events), events
    assert any(e[0] == "compute_rollback_live_migration_at_destination" for e in events), events


async def _abort_while_held(cloud: AllInOne, call: str) -> tuple[dict[str, Any], int]:
    """Live-migrate, and abort it while driver ``call`` runs (held until the abort is in)."""
    source = await _boot(cloud)
    gate = asyncio.Event()
    reached = asyncio.Event()
    for driver in _drivers(cloud).values():
        real = getattr(driver, call)

        async def held(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            reached.set()
            await gate.wait()
            return await _real(*args, **kwargs)

        setattr(driver, call, held)
    migration_id = await live_migrate(cloud, source["uuid"])
    await asyncio.wait_for(reached.wait(), 20)
    await abort(cloud, source["uuid"], migration_id)
    gate.set()
    await _assert_rolled_back(
        cloud,
        source,
        migration_id,
        status="cancelled",
        task_status=TaskStatus.CANCELLED,
        fault="was cancelled",
    )
    return source, migration_id


async def test_abort_during_the_destination_check_stops_before_the_source_check(
    cloud: AllInOne,
) -> None:
    source, _ = await _abort_while_held(cloud, "check_can_live_migrate_destination")
    names = [e[0] for e in await _events(cloud, source["uuid"])]
    assert "compute_check_can_live_migrate_destination" in names
    # Nothing was prepared: no host is asked anything more.
    assert not [n for n in names if "source" in n or "pre_live" in n or "rollback" in n], names


async def test_abort_during_the_source_check_undoes_at_the_destination(cloud: AllInOne) -> None:
    source, _ = await _abort_while_held(cloud, "check_can_live_migrate_source")
    names = [e[0] for e in await _events(cloud, source["uuid"])]
    assert "compute_check_can_live_migrate_source" in names
    # pre_live finds it cancelling when it starts: it is not asked, but the
    # destination is told to undo whatever it may hold.
    assert "compute_pre_live_migration" not in names, names
    assert "compute_rollback_live_migration_at_destination" in names, names


async def test_force_complete_finishes_it_now(cloud: AllInOne) -> None:
    cloud.faults.migration_delay = 60.0
    source = await _boot(cloud)
    migration_id = await live_migrate(cloud, source["uuid"])

    async def copying() -> bool:
        m = await _migration(cloud, migration_id)
        return m["status"] == "running" and (m["memory_processed"] or 0) > 0

    await _until(copying)
    started = time.monotonic()
    await force_complete(cloud, source["uuid"], migration_id)
    await _assert_moved(cloud, source, migration_id)
    assert time.monotonic() - started < 10
    forced = await _events(cloud, source["uuid"], FORCE_ACTION)
    assert forced == [("compute_live_migration_force_complete", "Success", source["host"])]


async def test_force_complete_before_the_copy_does_nothing(cloud: AllInOne) -> None:
    source = await _boot(cloud)
    migration_id = await live_migrate(cloud, source["uuid"], kick=False)
    await force_complete(cloud, source["uuid"], migration_id)
    await cloud.api.conductor.kick(_ctxt(), [])
    await _assert_moved(cloud, source, migration_id)
    # Nothing was running to force: no host was asked.
    assert await _events(cloud, source["uuid"], FORCE_ACTION) == []


# -- through the API's records ------------------------------------------------------------------


async def test_through_the_api_migrate_abort_and_migrate_again(cloud: AllInOne) -> None:
    from nubes.api.moves import MovesAPI

    api = MovesAPI(cloud.db, cloud.api.conductor, conf=cloud.conf)
    cloud.faults.migration_delay = 30.0
    source = await _boot(cloud)
    uuid = source["uuid"]
    await api.live_migrate_server(_ctxt(), uuid)
    async with cloud.db.reader() as conn:
        (first,) = await migrations_api.list_by_instance(conn, uuid)

    async def copying() -> bool:
        m = await _migration(cloud, first["id"])
        return m["status"] == "running" and (m["memory_processed"] or 0) > 0

    await _until(copying)
    await api.abort_live_migration(_ctxt(), uuid, first["id"])
    await _assert_rolled_back(
        cloud,
        source,
        first["id"],
        status="cancelled",
        task_status=TaskStatus.CANCELLED,
        fault="was cancelled",
    )
    cancel = await _events(cloud, uuid, CANCEL_ACTION)
    assert cancel == [("compute_live_migration_abort", "Success", source["host"])]

    cloud.faults.migration_delay = 0.0
    target = sorted(set(cloud.computes) - {source["host"]})[0]
    await api.live_migrate_server(_ctxt(), uuid, host=target)
    async with cloud.db.reader() as conn:
        second = (await migrations_api.list_by_instance(conn, uuid))[-1]
    row = await _assert_moved(cloud, source, second["id"])
    assert row["host"] == target
