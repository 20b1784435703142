"""The live_migrate task's pieces: its step table, the scheduler's question, and the
relay of aborts and force-completes to the source (who may ask, and when it is sent)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nubes import exception
from nubes.conductor.manager import ConductorManager
from nubes.conductor.tasks import live_migrate, live_requests
from nubes.conductor.tasks.states import END, STEPS, Step, TaskKind, check_step
from nubes.context import RequestContext
from nubes.db.api import migrations as migrations_api
from nubes.db.api import tasks as tasks_api
from nubes.objects.instance import Instance
from nubes.testing.cloud import Cloud
from tests.unit.db import factories

KIND = TaskKind.LIVE_MIGRATE
BEFORE_THE_COPY = [Step.CHECK_DEST, Step.CHECK_SOURCE, Step.PRE_LIVE, Step.LIVE_MIGRATE]


def _walk(path: list[str]) -> None:
    current: str | None = None
    for step in path:
        check_step(KIND, current, step)
        current = step


def test_the_whole_way_and_every_way_back_are_allowed() -> None:
    _walk(
        [
            Step.SCHEDULE,
            Step.SCHEDULE,  # the claim handed over, then the scheduler asked
            Step.CHECK_DEST,
            Step.CHECK_SOURCE,
            Step.PRE_LIVE,
            Step.LIVE_MIGRATE,
            Step.POST_DEST,
            Step.POST_DEST,  # a retried adoption
            Step.POST_SOURCE,
            Step.POST_SOURCE,
            END,
        ]
    )
    _walk([Step.SCHEDULE, END])  # NoValidHost, or cancelled before anything was asked
    for index, failing in enumerate(BEFORE_THE_COPY):
        done = BEFORE_THE_COPY[: index + 1]
        _walk([Step.SCHEDULE, *done, Step.ROLLBACK_DEST, Step.ROLLBACK_DEST, END])
        assert Step.ROLLBACK_DEST in STEPS[KIND][failing]


def test_no_way_back_once_the_guest_moved_and_no_shortcut_to_the_end() -> None:
    for step in (Step.POST_DEST, Step.POST_SOURCE):
        with pytest.raises(exception.Invalid):
            check_step(KIND, step, Step.ROLLBACK_DEST)
    for step in BEFORE_THE_COPY:
        # Everything a host may have done is undone through rollback_dest first.
        with pytest.raises(exception.Invalid):
            check_step(KIND, step, END)
    with pytest.raises(exception.Invalid):
        check_step(KIND, Step.POST_DEST, END)


def test_the_scheduler_is_asked_for_the_instance_as_built_anywhere_but_its_host() -> None:
    row = {
        "uuid": "9e2a4bd9-6f3c-4c3e-9a37-6b1d2b7b7f01",
        "project_id": "p1",
        "user_id": "u1",
        "availability_zone": "az1",
        "flavor": {"flavorid": "m1", "name": "m1", "vcpus": 2, "memory_mb": 2048, "root_gb": 10},
    }
    original = {
        "image": {"id": "img", "properties": {"hw_architecture": "x86_64"}},
        "hints": {"different_host": ["a", "b"]},
    }
    spec = live_migrate.destination_spec(row, original, source="src", host=None)
    assert spec.ignore_hosts == ["src"] and spec.requested_destination is None
    assert (spec.flavor.vcpus, spec.flavor.memory_mb) == (2, 2048)
    assert spec.instance_uuids == [row["uuid"]] and spec.availability_zone == "az1"
    assert spec.image_properties == {"hw_architecture": "x86_64"}
    assert spec.hint_list("different_host") == ["a", "b"]
    named = live_migrate.destination_spec(row, {}, source="src", host="dst")
    assert named.requested_destination == "dst" and named.ignore_hosts == ["src"]


# -- relaying requests to the source ----------------------------------------------------------


class RecordingCompute:
    """Stands in for ComputeAPI: what would have been cast to which host."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, int, str | None]] = []

    async def live_migration_abort(
        self, ctxt: RequestContext, host: str, instance: Instance, migration_id: int
    ) -> None:
        self.sent.append(("abort", host, instance.uuid, migration_id, ctxt.caller))

    async def live_migration_force_complete(
        self, ctxt: RequestContext, host: str, instance: Instance, migration_id: int
    ) -> None:
        self.sent.append(("force", host, instance.uuid, migration_id, ctxt.caller))


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.start(f"sqlite:///{tmp_path / 'relay.sqlite'}")
    yield c
    await c.stop()


