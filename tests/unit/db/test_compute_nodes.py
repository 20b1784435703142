"""Compute nodes and the compare-and-set resource claims on them."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from nubes import exception
from nubes.db import group_commit
from nubes.db.api import compute_nodes
from nubes.db.api.compute_nodes import ClaimOutcome
from nubes.db.engine import Database
from tests.unit.db.factories import make_node


def _consumer() -> str:
    return str(uuid.uuid4())


async def test_create_get_update_list(db: Database) -> None:
    async with db.writer() as conn:
        node = await make_node(
            conn, host="h1", hypervisor_hostname="n1", metrics={"cpu.percent": 3}
        )
        assert node["generation"] == 0 and node["vcpus_used"] == 0
        updated = await compute_nodes.update(
            conn, node["id"], {"metrics": {"cpu.percent": 55.5}, "running_vms": 2}
        )
    assert updated["metrics"] == {"cpu.percent": 55.5}
    assert updated["generation"] == 1
    async with db.reader(allow_stale=True) as conn:
        assert (await compute_nodes.get_by_uuid(conn, node["uuid"]))["running_vms"] == 2
        assert (await compute_nodes.get_by_host_and_nodename(conn, "h1", "n1"))["id"] == node["id"]
        assert [n["id"] for n in await compute_nodes.get_all(conn, host="h1")] == [node["id"]]
        with pytest.raises(exception.ComputeHostNotFound):
            await compute_nodes.get_by_host_and_nodename(conn, "h1", "other")


async def test_update_with_stale_generation_conflicts(db: Database) -> None:
    async with db.writer() as conn:
        node = await make_node(conn)
        await compute_nodes.update(conn, node["id"], {"vcpus": 16}, expected_generation=0)
        with pytest.raises(exception.ComputeNodeGenerationConflict) as err:
            await compute_nodes.update(conn, node["id"], {"vcpus": 32}, expected_generation=0)
    assert err.value.kwargs["actual"] == 1


async def test_claim_and_release(db: Database) -> None:
    consumer = _consumer()
    async with db.writer() as conn:
        node = await make_node(conn, vcpus=4, memory_mb=4096, local_gb=40)
        result = await compute_nodes.claim(
            conn, node["id"], consumer, vcpus=2, memory_mb=1024, disk_gb=10
        )
        assert result.ok and result.outcome is ClaimOutcome.CLAIMED
        assert result.generation == 1
        after = await compute_nodes.get_by_id(conn, node["id"])
        assert (after["vcpus_used"], after["memory_mb_used"], after["local_gb_used"]) == (
            2,
            1024,
            10,
        )
        assert len(await compute_nodes.allocations_get_by_consumer(conn, consumer)) == 1
        assert await compute_nodes.usage_from_allocations(conn, node["id"]) == {
            "vcpus": 2,
            "memory_mb": 1024,
            "disk_gb": 10,
        }
        assert await compute_nodes.release(conn, consumer) == 1
        after = await compute_nodes.get_by_id(conn, node["id"])
        assert (after["vcpus_used"], after["memory_mb_used"], after["local_gb_used"]) == (0, 0, 0)
        assert after["generation"] == 2
        assert await compute_nodes.allocations_get_by_consumer(conn, consumer) == []


async def test_claim_is_idempotent_per_consumer_and_node(db: Database) -> None:
    consumer = _consumer()
    async with db.writer() as conn:
        node = await make_node(conn, vcpus=4)
        first = await compute_nodes.claim(conn, node["id"], consumer, vcpus=1)
        again = await compute_nodes.claim(conn, node["id"], consumer, vcpus=1)
        assert first.outcome is ClaimOutcome.CLAIMED
        assert again.outcome is ClaimOutcome.ALREADY_CLAIMED and again.ok
        assert (await compute_nodes.get_by_id(conn, node["id"]))["vcpus_used"] == 1


async def test_claim_respects_allocation_ratio(db: Database) -> None:
    async with db.writer() as conn:
        node = await make_node(conn, vcpus=2, cpu_allocation_ratio=2.0)
        outcomes = [
            (await compute_nodes.claim(conn, node["id"], _consumer(), vcpus=1)).outcome
            for _ in range(5)
        ]
    assert outcomes == [ClaimOutcome.CLAIMED] * 4 + [ClaimOutcome.NO_CAPACITY]


async def test_the_operators_reserved_amounts_are_never_claimed(db: Database) -> None:
    # (total - reserved) x ratio, as Nova's placement: 8 GB with 2 GB reserved
    # at ratio 1.5 holds 9 GB; likewise every claim path.
    reserved = compute_nodes.Reserved(vcpus=1, memory_mb=2048, disk_gb=10)
    async with db.writer() as conn:
        node = await make_node(conn, memory_mb=8192, ram_allocation_ratio=1.5, vcpus=4, local_gb=20)
        first = await compute_nodes.claim(
            conn, node["id"], _consumer(), memory_mb=9216, reserved=reserved
        )
        over = await compute_nodes.claim(
            conn, node["id"], _consumer(), memory_mb=1, reserved=reserved
        )
        cpu_over, _ = await compute_nodes.claim_for_consumer(
            conn, node["id"], _consumer(), vcpus=4, reserved=reserved
        )
        cpu_fits, _ = await compute_nodes.claim_for_consumer(
            conn, node["id"], _consumer(), vcpus=3, reserved=reserved
        )
        disk_over = await compute_nodes.claim(
            conn, node["id"], _consumer(), disk_gb=11, reserved=reserved
        )
    assert first.outcome is ClaimOutcome.CLAIMED
    assert over.outcome is ClaimOutcome.NO_CAPACITY
    assert cpu_over.outcome is ClaimOutcome.NO_CAPACITY
    assert cpu_fits.outcome is ClaimOutcome.CLAIMED
    assert disk_over.outcome is ClaimOutcome.NO_CAPACITY


def test_reserved_disk_is_taken_as_whole_gb_rounded_up() -> None:
    class Conf:
        reserved_host_cpus = 2
        reserved_host_memory_mb = 512
        reserved_host_disk_mb = 1025

    assert compute_nodes.Reserved.from_conf(Conf()) == compute_nodes.Reserved(2, 512, 2)


async def test_claim_outcomes_for_generation_and_missing_node(db: Database) -> None:
    async with db.writer() as conn:
        node = await make_node(conn)
        stale = await compute_nodes.claim(
            conn, node["id"], _consumer(), vcpus=1, expected_generation=7
        )
        assert stale.outcome is ClaimOutcome.GENERATION_CONFLICT and stale.generation == 0
        fresh = await compute_nodes.claim(
            conn, node["id"], _consumer(), vcpus=1, expected_generation=0
        )
        assert fresh.outcome is ClaimOutcome.CLAIMED and fresh.generation == 1
        missing = await compute_nodes.claim(conn, 987654, _consumer(), vcpus=1)
        assert missing.outcome is ClaimOutcome.NOT_FOUND and not missing.ok
        await compute_nodes.destroy(conn, node["id"])
        gone = await compute_nodes.claim(conn, node["id"], _consumer(), vcpus=1)
        assert gone.outcome is ClaimOutcome.NOT_FOUND
        with pytest.raises(exception.Invalid):
            await compute_nodes.claim(conn, node["id"], _consumer(), vcpus=-1)


async def test_concurrent_claims_never_exceed_capacity(db: Database) -> None:
    async with db.writer() as conn:
        node = await make_node(
            conn, vcpus=4, memory_mb=10_000, local_gb=1000, cpu_allocation_ratio=2.0
        )
    claimers = 40

    async def claim_one() -> bool:
        async with db.writer() as conn:
            result = await compute_nodes.claim(
                conn, node["id"], _consumer(), vcpus=1, memory_mb=100, disk_gb=1
            )
            return result.ok

    results = await asyncio.gather(*(claim_one() for _ in range(claimers)))
    assert sum(results) == 8  # 4 vCPUs x 2.0
    async with db.reader() as conn:
        after = await compute_nodes.get_by_id(conn, node["id"])
        allocations = await compute_nodes.allocations_get_by_node(conn, node["id"])
    assert after["vcpus_used"] == 8
    assert after["memory_mb_used"] == 800
    assert len(allocations) == 8
    assert after["generation"] == 8


async def test_concurrent_generation_cas_one_winner_per_generation(db: Database) -> None:
    async with db.writer() as conn:
        node = await make_node(conn, vcpus=100, cpu_allocation_ratio=1.0)

    async def claim_at(generation: int) -> ClaimOutcome:
        async with db.writer() as conn:
            result = await compute_nodes.claim(
                conn, node["id"], _consumer(), vcpus=1, expected_generation=generation
            )
            return result.outcome

    outcomes = await asyncio.gather(*(claim_at(0) for _ in range(10)))
    assert outcomes.count(ClaimOutcome.CLAIMED) == 1
    assert outcomes.count(ClaimOutcome.GENERATION_CONFLICT) == 9


async def test_move_and_partial_release(db: Database) -> None:
    instance, migration = _consumer(), _consumer()
    async with db.writer() as conn:
        src = await make_node(conn)
        dst = await make_node(conn)
        await compute_nodes.claim(conn, src["id"], instance, vcpus=2)
        assert await compute_nodes.allocations_move(conn, instance, migration) == 1
        await compute_nodes.claim(conn, dst["id"], instance, vcpus=2)
        assert await compute_nodes.release(conn, migration, node_id=src["id"]) == 1
        assert (await compute_nodes.get_by_id(conn, src["id"]))["vcpus_used"] == 0
        assert (await compute_nodes.get_by_id(conn, dst["id"]))["vcpus_used"] == 2
        usage = await compute_nodes.get_usage(conn, dst["id"])
        assert usage is not None and usage["vcpus_used"] == 2


async def test_claim_for_consumer_is_one_claim_per_consumer(db: Database) -> None:
    async with db.writer() as conn:
        a = await make_node(conn, vcpus=2, memory_mb=1024, local_gb=10)
        b = await make_node(conn, vcpus=2, memory_mb=1024, local_gb=10)
    consumer = _consumer()
    async with db.writer() as conn:
        first, on = await compute_nodes.claim_for_consumer(
            conn, a["id"], consumer, vcpus=1, memory_mb=512, disk_gb=5
        )
        assert (first.outcome, on) == (ClaimOutcome.CLAIMED, a["id"])
        assert first.generation == a["generation"] + 1
        # A retry aimed at another node reports the claim it already has.
        again, on = await compute_nodes.claim_for_consumer(conn, b["id"], consumer, vcpus=1)
        assert (again.outcome, on) == (ClaimOutcome.ALREADY_CLAIMED, a["id"])
        full, _ = await compute_nodes.claim_for_consumer(conn, b["id"], _consumer(), vcpus=3)
        assert full.outcome is ClaimOutcome.NO_CAPACITY
        # Zero amounts are not checked: an over-committed node still takes them.
        zero, _ = await compute_nodes.claim_for_consumer(conn, a["id"], _consumer(), vcpus=0)
        assert zero.outcome is ClaimOutcome.CLAIMED
        node = await compute_nodes.get_by_id(conn, a["id"])
    assert (node["vcpus_used"], node["memory_mb_used"], node["local_gb_used"]) == (1, 512, 5)
    assert node["updated_at"] is not None
    async with db.writer() as conn:
        held = await compute_nodes.allocations_get_by_consumer(conn, consumer)
    assert [(h["compute_node_id"], h["vcpus"], h["disk_gb"]) for h in held] == [(a["id"], 1, 5)]


async def test_release_as_descriptions_in_a_grouped_commit(db: Database) -> None:
    """``release_writes``: what :func:`release` does, as one unit of a grouped
    commit (SQLite, PostgreSQL) or a transaction of its own (MariaDB): every
    node the consumer held on gets its usage back at once, never below zero,
    and a repeat changes nothing."""
    migration, other = _consumer(), _consumer()
    async with db.writer() as conn:
        a = await make_node(conn, vcpus=8, memory_mb=8192, local_gb=80)
        b = await make_node(conn, vcpus=8, memory_mb=8192, local_gb=80)
        await compute_nodes.claim(conn, a["id"], migration, vcpus=2, memory_mb=512, disk_gb=5)
        await compute_nodes.claim(conn, a["id"], other, vcpus=1, memory_mb=256, disk_gb=1)
        moved = _consumer()
        await compute_nodes.claim(conn, b["id"], moved, vcpus=3, memory_mb=1024, disk_gb=10)
        assert await compute_nodes.allocations_move(conn, moved, migration) == 1
        # An operator reset the node's counter below what the migration holds.
        await compute_nodes.update(conn, b["id"], {"vcpus_used": 1})
        before = {
            n: (await compute_nodes.get_by_id(conn, n))["generation"] for n in (a["id"], b["id"])
        }
    await group_commit.commit(db, migration, list(compute_nodes.release_writes(migration)))
    async with db.reader() as conn:
        after_a = await compute_nodes.get_by_id(conn, a["id"])
        after_b = await compute_nodes.get_by_id(conn, b["id"])
        assert (after_a["vcpus_used"], after_a["memory_mb_used"], after_a["local_gb_used"]) == (
            1,
            256,
            1,
        )
        assert (after_b["vcpus_used"], after_b["memory_mb_used"], after_b["local_gb_used"]) == (
            0,
            0,
            0,
        )
        assert after_a["generation"] == before[a["id"]] + 1
        assert after_b["generation"] == before[b["id"]] + 1
        assert await compute_nodes.allocations_get_by_consumer(conn, migration) == []
        assert len(await compute_nodes.allocations_get_by_consumer(conn, other)) == 1
    await group_commit.commit(db, migration, list(compute_nodes.release_writes(migration)))
    async with db.reader() as conn:
        again = await compute_nodes.get_by_id(conn, a["id"])
        assert (again["vcpus_used"], again["generation"]) == (1, after_a["generation"])


async def test_hand_over_once(db: Database) -> None:
    """``hand_over_write``: the instance's allocations become the migration's,
    grouped or in a transaction (MariaDB runs its condition on the table it
    updates); a repeat, once the instance holds a new claim, moves nothing."""
    instance, migration = _consumer(), _consumer()
    async with db.writer() as conn:
        src = await make_node(conn)
        dst = await make_node(conn)
        await compute_nodes.claim(conn, src["id"], instance, vcpus=2)
    await group_commit.commit(db, instance, [compute_nodes.hand_over_write(instance, migration)])
    async with db.writer() as conn:
        held = await compute_nodes.allocations_get_by_consumer(conn, migration)
        assert [a["compute_node_id"] for a in held] == [src["id"]]
        assert await compute_nodes.allocations_get_by_consumer(conn, instance) == []
        await compute_nodes.claim(conn, dst["id"], instance, vcpus=2)
    await group_commit.commit(db, instance, [compute_nodes.hand_over_write(instance, migration)])
    async with db.writer() as conn:
        # The same write in a block of the caller's (the ordinary path everywhere).
        await compute_nodes.hand_over_write(instance, migration).run(conn)
    async with db.reader() as conn:
        mine = await compute_nodes.allocations_get_by_consumer(conn, instance)
        assert [a["compute_node_id"] for a in mine] == [dst["id"]]
        held = await compute_nodes.allocations_get_by_consumer(conn, migration)
        assert [a["compute_node_id"] for a in held] == [src["id"]]
