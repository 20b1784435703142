"""Durable conductor tasks: lease claims, takeover, fencing, one active task per instance."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from nubes import exception
from nubes.db import group_commit
from nubes.db.api import tasks
from nubes.db.api.tasks import TaskStatus
from nubes.db.engine import Database
from nubes.db.types import utcnow
from tests.unit.db.factories import make_instance

LEASE = 30.0


async def _task(db: Database, **kw: object) -> dict[str, object]:
    async with db.writer() as conn:
        inst = await make_instance(conn)
        return await tasks.create(
            conn, kind="build", instance_uuid=inst["uuid"], payload={"n": 1}, **kw
        )


async def test_two_claimers_one_wins(db: Database) -> None:
    task = await _task(db)

    async def claim(owner: str) -> dict[str, object] | None:
        async with db.writer() as conn:
            return await tasks.claim(conn, task["id"], owner, lease_seconds=LEASE)

    results = await asyncio.gather(*(claim(f"conductor-{n}") for n in range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    won = winners[0]
    assert won["status"] == TaskStatus.RUNNING
    assert won["attempt"] == 1
    async with db.reader() as conn:
        assert (await tasks.get(conn, task["id"]))["owner"] == won["owner"]


async def test_valid_lease_blocks_claim_and_expired_lease_is_taken_over(db: Database) -> None:
    task = await _task(db)
    now = utcnow()
    async with db.writer() as conn:
        a = await tasks.claim(conn, task["id"], "a", lease_seconds=LEASE, now=now)
        assert a is not None
        later = now + dt.timedelta(seconds=LEASE / 2)
        assert await tasks.claim(conn, task["id"], "b", lease_seconds=LEASE, now=later) is None
        assert await tasks.list_expired(conn, now=later) == []
        expired_at = now + dt.timedelta(seconds=LEASE + 1)
        assert [t["id"] for t in await tasks.list_expired(conn, now=expired_at)] == [task["id"]]
        b = await tasks.claim(conn, task["id"], "b", lease_seconds=LEASE, now=expired_at)
    assert b is not None and b["owner"] == "b" and b["attempt"] == 2
    assert b["lease_expires_at"] == expired_at + dt.timedelta(seconds=LEASE)


async def test_lost_lease_fences_the_old_owner(db: Database) -> None:
    task = await _task(db)
    now = utcnow()
    async with db.writer() as conn:
        await tasks.claim(conn, task["id"], "a", lease_seconds=1, now=now)
        await tasks.claim(
            conn, task["id"], "b", lease_seconds=LEASE, now=now + dt.timedelta(seconds=5)
        )
        for stale_write in (
            tasks.renew_lease(conn, task["id"], "a", lease_seconds=LEASE),
            tasks.update(conn, task["id"], "a", {"step": "spawn"}),
            tasks.finish(conn, task["id"], "a"),
        ):
            with pytest.raises(exception.TaskLeaseLost):
                await stale_write
        # The same owner name with an old attempt number is fenced too.
        with pytest.raises(exception.TaskLeaseLost):
            await tasks.update(conn, task["id"], "b", {"step": "x"}, attempt=1)
        row = await tasks.update(conn, task["id"], "b", {"step": "spawn"}, attempt=2)
    assert row["step"] == "spawn"


async def test_progress_renew_and_finish(db: Database) -> None:
    task = await _task(db)
    now = utcnow()
    async with db.writer() as conn:
        await tasks.claim(conn, task["id"], "a", lease_seconds=LEASE, now=now)
        row = await tasks.update(
            conn,
            task["id"],
            "a",
            {"step": "claimed", "payload": {"host": "h1"}},
            lease_seconds=LEASE,
            now=now + dt.timedelta(seconds=10),
        )
        assert row["payload"] == {"host": "h1"}
        assert row["lease_expires_at"] == now + dt.timedelta(seconds=10 + LEASE)
        renewed = await tasks.renew_lease(
            conn, task["id"], "a", lease_seconds=LEASE, now=now + dt.timedelta(seconds=20)
        )
        assert renewed["lease_expires_at"] == now + dt.timedelta(seconds=20 + LEASE)
        with pytest.raises(exception.ValidationError):
            await tasks.update(conn, task["id"], "a", {"owner": "b"})
        done = await tasks.finish(conn, task["id"], "a", status=TaskStatus.FAILED, last_error="x")
        assert done["status"] == TaskStatus.FAILED and done["active_instance_uuid"] is None
        assert done["owner"] is None and done["last_error"] == "x"
        # A finished task cannot be claimed again.
        later = now + dt.timedelta(days=1)
        assert await tasks.claim(conn, task["id"], "b", lease_seconds=LEASE, now=later) is None
        with pytest.raises(exception.Invalid):
            await tasks.finish(conn, task["id"], "a", status=TaskStatus.RUNNING)


async def test_claim_next_takes_each_claimable_task_once(db: Database) -> None:
    for _ in range(3):
        await _task(db)
    async with db.writer() as conn:
        await tasks.create(conn, kind="heal")
    async with db.writer() as conn:
        got = [
            await tasks.claim_next(conn, f"c{n}", lease_seconds=LEASE, kinds=["build"])
            for n in range(4)
        ]
    claimed = [g for g in got if g is not None]
    assert len(claimed) == 3 and got[3] is None
    assert len({c["id"] for c in claimed}) == 3
    async with db.writer() as conn:
        heal = await tasks.claim_next(conn, "c9", lease_seconds=LEASE)
        assert heal is not None and heal["kind"] == "heal"


async def test_concurrent_claim_next_gives_each_task_once(db: Database) -> None:
    for _ in range(5):
        await _task(db)

    async def worker(owner: str) -> list[int]:
        mine = []
        while True:
            async with db.writer() as conn:
                row = await tasks.claim_next(conn, owner, lease_seconds=LEASE)
            if row is None:
                return mine
            mine.append(row["id"])

    results = await asyncio.gather(*(worker(f"w{n}") for n in range(4)))
    every = [t for r in results for t in r]
    assert len(every) == 5 and len(set(every)) == 5


async def test_deadline_cancel_and_delete(db: Database) -> None:
    now = utcnow()
    task = await _task(db, deadline=now + dt.timedelta(minutes=5))
    async with db.writer() as conn:
        assert await tasks.list_past_deadline(conn, now=now) == []
        late = await tasks.list_past_deadline(conn, now=now + dt.timedelta(minutes=6))
        assert [t["id"] for t in late] == [task["id"]]
        with pytest.raises(exception.TaskNotFound):
            await tasks.delete(conn, task["id"])  # still active
        cancelled = await tasks.cancel(conn, task["id"], reason="operator")
        assert cancelled["status"] == TaskStatus.CANCELLED
        await tasks.delete(conn, task["id"])
        with pytest.raises(exception.TaskNotFound):
            await tasks.get(conn, task["id"])


async def test_a_report_does_not_undo_a_step_committed_after_it_was_read(db: Database) -> None:
    """Regression: the report's write was conditioned on step, claim and owner only.
    A reschedule commits the same step with the same claim (the next host's try);
    a late report of the previous try, read before that commit and written after
    it, put the old payload back (on PostgreSQL's READ COMMITTED the UPDATE matched
    the newer row). Conditioned on ``updated_at``, it now misses and is re-read."""
    task = await _task(db, step="spawn")
    async with db.writer() as conn:
        claimed = await tasks.claim(conn, task["id"], "a", lease_seconds=LEASE)
        assert claimed is not None
    read = await group_commit.fetch(db, "t", tasks.get_read(task["id"]))
    assert read == claimed
    async with db.writer() as conn:
        # The owner moves on to the next host's try, at the same step.
        await tasks.update(
            conn, task["id"], "a", {"payload": {"try": 2}}, attempt=claimed["attempt"]
        )
    stale, _ = tasks.outcome_write(read, {**read["payload"], "outcome": {"attempt": 1}})
    with pytest.raises(exception.TaskChanged):
        await group_commit.commit(db, "t", [stale])
    fresh = await group_commit.fetch(db, "t", tasks.get_read(task["id"]))
    assert fresh is not None and fresh["payload"] == {"try": 2}
    write, written = tasks.outcome_write(
        fresh,
        {**fresh["payload"], "outcome": {"attempt": 2}},
        new_owner="b",
        lease_seconds=LEASE,
    )
    await group_commit.commit(db, "t", [write])
    # The row the write says it leaves is the row stored: the engine adopts it as read.
    async with db.reader() as conn:
        assert await tasks.get(conn, task["id"]) == written
    assert (written["owner"], written["attempt"]) == ("b", fresh["attempt"] + 1)
    assert await group_commit.fetch(db, "t", tasks.get_read(999999)) is None
    assert written is not None and written["payload"]["outcome"] == {"attempt": 2}


async def test_the_first_task_of_a_kind_of_an_instance(db: Database) -> None:
    """``first_of_kind_read``: the oldest live task of that kind, grouped or in a block."""
    async with db.writer() as conn:
        inst = await make_instance(conn)
        other = await make_instance(conn)
        built = await tasks.create(
            conn, kind="build", instance_uuid=inst["uuid"], payload={"image": {"id": "i"}}
        )
        claimed = await tasks.claim(conn, built["id"], "a", lease_seconds=LEASE)
        assert claimed is not None
        await tasks.finish(conn, built["id"], "a", attempt=claimed["attempt"])
        await tasks.create(conn, kind="live_migrate", instance_uuid=inst["uuid"], payload={})
        await tasks.create(conn, kind="build", instance_uuid=other["uuid"], payload={"n": 2})
    read = tasks.first_of_kind_read(inst["uuid"], "build")
    found = await group_commit.fetch(db, inst["uuid"], read)
    assert found is not None and found["id"] == built["id"]
    assert found["payload"] == {"image": {"id": "i"}}
    async with db.reader() as conn:
        assert await read.run(conn) == found
        assert await tasks.first_of_kind_read(inst["uuid"], "rebuild").run(conn) is None
    async with db.writer() as conn:
        await tasks.delete(conn, built["id"])
    assert await group_commit.fetch(db, inst["uuid"], read) is None
