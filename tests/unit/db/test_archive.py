"""archive-deleted-rows: batches, --before, --until-complete, --purge and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt

import pytest
from oslo_config import cfg
from sqlalchemy import func, select

from nubes import config
from nubes.db import archive, manage, models
from nubes.db.api import actions, flavors, groups, instances, migrations, services, tasks
from nubes.db.engine import Database
from nubes.db.types import utcnow
from tests.unit.db.factories import make_flavor, make_instance, make_service


def _conf(url: str) -> cfg.ConfigOpts:
    conf = config.load([], conf=config.new_config())
    conf.set_override("connection", url, group="database")
    return conf


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nubes-manage")
    manage.add_db_commands(parser.add_subparsers(dest="category"))
    return parser.parse_args(["db", *argv])


async def _manage(url: str, *argv: str) -> int:
    args = _parse(*argv)
    # Handlers run their own event loop, as under nubes-manage.
    return int(await asyncio.to_thread(args.handler, _conf(url), args))


async def _count(db: Database, table: str) -> int:
    target = models.metadata.tables[table]
    async with db.reader() as conn:
        return int((await conn.execute(select(func.count()).select_from(target))).scalar_one())


async def _doomed_instance(db: Database, *, deleted_at: dt.datetime | None = None) -> str:
    """An instance with a fault, an action + event, a migration and a finished task, deleted."""
    async with db.writer() as conn:
        inst = await make_instance(conn)
        uuid = inst["uuid"]
        await instances.fault_create(conn, {"instance_uuid": uuid, "code": 500, "message": "x"})
        await actions.action_start(conn, instance_uuid=uuid, action="create", request_id="r")
        await actions.event_start(conn, instance_uuid=uuid, request_id="r", event="spawn")
        await migrations.create(conn, {"instance_uuid": uuid, "status": "confirmed"})
        task = await tasks.create(conn, kind="build", instance_uuid=uuid)
        await tasks.claim(conn, task["id"], "c", lease_seconds=30)
        await tasks.finish(conn, task["id"], "c")
        await instances.destroy(conn, uuid, now=deleted_at)
    return uuid


async def test_nothing_to_archive_exits_zero(db: Database, db_url: str) -> None:
    async with db.writer() as conn:
        await make_instance(conn)
    assert await _manage(db_url, "archive-deleted-rows") == manage.EXIT_NOTHING_LEFT
    assert await _count(db, "instances") == 1


async def test_batches_move_instances_with_their_children(db: Database, db_url: str) -> None:
    doomed = [await _doomed_instance(db) for _ in range(2)]
    async with db.writer() as conn:
        keep = await make_instance(conn)
    # Two instances and their two soft-deleted migrations: four batch rows,
    # so four runs that archive one each, then one that finds nothing.
    codes = [
        await _manage(db_url, "archive-deleted-rows", "--max-rows", "1", "--verbose")
        for _ in range(5)
    ]
    assert codes == [manage.EXIT_ARCHIVED_SOME] * 4 + [manage.EXIT_NOTHING_LEFT]
    for table in (
        "instances",
        "instance_faults",
        "instance_actions",
        "instance_actions_events",
        "migrations",
        "conductor_tasks",
    ):
        expected_live = 1 if table == "instances" else 0
        assert await _count(db, table) == expected_live, table
        assert await _count(db, models.shadow_name(table)) == 2, table
    async with db.reader() as conn:
        assert (await instances.get_by_uuid(conn, keep["uuid"]))["id"] == keep["id"]
        shadow = models.SHADOW_TABLES["instances"]
        archived = (await conn.execute(select(shadow.c.uuid, shadow.c.deleted))).all()
    assert sorted(u for u, _ in archived) == sorted(doomed)
    assert all(deleted != 0 for _, deleted in archived)


async def test_max_rows_bounds_one_pass(db: Database) -> None:
    for _ in range(5):
        async with db.writer() as conn:
            await instances.destroy(conn, (await make_instance(conn))["uuid"])
    moved = await archive.archive_pass(db, max_rows=2)
    assert moved["instances"] == 2
    result = await archive.archive_deleted_rows(db, max_rows=2, until_complete=True)
    assert result.archived["instances"] == 3
    assert await _count(db, "instances") == 0


async def test_until_complete(db: Database, db_url: str) -> None:
    for _ in range(4):
        await _doomed_instance(db)
    code = await _manage(db_url, "archive-deleted-rows", "--max-rows", "1", "--until-complete")
    assert code == manage.EXIT_ARCHIVED_SOME
    assert await _count(db, "instances") == 0
    assert await _count(db, "shadow_instances") == 4
    assert await _manage(db_url, "archive-deleted-rows", "--until-complete") == 0


async def test_before_only_takes_older_rows(db: Database, db_url: str) -> None:
    old = await _doomed_instance(db, deleted_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    await _doomed_instance(db)
    code = await _manage(db_url, "archive-deleted-rows", "--before", "2021-06-30")
    assert code == manage.EXIT_ARCHIVED_SOME
    async with db.reader() as conn:
        shadow = models.SHADOW_TABLES["instances"]
        assert list((await conn.execute(select(shadow.c.uuid))).scalars()) == [old]
    assert await _count(db, "instances") == 1
    assert await _manage(db_url, "archive-deleted-rows", "--before", "2021-06-30") == 0


async def test_purge_empties_shadow_tables(db: Database, db_url: str) -> None:
    await _doomed_instance(db)
    code = await _manage(db_url, "archive-deleted-rows", "--purge", "--verbose")
    assert code == manage.EXIT_ARCHIVED_SOME
    for shadow in models.SHADOW_TABLES.values():
        assert await _count(db, shadow.name) == 0, shadow.name


async def test_purge_before_keeps_newer_archived_rows(db: Database) -> None:
    await _doomed_instance(db, deleted_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    await _doomed_instance(db)
    await archive.archive_deleted_rows(db, until_complete=True)
    purged = await archive.purge_shadow_tables(db, before=utcnow() - dt.timedelta(days=30))
    assert purged["shadow_instances"] == 1
    assert await _count(db, "shadow_instances") == 1


async def test_instance_with_active_task_is_kept(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn)
        await tasks.create(conn, kind="delete", instance_uuid=inst["uuid"])
        await instances.destroy(conn, inst["uuid"])
    result = await archive.archive_deleted_rows(db, until_complete=True)
    assert result.archived["instances"] == 0
    assert await _count(db, "instances") == 1


async def test_other_parents_take_their_children(db: Database) -> None:
    async with db.writer() as conn:
        flavor = await make_flavor(conn, flavorid="9")
        await flavors.extra_specs_update_or_create(conn, flavor["id"], {"a": "b"})
        await flavors.destroy(conn, "9")
        agg = await groups.aggregate_create(conn, "agg", metadata={"k": "v"})
        await groups.aggregate_host_add(conn, agg["id"], "h1")
        await groups.aggregate_destroy(conn, agg["id"])
        group = await groups.group_create(conn, {"name": "g"}, members=["m1"])
        await groups.group_destroy(conn, group["uuid"])
        svc = await make_service(conn)
        await services.heartbeat(conn, svc["id"])
        await services.destroy(conn, svc["id"])
    result = await archive.archive_deleted_rows(db, until_complete=True)
    for table in (
        "flavors",
        "flavor_extra_specs",
        "aggregates",
        "aggregate_hosts",
        "aggregate_metadata",
        "instance_groups",
        "instance_group_members",
        "services",
    ):
        assert result.archived[table] == 1, table
        assert await _count(db, table) == 0, table
    assert await _count(db, "service_heartbeats") == 0
    # A name archived away can be taken again, and archived again.
    async with db.writer() as conn:
        await make_flavor(conn, flavorid="9")


@pytest.mark.parametrize(
    "argv",
    [
        ("--max-rows", "0"),
        ("--max-rows", "-3"),
        ("--max-rows", "lots"),
        ("--before", "yesterday"),
        ("--before", "2025-13-45"),
    ],
)
async def test_bad_arguments_exit_two(db_url: str, argv: tuple[str, ...]) -> None:
    assert await _manage(db_url, "archive-deleted-rows", *argv) == manage.EXIT_BAD_ARGUMENTS


def test_parse_before_accepts_dates_and_zones() -> None:
    assert manage.parse_before("2025-01-31") == dt.datetime(2025, 1, 31, tzinfo=dt.UTC)
    assert manage.parse_before("2025-01-31T12:00:00+02:00") == dt.datetime(
        2025, 1, 31, 10, tzinfo=dt.UTC
    )
