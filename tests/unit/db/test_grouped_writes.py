"""Writes that go through the group committer as units, and their ordinary twins.

A unit (``GroupCommitter.execute_unit``) is all or nothing inside a batch
shared with other callers; the query functions built on it (events scoped to
a host, a scheduler claim) must answer
exactly as their ordinary path does, which is what runs where units are not
supported (PostgreSQL, MariaDB: tests/integration/db runs this file there).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nubes import exception
from nubes.db import group_commit
from nubes.db.api import actions, compute_nodes, instances
from nubes.db.api.compute_nodes import ClaimOutcome
from nubes.db.engine import Database
from nubes.scheduler import claims
from tests.unit.db.factories import make_instance, make_node

LEASE = 30.0


def _units(db: Database) -> group_commit.GroupCommitter:
    committer = db.group_commit
    if committer is None or not committer.units:
        pytest.skip("this backend runs no grouped units")
    return committer


async def _row(db: Database, uuid: str) -> dict[str, Any]:
    async with db.reader() as conn:
        return await instances.get_by_uuid(conn, uuid)


async def _refuse(conn: Any) -> None:
    raise exception.InstanceUpdateConflict(instance_uuid="x", expected={}, actual={})


# --- units ---------------------------------------------------------------------


async def test_a_unit_is_all_or_nothing_and_spares_its_batch(db: Database) -> None:
    committer = _units(db)
    async with db.writer() as conn:
        insts = [await make_instance(conn, task_state=None) for _ in range(6)]
    dialect = committer.dialect

    async def one(i: int) -> Any:
        inst = insts[i]
        statements = [
            instances.update_write(inst["uuid"], {"progress": i}, missed=_refuse).statement(
                dialect
            ),
            # Odd ones expect a task_state the instance does not have: the
            # unit stops there, and its first write is undone with it.
            instances.update_write(
                inst["uuid"],
                {"power_state": i},
                missed=_refuse,
                expected_task_state="spawning" if i % 2 else None,
            ).statement(dialect),
        ]
        return await committer.execute_unit(inst["uuid"], statements)

    outcomes = await asyncio.gather(*(one(i) for i in range(6)))
    for i, outcome in enumerate(outcomes):
        row = await _row(db, insts[i]["uuid"])
        if i % 2:
            assert outcome is False
            assert (row["progress"], row["power_state"]) == (None, None)
        else:
            assert outcome == [(1, None), (1, None)]
            assert (row["progress"], row["power_state"]) == (i, i)


async def test_a_unit_statement_that_need_not_match_does_not_stop_it(db: Database) -> None:
    committer = _units(db)
    async with db.writer() as conn:
        inst = await make_instance(conn)
    dialect = committer.dialect
    missing = instances.update_write("no-such-uuid", {"progress": 1}, missed=_refuse)
    optional = group_commit.UnitStatement(
        missing.statement(dialect).write, missing.statement(dialect).args, required=False
    )
    wanted = instances.update_write(inst["uuid"], {"progress": 2}, missed=_refuse)
    wanted_statement = wanted.statement(dialect)
    assert await committer.execute_unit(inst["uuid"], [optional, wanted_statement]) == [
        (0, None),
        (1, None),
    ]
    assert (await _row(db, inst["uuid"]))["progress"] == 2


# --- events -------------------------------------------------------------------------


async def _action(db: Database, **instance: Any) -> dict[str, Any]:
    async with db.writer() as conn:
        inst = await make_instance(conn, **instance)
        await actions.action_start(
            conn, instance_uuid=inst["uuid"], action="create", request_id="req-1"
        )
    return inst


async def _events(db: Database, uuid: str) -> list[dict[str, Any]]:
    async with db.reader() as conn:
        action = await actions.action_get_by_request_id(conn, uuid, "req-1")
        return await actions.events_get(conn, action["id"])


async def test_events_of_a_compute_host_on_its_instance(db: Database) -> None:
    inst = await _action(db, host="h1", node="h1-node")
    started = await actions.record_event_start(
        db,
        instance_uuid=inst["uuid"],
        request_id="req-1",
        event="compute_build",
        host="h1",
        placed_on_host="h1",
    )
    assert started["event"] == "compute_build" and started["host"] == "h1"
    assert started["start_time"] is not None and started["finish_time"] is None
    finished = await actions.record_event_finish(
        db,
        instance_uuid=inst["uuid"],
        request_id="req-1",
        event="compute_build",
        result=actions.RESULT_ERROR,
        details="boom",
        placed_on_host="h1",
    )
    assert finished["id"] == started["id"]
    assert (finished["result"], finished["details"]) == (actions.RESULT_ERROR, "boom")
    (event,) = await _events(db, inst["uuid"])
    assert event == finished
    async with db.reader() as conn:
        action = await actions.action_get_by_request_id(conn, inst["uuid"], "req-1")
    assert action["message"] == actions.ACTION_ERROR_MESSAGE


async def test_a_host_starting_an_event_it_left_open_takes_it_up_again(db: Database) -> None:
    # Regression: a step its host's death cut off, repeated after the restart
    # repair, opened a second event, and the first stayed open for good.
    inst = await _action(db, host="h1", node="h1-node")

    async def start(host: str) -> dict[str, Any]:
        return await actions.record_event_start(
            db,
            instance_uuid=inst["uuid"],
            request_id="req-1",
            event="compute_stop_instance",
            host=host,
            placed_on_host=host,
        )

    first = await start("h1")
    again = await start("h1")
    assert again["id"] == first["id"] and again["finish_time"] is None
    await group_commit.commit(
        db,
        inst["uuid"],
        actions.reported_event_finish_writes(
            instance_uuid=inst["uuid"],
            request_id="req-1",
            event="compute_stop_instance",
            result=actions.RESULT_SUCCESS,
            started_by="h1",
        ),
    )
    (event,) = await _events(db, inst["uuid"])
    assert event["id"] == first["id"] and event["result"] == actions.RESULT_SUCCESS
    # One it ended is history: the next start is a new event.
    assert (await start("h1"))["id"] != first["id"]
    assert len(await _events(db, inst["uuid"])) == 2


async def test_events_on_another_hosts_instance_are_refused_and_not_written(
    db: Database,
) -> None:
    inst = await _action(db, host="h2", node="h2-node")
    for record in (actions.record_event_start, actions.record_event_finish):
        kwargs: dict[str, Any] = {"result": actions.RESULT_SUCCESS}
        if record is actions.record_event_start:
            kwargs = {}
        with pytest.raises(exception.InstanceNotOnHost):
            await record(
                db,
                instance_uuid=inst["uuid"],
                request_id="req-1",
                event="compute_evil",
                placed_on_host="h1",
                **kwargs,
            )
    with pytest.raises(exception.InstanceNotFound):
        await actions.record_event_start(
            db,
            instance_uuid="no-such-instance",
            request_id="req-1",
            event="compute_evil",
            placed_on_host="h1",
        )
    assert await _events(db, inst["uuid"]) == []


async def test_events_without_an_action(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, host="h1")
    with pytest.raises(exception.InstanceActionNotFound):
        await actions.record_event_start(
            db, instance_uuid=inst["uuid"], request_id="req-x", event="e", placed_on_host="h1"
        )
    with pytest.raises(exception.InstanceActionNotFound):
        await actions.record_event_finish(
            db, instance_uuid=inst["uuid"], request_id="req-x", event="e", result="Success"
        )


@pytest.mark.parametrize("ok", [True, False])
async def test_an_event_recorded_at_once_is_a_started_and_finished_one(
    db: Database, ok: bool
) -> None:
    inst = await _action(db)
    result = actions.RESULT_SUCCESS if ok else actions.RESULT_ERROR
    async with db.writer() as conn:
        await actions.event_record(
            conn,
            instance_uuid=inst["uuid"],
            request_id="req-1",
            event="conductor_x",
            host="ctl",
            result=result,
            details="why",
        )
        with pytest.raises(exception.InstanceActionNotFound):
            await actions.event_record(
                conn, instance_uuid=inst["uuid"], request_id="req-none", event="conductor_x"
            )
    (event,) = await _events(db, inst["uuid"])
    assert (event["event"], event["host"], event["result"], event["details"]) == (
        "conductor_x",
        "ctl",
        result,
        "why",
    )
    assert event["start_time"] == event["finish_time"] is not None
    async with db.reader() as conn:
        action = await actions.action_get_by_request_id(conn, inst["uuid"], "req-1")
    assert action["message"] == (None if ok else actions.ACTION_ERROR_MESSAGE)


@pytest.mark.parametrize("grouped", [True, False])
async def test_event_and_action_end_write_the_same_either_way(db: Database, grouped: bool) -> None:
    """One description per write: grouped in a unit or run the ordinary way."""
    _units(db)
    inst = await _action(db)
    described: list[Any] = [
        *actions.event_record_writes(
            instance_uuid=inst["uuid"],
            request_id="req-1",
            event="conductor_y",
            host="ctl",
            result=actions.RESULT_ERROR,
        ),
        actions.action_finish_write(instance_uuid=inst["uuid"], request_id="req-1"),
        # Without the action: nothing, and the commit goes on.
        *actions.event_record_writes(instance_uuid=inst["uuid"], request_id="req-none", event="z"),
    ]
    writes = described

    async def alone(conn: Any) -> None:
        for write in described:
            await write.run(conn)

    if not grouped:
        writes = [alone]  # not a description: the ordinary way
    committer = db.group_commit
    assert committer is not None
    before = committer.writes
    await group_commit.commit(db, inst["uuid"], writes)
    assert committer.writes == before + (1 if grouped else 0)
    (event,) = await _events(db, inst["uuid"])
    assert (event["event"], event["result"]) == ("conductor_y", actions.RESULT_ERROR)
    async with db.reader() as conn:
        action = await actions.action_get_by_request_id(conn, inst["uuid"], "req-1")
    assert action["finish_time"] is not None
    assert action["message"] == actions.ACTION_ERROR_MESSAGE


async def test_a_reported_event_end_closes_only_the_hosts_open_event(db: Database) -> None:
    """A step's reported event end (nubes/step_end.py), as the report's commit
    runs it: the host's own open event only; no action, or nothing of that
    host's open, writes nothing and is no error."""
    inst = await _action(db, host="h1")
    async with db.writer() as conn:
        for event, host in (("compute_a", "h1"), ("compute_b", "h2"), ("compute_c", "h1")):
            await actions.event_start(
                conn, instance_uuid=inst["uuid"], request_id="req-1", event=event, host=host
            )
        await actions.event_finish(
            conn,
            instance_uuid=inst["uuid"],
            request_id="req-1",
            event="compute_c",
            result=actions.RESULT_SUCCESS,
        )

    def ends(event: str, request_id: str = "req-1") -> list[group_commit.Write]:
        return actions.reported_event_finish_writes(
            instance_uuid=inst["uuid"],
            request_id=request_id,
            event=event,
            result=actions.RESULT_ERROR,
            started_by="h1",
            traceback="tb",
            details="boom",
        )

    # Another host's event, one ended already, one under no action: untouched.
    for writes in (ends("compute_b"), ends("compute_c"), ends("compute_a", "req-none")):
        await group_commit.commit(db, inst["uuid"], writes)
    by_name = {e["event"]: e for e in await _events(db, inst["uuid"])}
    assert by_name["compute_a"]["finish_time"] is None
    assert by_name["compute_b"]["finish_time"] is None
    assert by_name["compute_c"]["result"] == actions.RESULT_SUCCESS
    await group_commit.commit(db, inst["uuid"], ends("compute_a"))
    by_name = {e["event"]: e for e in await _events(db, inst["uuid"])}
    ended = by_name["compute_a"]
    assert (ended["result"], ended["traceback"], ended["details"]) == ("Error", "tb", "boom")
    assert ended["finish_time"] is not None and ended["host"] == "h1"
    async with db.reader() as conn:
        action = await actions.action_get_by_request_id(conn, inst["uuid"], "req-1")
    assert action["message"] == actions.ACTION_ERROR_MESSAGE


