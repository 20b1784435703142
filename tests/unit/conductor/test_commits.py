"""How the task engine commits: a step's end together with what it wrote, as one
unit grouped with other tasks' commits, or the ordinary way; either way all of it
or nothing, and only while the lease holds. Also how it claims: waiting tasks as
soon as there is room, and the first step's instance read with the claim."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nubes import exception
from nubes.conductor.tasks import helpers
from nubes.conductor.tasks.base import Run, run_writes
from nubes.conductor.tasks.engine import TaskEngine
from nubes.context import RequestContext
from nubes.db import group_commit
from nubes.db.api import actions, instances, tasks
from nubes.db.api.tasks import TaskStatus
from nubes.testing.allinone import AllInOne
from tests.unit.conductor.conftest import IMAGE, start_cloud

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def idle(tmp_path: Path) -> AsyncIterator[AllInOne]:
    """A cloud whose engine is stopped: the tests drive a Run by hand."""
    cloud = await start_cloud(tmp_path)
    await cloud.engines[0].stop()
    yield cloud
    await cloud.stop()


async def _run(cloud: AllInOne, ctxt: RequestContext) -> Run:
    """A build task (of a new server) claimed by the cloud's engine, as a Run."""
    (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
    engine = cloud.engines[0]
    async with cloud.db.writer() as conn:
        (task,) = await tasks.list_for_instance(conn, inst.uuid)
        row = await tasks.claim(conn, task["id"], engine.owner, lease_seconds=30)
    assert row is not None
    return Run(engine, row)


async def _state(cloud: AllInOne, run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    async with cloud.db.reader() as conn:
        task = await tasks.get(conn, run.id)
        assert run.instance_uuid is not None
        inst = await instances.get_by_uuid(conn, run.instance_uuid)
    return task, inst


def _placement(run: Run, host: str) -> Any:
    return helpers.set_instance(
        run, {"host": host, "node": f"{host}-node"}, expected_task_state=("scheduling",)
    )


def _plain(writes: Any) -> Any:
    """The same writes, but not groupable: the commit takes the ordinary way."""

    async def write(conn: Any) -> None:
        await run_writes(conn, writes)

    return write


@pytest.fixture(params=["grouped", "ordinary"])
def way(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_step_commits_with_its_writes(
    idle: AllInOne, ctxt: RequestContext, way: str
) -> None:
    run = await _run(idle, ctxt)
    writes = helpers.chain(
        _placement(run, "h1"), helpers.event_writes(run, "conductor_x", details="d")
    )
    assert all(isinstance(w, group_commit.Write) for w in writes)
    committer = idle.db.group_commit
    assert committer is not None
    before = committer.writes
    await run.commit(
        "networking", payload={"n": 1}, writes=writes if way == "grouped" else _plain(writes)
    )
    # One unit through the group committer, or none at all.
    assert committer.writes == before + (1 if way == "grouped" else 0)
    task, inst = await _state(idle, run)
    assert (task["step"], task["payload"], task["owner"]) == (
        "networking",
        {"n": 1},
        run.engine.owner,
    )
    assert (inst["host"], inst["node"]) == ("h1", "h1-node")
    async with idle.db.reader() as conn:
        action = await actions.action_get_by_request_id(conn, inst["uuid"], run.request_id)
        (event,) = await actions.events_get(conn, action["id"])
    assert (event["event"], event["details"], event["result"]) == ("conductor_x", "d", "Success")
    await run.finish(
        TaskStatus.SUCCEEDED,
        writes=helpers.finish_action_writes(run) if way == "grouped" else None,
        payload={"n": 2},
    )
    task, _ = await _state(idle, run)
    assert (task["status"], task["owner"], task["active_instance_uuid"], task["payload"]) == (
        TaskStatus.SUCCEEDED,
        None,
        None,
        {"n": 2},
    )
    assert run.released


async def test_a_lost_lease_writes_nothing(idle: AllInOne, ctxt: RequestContext, way: str) -> None:
    run = await _run(idle, ctxt)
    async with idle.db.writer() as conn:
        # Another conductor's claim: the run's (owner, attempt) no longer holds.
        await tasks.release(conn, run.id, run.engine.owner, attempt=run.attempt)
        assert await tasks.claim(conn, run.id, "other", lease_seconds=30) is not None
    writes = helpers.chain(_placement(run, "h1"), helpers.event_writes(run, "conductor_x"))
    with pytest.raises(exception.TaskLeaseLost):
        await run.commit("networking", writes=writes if way == "grouped" else _plain(writes))
    with pytest.raises(exception.TaskLeaseLost):
        await run.finish(TaskStatus.FAILED, writes=helpers.finish_action_writes(run))
    task, inst = await _state(idle, run)
    assert (task["step"], task["owner"], task["status"]) == ("schedule", "other", "running")
    assert inst["host"] is None
    async with idle.db.reader() as conn:
        action = await actions.action_get_by_request_id(conn, inst["uuid"], run.request_id)
        assert await actions.events_get(conn, action["id"]) == []
    assert action["finish_time"] is None


async def test_a_failed_instance_condition_writes_nothing(
    idle: AllInOne, ctxt: RequestContext, way: str
) -> None:
    run = await _run(idle, ctxt)
    assert run.instance_uuid is not None
    async with idle.db.writer() as conn:
        await instances.update(conn, run.instance_uuid, {"task_state": "spawning"})
    writes = helpers.chain(helpers.event_writes(run, "conductor_x"), _placement(run, "h1"))
    with pytest.raises(exception.InstanceUpdateConflict):
        await run.commit("networking", writes=writes if way == "grouped" else _plain(writes))
    task, inst = await _state(idle, run)
    assert (task["step"], inst["host"]) == ("schedule", None)
    async with idle.db.reader() as conn:
        action = await actions.action_get_by_request_id(conn, inst["uuid"], run.request_id)
        assert await actions.events_get(conn, action["id"]) == []


async def test_concurrent_commits_each_get_their_own_outcome(
    idle: AllInOne, ctxt: RequestContext
) -> None:
    runs = [await _run(idle, ctxt) for _ in range(6)]
    async with idle.db.writer() as conn:
        for run in runs[::2]:
            assert run.instance_uuid is not None
            await instances.update(conn, run.instance_uuid, {"task_state": "spawning"})

    async def commit(run: Run) -> str:
        try:
            await run.commit("networking", writes=_placement(run, "h1"))
        except exception.InstanceUpdateConflict:
            return "conflict"
        return "ok"

    outcomes = await asyncio.gather(*(commit(run) for run in runs))
    assert outcomes == ["conflict", "ok"] * 3
    for run, outcome in zip(runs, outcomes, strict=True):
        task, inst = await _state(idle, run)
        placed = outcome == "ok"
        assert (task["step"] == "networking", inst["host"] == "h1") == (placed, placed)


async def test_waiting_tasks_are_claimed_as_room_frees_up(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    # No poll within the test's life: only the engine's refill can claim
    # the builds left waiting when it was full.
    cloud = await start_cloud(
        tmp_path, conductor={"task_concurrency": 8, "task_poll_interval": 3600.0}
    )
    try:
        servers = await cloud.api.create_servers(
            ctxt, name="t", flavor="small", image=IMAGE, count=20
        )
        uuids = [s.uuid for s in servers]
        await cloud.wait_tasks(uuids, timeout=60)
        rows = await cloud.instances(uuids)
        assert {r["vm_state"] for r in rows} == {"active"}
    finally:
        await cloud.stop()


async def test_the_first_step_uses_the_instance_read_with_the_claim(
    idle: AllInOne, ctxt: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    (inst,) = await idle.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
    had_it: list[bool] = []
    load = helpers.load_instance

    async def counted(run: Run, *, fresh: bool = False) -> Any:
        had_it.append(fresh and run.fresh_instance is not None)
        return await load(run, fresh=fresh)

    engine: TaskEngine = idle.engines[0]
    monkeypatch.setattr("nubes.conductor.tasks.build.load_instance", counted)
    seen: list[dict[str, Any] | None] = []
    start = engine._start

    def spy(row: dict[str, Any], instance: dict[str, Any] | None = None) -> None:
        seen.append(instance)
        start(row, instance)

    monkeypatch.setattr(engine, "_start", spy)
    await engine.start()
    await idle.wait_tasks([inst.uuid], timeout=30)
    assert seen and seen[0] is not None and seen[0]["uuid"] == inst.uuid
    assert had_it[0] is True
    (row,) = await idle.instances([inst.uuid])
    assert row["vm_state"] == "active"
