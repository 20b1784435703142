"""Server groups with every service in one process: members, policies, races, moves.

memory:// + SQLite, the real conductor task engine, scheduler and fake
compute hosts. Builds of one request run as concurrent build tasks, so a
group's members race each other through the scheduler here too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nubes import exception
from nubes.api.moves import MovesAPI
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.api import flavors, groups, services
from nubes.db.api import migrations as migrations_api
from nubes.db.models import instance_faults
from nubes.testing.allinone import AllInOne

pytestmark = pytest.mark.timeout(180)

IMAGE = {"id": "img-1", "properties": {}}


@pytest.fixture
def ctxt() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1")


async def _cloud(tmp_path: Path, hosts: int) -> AllInOne:
    cloud = await AllInOne.start(f"sqlite:///{tmp_path / 'groups.sqlite'}", hosts=hosts)
    async with cloud.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 256, "root_gb": 1}
        )
    return cloud


@pytest.fixture
async def two_hosts(tmp_path: Path) -> AsyncIterator[AllInOne]:
    cloud = await _cloud(tmp_path, 2)
    yield cloud
    await cloud.stop()


@pytest.fixture
async def three_hosts(tmp_path: Path) -> AsyncIterator[AllInOne]:
    cloud = await _cloud(tmp_path, 3)
    yield cloud
    await cloud.stop()


async def _group(cloud: AllInOne, policy: str, rules: dict[str, int] | None = None) -> str:
    async with cloud.db.writer() as conn:
        row = await groups.group_create(
            conn,
            {"name": policy, "project_id": "p1", "user_id": "u1", "policy": policy, "rules": rules},
        )
    return str(row["uuid"])


async def _boot(
    cloud: AllInOne, ctxt: RequestContext, group: str, count: int = 1, name: str = "vm"
) -> list[dict[str, Any]]:
    made = await cloud.api.create_servers(
        ctxt,
        name=name,
        flavor="small",
        image=IMAGE,
        count=count,
        scheduler_hints={"group": group},
        group=group,
    )
    uuids = [i.uuid for i in made]
    await cloud.wait_tasks(uuids, timeout=90)
    return await cloud.instances(uuids)


async def _members(cloud: AllInOne, group: str) -> list[str]:
    async with cloud.db.reader() as conn:
        return list((await groups.group_get_by_uuid(conn, group))["members"])


async def _last_fault(cloud: AllInOne, uuid: str) -> str:
    f = instance_faults.c
    stmt = select(f.message).where(f.instance_uuid == uuid).order_by(f.id.desc()).limit(1)
    async with cloud.db.reader() as conn:
        return str((await conn.execute(stmt)).scalar_one())


async def test_anti_affinity_group_members_never_share_a_host(
    two_hosts: AllInOne, ctxt: RequestContext
):
    cloud = two_hosts
    group = await _group(cloud, "anti-affinity")
    # Three at once: their builds race through the scheduler.
    rows = await _boot(cloud, ctxt, group, count=3)
    active = [r for r in rows if r["vm_state"] == "active"]
    failed = [r for r in rows if r["vm_state"] == "error"]
    assert len(active) == 2 and len(failed) == 1
    assert {r["host"] for r in active} == {"fake-0", "fake-1"}
    assert failed[0]["host"] is None
    assert "No valid host" in await _last_fault(cloud, failed[0]["uuid"])
    assert sorted(await _members(cloud, group)) == sorted(r["uuid"] for r in rows)


async def test_deleting_a_member_removes_it_from_the_group(
    two_hosts: AllInOne, ctxt: RequestContext
):
    cloud = two_hosts
    group = await _group(cloud, "anti-affinity")
    first, second = await _boot(cloud, ctxt, group, count=2)
    await cloud.api.delete_server(ctxt, first["uuid"])
    await cloud.wait_tasks([first["uuid"]], timeout=60)
    assert await _members(cloud, group) == [second["uuid"]]
    # Its host is free for the group again.
    (third,) = await _boot(cloud, ctxt, group)
    assert third["vm_state"] == "active" and third["host"] == first["host"]


async def test_affinity_group_members_share_one_host(three_hosts: AllInOne, ctxt: RequestContext):
    cloud = three_hosts
    group = await _group(cloud, "affinity")
    rows = await _boot(cloud, ctxt, group, count=4)
    assert Counter(r["vm_state"] for r in rows) == {"active": 4}
    assert len({r["host"] for r in rows}) == 1


async def test_max_server_per_host_rule_allows_that_many_members_per_host(
    two_hosts: AllInOne, ctxt: RequestContext
):
    cloud = two_hosts
    group = await _group(cloud, "anti-affinity", {"max_server_per_host": 2})
    rows = await _boot(cloud, ctxt, group, count=5)
    active = [r for r in rows if r["vm_state"] == "active"]
    assert len(active) == 4
    assert Counter(r["host"] for r in active) == {"fake-0": 2, "fake-1": 2}


async def test_soft_anti_affinity_spreads_and_soft_affinity_packs(
    three_hosts: AllInOne, ctxt: RequestContext
):
    cloud = three_hosts
    spread = await _group(cloud, "soft-anti-affinity")
    rows = []
    for i in range(3):
        rows += await _boot(cloud, ctxt, spread, name=f"spread-{i}")
    assert sorted(r["host"] for r in rows) == ["fake-0", "fake-1", "fake-2"]
    # More members than hosts: soft, so they still build.
    (extra,) = await _boot(cloud, ctxt, spread, name="spread-extra")
    assert extra["vm_state"] == "active"

    packed = await _group(cloud, "soft-affinity")
    rows = []
    for i in range(3):
        rows += await _boot(cloud, ctxt, packed, name=f"packed-{i}")
    assert len({r["host"] for r in rows}) == 1


async def test_a_group_of_another_project_is_refused_at_create(
    two_hosts: AllInOne, ctxt: RequestContext
):
    group = await _group(two_hosts, "anti-affinity")
    other = RequestContext(user_id="u2", project_id="p2")
    with pytest.raises(exception.InvalidSchedulerHint, match="could not be found"):
        await two_hosts.api.create_servers(
            other,
            name="x",
            flavor="small",
            image=IMAGE,
            scheduler_hints={"group": group},
            group=group,
        )
    assert await _members(two_hosts, group) == []


async def test_migrating_an_anti_affinity_member_never_joins_another_member(
    three_hosts: AllInOne, ctxt: RequestContext
):
    cloud = three_hosts
    api = MovesAPI(cloud.db, ConductorAPI(cloud.api_transport), conf=cloud.conf)
    group = await _group(cloud, "anti-affinity")
    first, second = await _boot(cloud, ctxt, group, count=2)
    free = ({"fake-0", "fake-1", "fake-2"} - {first["host"], second["host"]}).pop()
    admin = RequestContext(user_id="admin", project_id="p1", roles=["admin"])
    # Named host where the other member runs: refused, the instance stays.
    await api.migrate_server(admin, first["uuid"], host=second["host"])
    await cloud.wait_tasks([first["uuid"]], timeout=60)
    (row,) = await cloud.instances([first["uuid"]])
    assert (row["vm_state"], row["host"]) == ("active", first["host"])
    assert "No valid host" in await _last_fault(cloud, first["uuid"])
    # Unnamed: the one host without a member.
    await api.migrate_server(admin, first["uuid"])
    await cloud.wait_tasks([first["uuid"]], timeout=60)
    (row,) = await cloud.instances([first["uuid"]])
    assert (row["vm_state"], row["host"]) == ("resized", free)
    # While it waits for its confirm it still holds its source: no member goes there.
    (third,) = await _boot(cloud, ctxt, group, name="third")
    assert third["vm_state"] == "error"
    async with cloud.db.reader() as conn:
        mig = (await migrations_api.list_by_instance(conn, first["uuid"]))[-1]
    assert mig["dest_compute"] == free


async def test_an_affinity_member_cannot_be_migrated_away_from_the_others(
    three_hosts: AllInOne, ctxt: RequestContext
):
    cloud = three_hosts
    api = MovesAPI(cloud.db, ConductorAPI(cloud.api_transport), conf=cloud.conf)
    group = await _group(cloud, "affinity")
    first, _second = await _boot(cloud, ctxt, group, count=2)
    admin = RequestContext(user_id="admin", project_id="p1", roles=["admin"])
    await api.migrate_server(admin, first["uuid"])
    await cloud.wait_tasks([first["uuid"]], timeout=60)
    (row,) = await cloud.instances([first["uuid"]])
    assert (row["vm_state"], row["host"]) == ("active", first["host"])
    assert "No valid host" in await _last_fault(cloud, first["uuid"])


async def test_evacuating_an_anti_affinity_member_avoids_the_other_members(
    three_hosts: AllInOne, ctxt: RequestContext
):
    cloud = three_hosts
    api = MovesAPI(cloud.db, ConductorAPI(cloud.api_transport), conf=cloud.conf)
    async with cloud.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "big", "name": "big", "vcpus": 8, "memory_mb": 8192, "root_gb": 1}
        )
    group = await _group(cloud, "anti-affinity")
    first, second = await _boot(cloud, ctxt, group, count=2)
    # A big non-member on the third host: by free room alone the evacuee
    # would rather join the other member.
    (bulky,) = await cloud.api.create_servers(
        ctxt,
        name="bulky",
        flavor="big",
        image=IMAGE,
        scheduler_hints={"different_host": [first["uuid"], second["uuid"]]},
    )
    await cloud.wait_tasks([bulky.uuid], timeout=60)
    (bulky_row,) = await cloud.instances([bulky.uuid])
    assert bulky_row["host"] not in {first["host"], second["host"]}
    await cloud.stop_host(second["host"])
    async with cloud.db.writer() as conn:
        svc = await services.get_by_host_and_binary(conn, second["host"], "compute")
        await services.update(conn, svc["id"], {"forced_down": True})
    admin = RequestContext(user_id="admin", project_id="p1", roles=["admin"])
    await api.evacuate_server(admin, second["uuid"])
    await cloud.wait_tasks([second["uuid"]], timeout=60)
    (row,) = await cloud.instances([second["uuid"]])
    assert (row["vm_state"], row["host"]) == ("active", bulky_row["host"])


async def test_live_migrating_an_anti_affinity_member_never_joins_another_member(
    three_hosts: AllInOne, ctxt: RequestContext
):
    cloud = three_hosts
    api = MovesAPI(cloud.db, ConductorAPI(cloud.api_transport), conf=cloud.conf)
    group = await _group(cloud, "anti-affinity")
    first, second = await _boot(cloud, ctxt, group, count=2)
    free = ({"fake-0", "fake-1", "fake-2"} - {first["host"], second["host"]}).pop()
    admin = RequestContext(user_id="admin", project_id="p1", roles=["admin"])
    await api.live_migrate_server(admin, first["uuid"], host=second["host"])
    await cloud.wait_tasks([first["uuid"]], timeout=60)
    (row,) = await cloud.instances([first["uuid"]])
    assert (row["vm_state"], row["host"]) == ("active", first["host"])
    async with cloud.db.reader() as conn:
        assert (await migrations_api.list_by_instance(conn, first["uuid"]))[-1][
            "status"
        ] == "failed"
    await api.live_migrate_server(admin, first["uuid"])
    await cloud.wait_tasks([first["uuid"]], timeout=60)
    (row,) = await cloud.instances([first["uuid"]])
    assert (row["vm_state"], row["host"]) == ("active", free)
