"""Placement-scoped reads and updates, and grouped saves (instances.save).

"Placed on a host" is decided in the database: the instance's host, one of
the host's compute nodes as its node, or an in-progress migration to or
from the host. Every update path is checked the same way: update() and
try_update() in a writer, and save() through group commit.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy.exc as sa_exc
from sqlalchemy import bindparam, select
from sqlalchemy.dialects.sqlite import aiosqlite as sqlite_aiosqlite

from nubes import exception
from nubes.db import group_commit, models
from nubes.db.api import UNSET, compute_nodes, instances, migrations
from nubes.db.engine import Database
from tests.unit.db.factories import make_instance, make_node, make_service

Updater = Callable[..., Awaitable[Any]]


async def _via_update(db: Database, uuid: str, values: dict[str, Any], **kw: Any) -> Any:
    async with db.writer() as conn:
        return (await instances.update(conn, uuid, values, **kw))["updated_at"]


async def _via_try_update(db: Database, uuid: str, values: dict[str, Any], **kw: Any) -> Any:
    async with db.writer() as conn:
        if not await instances.try_update(conn, uuid, values, **kw):
            # try_update answers False for both of these; tell them apart here
            # so every path can be checked against the same expectations.
            current = await instances.get_by_uuid(conn, uuid)
            raise exception.InstanceUpdateConflict(
                instance_uuid=uuid, expected={}, actual={"task_state": current["task_state"]}
            )
    return True


async def _via_save(db: Database, uuid: str, values: dict[str, Any], **kw: Any) -> Any:
    return await instances.save(db, uuid, values, **kw)


UPDATERS = {"update": _via_update, "try_update": _via_try_update, "save": _via_save}


@pytest.fixture(params=sorted(UPDATERS))
def updater(request: pytest.FixtureRequest) -> Updater:
    return UPDATERS[request.param]


async def _power_state(db: Database, uuid: str) -> int | None:
    async with db.reader() as conn:
        value = (await instances.get_by_uuid(conn, uuid))["power_state"]
    return None if value is None else int(value)


async def test_own_instance_is_updated(db: Database, updater: Updater) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, host="h1", node="h1-node")
    await updater(db, inst["uuid"], {"power_state": 1}, placed_on_host="h1")
    assert await _power_state(db, inst["uuid"]) == 1


async def test_other_hosts_instance_is_refused_and_unchanged(
    db: Database, updater: Updater
) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, host="h2", node="h2-node", power_state=4)
        await make_node(conn, host="h2", hypervisor_hostname="h2-node")
        await make_node(conn, host="h1", hypervisor_hostname="h1-node")
    with pytest.raises(exception.InstanceNotOnHost) as err:
        await updater(db, inst["uuid"], {"power_state": 1}, placed_on_host="h1")
    assert err.value.code == 403
    assert await _power_state(db, inst["uuid"]) == 4


async def test_unplaced_instance_is_refused(db: Database, updater: Updater) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, power_state=4)
    with pytest.raises(exception.InstanceNotOnHost):
        await updater(db, inst["uuid"], {"power_state": 1}, placed_on_host="h1")
    assert await _power_state(db, inst["uuid"]) == 4


async def test_instance_on_a_node_of_the_host(db: Database, updater: Updater) -> None:
    async with db.writer() as conn:
        # host not (yet) set: the node of the host's own service places it.
        await make_service(conn, host="h1", binary="compute")
        await make_node(conn, host="h1", hypervisor_hostname="shared-name")
        inst = await make_instance(conn, host=None, node="shared-name")
        elsewhere = await make_instance(conn, host=None, node="other-node")
        await make_node(conn, host="h2", hypervisor_hostname="other-node")
    await updater(db, inst["uuid"], {"power_state": 1}, placed_on_host="h1")
    assert await _power_state(db, inst["uuid"]) == 1
    with pytest.raises(exception.InstanceNotOnHost):
        await updater(db, elsewhere["uuid"], {"power_state": 1}, placed_on_host="h1")


async def test_a_node_bound_to_another_hosts_service_places_nothing_on_the_host(
    db: Database, updater: Updater
) -> None:
    # Placement by node goes by the node row's owning service, never by its
    # name: a row named for h1 but bound to h2's service does not place.
    async with db.writer() as conn:
        await make_service(conn, host="h1", binary="compute")
        other = await make_service(conn, host="h2", binary="compute")
        await make_node(conn, host="h1", hypervisor_hostname="n1", service_id=other["id"])
        inst = await make_instance(conn, host=None, node="n1", power_state=4)
    with pytest.raises(exception.InstanceNotOnHost):
        await updater(db, inst["uuid"], {"power_state": 1}, placed_on_host="h1")
    assert await _power_state(db, inst["uuid"]) == 4


async def test_a_node_registered_before_its_service_is_bound_when_the_service_registers(
    db: Database, updater: Updater
) -> None:
    async with db.writer() as conn:
        node = await make_node(conn, host="h1", hypervisor_hostname="early-node")
        assert node["service_id"] is None
        inst = await make_instance(conn, host=None, node="early-node", power_state=4)
    with pytest.raises(exception.InstanceNotOnHost):
        await updater(db, inst["uuid"], {"power_state": 1}, placed_on_host="h1")
    async with db.writer() as conn:
        service = await make_service(conn, host="h1", binary="compute")
        assert (await compute_nodes.get_by_id(conn, node["id"]))["service_id"] == service["id"]
    await updater(db, inst["uuid"], {"power_state": 1}, placed_on_host="h1")
    assert await _power_state(db, inst["uuid"]) == 1


async def test_deleted_node_no_longer_places(db: Database, updater: Updater) -> None:
    async with db.writer() as conn:
        node = await make_node(conn, host="h1", hypervisor_hostname="gone-node")
        inst = await make_instance(conn, host=None, node="gone-node", power_state=4)
        await compute_nodes.destroy(conn, node["id"])
    with pytest.raises(exception.InstanceNotOnHost):
        await updater(db, inst["uuid"], {"power_state": 1}, placed_on_host="h1")
    assert await _power_state(db, inst["uuid"]) == 4


@pytest.mark.parametrize("side", ["source", "dest"])
async def test_migrating_instance_while_in_progress_only(
    db: Database, updater: Updater, side: str
) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, host="other", node="other-node")
        migration = await migrations.create(
            conn,
            {
                "instance_uuid": inst["uuid"],
                "source_compute": "h1" if side == "source" else "other",
                "dest_compute": "h1" if side == "dest" else "other",
                "status": "migrating",
                "migration_type": "live-migration",
            },
        )
    await updater(db, inst["uuid"], {"power_state": 1}, placed_on_host="h1")
    assert await _power_state(db, inst["uuid"]) == 1
    for status in migrations.FINISHED_STATUSES:
        async with db.writer() as conn:
            await migrations.update(conn, migration["id"], {"status": status})
        with pytest.raises(exception.InstanceNotOnHost):
            await updater(db, inst["uuid"], {"power_state": 2}, placed_on_host="h1")
    assert await _power_state(db, inst["uuid"]) == 1


async def test_migration_of_another_instance_does_not_place(db: Database, updater: Updater) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, host="other")
        neighbour = await make_instance(conn, host="other")
        await migrations.create(
            conn,
            {
                "instance_uuid": neighbour["uuid"],
                "source_compute": "other",
                "dest_compute": "h1",
                "status": "migrating",
            },
        )
    with pytest.raises(exception.InstanceNotOnHost):
        await updater(db, inst["uuid"], {"power_state": 1}, placed_on_host="h1")


async def test_conflict_still_reported_when_placed(db: Database, updater: Updater) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, host="h1", task_state="spawning")
    with pytest.raises(exception.InstanceUpdateConflict) as err:
        await updater(
            db, inst["uuid"], {"power_state": 1}, expected_task_state=None, placed_on_host="h1"
        )
    assert err.value.kwargs["actual"] == {"task_state": "spawning"}


async def test_not_placed_wins_over_conflict(db: Database, updater: Updater) -> None:
    # A host must not learn the state of an instance it may not see.
    async with db.writer() as conn:
        inst = await make_instance(conn, host="h2", task_state="spawning")
    with pytest.raises(exception.InstanceNotOnHost):
        await updater(
            db, inst["uuid"], {"power_state": 1}, expected_task_state=None, placed_on_host="h1"
        )


async def test_missing_and_deleted_instances_are_not_found(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, host="h1")
        await instances.destroy(conn, inst["uuid"])
    for uuid in (inst["uuid"], "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(exception.InstanceNotFound):
            await _via_update(db, uuid, {"power_state": 1}, placed_on_host="h1")
        with pytest.raises(exception.InstanceNotFound):
            await _via_save(db, uuid, {"power_state": 1}, placed_on_host="h1")
        with pytest.raises(exception.InstanceNotFound):
            await _via_save(db, uuid, {"power_state": 1})
        async with db.writer() as conn:
            assert not await instances.try_update(
                conn, uuid, {"power_state": 1}, placed_on_host="h1"
            )
        async with db.reader() as conn:
            with pytest.raises(exception.InstanceNotFound):
                await instances.get_placed_on_host(conn, uuid, "h1")


async def test_get_placed_on_host(db: Database) -> None:
    async with db.writer() as conn:
        await make_service(conn, host="h1", binary="compute")
        await make_node(conn, host="h1", hypervisor_hostname="h1-node")
        by_host = await make_instance(conn, host="h1")
        by_node = await make_instance(conn, node="h1-node")
        migrating = await make_instance(conn, host="h3")
        await migrations.create(
            conn,
            {
                "instance_uuid": migrating["uuid"],
                "source_compute": "h3",
                "dest_compute": "h1",
                "status": "pre-migrating",
            },
        )
        elsewhere = await make_instance(conn, host="h2")
    async with db.reader() as conn:
        for inst in (by_host, by_node, migrating):
            assert await instances.get_placed_on_host(conn, inst["uuid"], "h1") == inst
        with pytest.raises(exception.InstanceNotOnHost):
            await instances.get_placed_on_host(conn, elsewhere["uuid"], "h1")


async def test_try_update_placement(db: Database) -> None:
    async with db.writer() as conn:
        mine = await make_instance(conn, host="h1", task_state="spawning")
        theirs = await make_instance(conn, host="h2")
        assert await instances.try_update(conn, mine["uuid"], {"progress": 5}, placed_on_host="h1")
        # A state mismatch stays a plain False ...
        assert not await instances.try_update(
            conn, mine["uuid"], {"progress": 6}, expected_task_state=None, placed_on_host="h1"
        )
        # ... a refusal does not.
        with pytest.raises(exception.InstanceNotOnHost):
            await instances.try_update(conn, theirs["uuid"], {"progress": 5}, placed_on_host="h1")


# --- save(): grouped writes -----------------------------------------------------


async def test_save_returns_the_stored_updated_at(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, host="h1", task_state=None)
    stamp = await instances.save(
        db,
        inst["uuid"],
        {"power_state": 1, "progress": 40, "locked": True, "metadata": {"k": "v"}},
        expected_vm_state=["building", "active"],
        expected_task_state=None,
        placed_on_host="h1",
    )
    async with db.reader() as conn:
        row = await instances.get_by_uuid(conn, inst["uuid"])
    assert stamp is not None and stamp.tzinfo is not None
    assert row["updated_at"] == stamp
    assert (row["power_state"], row["progress"], row["locked"], row["metadata"]) == (
        1,
        40,
        True,
        {"k": "v"},
    )


@pytest.mark.parametrize(
    ("expected", "wins"),
    [
        (UNSET, True),
        (None, False),
        ("spawning", True),
        ("scheduling", False),
        (["scheduling", "spawning"], True),
        (["scheduling", None], False),
        ([None], False),
        ([], False),
    ],
)
async def test_save_expected_task_state_shapes(db: Database, expected: Any, wins: bool) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, task_state="spawning")
    if wins:
        await instances.save(db, inst["uuid"], {"progress": 1}, expected_task_state=expected)
        assert (await _row(db, inst["uuid"]))["progress"] == 1
    else:
        with pytest.raises(exception.InstanceUpdateConflict) as err:
            await instances.save(db, inst["uuid"], {"progress": 1}, expected_task_state=expected)
        assert err.value.kwargs["actual"] == {"task_state": "spawning"}
        assert (await _row(db, inst["uuid"]))["progress"] is None


async def _row(db: Database, uuid: str) -> dict[str, Any]:
    async with db.reader() as conn:
        return await instances.get_by_uuid(conn, uuid)


async def test_concurrent_saves_share_transactions_with_exact_outcomes(db: Database) -> None:
    async with db.writer() as conn:
        insts = [
            await make_instance(conn, host="h1" if i % 3 else "h2", task_state=None)
            for i in range(32)
        ]
    committer = db.group_commit
    assert committer is not None

    async def one(i: int) -> str:
        expected = None if i % 2 else "spawning"
        try:
            await instances.save(
                db,
                insts[i]["uuid"],
                {"power_state": i},
                expected_task_state=expected,
                placed_on_host="h1",
            )
        except exception.InstanceNotOnHost:
            return "refused"
        except exception.InstanceUpdateConflict:
            return "conflict"
        return "ok"

    outcomes = await asyncio.gather(*(one(i) for i in range(32)))
    for i, outcome in enumerate(outcomes):
        want = "refused" if i % 3 == 0 else ("ok" if i % 2 else "conflict")
        assert outcome == want, i
        row = await _row(db, insts[i]["uuid"])
        assert row["power_state"] == (i if want == "ok" else None)
    assert committer.batches < committer.writes


async def test_concurrent_cas_on_one_instance_exactly_one_wins(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, task_state=None)

    async def claim(name: str) -> bool:
        try:
            await instances.save(db, inst["uuid"], {"task_state": name}, expected_task_state=None)
        except exception.InstanceUpdateConflict:
            return False
        return True

    names = [f"task-{i}" for i in range(10)]
    won = await asyncio.gather(*(claim(n) for n in names))
    assert sum(won) == 1
    assert (await _row(db, inst["uuid"]))["task_state"] == names[won.index(True)]


async def test_a_failing_save_does_not_take_its_batch_down(db: Database) -> None:
    async with db.writer() as conn:
        insts = [await make_instance(conn) for _ in range(8)]

    async def one(i: int) -> None:
        # locked is NOT NULL: the statement itself fails, on every backend.
        values = {"locked": None} if i == 3 else {"progress": i}
        await instances.save(db, insts[i]["uuid"], values)

    results = await asyncio.gather(*(one(i) for i in range(8)), return_exceptions=True)
    for i, result in enumerate(results):
        if i == 3:
            assert isinstance(result, (exception.NubesError, sa_exc.DBAPIError)), result
        else:
            assert result is None, result
            assert (await _row(db, insts[i]["uuid"]))["progress"] == i
    assert (await _row(db, insts[3]["uuid"]))["locked"] is False


async def test_save_inside_a_writer_joins_its_transaction(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn)
    with pytest.raises(RuntimeError):
        async with db.writer():
            await instances.save(db, inst["uuid"], {"progress": 7})
            assert (await _row(db, inst["uuid"]))["progress"] == 7
            raise RuntimeError("roll back")
    assert (await _row(db, inst["uuid"]))["progress"] is None
    async with db.reader() as conn:
        # Inside a reader on a file/server database it opens its own writer.
        await instances.save(db, inst["uuid"], {"progress": 8})
    assert (await _row(db, inst["uuid"]))["progress"] == 8


async def test_save_keeps_read_after_write(replica_pair: tuple[str, str]) -> None:
    primary_url, replica_url = replica_pair
    db = Database(primary_url, replica_url)
    try:
        async with db.writer() as conn:
            inst = await make_instance(conn)
        # A new context that has not written: stale reads may go to the replica ...
        await asyncio.create_task(_stale_read(db), context=contextvars.Context())
        assert db.route_counts["replica"] == 1

        async def save_then_read() -> None:
            await instances.save(db, inst["uuid"], {"progress": 3})
            # ... but not right after this context saved.
            async with db.reader(allow_stale=True) as conn:
                assert (await instances.get_by_uuid(conn, inst["uuid"]))["progress"] == 3

        await asyncio.create_task(save_then_read(), context=contextvars.Context())
        assert db.route_counts["replica"] == 1
    finally:
        await db.dispose()


async def _stale_read(db: Database) -> None:
    async with db.reader(allow_stale=True) as conn:
        await instances.get_all(conn)


async def test_save_on_a_memory_database(backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite only")
    db = Database("sqlite://")
    try:
        async with db.writer() as conn:
            await conn.run_sync(models.metadata.create_all)
            inst = await make_instance(conn, host="h1")
        await asyncio.gather(*(instances.save(db, inst["uuid"], {"progress": i}) for i in range(5)))
        assert (await _row(db, inst["uuid"]))["progress"] == 4
        async with db.writer():
            # The single connection is held here: the save must join, not queue.
            await instances.save(db, inst["uuid"], {"progress": 9}, placed_on_host="h1")
        assert (await _row(db, inst["uuid"]))["progress"] == 9
    finally:
        await db.dispose()


def test_prepare_refuses_expanding_parameters() -> None:
    stmt = select(models.instances.c.id).where(
        models.instances.c.uuid.in_(bindparam("u", expanding=True))
    )
    with pytest.raises(ValueError):
        group_commit.prepare(stmt, sqlite_aiosqlite.dialect())


async def test_dispose_drains_queued_saves_and_the_database_stays_usable(db: Database) -> None:
    async with db.writer() as conn:
        insts = [await make_instance(conn) for _ in range(10)]
    saves = [
        asyncio.create_task(instances.save(db, inst["uuid"], {"progress": 50})) for inst in insts
    ]
    await asyncio.sleep(0)
    await db.dispose()
    stamps = await asyncio.gather(*saves)
    assert all(stamp is not None for stamp in stamps)
    for inst in insts:
        assert (await _row(db, inst["uuid"]))["progress"] == 50
    await instances.save(db, insts[0]["uuid"], {"progress": 60})
    assert (await _row(db, insts[0]["uuid"]))["progress"] == 60


async def test_placed_on_hosts_answers_each_ask_in_one_read(db: Database) -> None:
    async with db.writer() as conn:
        await make_service(conn, host="h1", binary="compute")
        await make_node(conn, host="h1", hypervisor_hostname="h1-node")
        own = await make_instance(conn, host="h1", node="h1-node")
        by_node = await make_instance(conn, host=None, node="h1-node")
        other = await make_instance(conn, host="h2", node="h2-node")
        gone = await make_instance(conn, host="h1", node="h1-node")
        await instances.destroy(conn, gone["uuid"])
    asks = [
        (own["uuid"], "h1"),
        (by_node["uuid"], "h1"),
        (other["uuid"], "h1"),
        (other["uuid"], "h2"),
        (gone["uuid"], "h1"),
        ("no-such-instance", "h1"),
        (own["uuid"], "h1"),  # asked twice: one answer
    ]
    async with db.reader() as conn:
        placed = await instances.placed_on_hosts(conn, asks)
        # The same rule as the single check: each answer agrees with it.
        for (uuid, host), answer in placed.items():
            try:
                await instances.check_placed_on_host(conn, uuid, host)
            except (exception.InstanceNotFound, exception.InstanceNotOnHost):
                assert answer is False, (uuid, host)
            else:
                assert answer is True, (uuid, host)
    assert placed == {
        (own["uuid"], "h1"): True,
        (by_node["uuid"], "h1"): True,
        (other["uuid"], "h1"): False,
        (other["uuid"], "h2"): True,
        (gone["uuid"], "h1"): False,
        ("no-such-instance", "h1"): False,
    }
    async with db.reader() as conn:
        assert await instances.placed_on_hosts(conn, []) == {}
