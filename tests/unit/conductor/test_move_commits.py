"""The move tasks' writes as grouped units: the same outcome as the ordinary way.

A write that can join a grouped commit (``moves.set_migration`` with the
migration's type, ``moves.hand_source_claim_to_migration``) commits as one
unit in the common case; in any other case its required statement fails and
the commit runs the Python write, which decides as it always did. Each test
runs both ways.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from nubes import exception
from nubes.conductor.tasks import moves
from nubes.conductor.tasks.base import Run, run_writes, steps
from nubes.conductor.tasks.helpers import chain
from nubes.context import RequestContext
from nubes.db import group_commit
from nubes.db.api import migrations as migrations_api
from nubes.db.api import tasks
from nubes.db.models import allocations
from nubes.objects.states import MigrationStatus
from nubes.testing.allinone import AllInOne
from tests.unit.conductor.conftest import IMAGE, start_cloud

pytestmark = pytest.mark.timeout(90)

_M = MigrationStatus
LIVE = "live-migration"


@pytest.fixture
async def idle(tmp_path: Path) -> AsyncIterator[AllInOne]:
    """A cloud whose engine is stopped: the tests drive a Run by hand."""
    cloud = await start_cloud(tmp_path)
    await cloud.engines[0].stop()
    yield cloud
    await cloud.stop()


@pytest.fixture(params=["grouped", "ordinary"])
def way(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _as(way: str, writes: Any) -> Any:
    """``writes`` as given, or the same writes that cannot be grouped."""
    if way == "grouped":
        assert all(isinstance(w, group_commit.Write) for w in steps(writes))
        return writes

    async def write(conn: Any) -> None:
        await run_writes(conn, writes)

    return write


async def _run(cloud: AllInOne, ctxt: RequestContext, status: str = _M.ACCEPTED) -> Run:
    """A claimed task of a new server, as a Run whose payload names a live migration."""
    (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
    engine = cloud.engines[0]
    async with cloud.db.writer() as conn:
        (task,) = await tasks.list_for_instance(conn, inst.uuid)
        row = await tasks.claim(conn, task["id"], engine.owner, lease_seconds=30)
        migration = await migrations_api.create(
            conn,
            {
                "instance_uuid": inst.uuid,
                "migration_type": LIVE,
                "status": status,
                "source_compute": "h0",
            },
        )
    assert row is not None
    run = Run(engine, row)
    run.payload = {"migration_id": migration["id"], "migration_uuid": migration["uuid"]}
    return run


async def _migration(cloud: AllInOne, run: Run) -> dict[str, Any]:
    async with cloud.db.reader() as conn:
        return await migrations_api.get_by_id(conn, run.payload["migration_id"])


async def _step(cloud: AllInOne, run: Run) -> str:
    async with cloud.db.reader() as conn:
        return str((await tasks.get(conn, run.id))["step"])


async def test_a_status_change_commits_with_the_step(
    idle: AllInOne, ctxt: RequestContext, way: str
) -> None:
    run = await _run(idle, ctxt)
    committer = idle.db.group_commit
    assert committer is not None
    before = committer.writes
    writes = chain(
        moves.set_migration(run, {"dest_compute": "h2", "dest_node": "n2"}, migration_type=LIVE),
        moves.set_migration(
            run, {"status": _M.PREPARING}, only_from=(_M.ACCEPTED,), migration_type=LIVE
        ),
    )
    await run.commit("networking", writes=_as(way, writes))
    assert committer.writes == before + (1 if way == "grouped" else 0)
    row = await _migration(idle, run)
    assert (row["status"], row["dest_compute"], row["dest_node"]) == ("preparing", "h2", "n2")
    assert row["updated_at"] is not None
    assert await _step(idle, run) == "networking"


async def test_a_migration_moved_on_meanwhile_is_left_alone(
    idle: AllInOne, ctxt: RequestContext, way: str
) -> None:
    run = await _run(idle, ctxt, status=_M.CANCELLING)
    writes = chain(
        moves.set_migration(run, {"dest_compute": "h2"}, migration_type=LIVE),
        moves.set_migration(
            run, {"status": _M.PREPARING}, only_from=(_M.ACCEPTED,), migration_type=LIVE
        ),
    )
    await run.commit("networking", writes=_as(way, writes))
    row = await _migration(idle, run)
    assert (row["status"], row["dest_compute"]) == ("cancelling", "h2")
    assert await _step(idle, run) == "networking"


async def test_a_status_the_table_forbids_commits_nothing(
    idle: AllInOne, ctxt: RequestContext, way: str
) -> None:
    run = await _run(idle, ctxt, status=_M.COMPLETED)
    writes = chain(
        moves.set_migration(run, {"dest_compute": "h2"}, migration_type=LIVE),
        moves.set_migration(run, {"status": _M.RUNNING}, migration_type=LIVE),
    )
    with pytest.raises(exception.InvalidMigrationTransition):
        await run.commit("networking", writes=_as(way, writes))
    row = await _migration(idle, run)
    assert (row["status"], row["dest_compute"]) == ("completed", None)
    assert await _step(idle, run) == "schedule"


async def test_a_missing_migration_commits_nothing(
    idle: AllInOne, ctxt: RequestContext, way: str
) -> None:
    run = await _run(idle, ctxt)
    run.payload = {**run.payload, "migration_id": run.payload["migration_id"] + 1000}
    writes = moves.set_migration(run, {"dest_compute": "h2"}, migration_type=LIVE)
    with pytest.raises(exception.MigrationNotFound):
        await run.commit("networking", writes=_as(way, writes))
    assert await _step(idle, run) == "schedule"


async def _consumers(cloud: AllInOne) -> list[tuple[str, int]]:
    a = allocations.c
    async with cloud.db.reader() as conn:
        rows = await conn.execute(select(a.consumer_uuid, a.compute_node_id).order_by(a.id))
        return [(r.consumer_uuid, r.compute_node_id) for r in rows]


async def test_the_source_claim_is_handed_to_the_migration_once(
    idle: AllInOne, ctxt: RequestContext
) -> None:
    # No single-statement form (MySQL cannot UPDATE allocations on a read of
    # allocations): it always commits the ordinary way.
    run = await _run(idle, ctxt)
    instance, migration = run.instance_uuid, run.payload["migration_uuid"]
    assert instance is not None
    async with idle.db.writer() as conn:
        await conn.execute(insert(allocations).values(consumer_uuid=instance, compute_node_id=1))
    hand = moves.hand_source_claim_to_migration(instance, migration)
    run.payload = {**run.payload, "n": 1}
    await run.commit("networking", writes=hand)
    assert await _consumers(idle) == [(migration, 1)]
    # The destination claimed for the instance, then the step repeated: the
    # migration keeps the source, the instance its destination.
    async with idle.db.writer() as conn:
        await conn.execute(insert(allocations).values(consumer_uuid=instance, compute_node_id=2))
    await run.commit("spawn", writes=hand)
    assert await _consumers(idle) == [(migration, 1), (instance, 2)]
