"""Services, heartbeats, migrations, actions, flavors, aggregates, server groups."""

from __future__ import annotations

import datetime as dt

import pytest

from nubes import exception
from nubes.db import group_commit
from nubes.db.api import actions, flavors, groups, migrations, services
from nubes.db.engine import Database
from nubes.db.types import utcnow
from tests.unit.db.factories import make_flavor, make_instance, make_service


async def test_services_crud(db: Database) -> None:
    async with db.writer() as conn:
        svc = await make_service(conn, host="h1", binary="nubes-compute", version=3)
        await make_service(conn, host="h2", binary="nubes-conductor")
        row = await services.update(
            conn, svc["id"], {"disabled": True, "disabled_reason": "maintenance"}
        )
        assert (row["disabled"], row["disabled_reason"]) == (True, "maintenance")
        with pytest.raises(exception.ValidationError):
            await services.update(conn, svc["id"], {"host": "elsewhere"})
    async with db.reader(allow_stale=True) as conn:
        got = await services.get_by_host_and_binary(conn, "h1", "nubes-compute")
        assert got["version"] == 3 and got["forced_down"] is False
        assert (await services.get_by_uuid(conn, svc["uuid"]))["id"] == svc["id"]
        assert len(await services.get_all(conn)) == 2
        assert await services.get_all(conn, binary="nubes-compute", include_disabled=False) == []
        with pytest.raises(exception.ServiceNotFound):
            await services.get_by_host_and_binary(conn, "h9", "nubes-compute")


async def test_heartbeat_upsert_and_last_seen(db: Database) -> None:
    t0 = utcnow()
    async with db.writer() as conn:
        a = await make_service(conn)
        b = await make_service(conn)
        await services.heartbeat(conn, a["id"], now=t0)
        await services.heartbeat(conn, a["id"], now=t0 + dt.timedelta(seconds=10))
    with pytest.raises(exception.ServiceNotFound):
        async with db.writer() as conn:
            await services.heartbeat(conn, 424242)
    async with db.reader(allow_stale=True) as conn:
        seen = await services.last_seen(conn)
        assert seen == {a["id"]: t0 + dt.timedelta(seconds=10)}
        rows = {r["id"]: r for r in await services.get_all_with_last_seen(conn)}
        assert rows[a["id"]]["report_count"] == 2
        assert rows[b["id"]]["last_seen_at"] is None
    async with db.writer() as conn:
        await services.destroy(conn, a["id"])
        assert await services.last_seen(conn, [a["id"]]) == {}


async def test_concurrent_first_heartbeats_do_not_collide(db: Database) -> None:
    import asyncio

    async with db.writer() as conn:
        svc = await make_service(conn)

    async def beat() -> None:
        async with db.writer() as conn:
            await services.heartbeat(conn, svc["id"])

    await asyncio.gather(*(beat() for _ in range(10)))
    async with db.reader() as conn:
        rows = await services.get_all_with_last_seen(conn)
    assert rows[0]["report_count"] == 10


async def test_migrations_crud_and_listing(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn)
        mig = await migrations.create(
            conn,
            {
                "instance_uuid": inst["uuid"],
                "source_compute": "h1",
                "source_node": "n1",
                "dest_compute": "h2",
                "dest_node": "n2",
                "status": "pre-migrating",
                "migration_type": "migration",
            },
        )
        await migrations.create(
            conn, {"instance_uuid": inst["uuid"], "source_compute": "h3", "status": "confirmed"}
        )
        updated = await migrations.update(conn, mig["id"], {"status": "migrating"})
        assert updated["status"] == "migrating"
    async with db.reader() as conn:
        assert (await migrations.get_by_uuid(conn, mig["uuid"]))["id"] == mig["id"]
        assert [m["id"] for m in await migrations.list_by_host(conn, "h2")] == [mig["id"]]
        assert await migrations.list_by_host(conn, "h2", node="n1") == []
        assert [m["id"] for m in await migrations.list_in_progress_by_host(conn, "h1")] == [
            mig["id"]
        ]
        assert await migrations.list_in_progress_by_host(conn, "h3") == []
        assert len(await migrations.list_by_instance(conn, inst["uuid"])) == 2
        got = await migrations.get_by_instance_and_status(conn, inst["uuid"], "migrating")
        assert got["id"] == mig["id"]
        assert len(await migrations.list_all(conn, statuses=["confirmed"])) == 1
        with pytest.raises(exception.MigrationNotFound):
            await migrations.get_by_id(conn, 999999)


