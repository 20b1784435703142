"""The task engine: takeover of expired leases, reports without an owner,
deadlines, step timeouts, and who may report or kick."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from nubes import exception
from nubes.conductor.manager import ConductorManager
from nubes.conductor.tasks.engine import TaskEngine
from nubes.context import RequestContext
from nubes.db.api import compute_nodes, tasks
from nubes.db.api.tasks import TaskStatus
from nubes.testing import crash
from nubes.testing.allinone import AllInOne
from tests.unit.conductor.conftest import IMAGE, start_cloud

pytestmark = pytest.mark.timeout(90)


async def _task(cloud: AllInOne, uuid: str) -> dict:
    async with cloud.db.reader() as conn:
        found = await tasks.list_for_instance(conn, uuid)
    return found[-1]


async def _until(check, timeout: float = 20.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(interval)


async def finish_on_a_new_engine(
    cloud: AllInOne, engine: TaskEngine, uuids: list[str], host: str = "ctl-new"
) -> None:
    """Have a new conductor's engine (on ``engine``'s transport) finish the tasks of ``uuids``."""
    fresh = TaskEngine(cloud.db, engine.transport, host=host, conf=cloud.conf)
    await fresh.start()
    try:
        await cloud.wait_tasks(uuids)
    finally:
        await fresh.stop()


def _crash(engine: TaskEngine) -> None:
    """Stop an engine the way kill -9 would: no lease is given up."""
    engine._stopping = True
    for task in (*engine._loops, *engine._coros.values()):
        task.cancel()
    engine._loops = []
    engine._runs.clear()


async def test_a_task_whose_conductor_died_is_taken_over(
    cloud: AllInOne, ctxt: RequestContext
) -> None:
    engine = cloud.engines[0]
    await engine.stop()
    (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
    task = await _task(cloud, inst.uuid)
    async with cloud.db.writer() as conn:
        # A conductor that claimed it and died at once.
        await tasks.claim(conn, task["id"], "dead:1:x", lease_seconds=0.3)
    await engine.start()
    await cloud.wait_tasks([inst.uuid], timeout=20)
    done = await _task(cloud, inst.uuid)
    assert done["status"] == TaskStatus.SUCCEEDED
    assert done["attempt"] >= 2  # the dead claim, then ours
    (row,) = await cloud.instances([inst.uuid])
    assert row["vm_state"] == "active"


async def test_a_report_to_a_task_nobody_owns_is_kept_for_the_next_owner(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    cloud = await start_cloud(tmp_path)
    try:
        cloud.faults.spawn_delay = 0.5
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)

        async def spawning() -> bool:
            (row,) = await cloud.instances([inst.uuid])
            return row["task_state"] == "spawning"

        await _until(spawning)
        engine = cloud.engines[0]
        _crash(engine)  # while it waits for the host's report

        async def reported() -> dict | None:
            task = await _task(cloud, inst.uuid)
            return task if (task["payload"] or {}).get("outcome") else None

        task = await _until(reported)
        assert task["status"] == TaskStatus.RUNNING and task["owner"] is None
        assert task["payload"]["outcome"]["ok"] is True
        # The next conductor to look finishes the build from the row alone.
        await finish_on_a_new_engine(cloud, engine, [inst.uuid])
        assert (await _task(cloud, inst.uuid))["status"] == TaskStatus.SUCCEEDED
    finally:
        await cloud.stop()


async def test_a_build_past_its_deadline_ends_in_error_with_its_claim_released(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    cloud = await start_cloud(tmp_path, conductor={"build_deadline": 1.0})
    try:
        cloud.faults.spawn_delay = 3.0
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
        await cloud.wait_tasks([inst.uuid], timeout=10)
        task = await _task(cloud, inst.uuid)
        assert task["status"] == TaskStatus.FAILED
        assert "deadline" in task["last_error"]
        (row,) = await cloud.instances([inst.uuid])
        assert (row["vm_state"], row["task_state"], row["host"]) == ("error", None, None)
        async with cloud.db.reader() as conn:
            for node in await compute_nodes.get_all(conn):
                assert await compute_nodes.allocations_get_by_node(conn, node["id"]) == []
        # The late spawn does not bring it back.
        await asyncio.sleep(3.0)
        (row,) = await cloud.instances([inst.uuid])
        assert row["vm_state"] == "error"
    finally:
        await cloud.stop()


async def test_a_host_that_never_reports_counts_as_a_failure(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    cloud = await start_cloud(tmp_path, hosts=0, conductor={"compute_step_timeout": 1.0})
    try:
        await cloud.add_hosts(["mute"], capacity={"vcpus": 1024, "memory_mb": 2**22})
        await cloud.add_hosts(["speaks"])
        await cloud.stop_host("mute")  # still "up" to the scheduler, but deaf
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
        await cloud.wait_tasks([inst.uuid], timeout=20)
        (row,) = await cloud.instances([inst.uuid])
        assert (row["vm_state"], row["host"]) == ("active", "speaks")
        task = await _task(cloud, inst.uuid)
        (failure,) = task["payload"]["failures"]
        assert failure["host"] == "mute" and "did not report" in failure["error"]
    finally:
        await cloud.stop()


async def test_a_step_message_the_bus_never_takes_counts_as_a_silent_host(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    """A cast that never completes (a publisher confirm that never comes
    after a broker node was lost, as in the fault suite's cluster-node-loss
    scenario) held the build's run, its lease renewed, for ever: the build
    stayed spawning. The send is bounded by the step's wait."""
    cloud = await start_cloud(tmp_path, hosts=2, conductor={"compute_step_timeout": 1.0})
    try:
        compute = cloud.engines[0].compute
        real = compute.build_and_run_instance
        stuck: list[str] = []

        async def never_confirmed(ctxt: RequestContext, host: str, *args, **kwargs) -> None:
            if not stuck:
                stuck.append(host)
                await asyncio.Event().wait()  # the confirm that never comes
            await real(ctxt, host, *args, **kwargs)

        compute.build_and_run_instance = never_confirmed  # type: ignore[method-assign]
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
        await cloud.wait_tasks([inst.uuid], timeout=20)
        (row,) = await cloud.instances([inst.uuid])
        assert row["vm_state"] == "active" and row["host"] != stuck[0]
        task = await _task(cloud, inst.uuid)
        (failure,) = task["payload"]["failures"]
        assert failure["host"] == stuck[0] and "did not take" in failure["error"]
    finally:
        await cloud.stop()


