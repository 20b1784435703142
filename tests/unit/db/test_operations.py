"""What nubes-manage status reads: task figures, takeovers, queue samples (every backend)."""

from __future__ import annotations

import datetime as dt

from nubes.db.api import operations, tasks
from nubes.db.engine import Database
from nubes.db.types import utcnow


async def test_a_claim_after_an_expired_lease_is_a_takeover_and_a_fresh_claim_is_not(
    db: Database,
) -> None:
    async with db.writer() as conn:
        fresh = await tasks.create(conn, kind="build")
        other = await tasks.create(conn, kind="delete")
    past = utcnow() - dt.timedelta(minutes=5)
    async with db.writer() as conn:
        first = await tasks.claim_many(conn, [fresh["id"]], "a", lease_seconds=1, now=past)
        # Released work is not taken over: another conductor claims it as new.
        second = await tasks.claim(conn, other["id"], "a", lease_seconds=60)
        assert second is not None
        assert await tasks.release(conn, other["id"], "a", attempt=second["attempt"])
        again = await tasks.claim(conn, other["id"], "b", lease_seconds=60)
    assert first[0]["taken_over_at"] is None and again is not None
    assert again["taken_over_at"] is None
    async with db.writer() as conn:
        # a's lease ran out 5 minutes ago: b takes the task over.
        taken = await tasks.claim_many(conn, [fresh["id"]], "b", lease_seconds=60)
    assert taken[0]["owner"] == "b" and taken[0]["taken_over_at"] is not None
    async with db.reader() as conn:
        assert await operations.takeovers_since(conn, utcnow() - dt.timedelta(hours=1)) == 1
        assert await operations.takeovers_since(conn, utcnow() + dt.timedelta(minutes=1)) == 0


async def test_task_figures(db: Database) -> None:
    now = utcnow()
    async with db.writer() as conn:
        a = await tasks.create(conn, kind="build")
        await tasks.create(conn, kind="build", deadline=now - dt.timedelta(seconds=1))
        await tasks.create(conn, kind="delete")
        await tasks.claim(conn, a["id"], "c", lease_seconds=60)
    async with db.reader() as conn:
        counts = await operations.task_counts(conn)
        waiting = await operations.oldest_waiting(conn)
        late = await operations.past_deadline(conn)
        running = await operations.running_count(conn)
    assert counts == {"build": {"running": 1, "pending": 1}, "delete": {"pending": 1}}
    # The running one is held; the oldest nobody holds is the second build.
    assert waiting is not None and waiting["id"] == a["id"] + 1
    assert late == 1 and running == 1


async def test_queue_samples_are_kept_an_hour_in_order(db: Database) -> None:
    now = utcnow()
    old = now - operations.SAMPLE_RETENTION - dt.timedelta(minutes=1)
    async with db.writer() as conn:
        await operations.add_queue_samples(conn, {"conductor": (5, 0)}, now=old)
        await operations.add_queue_samples(
            conn, {"conductor": (7, 0), "scheduler": (0, 1)}, now=now - dt.timedelta(minutes=1)
        )
        await operations.add_queue_samples(conn, {"conductor": (9, 2)}, now=now)
    async with db.reader() as conn:
        history = await operations.queue_history(conn, ["conductor", "scheduler", "compute"])
    assert [s["messages"] for s in history["conductor"]] == [7, 9]
    assert history["scheduler"][0]["consumers"] == 1 and history["compute"] == []