async def test_actions_and_events(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn)
        action = await actions.action_start(
            conn, instance_uuid=inst["uuid"], action="reboot", request_id="req-1", user_id="u"
        )
        await actions.event_start(
            conn, instance_uuid=inst["uuid"], request_id="req-1", event="compute_reboot", host="h"
        )
        event = await actions.event_finish(
            conn,
            instance_uuid=inst["uuid"],
            request_id="req-1",
            event="compute_reboot",
            result=actions.RESULT_ERROR,
            traceback="Traceback ...",
        )
        assert event["result"] == actions.RESULT_ERROR and event["finish_time"] is not None
        finished = await actions.action_finish(conn, instance_uuid=inst["uuid"], request_id="req-1")
        assert finished["finish_time"] is not None
        assert finished["message"] == actions.ACTION_ERROR_MESSAGE
    async with db.reader() as conn:
        listed = await actions.actions_get(conn, inst["uuid"])
        assert [a["id"] for a in listed] == [action["id"]]
        assert [e["event"] for e in await actions.events_get(conn, action["id"])] == [
            "compute_reboot"
        ]
        with pytest.raises(exception.InstanceActionNotFound):
            await actions.action_get_by_request_id(conn, inst["uuid"], "req-2")


async def test_flavors_extra_specs_and_access(db: Database) -> None:
    async with db.writer() as conn:
        pub = await make_flavor(conn, flavorid="1", name="m1.tiny", memory_mb=512)
        priv = await make_flavor(
            conn, flavorid="2", name="m1.secret", memory_mb=2048, is_public=False
        )
        await flavors.extra_specs_update_or_create(conn, pub["id"], {"hw:cpu_policy": "shared"})
        await flavors.extra_specs_update_or_create(
            conn, pub["id"], {"hw:cpu_policy": "dedicated", "quota:disk": "1"}
        )
        await flavors.extra_specs_delete(conn, pub["id"], "quota:disk")
        await flavors.access_add(conn, priv["id"], "p1")
    with pytest.raises(exception.DBDuplicateEntry):
        async with db.writer() as conn:
            await flavors.access_add(conn, priv["id"], "p1")
    async with db.writer() as conn:
        await flavors.access_add(conn, priv["id"], "p2")
        await flavors.access_remove(conn, priv["id"], "p2")
        await flavors.access_add(conn, priv["id"], "p2")  # re-grant after removal
        got = await flavors.get_by_flavor_id(conn, "1")
        assert got["extra_specs"] == {"hw:cpu_policy": "dedicated"}
        assert await flavors.access_get(conn, priv["id"]) == ["p1", "p2"]
        assert [f["flavorid"] for f in await flavors.get_all(conn)] == ["1", "2"]
        assert [f["flavorid"] for f in await flavors.get_all(conn, is_public=True)] == ["1"]
        assert [f["flavorid"] for f in await flavors.get_all(conn, project_id="p1")] == ["1", "2"]
        assert [f["flavorid"] for f in await flavors.get_all(conn, project_id="p9")] == ["1"]
        assert [f["flavorid"] for f in await flavors.get_all(conn, min_memory_mb=1024)] == ["2"]
        page = await flavors.get_all(conn, limit=1, marker="1")
        assert [f["flavorid"] for f in page] == ["2"]
        described = await flavors.update_description(conn, "2", "for p1 only")
        assert described["description"] == "for p1 only"
        await flavors.destroy(conn, "2")
        with pytest.raises(exception.FlavorNotFound):
            await flavors.get_by_flavor_id(conn, "2")
        assert (await flavors.get_by_id(conn, priv["id"], read_deleted="yes"))["projects"] == []


