"""Server group claims (the policy checked inside the claim) and the host facts' generation."""

from __future__ import annotations

import asyncio
import uuid

from nubes.db.api import compute_nodes, generations, group_claims, groups, services
from nubes.db.api import migrations as migrations_api
from nubes.db.api.compute_nodes import ClaimOutcome
from nubes.db.engine import Database
from tests.unit.db.factories import make_instance, make_node


async def _group(db: Database, policy: str, members: list[str], **rules: int) -> str:
    async with db.writer() as conn:
        row = await groups.group_create(
            conn, {"policy": policy, "project_id": "p1", "rules": rules or None}, members=members
        )
    return str(row["uuid"])


async def _claim(db: Database, node_id: int, consumer: str, group: str | None) -> ClaimOutcome:
    async def go(conn):  # type: ignore[no-untyped-def]
        return await group_claims.check_and_claim(
            conn, node_id, consumer, group_uuid=group, vcpus=1, memory_mb=256, disk_gb=1
        )

    result, _ = await db.run_in_writer(go)
    return result.outcome


async def test_anti_affinity_claim_refuses_a_host_with_a_member(db: Database) -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    group = await _group(db, "anti-affinity", [a, b, c])
    async with db.writer() as conn:
        n1 = (await make_node(conn, host="g1"))["id"]
        n2 = (await make_node(conn, host="g2"))["id"]
    assert await _claim(db, n1, a, group) is ClaimOutcome.CLAIMED
    assert await _claim(db, n1, b, group) is ClaimOutcome.GROUP_POLICY
    # A retried step of the member already placed gets its claim back.
    assert await _claim(db, n1, a, group) is ClaimOutcome.ALREADY_CLAIMED
    assert await _claim(db, n2, b, None) is ClaimOutcome.CLAIMED  # found by membership
    assert await _claim(db, n2, c, group) is ClaimOutcome.GROUP_POLICY
    async with db.reader() as conn:
        assert (await compute_nodes.get_by_id(conn, n1))["vcpus_used"] == 1
        assert await compute_nodes.allocations_get_by_consumer(conn, c) == []


async def test_max_server_per_host_and_members_moving_count_on_both_hosts(db: Database) -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    group = await _group(db, "anti-affinity", [a, b, c], max_server_per_host=2)
    async with db.writer() as conn:
        n1 = (await make_node(conn, host="m1"))["id"]
        n2 = (await make_node(conn, host="m2"))["id"]
        inst = await make_instance(conn, uuid=a)
    assert await _claim(db, n1, a, group) is ClaimOutcome.CLAIMED
    assert await _claim(db, n1, b, group) is ClaimOutcome.CLAIMED
    assert await _claim(db, n1, c, group) is ClaimOutcome.GROUP_POLICY
    # a moves to m2: its migration holds m1, a holds m2; a is on both.
    async with db.writer() as conn:
        mig = await migrations_api.create(
            conn, {"instance_uuid": inst["uuid"], "source_compute": "m1", "status": "migrating"}
        )
        await compute_nodes.allocations_move(conn, a, mig["uuid"])
        placement = await group_claims.group_placement(conn, group)
    assert placement is not None and placement[1] == {"m1": 2}
    assert await _claim(db, n2, a, group) is ClaimOutcome.CLAIMED
    assert await _claim(db, n1, c, group) is ClaimOutcome.GROUP_POLICY
    assert await _claim(db, n2, c, group) is ClaimOutcome.CLAIMED
    async with db.reader() as conn:
        placement = await group_claims.group_placement(conn, group)
        without_a = await group_claims.group_placement(conn, group, exclude=[a])
    assert placement is not None and placement[1] == {"m1": 2, "m2": 2}
    assert without_a is not None and without_a[1] == {"m1": 1, "m2": 1}


async def test_affinity_claim_follows_the_first_member(db: Database) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    group = await _group(db, "affinity", [a, b])
    async with db.writer() as conn:
        n1 = (await make_node(conn, host="f1"))["id"]
        n2 = (await make_node(conn, host="f2"))["id"]
    assert await _claim(db, n2, a, group) is ClaimOutcome.CLAIMED
    assert await _claim(db, n1, b, group) is ClaimOutcome.GROUP_POLICY
    assert await _claim(db, n2, b, group) is ClaimOutcome.CLAIMED


async def test_soft_policies_and_no_group_claim_anywhere(db: Database) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    group = await _group(db, "soft-anti-affinity", [a, b])
    async with db.writer() as conn:
        n1 = (await make_node(conn, host="s1"))["id"]
    assert await _claim(db, n1, a, group) is ClaimOutcome.CLAIMED
    assert await _claim(db, n1, b, group) is ClaimOutcome.CLAIMED
    assert await _claim(db, n1, str(uuid.uuid4()), None) is ClaimOutcome.CLAIMED


async def test_host_facts_generation_moves_with_each_admin_write(db: Database) -> None:
    async with db.reader() as conn:
        start = await generations.get(conn, generations.HOST_FACTS)

    async def bumps() -> int:
        async with db.reader() as conn:
            return await generations.get(conn, generations.HOST_FACTS) - start

    async with db.writer() as conn:
        svc = await services.create(conn, {"host": "gen-1", "binary": "compute", "topic": "c"})
    assert await bumps() == 1
    async with db.writer() as conn:
        await services.update(conn, svc["id"], {"disabled": True})
        await services.update(conn, svc["id"], {"version": 3})  # not a scheduling fact
    assert await bumps() == 2
    async with db.writer() as conn:
        agg = await groups.aggregate_create(conn, "gen-agg")
        await groups.aggregate_host_add(conn, agg["id"], "gen-1")
        await groups.aggregate_metadata_update(conn, agg["id"], {"availability_zone": "z"})
    assert await bumps() == 5

    # Concurrent first bumps and increments never lose one.
    async def bump() -> None:
        async with db.writer() as conn:
            await generations.bump(conn, "concurrent")

    await asyncio.gather(*(bump() for _ in range(8)))
    async with db.reader() as conn:
        assert await generations.get(conn, "concurrent") == 8