async def test_reports_are_authorised_against_the_task(
    cloud: AllInOne, ctxt: RequestContext, caplog: pytest.LogCaptureFixture
) -> None:
    engine = cloud.engines[0]
    cloud.faults.spawn_delay = 2.0
    (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)

    async def waiting() -> dict | None:
        task = await _task(cloud, inst.uuid)
        return task if task["step"] == "spawn" else None

    task = await _until(waiting)
    awaited = task["payload"]["await"]
    mgr = ConductorManager(cloud.db, engine=engine)
    other = "fake-1" if awaited["host"] == "fake-0" else "fake-0"

    def as_host(host: str) -> RequestContext:
        return RequestContext(caller=f"compute.{host}")

    refused = [
        (other, awaited["step"], awaited["attempt"]),  # not the host the task awaits
        (awaited["host"], "schedule", awaited["attempt"]),  # not the step
        (awaited["host"], awaited["step"], awaited["attempt"] + 1),  # not the try
    ]
    with caplog.at_level(logging.WARNING, logger="nubes.audit"):
        for host, step, attempt in refused:
            with pytest.raises(exception.Forbidden):
                await mgr.step_finished(as_host(host), task["id"], step, attempt, ok=False)
        with pytest.raises(exception.Forbidden):
            await mgr.step_finished(as_host(other), 999_999, "spawn", 1, ok=True)
        with pytest.raises(exception.Forbidden):
            await mgr.kick(as_host(other), [task["id"]])
    audit = [r.getMessage() for r in caplog.records if r.name == "nubes.audit"]
    assert len(audit) == 5
    assert all("step_finished" in line or "kick" in line for line in audit)
    # Nothing was written into the task by the refused reports.
    assert "outcome" not in (await _task(cloud, inst.uuid))["payload"]
    await cloud.wait_tasks([inst.uuid], timeout=20)
    assert (await _task(cloud, inst.uuid))["status"] == TaskStatus.SUCCEEDED