async def test_aggregates(db: Database) -> None:
    async with db.writer() as conn:
        az = await groups.aggregate_create(
            conn, "az1", metadata={groups.AVAILABILITY_ZONE_KEY: "zone-1"}
        )
        ssd = await groups.aggregate_create(conn, "ssd", metadata={"ssd": "true"})
        await groups.aggregate_host_add(conn, az["id"], "h1")
        await groups.aggregate_host_add(conn, ssd["id"], "h1")
        await groups.aggregate_host_add(conn, ssd["id"], "h2")
    with pytest.raises(exception.DBDuplicateEntry):
        async with db.writer() as conn:
            await groups.aggregate_host_add(conn, ssd["id"], "h2")
    with pytest.raises(exception.DBDuplicateEntry):
        async with db.writer() as conn:
            await groups.aggregate_create(conn, "ssd")
    async with db.writer() as conn:
        await groups.aggregate_metadata_update(conn, ssd["id"], {"ssd": "yes", "gpu": None})
        await groups.aggregate_host_delete(conn, ssd["id"], "h2")
        got = await groups.aggregate_get_by_uuid(conn, ssd["uuid"])
        assert (got["hosts"], got["metadata"]) == (["h1"], {"ssd": "yes"})
        zones = await groups.aggregate_metadata_get_by_host(
            conn, "h1", key=groups.AVAILABILITY_ZONE_KEY
        )
        assert zones == {groups.AVAILABILITY_ZONE_KEY: {"zone-1"}}
        assert [a["name"] for a in await groups.aggregate_get_by_host(conn, "h1")] == [
            "az1",
            "ssd",
        ]
        renamed = await groups.aggregate_update_name(conn, az["id"], "az-one")
        assert renamed["name"] == "az-one"
        await groups.aggregate_destroy(conn, ssd["id"])
        assert [a["name"] for a in await groups.aggregate_get_all(conn)] == ["az-one"]
        again = await groups.aggregate_create(conn, "ssd")
        assert again["hosts"] == [] and again["metadata"] == {}


async def test_server_groups(db: Database) -> None:
    async with db.writer() as conn:
        a = await make_instance(conn)
        b = await make_instance(conn)
        group = await groups.group_create(
            conn,
            {"name": "g", "project_id": "p1", "policy": "anti-affinity", "rules": {"max": 1}},
            members=[a["uuid"]],
        )
        assert group["members"] == [a["uuid"]] and group["rules"] == {"max": 1}
        assert await groups.group_members_add(conn, group["uuid"], [a["uuid"], b["uuid"]]) == [
            b["uuid"]
        ]
        assert (await groups.group_get_by_instance(conn, b["uuid"]))["uuid"] == group["uuid"]
        await groups.group_member_delete(conn, group["uuid"], a["uuid"])
        assert (await groups.group_get_by_uuid(conn, group["uuid"]))["members"] == [b["uuid"]]
        assert len(await groups.group_get_all(conn, project_id="p1")) == 1
        read = groups.uuid_of_instance_read(b["uuid"])
        assert await read.run(conn) == {"uuid": group["uuid"]}
        assert await groups.uuid_of_instance_read(a["uuid"]).run(conn) is None
    # The same description as a grouped read, where the backend groups them.
    assert await group_commit.fetch(db, b["uuid"], read) == {"uuid": group["uuid"]}
    async with db.writer() as conn:
        await groups.group_destroy(conn, group["uuid"])
        with pytest.raises(exception.InstanceGroupNotFound):
            await groups.group_get_by_uuid(conn, group["uuid"])
    # A deleted group is no group (as group_get_by_instance finds none).
    assert await group_commit.fetch(db, b["uuid"], read) is None