async def _migrating(
    cloud: Cloud, *, step: str, status: str = "running", kind: str = KIND
) -> dict[str, Any]:
    """An instance on src live migrating to dst, its task at ``step``."""
    async with cloud.db.writer() as conn:
        inst = await factories.make_instance(
            conn, host="src", node="src", vm_state="active", task_state="migrating"
        )
        migration = await migrations_api.create(
            conn,
            {
                "instance_uuid": inst["uuid"],
                "source_compute": "src",
                "dest_compute": "dst",
                "migration_type": "live-migration",
                "status": status,
            },
        )
        await tasks_api.create(
            conn,
            kind=kind,
            instance_uuid=inst["uuid"],
            step=step,
            payload={"migration_id": migration["id"]},
        )
    return {"uuid": inst["uuid"], "migration_id": migration["id"]}


async def _relay(cloud: Cloud, method: str, uuid: str, migration_id: int) -> RecordingCompute:
    compute = RecordingCompute()
    ctxt = RequestContext(caller="api.ctl")
    await live_requests.relay_request(cloud.db, compute, ctxt, method, uuid, migration_id)
    return compute


async def test_an_abort_reaches_the_source_once_the_copy_was_asked_for(cloud: Cloud) -> None:
    m = await _migrating(cloud, step=Step.LIVE_MIGRATE, status="cancelling")
    compute = await _relay(cloud, live_requests.ABORT, m["uuid"], m["migration_id"])
    # Sent as the conductor itself, never under the API's identity.
    assert compute.sent == [("abort", "src", m["uuid"], m["migration_id"], None)]


@pytest.mark.parametrize("step", [Step.SCHEDULE, Step.CHECK_DEST, Step.PRE_LIVE, Step.POST_DEST])
async def test_an_abort_at_another_step_is_left_to_the_task(cloud: Cloud, step: str) -> None:
    m = await _migrating(cloud, step=step, status="cancelling")
    compute = await _relay(cloud, live_requests.ABORT, m["uuid"], m["migration_id"])
    assert compute.sent == []


async def test_force_complete_only_for_a_running_copy(cloud: Cloud) -> None:
    running = await _migrating(cloud, step=Step.LIVE_MIGRATE)
    compute = await _relay(
        cloud, live_requests.FORCE_COMPLETE, running["uuid"], running["migration_id"]
    )
    assert compute.sent == [("force", "src", running["uuid"], running["migration_id"], None)]
    cancelling = await _migrating(cloud, step=Step.LIVE_MIGRATE, status="cancelling")
    compute = await _relay(
        cloud, live_requests.FORCE_COMPLETE, cancelling["uuid"], cancelling["migration_id"]
    )
    assert compute.sent == []


async def test_a_request_naming_the_wrong_instance_or_no_migration_is_dropped(
    cloud: Cloud,
) -> None:
    a = await _migrating(cloud, step=Step.LIVE_MIGRATE)
    b = await _migrating(cloud, step=Step.LIVE_MIGRATE)
    assert (await _relay(cloud, live_requests.ABORT, a["uuid"], b["migration_id"])).sent == []
    assert (await _relay(cloud, live_requests.ABORT, a["uuid"], 999_999)).sent == []
    with pytest.raises(exception.Invalid):
        await _relay(cloud, "terminate_instance", a["uuid"], a["migration_id"])


async def test_a_task_of_another_kind_is_not_a_live_migration(cloud: Cloud) -> None:
    m = await _migrating(cloud, step=Step.LIVE_MIGRATE, kind=TaskKind.MIGRATE)
    assert (await _relay(cloud, live_requests.ABORT, m["uuid"], m["migration_id"])).sent == []


async def test_only_controllers_may_ask(cloud: Cloud) -> None:
    m = await _migrating(cloud, step=Step.LIVE_MIGRATE, status="cancelling")
    manager = ConductorManager(cloud.db)
    for method in (manager.live_migration_abort, manager.live_migration_force_complete):
        with pytest.raises(exception.Forbidden):
            await method(
                RequestContext(caller="compute.src"),
                instance_uuid=m["uuid"],
                migration_id=m["migration_id"],
            )
    # A controller is let through (this conductor has no engine to reach hosts with).
    await manager.live_migration_abort(
        RequestContext(caller="api.ctl"), instance_uuid=m["uuid"], migration_id=m["migration_id"]
    )
