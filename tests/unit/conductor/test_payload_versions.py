"""Typed task payloads across releases: release N's untyped rows are adopted by N+1.

Release N stored payloads as plain dicts without a version (``v``); this
release reads them through versioned msgspec structs
(``nubes.conductor.tasks.payloads``) and writes what release N still reads.
"""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path
from typing import Any

import pytest

from nubes import exception
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.payloads import Awaited, BuildPayload, Outcome
from nubes.conductor.tasks.states import TaskKind
from nubes.context import RequestContext
from nubes.db.api import tasks
from nubes.db.api.tasks import TaskStatus
from nubes.db.models import conductor_tasks
from nubes.step_key import StepKey
from tests.unit.conductor.conftest import IMAGE, start_cloud
from tests.unit.conductor.test_engine import _crash, _task, _until, finish_on_a_new_engine

pytestmark = pytest.mark.timeout(90)

#: A build's payload as release N wrote it while waiting for its spawn, with
#: the outcome release N recorded (no ``timeout``, no ``details``, no ``v``).
RELEASE_N_BUILD: dict[str, Any] = {
    "image": {"id": "img-1", "properties": {"hw_arch": "x86_64"}},
    "hints": {"same_host": ["abc"]},
    "request": {"name": "t", "key_name": None, "user_data": None},
    "selections": [
        {"host": "fake-0", "nodename": "fake-0", "vcpus": 1, "memory_mb": 512},
        {"host": "fake-1", "nodename": "fake-1", "vcpus": 1, "memory_mb": 512},
    ],
    "try": 2,
    "failures": [{"host": "fake-0", "error": "boom"}],
    "await": {"step": "spawn", "attempt": 2, "host": "fake-1", "node": "fake-1", "until": 1.0},
    "outcome": {"step": "spawn", "attempt": 2, "host": "fake-1", "ok": True, "error": None},
    "dest_host": "fake-1",
    "dest_node": "fake-1",
    "for_a_later_release": {"kept": True},
}


def test_a_release_n_payload_reads_as_typed_structs() -> None:
    typed = payloads.decode(RELEASE_N_BUILD, BuildPayload)
    assert typed.v == payloads.PAYLOAD_VERSION
    assert typed.awaiting == Awaited(
        step="spawn", attempt=2, host="fake-1", node="fake-1", until=1.0
    )
    assert typed.awaiting.key(7) == StepKey(task_id=7, step="spawn", attempt=2)
    assert typed.reported() == Outcome(
        step="spawn", attempt=2, host="fake-1", ok=True, error=None, timeout=False, details={}
    )
    assert typed.tries == 2 and typed.selection.host == "fake-1"
    assert [f.host for f in typed.failures] == ["fake-0"]
    assert typed.scheduling.hints == {"same_host": ["abc"]}
    # An outcome of another try is not the awaited one's.
    other = {**RELEASE_N_BUILD, "outcome": {**RELEASE_N_BUILD["outcome"], "attempt": 1}}
    assert payloads.reported(other) is None


def test_what_this_release_writes_release_n_still_reads() -> None:
    typed = payloads.decode(RELEASE_N_BUILD, BuildPayload)
    stored = payloads.encode(typed, RELEASE_N_BUILD)
    assert stored["v"] == payloads.PAYLOAD_VERSION
    # Release N's reads, by its own keys: all there, same shapes.
    for key, value in RELEASE_N_BUILD.items():
        if key == "outcome":
            assert {k: stored[key][k] for k in value} == value
        else:
            assert stored[key] == value, key
    # Nothing awaited: the keys are absent, as release N left them.
    cleared = payloads.awaiting_none(stored)
    assert "await" not in cleared and "outcome" not in cleared
    assert payloads.awaiting(cleared) is None


def test_a_payload_that_does_not_fit_is_refused_not_guessed() -> None:
    newer = {**RELEASE_N_BUILD, "v": payloads.PAYLOAD_VERSION + 1}
    with pytest.raises(exception.Invalid):
        payloads.decode(newer, BuildPayload)
    broken = copy.deepcopy(RELEASE_N_BUILD)
    broken["await"]["attempt"] = "two"
    with pytest.raises(exception.Invalid):
        payloads.awaiting(broken)


