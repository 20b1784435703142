"""The group committer's writers: every caller is answered, whatever a batch does.

A caller of :mod:`nubes.db.group_commit` waits on a future that only a
writer task settles. A writer that ends, or a batch that fails in a way the
committer did not plan for, must therefore never leave a caller waiting:
the scheduler's claims go through here, and one claim left waiting keeps a
build at "schedule" until its deadline (the fault suite's "broker cluster
node lost mid-load" scenario, issue 17).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nubes import context, exception
from nubes.db import group_commit, sqlite_driver
from nubes.db.api import instances
from nubes.db.engine import Database
from tests.unit.db.factories import make_instance


def _committer(db: Database) -> group_commit.GroupCommitter:
    committer = db.group_commit
    assert committer is not None, "SQLite with aiosqlite groups writes"
    return committer


async def _instance(db: Database) -> str:
    async with db.writer() as conn:
        return str((await make_instance(conn))["uuid"])


async def _save(db: Database, uuid: str, progress: int) -> None:
    await instances.save(db, uuid, {"progress": progress})


async def _progress(db: Database, uuid: str) -> Any:
    async with db.reader() as conn:
        return (await instances.get_by_uuid(conn, uuid))["progress"]


def _writers() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("nubes-group-commit-") and not t.done()
    ]


async def test_a_batch_whose_outcomes_go_astray_answers_its_callers_and_the_writer_goes_on(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    uuid = await _instance(db)
    committer = _committer(db)
    real = sqlite_driver.run_batch
    broken = True

    async def run_batch(*args: Any) -> list[Any]:
        outcomes = await real(*args)
        # Committed, but the outcomes do not match the batch (a bug in a
        # runner): before, the writer task died of it and its callers waited
        # forever.
        return outcomes[:-1] if broken else outcomes

    monkeypatch.setattr(sqlite_driver, "run_batch", run_batch)
    with pytest.raises(exception.DBConnectionError):
        await _save(db, uuid, 7)
    # Told "unknown", not "run it again": the batch did commit.
    assert await _progress(db, uuid) == 7
    broken = False
    await _save(db, uuid, 8)
    assert await _progress(db, uuid) == 8
    assert committer.batches >= 1


async def test_a_writer_that_ends_is_replaced_while_others_still_run(db: Database) -> None:
    uuid = await _instance(db)
    committer = _committer(db)
    committer.writers = 2
    await _save(db, uuid, 1)
    first = _writers()
    assert len(first) == 2
    # One writer busy in a batch (so that cancelling it cannot end the other
    # through their shared wake-up) is cancelled under it.
    started: asyncio.Future[asyncio.Task[Any]] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()
    real = sqlite_driver.run_batch

    async def slow(*args: Any) -> list[Any]:
        task = asyncio.current_task()
        assert task is not None
        started.set_result(task)  # the writer running this batch
        await release.wait()
        return await real(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite_driver, "run_batch", slow)
        pending = asyncio.create_task(_save(db, uuid, 2))
        victim = await started
        victim.cancel()
        # The cancelled batch's caller is told to run its write alone, and does.
        await pending
    release.set()
    assert await _progress(db, uuid) == 2
    await _save(db, uuid, 3)
    now = _writers()
    assert len(now) == 2 and victim not in now
    assert await _progress(db, uuid) == 3


async def test_writers_do_not_run_in_the_context_of_the_caller_that_woke_them(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    uuid = await _instance(db)
    seen: list[str | None] = []
    real = sqlite_driver.run_batch

    async def run_batch(*args: Any) -> list[Any]:
        seen.append(context.current_request_id.get(None))
        return await real(*args)

    monkeypatch.setattr(sqlite_driver, "run_batch", run_batch)
    token = context.current_request_id.set("req-first-caller")
    try:
        await _save(db, uuid, 5)
    finally:
        context.current_request_id.reset(token)
    assert seen == [None]
    assert await _progress(db, uuid) == 5


async def test_committed_batches_and_their_writes_are_counted(db: Database) -> None:
    """What /metrics (and bench/scale.py's saves) show of the batches: writes per commit."""
    from prometheus_client import REGISTRY

    def counts() -> tuple[float, float]:
        commits = REGISTRY.get_sample_value("nubes_db_grouped_commits_total") or 0.0
        return commits, REGISTRY.get_sample_value("nubes_db_grouped_writes_total") or 0.0

    uuids = [await _instance(db) for _ in range(3)]
    commits, writes = counts()
    await asyncio.gather(*(_save(db, uuid, 7) for uuid in uuids))
    after_commits, after_writes = counts()
    assert after_writes - writes == 3
    assert 1 <= after_commits - commits <= 3