async def test_an_engine_tells_its_boundary_hook_each_step_boundary(
    cloud: AllInOne, ctxt: RequestContext
) -> None:
    """The crash suite's hook is injected at construction and sees every boundary."""
    engine = cloud.engines[0]
    await engine.stop()
    (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
    passed: list[str] = []
    hooked = TaskEngine(
        cloud.db, engine.transport, host="ctl-hooked", conf=cloud.conf, boundary=passed.append
    )
    await hooked.start()
    try:
        await cloud.wait_tasks([inst.uuid])
    finally:
        await hooked.stop()
    assert "build:after:schedule" in passed
    assert any(p.startswith("build:sent:") for p in passed)
    # Without a hook the engine passes boundaries silently.
    engine.passed("build:after:schedule")


def test_the_crash_hook_is_inert_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(crash.os, "_exit", exits.append)
    crash.CrashAt.from_environ({})("build:after:schedule")
    assert exits == []
    hook = crash.CrashAt.from_environ({crash.CRASH_ENV: " build:after:schedule, x:sent:y"})
    hook("build:after:spawn")
    hook("build:after:schedule")
    assert exits == [crash.CRASH_EXIT_CODE]


async def test_a_stopping_engine_hands_over_a_run_still_working_after_its_drain_timeout(
    tmp_path: Path, ctxt: RequestContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A build stuck asking the scheduler (stopped) is working, not waiting for a
    host: the drain waits ``drain_timeout`` for it, then gives its lease up, and
    another conductor finishes it once the scheduler is back."""
    cloud = await start_cloud(tmp_path, conductor={"drain_timeout": 0.5})
    try:
        engine = cloud.engines[0]
        # The scheduler stops listening (its service and transport stay).
        await cloud.scheduler.rpcserver.stop()
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)

        async def held() -> bool:
            return (await _task(cloud, inst.uuid))["owner"] == engine.owner

        await _until(held)
        with caplog.at_level(logging.INFO, logger="nubes.conductor.tasks.engine"):
            await engine.stop()
        assert "1 tasks still working after 0.5 s; handing them over" in caplog.text
        assert "not drained within 0.5 s; 1 leases given up" in caplog.text
        task = await _task(cloud, inst.uuid)
        assert task["owner"] is None and task["status"] != TaskStatus.SUCCEEDED

        await cloud.scheduler.rpcserver.start()
        await finish_on_a_new_engine(cloud, engine, [inst.uuid])
        (row,) = await cloud.instances([inst.uuid])
        assert row["vm_state"] == "active"
    finally:
        await cloud.stop()


async def test_kicks_that_come_close_together_are_claimed_together(
    tmp_path: Path, ctxt: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single-server POSTs at a high rate: the first kick is claimed at once,
    the kicks that come within KICK_GATHER of that claim in one claim."""
    from nubes.conductor.tasks import engine as engine_module

    # Long enough that the next two creates come within it on a loaded
    # machine (each takes milliseconds); the test waits it out once.
    monkeypatch.setattr(engine_module, "KICK_GATHER", 10.0)
    claims: list[list[int]] = []
    claim_many = tasks.claim_many

    async def recording(conn, ids, *args, **kwargs):  # type: ignore[no-untyped-def]
        claims.append(sorted(ids))
        return await claim_many(conn, ids, *args, **kwargs)

    monkeypatch.setattr(tasks, "claim_many", recording)
    # No poll that could claim a task before its kick arrives.
    cloud = await start_cloud(tmp_path, conductor={"task_poll_interval": 600})
    try:
        (first,) = await cloud.api.create_servers(ctxt, name="a", flavor="small", image=IMAGE)

        async def claimed() -> bool:
            return bool(claims)

        await _until(claimed)
        (second,) = await cloud.api.create_servers(ctxt, name="b", flavor="small", image=IMAGE)
        (third,) = await cloud.api.create_servers(ctxt, name="c", flavor="small", image=IMAGE)
        uuids = [first.uuid, second.uuid, third.uuid]
        await cloud.wait_tasks(uuids, timeout=60)
        ids = [(await _task(cloud, uuid))["id"] for uuid in uuids]
    finally:
        await cloud.stop()
    assert claims[:2] == [[ids[0]], sorted(ids[1:])]