def _as_release_n(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` as release N would have stored it: no version, no newer keys."""
    old = {k: v for k, v in payload.items() if k != "v"}
    awaited = dict(old["await"])
    old["await"] = awaited
    return old


async def test_a_conductor_adopts_a_build_that_release_n_left_waiting(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    """Release N's conductor died while its build waited for the spawn; this
    release authorises and records the host's report into the old row and
    a fresh engine finishes the build from it."""
    cloud = await start_cloud(tmp_path)
    try:
        cloud.faults.spawn_delay = 1.0
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)

        async def spawning() -> dict[str, Any] | None:
            task = await _task(cloud, inst.uuid)
            return task if task["step"] == "spawn" else None

        task = await _until(spawning)
        engine = cloud.engines[0]
        _crash(engine)  # while it waits for the host's report
        old = _as_release_n(task["payload"])
        assert "v" not in old
        async with cloud.db.writer() as conn:
            await conn.execute(
                conductor_tasks.update()
                .where(conductor_tasks.c.id == task["id"])
                .values(payload=old)
            )

        async def reported() -> dict[str, Any] | None:
            row = await _task(cloud, inst.uuid)
            return row if (row["payload"] or {}).get("outcome") else None

        row = await _until(reported)
        assert row["owner"] is None and row["status"] == TaskStatus.RUNNING
        outcome = payloads.reported(row["payload"])
        assert outcome is not None and outcome.ok and outcome.host == old["await"]["host"]
        await finish_on_a_new_engine(cloud, engine, [inst.uuid], host="ctl-n1")
        done = await _task(cloud, inst.uuid)
        assert done["status"] == TaskStatus.SUCCEEDED
        assert done["payload"]["v"] == payloads.PAYLOAD_VERSION
        (inst_row,) = await cloud.instances([inst.uuid])
        assert inst_row["vm_state"] == "active" and inst_row["host"] == old["dest_host"]
    finally:
        await cloud.stop()


async def test_a_conductor_resumes_a_release_n_build_at_its_spawn(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    """A release N row with the lease of a dead conductor and no report yet:
    the new conductor claims it, sends the spawn again, and the build ends."""
    cloud = await start_cloud(tmp_path)
    try:
        cloud.faults.spawn_delay = 0.5
        engine = cloud.engines[0]
        (inst,) = await cloud.api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)

        async def spawning() -> dict[str, Any] | None:
            task = await _task(cloud, inst.uuid)
            return task if task["step"] == "spawn" else None

        task = await _until(spawning)
        _crash(engine)
        old = _as_release_n(task["payload"])
        old.pop("outcome", None)
        old["await"]["until"] = time.time() + 30
        async with cloud.db.writer() as conn:
            await conn.execute(
                conductor_tasks.update()
                .where(conductor_tasks.c.id == task["id"])
                .values(payload=old, owner="release-n:dead", lease_expires_at=None)
            )
        await asyncio.sleep(0)
        await finish_on_a_new_engine(cloud, engine, [inst.uuid], host="ctl-n1")
        done = await _task(cloud, inst.uuid)
        assert done["status"] == TaskStatus.SUCCEEDED
        async with cloud.db.reader() as conn:
            assert (await tasks.get(conn, task["id"]))["payload"]["v"] == 2
    finally:
        await cloud.stop()


def test_every_task_kind_has_a_payload_struct() -> None:
    assert set(payloads.PAYLOADS) == set(TaskKind)
    for kind, cls in payloads.PAYLOADS.items():
        assert issubclass(cls, payloads.TaskPayload), kind
        if kind in (TaskKind.REMOVE_GUEST, TaskKind.SNAPSHOT):
            # It cannot be without its host and instance (remove_guest) or
            # the image the host uploads to (snapshot).
            with pytest.raises(exception.Invalid):
                payloads.new(kind, None)
            continue
        # Its empty payload round-trips: the version and nothing else.
        assert payloads.new(kind, None) == {"v": payloads.PAYLOAD_VERSION}


def test_a_new_task_payload_is_checked_against_its_kind() -> None:
    stored = payloads.new(TaskKind.LIVE_MIGRATE, {"migration_id": 3, "block_migration": "auto"})
    # Stored as the caller gave it (the API's payloads are a documented contract).
    assert stored == {"v": payloads.PAYLOAD_VERSION, "migration_id": 3, "block_migration": "auto"}
    with pytest.raises(exception.Invalid):
        payloads.new(TaskKind.MIGRATE, {"migration_id": "three"})
    with pytest.raises(exception.Invalid):
        payloads.new(TaskKind.BUILD, payloads.PowerPayload(reboot_type="HARD"))
    assert payloads.new(TaskKind.REBOOT, payloads.PowerPayload(reboot_type="HARD")) == {
        "v": payloads.PAYLOAD_VERSION,
        "reboot_type": "HARD",
    }