async def test_a_required_write_that_misses_says_why_on_the_ordinary_path(db: Database) -> None:
    """A unit whose required write misses is undone and run again alone: its
    ``missed`` raises there, and nothing of the commit is written."""
    _units(db)
    inst = await _action(db, task_state=None)
    writes = [
        *actions.event_record_writes(instance_uuid=inst["uuid"], request_id="req-1", event="kept?"),
        instances.update_write(
            inst["uuid"], {"progress": 5}, missed=_refuse, expected_task_state="spawning"
        ),
    ]
    with pytest.raises(exception.InstanceUpdateConflict):
        await group_commit.commit(db, inst["uuid"], writes)
    assert await _events(db, inst["uuid"]) == []
    assert (await _row(db, inst["uuid"]))["progress"] is None


# --- scheduler claims ----------------------------------------------------------------


async def test_claims_grouped_or_not_give_the_same_answers(db: Database) -> None:
    async with db.writer() as conn:
        node = await make_node(conn, vcpus=2, memory_mb=1024, local_gb=10)
        other = await make_node(conn, vcpus=2, memory_mb=1024, local_gb=10)
    amounts = claims.Amounts(vcpus=1, memory_mb=512, disk_gb=1)
    first = await claims.claim(db, node["id"], "c1", amounts)
    assert first.result.outcome is ClaimOutcome.CLAIMED and first.node_id == node["id"]
    async with db.reader() as conn:
        after = await compute_nodes.get_by_id(conn, node["id"])
    assert first.result.generation == after["generation"]
    assert (after["vcpus_used"], after["memory_mb_used"], after["local_gb_used"]) == (1, 512, 1)
    # A retry, even asking for another node, reports the claim held.
    again = await claims.claim(db, other["id"], "c1", amounts)
    assert again.result.outcome is ClaimOutcome.ALREADY_CLAIMED and again.node_id == node["id"]
    assert (await claims.claim(db, node["id"], "c2", amounts)).result.ok
    full = await claims.claim(db, node["id"], "c3", amounts)
    assert full.result.outcome is ClaimOutcome.NO_CAPACITY
    gone = await claims.claim(db, 999999, "c4", amounts)
    assert gone.result.outcome is ClaimOutcome.NOT_FOUND
    async with db.reader() as conn:
        final = await compute_nodes.get_by_id(conn, node["id"])
        held = await compute_nodes.allocations_get_by_node(conn, node["id"])
    assert final["vcpus_used"] == 2
    assert sorted(a["consumer_uuid"] for a in held) == ["c1", "c2"]


async def test_concurrent_claims_never_overcommit(db: Database) -> None:
    async with db.writer() as conn:
        node = await make_node(conn, vcpus=3, memory_mb=4096, local_gb=10)
    amounts = claims.Amounts(vcpus=1, memory_mb=256, disk_gb=1)
    results = await asyncio.gather(
        *(claims.claim(db, node["id"], f"c{i}", amounts) for i in range(8))
    )
    assert sum(r.result.outcome is ClaimOutcome.CLAIMED for r in results) == 3
    async with db.reader() as conn:
        assert (await compute_nodes.get_by_id(conn, node["id"]))["vcpus_used"] == 3
