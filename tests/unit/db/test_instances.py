"""Instances: CRUD, compare-and-set updates, listing and pagination, faults."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from nubes import exception
from nubes.db.api import instances, migrations, tasks
from nubes.db.engine import Database
from nubes.db.types import UTC
from tests.unit.db.factories import make_instance


async def test_create_and_get_roundtrip(db: Database) -> None:
    launched = dt.datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    async with db.writer() as conn:
        created = await make_instance(
            conn,
            metadata={"role": "db", "ünïcode": "✓"},
            launched_at=launched,
            user_data="x" * 70_000,
        )
    async with db.reader() as conn:
        got = await instances.get_by_uuid(conn, created["uuid"])
    assert got == created
    assert got["vm_state"] == instances.DEFAULT_VM_STATE
    assert got["metadata"] == {"role": "db", "ünïcode": "✓"}
    assert got["flavor"]["memory_mb"] == 512
    # Aware UTC in, aware UTC out, microseconds kept on every backend.
    assert got["launched_at"] == launched
    assert got["created_at"].tzinfo is not None
    assert len(got["user_data"]) == 70_000


async def test_aware_non_utc_datetime_is_stored_as_utc(db: Database) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    async with db.writer() as conn:
        created = await make_instance(
            conn, launched_at=dt.datetime(2025, 3, 1, 14, 0, tzinfo=plus_two)
        )
    assert created["launched_at"] == dt.datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert created["launched_at"].utcoffset() == dt.timedelta(0)


async def test_get_missing_raises_not_found(db: Database) -> None:
    async with db.reader() as conn:
        with pytest.raises(exception.InstanceNotFound):
            await instances.get_by_uuid(conn, "00000000-0000-0000-0000-000000000000")


async def test_update_with_expected_states(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, task_state="scheduling")
        row = await instances.update(
            conn,
            inst["uuid"],
            {"task_state": "spawning", "host": "h1"},
            expected_vm_state="building",
            expected_task_state=["scheduling", None],
        )
    assert (row["task_state"], row["host"]) == ("spawning", "h1")
    assert row["updated_at"] is not None


async def test_update_conflict_names_expected_and_actual(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, task_state="spawning")
    with pytest.raises(exception.InstanceUpdateConflict) as err:
        async with db.writer() as conn:
            await instances.update(
                conn, inst["uuid"], {"task_state": None}, expected_task_state="scheduling"
            )
    assert err.value.kwargs["expected"] == {"task_state": "scheduling"}
    assert err.value.kwargs["actual"] == {"task_state": "spawning"}
    assert err.value.code == 409
    async with db.reader() as conn:
        assert (await instances.get_by_uuid(conn, inst["uuid"]))["task_state"] == "spawning"


async def test_expected_none_means_null(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, task_state="deleting")
        assert not await instances.try_update(
            conn, inst["uuid"], {"task_state": "x"}, expected_task_state=None
        )
        assert await instances.try_update(
            conn, inst["uuid"], {"task_state": None}, expected_task_state="deleting"
        )
        assert await instances.try_update(
            conn, inst["uuid"], {"task_state": "x"}, expected_task_state=None
        )


async def test_update_same_value_still_matches(db: Database) -> None:
    # MariaDB counts changed rows unless FOUND_ROWS is set; a CAS that
    # writes the value already there must still report a match.
    async with db.writer() as conn:
        inst = await make_instance(conn, power_state=1)
        assert await instances.try_update(conn, inst["uuid"], {"power_state": 1})
        row = await instances.update(conn, inst["uuid"], {"power_state": 1})
    assert row["power_state"] == 1


async def test_concurrent_cas_exactly_one_wins(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, task_state=None)

    async def attempt(n: int) -> bool:
        async with db.writer() as conn:
            return await instances.try_update(
                conn, inst["uuid"], {"task_state": f"t{n}"}, expected_task_state=None
            )

    results = await asyncio.gather(*(attempt(n) for n in range(10)))
    assert sum(results) == 1


async def test_update_refuses_unknown_and_protected_columns(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn)
        with pytest.raises(exception.ValidationError):
            await instances.update(conn, inst["uuid"], {"no_such": 1})
        with pytest.raises(exception.ValidationError):
            await instances.update(conn, inst["uuid"], {"deleted": 1})
        with pytest.raises(exception.ValidationError):
            await instances.update(conn, inst["uuid"], {"uuid": "other"})


async def test_create_many_checks_every_set_of_column_names(db: Database) -> None:
    """The column names are checked once per distinct set, not once per row:
    a later row naming another (unknown or protected) column is still
    refused, and nothing is written."""
    base = {"project_id": "p-many", "display_name": "x"}
    for bad in ({"no_such": 1}, {"deleted": 1}):
        async with db.writer() as conn:
            with pytest.raises(exception.ValidationError):
                await instances.create_many(conn, [base, base, {**base, **bad}])
    async with db.writer() as conn:
        made = await instances.create_many(conn, [base, base])
    assert [row["project_id"] for row in made] == ["p-many", "p-many"]
    async with db.reader() as conn:
        rows = await instances.get_all(conn, filters={"project_id": "p-many"})
    assert len(rows) == 2


async def test_update_missing_instance(db: Database) -> None:
    async with db.writer() as conn:
        with pytest.raises(exception.InstanceNotFound):
            await instances.update(conn, "missing", {"host": "h"}, expected_task_state=None)
        assert not await instances.try_update(conn, "missing", {"host": "h"})


async def test_destroy_soft_deletes_with_migrations(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, vm_state="active", task_state="deleting", power_state=1)
        await migrations.create(conn, {"instance_uuid": inst["uuid"], "status": "done"})
        gone = await instances.destroy(conn, inst["uuid"])
    assert gone["deleted"] == gone["id"]
    assert gone["vm_state"] == instances.DELETED_VM_STATE and gone["task_state"] is None
    # The delete's end is this write (the host saves none): no guest, no power.
    assert gone["power_state"] == instances.DELETED_POWER_STATE
    assert gone["deleted_at"] is not None and gone["terminated_at"] is not None
    async with db.reader() as conn:
        with pytest.raises(exception.InstanceNotFound):
            await instances.get_by_uuid(conn, inst["uuid"])
        assert (await instances.get_by_uuid(conn, inst["uuid"], read_deleted="yes"))["id"]
        assert await migrations.list_by_instance(conn, inst["uuid"]) == []
    async with db.writer() as conn:
        with pytest.raises(exception.InstanceNotFound):
            await instances.update(conn, inst["uuid"], {"host": "h"})


async def test_destroy_with_expected_task_state(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn, task_state="spawning")
    with pytest.raises(exception.InstanceUpdateConflict):
        async with db.writer() as conn:
            await instances.destroy(conn, inst["uuid"], expected_task_state="deleting")


async def test_get_all_by_host(db: Database) -> None:
    async with db.writer() as conn:
        a = await make_instance(conn, host="h1", node="n1")
        b = await make_instance(conn, host="h1", node="n2")
        await make_instance(conn, host="h2", node="n1")
        gone = await make_instance(conn, host="h1", node="n1")
        await instances.destroy(conn, gone["uuid"])
    async with db.reader(allow_stale=True) as conn:
        assert [i["uuid"] for i in await instances.get_all_by_host(conn, "h1")] == [
            a["uuid"],
            b["uuid"],
        ]
        assert [i["uuid"] for i in await instances.get_all_by_host(conn, "h1", node="n2")] == [
            b["uuid"]
        ]


async def test_get_all_filters(db: Database) -> None:
    async with db.writer() as conn:
        web1 = await make_instance(conn, display_name="web_1", project_id="p1", vm_state="active")
        await make_instance(conn, display_name="webX1", project_id="p1", vm_state="error")
        db1 = await make_instance(conn, display_name="db-1", project_id="p2", vm_state="active")
    async with db.reader() as conn:

        async def names(**filters: object) -> list[str]:
            # Sorted here: backends collate '_' and letters differently.
            return sorted(r["display_name"] for r in await instances.get_all(conn, filters=filters))

        assert await names(project_id="p1") == sorted(["web_1", "webX1"])
        assert await names(vm_state=["active"]) == sorted(["db-1", "web_1"])
        # '_' is a literal underscore, not a LIKE wildcard.
        assert await names(name="b_") == ["web_1"]
        assert await names(uuid=[web1["uuid"], db1["uuid"]]) == sorted(["db-1", "web_1"])
        assert await names(task_state=None) == sorted(["db-1", "web_1", "webX1"])
        with pytest.raises(exception.ValidationError):
            await names(no_such_filter=1)


async def test_pagination_walks_every_row_once(db: Database) -> None:
    async with db.writer() as conn:
        created = []
        for n in range(23):
            # Duplicate and NULL sort values to exercise the tie-breaker.
            host = None if n % 5 == 0 else f"h{n % 3}"
            created.append(await make_instance(conn, host=host))
    for keys, dirs in (
        (["host"], ["asc"]),
        (["host"], ["desc"]),
        (["created_at"], ["desc"]),
        (["host", "display_name"], ["desc", "asc"]),
    ):
        seen: list[str] = []
        marker = None
        async with db.reader(allow_stale=True) as conn:
            everything = await instances.get_all(conn, sort_keys=keys, sort_dirs=dirs)
            while True:
                page = await instances.get_all(
                    conn, sort_keys=keys, sort_dirs=dirs, limit=4, marker=marker
                )
                if not page:
                    break
                seen += [r["uuid"] for r in page]
                marker = page[-1]["uuid"]
        assert seen == [r["uuid"] for r in everything], (keys, dirs)
        assert sorted(seen) == sorted(i["uuid"] for i in created)


async def test_pagination_bad_marker_and_sort_key(db: Database) -> None:
    async with db.reader() as conn:
        with pytest.raises(exception.MarkerNotFound):
            await instances.get_all(conn, marker="nope")
        with pytest.raises(exception.Invalid):
            await instances.get_all(conn, sort_keys=["user_data"])


async def test_deleted_filter_and_changes_since(db: Database) -> None:
    async with db.writer() as conn:
        keep = await make_instance(conn)
        gone = await make_instance(conn)
        await instances.destroy(conn, gone["uuid"])
    async with db.reader() as conn:
        deleted = await instances.get_all(conn, filters={"deleted": True})
        assert [r["uuid"] for r in deleted] == [gone["uuid"]]
        live = await instances.get_all(conn, filters={"deleted": False})
        assert [r["uuid"] for r in live] == [keep["uuid"]]
        since = keep["created_at"] - dt.timedelta(seconds=1)
        both = await instances.get_all(conn, filters={"changes_since": since}, read_deleted="yes")
        assert {r["uuid"] for r in both} == {keep["uuid"], gone["uuid"]}


async def test_faults_latest_per_instance(db: Database) -> None:
    async with db.writer() as conn:
        a = await make_instance(conn)
        b = await make_instance(conn)
        c = await make_instance(conn)
        for n in range(3):
            await instances.fault_create(
                conn, {"instance_uuid": a["uuid"], "code": 500, "message": f"a{n}"}
            )
        await instances.fault_create(
            conn, {"instance_uuid": b["uuid"], "code": 404, "message": "b"}
        )
    async with db.reader() as conn:
        latest = await instances.faults_get_by_instance_uuids(
            conn, [a["uuid"], b["uuid"], c["uuid"]], latest=True
        )
        every = await instances.faults_get_by_instance_uuids(conn, [a["uuid"]])
    assert [f["message"] for f in latest[a["uuid"]]] == ["a2"]
    assert [f["message"] for f in latest[b["uuid"]]] == ["b"]
    assert latest[c["uuid"]] == []
    assert [f["message"] for f in every[a["uuid"]]] == ["a2", "a1", "a0"]


async def test_fault_for_unknown_instance_is_a_reference_error(db: Database) -> None:
    with pytest.raises(exception.DBReferenceError):
        async with db.writer() as conn:
            await instances.fault_create(conn, {"instance_uuid": "nope", "code": 500})


async def test_instance_and_task_in_one_transaction_roll_back_together(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.writer() as conn:
            inst = await make_instance(conn)
            await tasks.create(conn, kind="build", instance_uuid=inst["uuid"])
            raise RuntimeError("api crashed before commit")
    async with db.reader() as conn:
        assert await instances.get_all(conn) == []
        assert await tasks.list_active(conn) == []
