"""The resize tasks' step paths, and confirming resizes left unconfirmed."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from nubes.conductor.tasks import autoconfirm, payloads
from nubes.conductor.tasks.confirm_revert import ConfirmResizeTask, RevertResizeTask
from nubes.conductor.tasks.migrate import MigrateTask
from nubes.conductor.tasks.states import END, FIRST_STEP, STEPS, Step, TaskKind, check_step
from nubes.db import migration as schema
from nubes.db.api import actions, instances, tasks
from nubes.db.api import migrations as migrations_api
from nubes.db.engine import Database
from nubes.db.models import migrations
from nubes.db.types import utcnow
from tests.unit.db import factories

_S = Step

#: Every way each task walks its steps (docs/tasks.md), as the tasks commit them.
PATHS: dict[TaskKind, dict[str, list[str]]] = {
    TaskKind.MIGRATE: {
        "done": [
            _S.SCHEDULE,  # the source claim handed to the migration
            _S.SCHEDULE,
            _S.MIGRATE_SOURCE,
            _S.FINISH_DEST,  # the source's part recorded
            _S.FINISH_DEST,  # the destination asked
            END,
        ],
        "no host": [_S.SCHEDULE, _S.SCHEDULE, END],
        "past its deadline while scheduling": [_S.SCHEDULE, END],
        "the source failed": [
            _S.SCHEDULE,
            _S.SCHEDULE,
            _S.MIGRATE_SOURCE,
            _S.ROLLBACK_SOURCE,
            _S.ROLLBACK_SOURCE,  # tried again
            END,
        ],
        "the destination failed": [
            _S.SCHEDULE,
            _S.SCHEDULE,
            _S.MIGRATE_SOURCE,
            _S.FINISH_DEST,
            _S.FINISH_DEST,
            _S.ROLLBACK_DEST,
            _S.ROLLBACK_DEST,  # tried again
            _S.ROLLBACK_SOURCE,
            END,
        ],
        "the rollback past its own deadline": [
            _S.SCHEDULE,
            _S.SCHEDULE,
            _S.MIGRATE_SOURCE,
            _S.FINISH_DEST,
            _S.ROLLBACK_DEST,
            END,
        ],
    },
    TaskKind.CONFIRM_RESIZE: {
        "done": [_S.CONFIRM_SOURCE, _S.CONFIRM_SOURCE, END],
        "tried again, or given up": [_S.CONFIRM_SOURCE, _S.CONFIRM_SOURCE, _S.CONFIRM_SOURCE, END],
    },
    TaskKind.REVERT_RESIZE: {
        "done": [_S.REVERT_DEST, _S.REVERT_DEST, _S.REVERT_SOURCE, END],
        "tried again": [
            _S.REVERT_DEST,
            _S.REVERT_DEST,
            _S.REVERT_DEST,
            _S.REVERT_SOURCE,
            _S.REVERT_SOURCE,
            END,
        ],
        "the destination gave up": [_S.REVERT_DEST, _S.REVERT_DEST, END],
    },
}


@pytest.mark.parametrize(
    ("kind", "path"),
    [(kind, name) for kind, paths in PATHS.items() for name in paths],
)
def test_every_path_a_resize_task_takes_is_in_its_table(kind: TaskKind, path: str) -> None:
    steps = PATHS[kind][path]
    assert steps[0] == FIRST_STEP[kind]
    check_step(kind, None, steps[0])
    for current, target in itertools.pairwise(steps):
        check_step(kind, current, target)


@pytest.mark.parametrize("kind", list(PATHS))
def test_the_paths_use_every_edge_of_the_table(kind: TaskKind) -> None:
    used = {(a, b) for steps in PATHS[kind].values() for a, b in itertools.pairwise(steps)}
    table = {(step, nxt) for step, targets in STEPS[kind].items() for nxt in targets}
    # The table lets every step that asks a host follow itself (a new try);
    # not every task needs each of those (migrate_source never retries).
    repeats = {(s, s) for s in STEPS[kind]}
    assert table - used <= repeats


def test_each_task_class_runs_the_steps_of_its_table() -> None:
    for cls in (MigrateTask, ConfirmResizeTask, RevertResizeTask):
        names = {d.name for d in cls.step_defs(cls.__new__(cls))}
        assert names == set(STEPS[cls.kind]), cls


# -- auto-confirm ------------------------------------------------------------------------------


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite:///{tmp_path / 'autoconfirm.sqlite'}"
    await schema.db_sync(url)
    database = Database(url)
    yield database
    await database.dispose()


async def _resized(
    db: Database, *, age: float, task_state: str | None = None, status: str = "finished"
) -> tuple[str, int]:
    """A RESIZED instance and its migration, last changed ``age`` seconds ago."""
    async with db.writer() as conn:
        inst = await factories.make_instance(
            conn, vm_state="resized", task_state=task_state, host="h2", node="h2"
        )
        mig = await migrations_api.create(
            conn,
            {
                "instance_uuid": inst["uuid"],
                "source_compute": "h1",
                "source_node": "h1",
                "dest_compute": "h2",
                "dest_node": "h2",
                "status": status,
                "migration_type": "resize",
            },
        )
        stamp = utcnow() - dt.timedelta(seconds=age)
        await conn.execute(
            update(migrations).where(migrations.c.id == mig["id"]).values(updated_at=stamp)
        )
    return inst["uuid"], mig["id"]


async def _state(db: Database, uuid: str, mig_id: int) -> tuple[Any, ...]:
    async with db.reader() as conn:
        row = await instances.get_by_uuid(conn, uuid)
        mig = await migrations_api.get_by_id(conn, mig_id)
        made = await tasks.list_for_instance(conn, uuid)
        acts = [a["action"] for a in await actions.actions_get(conn, uuid)]
    return row["task_state"], mig["status"], [(t["kind"], t["payload"]) for t in made], acts


async def test_only_resizes_past_the_window_are_confirmed(db: Database) -> None:
    due, due_mig = await _resized(db, age=120)
    fresh, fresh_mig = await _resized(db, age=5)
    made = await autoconfirm.confirm_due(db, window=60, task_deadline=600)
    assert len(made) == 1
    assert await _state(db, due, due_mig) == (
        "resize_confirming",
        "confirming",
        [("confirm_resize", {"v": payloads.PAYLOAD_VERSION, "migration_id": due_mig})],
        ["confirmResize"],
    )
    assert await _state(db, fresh, fresh_mig) == (None, "finished", [], [])
    # Nothing is confirmed twice.
    assert await autoconfirm.confirm_due(db, window=60, task_deadline=600) == []


async def test_an_instance_the_user_is_busy_with_is_left_alone(db: Database) -> None:
    uuid, mig_id = await _resized(db, age=120, task_state="resize_reverting")
    assert await autoconfirm.confirm_due(db, window=60, task_deadline=600) == []
    assert await _state(db, uuid, mig_id) == ("resize_reverting", "finished", [], [])


async def test_conductors_sweeping_at_once_confirm_each_resize_once(db: Database) -> None:
    pairs = [await _resized(db, age=120) for _ in range(5)]
    made = await asyncio.gather(
        *(autoconfirm.confirm_due(db, window=60, task_deadline=600) for _ in range(3))
    )
    assert sum(len(m) for m in made) == 5
    for uuid, mig_id in pairs:
        state = await _state(db, uuid, mig_id)
        assert state[:2] == ("resize_confirming", "confirming")
        assert len(state[2]) == 1


def test_the_sweep_interval_follows_the_window() -> None:
    assert autoconfirm.interval(1, 0.5) == 0.5
    assert autoconfirm.interval(10, 0.5) == 5
    assert autoconfirm.interval(3600, 1) == autoconfirm.MAX_INTERVAL
