"""Compute's live-migration steps, through a real conductor, with fake drivers.

Two hosts: ``cmp1`` (the source, where the instance runs) and ``cmp2``
(the destination). Each step is cast as the conductor's task would and its
report read from the step recorder.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from nubes.compute import live_migration as lm
from nubes.context import RequestContext
from nubes.db.api import migrations as migrations_api
from nubes.objects.instance import Instance
from nubes.objects.instance_action import InstanceAction, InstanceActionEvent
from nubes.objects.migration import Migration
from nubes.step_end import EventEnd
from nubes.testing.cloud import Cloud
from tests.unit.compute.conftest import ComputeHarness, start_host

pytestmark = pytest.mark.timeout(60)

_tasks = itertools.count(1000)


@pytest.fixture
async def dest(cloud: Cloud, compute: ComputeHarness) -> ComputeHarness:
    # The same fault registry for both, so one test's injections reach each.
    from nubes.compute.virt.fake import FakeDriver

    return await start_host(cloud, "cmp2", driver=FakeDriver("cmp2", faults=compute.faults))


async def _moving(
    compute: ComputeHarness, status: str = "running"
) -> tuple[Instance, Migration, RequestContext]:
    """An instance running on cmp1 in a live migration to cmp2, with its action."""
    inst = await compute.instance(vm_state="active", task_state="migrating", power_state=1)
    compute.driver.add_instance(inst)
    async with compute.cloud.db.writer() as conn:
        row = await migrations_api.create(
            conn,
            {
                "instance_uuid": inst.uuid,
                "source_compute": "cmp1",
                "source_node": "cmp1",
                "dest_compute": "cmp2",
                "dest_node": "cmp2",
                "migration_type": "live-migration",
                "status": status,
            },
        )
    ctxt = RequestContext(user_id="u1", project_id="p1")
    await InstanceAction.action_start(ctxt, inst.uuid, "live-migration")
    migration = await Migration.get_by_id(RequestContext(), row["id"])
    return inst, migration, ctxt


async def _step(
    host: ComputeHarness, method: str, ctxt: RequestContext, inst: Instance, **kwargs: Any
) -> dict[str, Any]:
    """Cast one step to ``host`` (a new task id) and return its report."""
    task_id = next(_tasks)
    await host.run(
        getattr(host.node.manager.live, method),
        ctxt,
        instance=inst,
        task_id=task_id,
        step=method,
        attempt=1,
        **kwargs,
    )
    (report,) = await host.steps.wait(task_id, timeout=20)
    return report


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


async def _events(ctxt: RequestContext, inst: Instance) -> list[tuple[str, str | None, str | None]]:
    action = await InstanceAction.get_by_request_id(ctxt, inst.uuid, ctxt.request_id)
    return [
        (e.event, e.result, e.host)
        for e in await InstanceActionEvent.get_by_action(ctxt, action.id)
    ]


async def test_each_step_does_its_driver_work_and_reports_what_comes_next(
    compute: ComputeHarness, dest: ComputeHarness
) -> None:
    inst, migration, ctxt = await _moving(compute)
    checked = await _step(
        dest, "check_can_live_migrate_destination", ctxt, inst, block_migration=False
    )
    assert checked["ok"]
    dest_check_data = checked["details"]["dest_check_data"]
    assert dest_check_data == {"dest_host": "cmp2", "block_migration": False}

    source = await _step(
        compute, "check_can_live_migrate_source", ctxt, inst, dest_check_data=dest_check_data
    )
    migrate_data = source["details"]["migrate_data"]
    assert migrate_data["source_host"] == "cmp1"

    prepared = await _step(dest, "pre_live_migration", ctxt, inst, migrate_data=migrate_data)
    migrate_data = prepared["details"]["migrate_data"]
    assert migrate_data["pre_live_migration_done"] is True

    copied = await _step(
        compute,
        "live_migration",
        ctxt,
        inst,
        migration=migration,
        dest_host="cmp2",
        migrate_data=migrate_data,
    )
    assert copied == {**copied, "ok": True, "error": None}
    # Memory copied, the guest still on the source until the destination adopts it.
    assert inst.uuid in compute.driver.instances and inst.uuid not in dest.driver.instances

    adopted = await _step(
        dest, "post_live_migration_at_destination", ctxt, inst, migrate_data=migrate_data
    )
    assert adopted["ok"] and inst.uuid in dest.driver.instances
    cleaned = await _step(compute, "post_live_migration", ctxt, inst, migrate_data=migrate_data)
    assert cleaned["ok"] and inst.uuid not in compute.driver.instances

    # Each host started its step's event; its end went with the step's report
    # (the conductor writes it with the report: nubes/step_end.py).
    names = [
        ("compute_check_can_live_migrate_destination", "cmp2"),
        ("compute_check_can_live_migrate_source", "cmp1"),
        ("compute_pre_live_migration", "cmp2"),
        ("compute_live_migration", "cmp1"),
        ("compute_post_live_migration_at_destination", "cmp2"),
        ("compute_post_live_migration", "cmp1"),
    ]
    assert await _events(ctxt, inst) == [(name, None, host) for name, host in names]
    reports = (checked, source, prepared, copied, adopted, cleaned)
    assert [r["event"] for r in reports] == [
        EventEnd(event=name, result="Success") for name, _ in names
    ]
    # Move steps write no state: the conductor does (docs/moves.md).
    saved = await compute.reload(inst.uuid)
    assert (saved.host, saved.vm_state, saved.task_state) == ("cmp1", "active", "migrating")
    assert (await Migration.get_by_id(RequestContext(), migration.id)).status == "running"


async def test_a_failing_check_reports_the_error_and_a_fault(
    compute: ComputeHarness, dest: ComputeHarness
) -> None:
    inst, _, ctxt = await _moving(compute)
    dest.driver.add_instance(inst)  # already there: the destination refuses it
    report = await _step(
        dest, "check_can_live_migrate_destination", ctxt, inst, block_migration=True
    )
    assert not report["ok"] and "already on cmp2" in report["error"]
    assert report["details"] == {"exception": "Conflict"}
    assert await _events(ctxt, inst) == [
        ("compute_check_can_live_migrate_destination", None, "cmp2")
    ]
    event = report["event"]
    assert (event.event, event.result) == ("compute_check_can_live_migrate_destination", "Error")
    assert event.details and "already on cmp2" in event.details
    assert event.traceback and "Conflict" in event.traceback
    fault = (await compute.reload(inst.uuid)).fault
    assert fault is not None and fault.host == "cmp2"


async def test_a_repeated_step_is_answered_not_redone(
    compute: ComputeHarness, dest: ComputeHarness
) -> None:
    inst, _, ctxt = await _moving(compute)
    calls = 0
    real = dest.driver.pre_live_migration

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    dest.driver.pre_live_migration = counting  # type: ignore[method-assign]
    task_id = next(_tasks)
    for _ in range(3):
        await dest.run(
            dest.node.manager.live.pre_live_migration,
            ctxt,
            instance=inst,
            task_id=task_id,
            step="pre_live",
            attempt=1,
            migrate_data={"x": 1},
        )
    reports = await dest.steps.wait(task_id, count=3)
    assert [r["ok"] for r in reports] == [True, True, True]
    assert reports[0]["details"] == reports[2]["details"]
    assert calls == 1


async def test_rollback_and_post_steps_are_idempotent(
    compute: ComputeHarness, dest: ComputeHarness
) -> None:
    inst, _, ctxt = await _moving(compute)
    dest.driver.add_instance(inst)
    for _ in range(2):  # a new try each time: run again, harmlessly
        report = await _step(
            dest, "rollback_live_migration_at_destination", ctxt, inst, migrate_data={}
        )
        assert report["ok"] and inst.uuid not in dest.driver.instances
        report = await _step(compute, "post_live_migration", ctxt, inst, migrate_data={})
        assert report["ok"] and inst.uuid not in compute.driver.instances


async def test_progress_is_saved_on_the_instance_and_the_migration(
    compute: ComputeHarness, dest: ComputeHarness
) -> None:
    compute.faults.migration_delay = 1.2
    inst, migration, ctxt = await _moving(compute)
    task = asyncio.create_task(
        _step(
            compute,
            "live_migration",
            ctxt,
            inst,
            migration=migration,
            dest_host="cmp2",
            migrate_data={},
        )
    )

    async def saved() -> Migration:
        while True:
            found = await Migration.get_by_id(RequestContext(), migration.id)
            if found.memory_processed:
                return found
            await asyncio.sleep(0.02)

    during = await asyncio.wait_for(saved(), 10)
    total = inst.memory_mb * 1024 * 1024
    assert during.memory_total == total > 0
    assert during.memory_processed + during.memory_remaining == total
    assert 0 < (await compute.reload(inst.uuid)).progress < 100
    assert (await task)["ok"]
    # Throttled: 1.2 s of ticks every 50 ms, saved at most every 0.5 s.
    final = await Migration.get_by_id(RequestContext(), migration.id)
    assert final.memory_processed >= during.memory_processed


async def test_progress_saves_are_throttled(compute: ComputeHarness, dest: ComputeHarness) -> None:
    compute.faults.migration_delay = 0.6
    inst, migration, ctxt = await _moving(compute)
    saves = 0
    real = compute.node.manager.live._save_progress

    async def counting(*args: Any) -> None:
        nonlocal saves
        saves += 1
        await real(*args)

    compute.node.manager.live._save_progress = counting  # type: ignore[method-assign]
    report = await _step(
        compute,
        "live_migration",
        ctxt,
        inst,
        migration=migration,
        dest_host="cmp2",
        migrate_data={},
    )
    assert report["ok"]
    ticks = 0.6 / 0.05
    assert 1 <= saves <= 0.6 / lm.PROGRESS_SAVE_INTERVAL + 1 < ticks


async def test_abort_stops_the_running_copy(compute: ComputeHarness, dest: ComputeHarness) -> None:
    compute.faults.migration_delay = 20.0
    inst, migration, ctxt = await _moving(compute)
    task = asyncio.create_task(
        _step(
            compute,
            "live_migration",
            ctxt,
            inst,
            migration=migration,
            dest_host="cmp2",
            migrate_data={},
        )
    )
    await _until(lambda: inst.uuid in compute.driver.live_migrations)
    started = time.monotonic()
    # A request for another migration of the instance is not this one's.
    await compute.run(
        compute.node.manager.live.live_migration_abort,
        ctxt,
        instance=inst,
        migration_id=migration.id + 1,
    )
    await asyncio.sleep(0.2)  # four ticks
    assert inst.uuid in compute.driver.live_migrations
    await compute.run(
        compute.node.manager.live.live_migration_abort,
        ctxt,
        instance=inst,
        migration_id=migration.id,
    )
    report = await asyncio.wait_for(task, 10)
    assert time.monotonic() - started < 2
    assert not report["ok"] and report["details"]["aborted"] is True
    assert "aborted" in report["error"]
    # The guest keeps running on the source; nothing is left migrating.
    assert inst.uuid in compute.driver.instances
    assert compute.driver.live_migrations == {} and compute.node.manager.live.live_jobs == {}


async def test_a_migration_already_cancelling_is_never_started(
    compute: ComputeHarness, dest: ComputeHarness
) -> None:
    inst, migration, ctxt = await _moving(compute, status="cancelling")
    started = 0
    real = compute.driver.live_migration

    async def counting(*args: Any, **kwargs: Any) -> None:
        nonlocal started
        started += 1
        await real(*args, **kwargs)

    compute.driver.live_migration = counting  # type: ignore[method-assign]
    report = await _step(
        compute,
        "live_migration",
        ctxt,
        inst,
        migration=migration,
        dest_host="cmp2",
        migrate_data={},
    )
    assert not report["ok"] and report["details"]["aborted"] is True
    assert started == 0


async def test_an_abort_with_nothing_running_does_nothing(
    compute: ComputeHarness, dest: ComputeHarness
) -> None:
    inst, migration, ctxt = await _moving(compute)
    await compute.run(
        compute.node.manager.live.live_migration_abort,
        ctxt,
        instance=inst,
        migration_id=migration.id,
    )
    # Not remembered for later: the copy that starts now runs to its end.
    report = await _step(
        compute,
        "live_migration",
        ctxt,
        inst,
        migration=migration,
        dest_host="cmp2",
        migrate_data={},
    )
    assert report["ok"]


async def test_force_complete_finishes_the_copy_now(
    compute: ComputeHarness, dest: ComputeHarness
) -> None:
    compute.faults.migration_delay = 20.0
    inst, migration, ctxt = await _moving(compute)
    task = asyncio.create_task(
        _step(
            compute,
            "live_migration",
            ctxt,
            inst,
            migration=migration,
            dest_host="cmp2",
            migrate_data={},
        )
    )
    await _until(lambda: inst.uuid in compute.driver.live_migrations)
    started = time.monotonic()
    await compute.run(
        compute.node.manager.live.live_migration_force_complete,
        ctxt,
        instance=inst,
        migration_id=migration.id,
    )
    report = await asyncio.wait_for(task, 10)
    assert report["ok"] and time.monotonic() - started < 2
    events = await _events(ctxt, inst)
    assert ("compute_live_migration_force_complete", "Success", "cmp1") in events


async def test_a_request_the_driver_cannot_take_yet_reaches_it_at_its_first_tick(
    compute: ComputeHarness, dest: ComputeHarness
) -> None:
    compute.faults.migration_delay = 20.0
    inst, migration, ctxt = await _moving(compute)
    real = compute.driver.live_migration
    entered = asyncio.Event()

    async def slow_to_begin(*args: Any, **kwargs: Any) -> None:
        # A driver that registers the migration only after some work of its own.
        entered.set()
        await asyncio.sleep(0.2)
        await real(*args, **kwargs)

    compute.driver.live_migration = slow_to_begin  # type: ignore[method-assign]
    task = asyncio.create_task(
        _step(
            compute,
            "live_migration",
            ctxt,
            inst,
            migration=migration,
            dest_host="cmp2",
            migrate_data={},
        )
    )
    await asyncio.wait_for(entered.wait(), 10)
    await compute.run(
        compute.node.manager.live.live_migration_force_complete,
        ctxt,
        instance=inst,
        migration_id=migration.id,
    )
    job = compute.node.manager.live.live_jobs[inst.uuid]
    assert job.requested is lm.Request.FORCE_COMPLETE and not job.delivered
    report = await asyncio.wait_for(task, 5)
    assert report["ok"]


async def test_an_abort_before_the_driver_call_skips_it(
    compute: ComputeHarness, dest: ComputeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    inst, migration, ctxt = await _moving(compute)
    gate = asyncio.Event()
    real_get = Migration.get_by_id

    async def held_read(context: RequestContext, id: int) -> Migration:
        # The abort arrives while the step reads the migration's status.
        found = await real_get(context, id)
        await gate.wait()
        return found

    started = 0
    real = compute.driver.live_migration

    async def counting(*args: Any, **kwargs: Any) -> None:
        nonlocal started
        started += 1
        await real(*args, **kwargs)

    compute.driver.live_migration = counting  # type: ignore[method-assign]
    monkeypatch.setattr(Migration, "get_by_id", held_read)
    task = asyncio.create_task(
        _step(
            compute,
            "live_migration",
            ctxt,
            inst,
            migration=migration,
            dest_host="cmp2",
            migrate_data={},
        )
    )
    await _until(lambda: inst.uuid in compute.node.manager.live.live_jobs)
    await compute.run(
        compute.node.manager.live.live_migration_abort,
        ctxt,
        instance=inst,
        migration_id=migration.id,
    )
    gate.set()
    report = await asyncio.wait_for(task, 10)
    assert not report["ok"] and report["details"]["aborted"] is True
    assert started == 0
