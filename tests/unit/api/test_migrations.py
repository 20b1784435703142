"""Migration records over HTTP: os-migrations, a server's live migrations, abort, force complete.

Bodies per microversion (2.22, 2.23, 2.24, 2.59 boundaries), filters and
paging, and Nova's answers to each refusal. Migrations are recorded by the
move actions themselves, or put where a conductor would have left them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from nubes.db.api import migrations as migrations_db
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.moves_cloud import (
    URL,
    Cloud,
    act,
    boot,
    fault,
    make_cloud,
    migration_of,
    records,
    settle,
)

BASE = "/compute/v2.1"
V21_KEYS = {
    "id",
    "status",
    "instance_uuid",
    "source_compute",
    "source_node",
    "dest_compute",
    "dest_node",
    "dest_host",
    "old_instance_type_id",
    "new_instance_type_id",
    "created_at",
    "updated_at",
}
SERVER_MIGRATION_KEYS = {
    "id",
    "status",
    "server_uuid",
    "source_compute",
    "source_node",
    "dest_compute",
    "dest_node",
    "dest_host",
    "memory_total_bytes",
    "memory_processed_bytes",
    "memory_remaining_bytes",
    "disk_total_bytes",
    "disk_processed_bytes",
    "disk_remaining_bytes",
    "created_at",
    "updated_at",
}
LIVE = {"os-migrateLive": {"block_migration": "auto", "host": None}}


@pytest.fixture
async def cloud(api: ApiHarness) -> Cloud:
    return await make_cloud(api)


async def set_migration(cloud: Cloud, migration_id: int, **values: Any) -> None:
    async with cloud.api.state.db.writer() as conn:
        await migrations_db.update(conn, migration_id, values)


async def live_migrating(cloud: Cloud, status: str = "running") -> tuple[str, int]:
    """A server live-migrating (through the API), its migration put in ``status``."""
    uuid = await boot(cloud)
    r = await act(cloud, uuid, LIVE, version="2.25")
    assert r.status_code == 202, r.text
    migration = migration_of(await records(cloud, uuid))
    await set_migration(cloud, migration["id"], status=status)
    cloud.conductor.calls.clear()
    return uuid, migration["id"]


# --- os-migrations ---------------------------------------------------------------------------


async def test_os_migrations_fields_per_version(cloud: Cloud) -> None:
    resized, live = await boot(cloud), await boot(cloud)
    assert (await act(cloud, resized, {"resize": {"flavorRef": "2"}})).status_code == 202
    assert (await act(cloud, live, LIVE, version="2.25")).status_code == 202
    live_id = migration_of(await records(cloud, live))["id"]
    async with await cloud.login("admin") as c:
        (resize, accepted) = (await c.get(f"{BASE}/os-migrations")).json()["migrations"]
    assert set(resize) == set(accepted) == V21_KEYS
    assert resize["instance_uuid"] == resized and resize["status"] == "pre-migrating"
    assert resize["old_instance_type_id"] == cloud.flavors["1"]["id"]
    assert resize["new_instance_type_id"] == cloud.flavors["2"]["id"]
    assert resize["source_compute"] == "fake-0" and resize["dest_compute"] is None
    assert dt.datetime.strptime(resize["created_at"], "%Y-%m-%dT%H:%M:%S.%f")
    # 2.23: the type for all, links for live migrations in progress only.
    async with await cloud.login("admin", "2.23") as c:
        found = {m["id"]: m for m in (await c.get(f"{BASE}/os-migrations")).json()["migrations"]}
        assert set(found[live_id]) == V21_KEYS | {"migration_type"}  # accepted: not started
        await set_migration(cloud, live_id, status="running")
        found = {m["id"]: m for m in (await c.get(f"{BASE}/os-migrations")).json()["migrations"]}
    assert found[live_id]["migration_type"] == "live-migration"
    assert [link["rel"] for link in found[live_id]["links"]] == ["self", "bookmark"]
    assert found[live_id]["links"][0]["href"].endswith(f"/v2.1/servers/{live}/migrations/{live_id}")
    assert "links" not in found[resize["id"]]
    assert found[resize["id"]]["migration_type"] == "resize"
    async with await cloud.login("admin", "2.59") as c:
        listed = (await c.get(f"{BASE}/os-migrations")).json()["migrations"]
    assert [m["id"] for m in listed] == [live_id, resize["id"]]  # newest first
    assert all(set(m) >= V21_KEYS | {"migration_type", "uuid"} for m in listed)


async def test_os_migrations_filters(cloud: Cloud) -> None:
    uuids = [await boot(cloud) for _ in range(3)]
    assert (await act(cloud, uuids[0], {"migrate": None})).status_code == 202
    assert (await act(cloud, uuids[1], LIVE, version="2.25")).status_code == 202
    assert (await act(cloud, uuids[2], {"resize": {"flavorRef": "2"}})).status_code == 202
    moved = migration_of(await records(cloud, uuids[0]))
    await set_migration(cloud, moved["id"], status="finished", dest_compute="fake-1")
    async with await cloud.login("admin", "2.23") as c:

        async def servers(**params: Any) -> list[str]:
            r = await c.get(f"{BASE}/os-migrations", params=params)
            assert r.status_code == 200, r.text
            return sorted(m["instance_uuid"] for m in r.json()["migrations"])

        assert await servers() == sorted(uuids)
        assert await servers(host="fake-1") == [uuids[0]]
        assert await servers(host="fake-0") == sorted(uuids)
        assert await servers(source_compute="fake-0") == sorted(uuids)
        assert await servers(status="accepted") == [uuids[1]]
        assert await servers(status="finished") == [uuids[0]]
        assert await servers(instance_uuid=uuids[2]) == [uuids[2]]
        assert await servers(migration_type="live-migration") == [uuids[1]]
        assert await servers(migration_type="migration") == [uuids[0]]
        # Before 2.59 unknown parameters (and changes-since) are ignored.
        assert await servers(bogus="1", **{"changes-since": "nonsense"}) == sorted(uuids)


async def test_os_migrations_paging_and_changes_since_at_2_59(cloud: Cloud) -> None:
    uuids = [await boot(cloud) for _ in range(3)]
    for uuid in uuids:
        assert (await act(cloud, uuid, {"migrate": None})).status_code == 202
    async with await cloud.login("admin", "2.59") as c:
        page = (await c.get(f"{BASE}/os-migrations", params={"limit": 2})).json()
        assert [m["instance_uuid"] for m in page["migrations"]] == uuids[::-1][:2]
        (link,) = page["migrations_links"]
        assert link["rel"] == "next"
        assert f"marker={page['migrations'][-1]['uuid']}" in link["href"]
        rest = (await c.get(link["href"])).json()
        assert [m["instance_uuid"] for m in rest["migrations"]] == [uuids[0]]
        assert "migrations_links" not in rest
        r = await c.get(f"{BASE}/os-migrations", params={"marker": "nope"})
        assert fault(r, 400) == "Marker nope could not be found."
        r = await c.get(f"{BASE}/os-migrations", params={"bogus": "1"})
        assert "Additional properties are not allowed ('bogus' was unexpected)" in fault(r, 400)
        r = await c.get(f"{BASE}/os-migrations", params={"changes-since": "yesterday"})
        assert "changes-since" in fault(r, 400)
        r = await c.get(f"{BASE}/os-migrations", params={"limit": "-1"})
        assert r.status_code == 400
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
        r = await c.get(f"{BASE}/os-migrations", params={"changes-since": future})
        assert r.json()["migrations"] == []
        r = await c.get(f"{BASE}/os-migrations", params={"changes-since": past})
        assert len(r.json()["migrations"]) == 3


async def test_os_migrations_is_for_admins(cloud: Cloud) -> None:
    async with await cloud.login("demo") as c:
        r = await c.get(f"{BASE}/os-migrations")
    assert "os_compute_api:os-migrations:index" in fault(r, 403)


# --- a server's live migrations ---------------------------------------------------------------


async def test_server_migrations_list_and_show(cloud: Cloud) -> None:
    uuid, mid = await live_migrating(cloud, status="accepted")
    path = f"{URL}/{uuid}/migrations"
    async with await cloud.login("admin", "2.23") as c:
        assert (await c.get(path)).json() == {"migrations": []}  # not started
        r = await c.get(f"{path}/{mid}")
        assert fault(r, 404) == f"Live migration {mid} for server {uuid} is not in progress."
        await set_migration(
            cloud, mid, status="running", memory_total=1000, memory_processed=400, disk_total=0
        )
        (listed,) = (await c.get(path)).json()["migrations"]
        shown = (await c.get(f"{path}/{mid}")).json()["migration"]
    assert listed == shown
    assert set(shown) == SERVER_MIGRATION_KEYS
    assert (shown["id"], shown["server_uuid"], shown["status"]) == (mid, uuid, "running")
    assert (shown["memory_total_bytes"], shown["memory_processed_bytes"]) == (1000, 400)
    assert shown["memory_remaining_bytes"] is None and shown["disk_total_bytes"] == 0
    async with await cloud.login("admin", "2.59") as c:
        shown = (await c.get(f"{path}/{mid}")).json()["migration"]
        assert set(shown) == SERVER_MIGRATION_KEYS | {"uuid"}
        await set_migration(cloud, mid, status="cancelling")
        assert len((await c.get(path)).json()["migrations"]) == 1  # in progress still
        await set_migration(cloud, mid, status="completed")
        assert (await c.get(path)).json() == {"migrations": []}
        for bad in ("999", "abc"):
            r = await c.get(f"{path}/{bad}")
            assert fault(r, 404) == (
                f"In-progress live migration {bad} is not found for server {uuid}."
            )
    resized = await boot(cloud)
    assert (await act(cloud, resized, {"resize": {"flavorRef": "2"}})).status_code == 202
    other = migration_of(await records(cloud, resized))["id"]
    async with await cloud.login("admin", "2.23") as c:
        r = await c.get(f"{URL}/{resized}/migrations/{other}")
        assert fault(r, 404) == f"Migration {other} for server {resized} is not live-migration."
        r = await c.get(f"{URL}/{uuid}/migrations/{other}")  # another server's
        assert fault(r, 404).startswith("In-progress live migration")


async def test_server_migrations_versions_and_policy(cloud: Cloud) -> None:
    uuid, mid = await live_migrating(cloud)
    async with await cloud.login("admin", "2.22") as c:
        r = await c.get(f"{URL}/{uuid}/migrations")
        assert fault(r, 404) == "The resource could not be found."
        assert (await c.get(f"{URL}/{uuid}/migrations/{mid}")).status_code == 404
    async with await cloud.login("demo", "2.23") as c:
        assert "servers:migrations:index" in fault(await c.get(f"{URL}/{uuid}/migrations"), 403)
        r = await c.get(f"{URL}/{uuid}/migrations/{mid}")
        assert "servers:migrations:show" in fault(r, 403)
    async with await cloud.login("other", "2.23") as c:
        r = await c.get(f"{URL}/{uuid}/migrations")
        assert fault(r, 404) == f"Instance {uuid} could not be found."


# --- abort --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "version"), [("accepted", "2.65"), ("preparing", "2.65"), ("running", "2.24")]
)
async def test_abort_marks_cancelling_and_casts(cloud: Cloud, status: str, version: str) -> None:
    uuid, mid = await live_migrating(cloud, status=status)
    async with await cloud.login("admin", version) as c:
        r = await c.delete(f"{URL}/{uuid}/migrations/{mid}")
    assert r.status_code == 202 and r.content == b""
    found = await records(cloud, uuid)
    assert migration_of(found)["status"] == "cancelling"
    assert found["action"]["action"] == "live_migration_cancel"
    assert found["action"]["finish_time"] is None  # the source host adds its events
    assert found["task"]["kind"] == "live_migrate"  # the move's task carries on
    assert found["instance"]["task_state"] == "migrating"
    assert cloud.conductor.calls == [("live_migration_abort", uuid, mid)]


async def test_abort_before_it_runs_needs_2_65(cloud: Cloud) -> None:
    uuid, mid = await live_migrating(cloud, status="preparing")
    async with await cloud.login("admin", "2.64") as c:
        assert fault(await c.delete(f"{URL}/{uuid}/migrations/{mid}"), 400) == (
            f"Migration {mid} state of instance {uuid} is preparing. "
            "Cannot abort live migration while the migration is in this state."
        )
    assert migration_of(await records(cloud, uuid))["status"] == "preparing"
    assert cloud.conductor.calls == []


async def test_abort_refusals(cloud: Cloud) -> None:
    uuid, mid = await live_migrating(cloud, status="cancelling")
    path = f"{URL}/{uuid}/migrations"
    async with await cloud.login("admin", "2.24") as c:
        assert fault(await c.delete(f"{path}/{mid}"), 400) == (
            f"Migration {mid} state of instance {uuid} is cancelling. "
            "Cannot abort live migration while the migration is in this state."
        )
        for bad in ("999", "x"):
            assert fault(await c.delete(f"{path}/{bad}"), 404) == (
                f"Migration {bad} not found for instance {uuid}"
            )
    async with await cloud.login("admin", "2.23") as c:
        assert fault(await c.delete(f"{path}/{mid}"), 404) == "The resource could not be found."
    async with await cloud.login("demo", "2.24") as c:
        assert "servers:migrations:delete" in fault(await c.delete(f"{path}/{mid}"), 403)
    await settle(cloud, uuid, task_state=None)
    async with await cloud.login("admin", "2.24") as c:
        assert fault(await c.delete(f"{path}/{mid}"), 409) == (
            f"Cannot 'abort live migration' instance {uuid} while it is in task_state None"
        )
    assert cloud.conductor.calls == []
    assert migration_of(await records(cloud, uuid))["status"] == "cancelling"


async def test_abort_of_a_resize_is_refused(cloud: Cloud) -> None:
    uuid, _ = await live_migrating(cloud)
    resized = await boot(cloud)
    assert (await act(cloud, resized, {"resize": {"flavorRef": "2"}})).status_code == 202
    resize_id = migration_of(await records(cloud, resized))["id"]
    async with cloud.api.state.db.writer() as conn:
        # Say the resize's record were the live-migrating instance's.
        await migrations_db.update(conn, resize_id, {"instance_uuid": uuid})
    async with await cloud.login("admin", "2.24") as c:
        r = await c.delete(f"{URL}/{uuid}/migrations/{resize_id}")
    assert "is pre-migrating. Cannot abort live migration" in fault(r, 400)


# --- force complete ---------------------------------------------------------------------------


async def test_force_complete(cloud: Cloud) -> None:
    uuid, mid = await live_migrating(cloud, status="preparing")
    path = f"{URL}/{uuid}/migrations/{mid}/action"
    force = {"force_complete": None}
    async with await cloud.login("admin", "2.22") as c:
        assert fault(await c.post(path, json=force), 400) == (
            f"Migration {mid} state of instance {uuid} is preparing. "
            "Cannot force complete while the migration is in this state."
        )
        await set_migration(cloud, mid, status="running")
        r = await c.post(path, json=force)
        assert r.status_code == 202 and r.content == b""
        assert cloud.conductor.calls == [("live_migration_force_complete", uuid, mid)]
        found = await records(cloud, uuid)
        assert found["action"]["action"] == "live_migration_force_complete"
        assert migration_of(found)["status"] == "running"
        # Nova answers an unknown migration here with 400, not 404.
        r = await c.post(f"{URL}/{uuid}/migrations/999/action", json=force)
        assert fault(r, 400) == f"Migration 999 not found for instance {uuid}"
        for bad in ({}, {"force_complete": {}}, {"force_complete": None, "x": 1}):
            assert (await c.post(path, json=bad)).status_code == 400
    async with await cloud.login("admin", "2.21") as c:
        r = await c.post(path, json=force)
        assert fault(r, 404) == "The resource could not be found."
    async with await cloud.login("demo", "2.22") as c:
        r = await c.post(path, json=force)
        assert "servers:migrations:force_complete" in fault(r, 403)
    assert len(cloud.conductor.calls) == 1
