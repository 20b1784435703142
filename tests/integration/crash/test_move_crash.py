"""Kill the conductor at every step boundary of every move, or a compute host mid-step.

Real processes on RabbitMQ and PostgreSQL: a scheduler, three compute hosts
(each its own ``nubes compute`` process and broker user) and conductors.

Conductor kills: for each operation, and for each step boundary of it
(``<kind>:after:<step>``: the step's completion committed; ``<kind>:sent:
<step>``: the message to the host sent, its report not yet in), a conductor
started as ``nubes.testing.crash`` with ``NUBES_TEST_CRASH_AT=<point>``
exits with 137 (as ``kill -9``)
when the operation reaches that point, and another conductor is started.
The operation must then end consistent (``nubes.testing.moves.
check_consistent``: one host, claims matching, migration final, no task
left) — and, since nothing but the conductor failed, completed.

Compute kills: while a move's task awaits a host's report of a step that
takes a while, the source's or the destination's process is killed with
SIGKILL and started again. And at every step a host is asked to do, the
conductor dies just after sending it and the host that was sent it is
killed and restarted too. The operation must end consistent, completed or
rolled back.

The terminal summary counts kill points tried and how many ended consistent.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from nubes.api.moves import MovesAPI
from nubes.context import RequestContext
from nubes.testing.processes import Proc, ProcessCloud
from tests.integration.crash import moves
from tests.integration.crash.conftest import RESULTS, CloudFactory

Check = Callable[[dict[str, Any], dict[str, Any], list[dict[str, Any]]], list[str]]
Prepare = Callable[[ProcessCloud, dict[str, Any], "Services"], Awaitable[None]]


@dataclasses.dataclass
class Services:
    """The cloud's long-running processes, replaced as the test kills them."""

    computes: dict[str, Proc]
    conductor: Proc | None = None


def _moved(before: dict[str, Any], after: dict[str, Any], vm_state: str) -> list[str]:
    problems = []
    if after["vm_state"] != vm_state:
        problems.append(f"ended {after['vm_state']}, not {vm_state}")
    if after["host"] == before["host"]:
        problems.append(f"still on {after['host']}")
    return problems


def _last_status(migs: list[dict[str, Any]], status: str) -> list[str]:
    if not migs or migs[-1]["status"] != status:
        return [f"migration is {migs[-1]['status'] if migs else None}, not {status}"]
    return []


def _migrated(before: dict[str, Any], after: dict[str, Any], migs: list[Any]) -> list[str]:
    return _moved(before, after, "resized") + _last_status(migs, "finished")


def _confirmed(before: dict[str, Any], after: dict[str, Any], migs: list[Any]) -> list[str]:
    return _moved(before, after, "active") + _last_status(migs, "confirmed")


def _reverted(before: dict[str, Any], after: dict[str, Any], migs: list[Any]) -> list[str]:
    problems = _last_status(migs, "reverted")
    if (after["vm_state"], after["host"]) != ("active", before["host"]):
        problems.append(f"ended {after['vm_state']} on {after['host']}, not active on the source")
    if after["flavor"]["flavorid"] != before["flavor"]["flavorid"]:
        problems.append(f"flavor {after['flavor']['flavorid']}, not the old one")
    return problems


def _live_migrated(before: dict[str, Any], after: dict[str, Any], migs: list[Any]) -> list[str]:
    return _moved(before, after, "active") + _last_status(migs, "completed")


def _evacuated(before: dict[str, Any], after: dict[str, Any], migs: list[Any]) -> list[str]:
    return _moved(before, after, "active") + _last_status(migs, "done")


def _rebuilt(before: dict[str, Any], after: dict[str, Any], migs: list[Any]) -> list[str]:
    problems = []
    if (after["vm_state"], after["host"]) != ("active", before["host"]):
        problems.append(f"ended {after['vm_state']} on {after['host']}")
    if after["image_ref"] != moves.REBUILD_IMAGE:
        problems.append(f"image {after['image_ref']}, not the rebuild image")
    return problems


async def _migrate(api: MovesAPI, ctxt: RequestContext, uuid: str) -> None:
    await api.migrate_server(ctxt, uuid)


async def _resize(api: MovesAPI, ctxt: RequestContext, uuid: str) -> None:
    await api.resize_server(ctxt, uuid, moves.BIGGER["flavorid"])


async def _confirm(api: MovesAPI, ctxt: RequestContext, uuid: str) -> None:
    await api.confirm_resize(ctxt, uuid)


async def _revert(api: MovesAPI, ctxt: RequestContext, uuid: str) -> None:
    await api.revert_resize(ctxt, uuid)


async def _live(api: MovesAPI, ctxt: RequestContext, uuid: str) -> None:
    await api.live_migrate_server(ctxt, uuid)


async def _evacuate(api: MovesAPI, ctxt: RequestContext, uuid: str) -> None:
    await api.evacuate_server(ctxt, uuid)


async def _rebuild(api: MovesAPI, ctxt: RequestContext, uuid: str) -> None:
    await api.rebuild_server(ctxt, uuid, moves.REBUILD_IMAGE)


async def _resized_first(cloud: ProcessCloud, row: dict[str, Any], services: Services) -> None:
    await moves.ask(cloud, _resize, row["uuid"])
    after = await moves.settled(cloud, row["uuid"])
    assert after["vm_state"] == "resized", after


async def _source_down(cloud: ProcessCloud, row: dict[str, Any], services: Services) -> None:
    await services.computes[row["host"]].kill()
    await moves.force_down(cloud, row["host"])


async def _source_back(cloud: ProcessCloud, row: dict[str, Any], services: Services) -> list[str]:
    """The evacuated source returns: it must clean up and complete the migration."""
    host = row["host"]
    await moves.force_down(cloud, host, down=False)
    services.computes[host] = await cloud.start_compute(host)
    await cloud.wait_serving([services.computes[host]])
    for _ in range(150):
        migs = await moves.migrations_of(cloud, row["uuid"])
        if migs and migs[-1]["status"] == "completed":
            return []
        await asyncio.sleep(0.2)
    return [f"the returning source left the evacuation {migs[-1]['status'] if migs else None}"]


@dataclasses.dataclass(frozen=True)
class Operation:
    kind: str
    points: tuple[str, ...]
    request: moves.Ask
    check: Check
    prepare: Prepare | None = None


def _points(kind: str, *steps: tuple[str, bool]) -> tuple[str, ...]:
    """``after`` every step; ``sent`` too for the steps that wait for a host."""
    out: list[str] = []
    for step, waits in steps:
        if waits:
            out.append(f"{kind}:sent:{step}")
        out.append(f"{kind}:after:{step}")
    return tuple(out)


OPERATIONS = {
    "migrate": Operation(
        "migrate",
        _points("migrate", ("schedule", False), ("migrate_source", True), ("finish_dest", True)),
        _migrate,
        _migrated,
    ),
    "confirm_resize": Operation(
        "confirm_resize",
        _points("confirm_resize", ("confirm_source", True)),
        _confirm,
        _confirmed,
        _resized_first,
    ),
    "revert_resize": Operation(
        "revert_resize",
        _points("revert_resize", ("revert_dest", True), ("revert_source", True)),
        _revert,
        _reverted,
        _resized_first,
    ),
    "live_migrate": Operation(
        "live_migrate",
        _points(
            "live_migrate",
            ("schedule", False),
            ("check_dest", True),
            ("check_source", True),
            ("pre_live", True),
            ("live_migrate", True),
            ("post_dest", True),
            ("post_source", True),
        ),
        _live,
        _live_migrated,
    ),
    "evacuate": Operation(
        "evacuate",
        _points("evacuate", ("schedule", False), ("rebuild", True)),
        _evacuate,
        _evacuated,
        _source_down,
    ),
    "rebuild": Operation("rebuild", _points("rebuild", ("rebuild", True)), _rebuild, _rebuilt),
}


async def _cloud(process_cloud: CloudFactory, options: dict[str, Any] | None = None) -> Any:
    cloud = await process_cloud(options)
    scheduler = await cloud.start_scheduler()
    conductor = await cloud.start_conductor("a")
    await cloud.wait_serving([scheduler, conductor])
    computes = await cloud.start_computes()
    await cloud.wait_serving(list(computes.values()))
    await cloud.wait_hosts_registered()
    await moves.ensure_records(cloud)
    return cloud, Services(computes, conductor)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_conductor_killed_at_each_step_boundary(
    process_cloud: CloudFactory, name: str
) -> None:
    op = OPERATIONS[name]
    cloud, services = await _cloud(process_cloud)
    failed: list[str] = []
    for number, point in enumerate(op.points):
        label = f"{point} (conductor killed)"
        RESULTS[label] = "did not finish"
        if services.conductor is None:
            services.conductor = await cloud.start_conductor("a")
            await cloud.wait_serving([services.conductor])
        before = await moves.one_server(cloud, f"{name}-{number}")
        if op.prepare is not None:
            await op.prepare(cloud, before, services)
        await services.conductor.kill()
        doomed = await cloud.start_conductor("b", crash_at=point)
        await cloud.wait_serving([doomed])
        await moves.ask(cloud, op.request, before["uuid"])
        code = await doomed.wait_exit(timeout=60)
        assert code == 137, f"{point}: the conductor exited with {code}:\n{doomed.tail()}"
        services.conductor = await cloud.start_conductor("a")
        await cloud.wait_serving([services.conductor])
        after = await moves.settled(cloud, before["uuid"])
        migs = await moves.migrations_of(cloud, before["uuid"])
        problems = await moves.problems(cloud, before["uuid"])
        problems += op.check(before, after, migs)
        if op.prepare is _source_down:
            problems += await _source_back(cloud, before, services)
            problems += await moves.problems(cloud, before["uuid"])
        RESULTS[label] = "consistent" if not problems else "; ".join(problems)
        if problems:
            failed.append(f"{point}: {problems}")
    assert not failed, "\n".join(failed) + "\n" + cloud.describe()


@dataclasses.dataclass(frozen=True)
class ComputeKill:
    """Kill the ``side`` host while ``step`` of ``op`` is awaited from it."""

    op: str
    step: str
    side: str  # "source" or "dest"


COMPUTE_KILLS = [
    ComputeKill("migrate", "migrate_source", "source"),
    ComputeKill("migrate", "finish_dest", "dest"),
    ComputeKill("revert_resize", "revert_source", "source"),
    ComputeKill("live_migrate", "pre_live", "dest"),
    ComputeKill("live_migrate", "live_migrate", "source"),
    ComputeKill("live_migrate", "live_migrate", "dest"),
    ComputeKill("evacuate", "rebuild", "dest"),
    ComputeKill("rebuild", "rebuild", "source"),
]


@pytest.mark.timeout(600)
async def test_compute_killed_mid_step(process_cloud: CloudFactory) -> None:
    # Driver calls that take a while, so the kill lands inside the step.
    cloud, services = await _cloud(
        process_cloud,
        {"fake_driver": {"spawn_delay": 1.0, "migration_delay": 2.0}},
    )
    failed: list[str] = []
    for number, kill in enumerate(COMPUTE_KILLS):
        label = f"{kill.op}:{kill.step} ({kill.side} compute killed and restarted)"
        RESULTS[label] = "did not finish"
        op = OPERATIONS[kill.op]
        before = await moves.one_server(cloud, f"kill-{number}")
        if op.prepare is not None:
            await op.prepare(cloud, before, services)
        await moves.ask(cloud, op.request, before["uuid"])
        await moves.awaiting(cloud, before["uuid"], kill.step)
        if kill.side == "source":
            host = before["host"]
        else:
            migs = await moves.migrations_of(cloud, before["uuid"])
            host = migs[-1]["dest_compute"]
        await services.computes[host].kill()
        services.computes[host] = await cloud.start_compute(host)
        await cloud.wait_serving([services.computes[host]])
        await moves.settled(cloud, before["uuid"], timeout=90)
        problems = await moves.problems(cloud, before["uuid"])
        if op.prepare is _source_down:
            problems += await _source_back(cloud, before, services)
        RESULTS[label] = "consistent" if not problems else "; ".join(problems)
        if problems:
            failed.append(f"{label}: {problems}")
    assert not failed, "\n".join(failed) + "\n" + cloud.describe()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_conductor_and_stepping_compute_killed_at_each_host_step(
    process_cloud: CloudFactory, name: str
) -> None:
    """At each step a host is asked to do: the conductor dies just after sending it,
    and the host that was sent it is killed with SIGKILL and started again (it may
    have done the work, or part of it, or nothing). A new conductor carries on."""
    op = OPERATIONS[name]
    cloud, services = await _cloud(process_cloud)
    failed: list[str] = []
    for number, point in enumerate(p for p in op.points if ":sent:" in p):
        label = f"{point} (conductor and that host killed)"
        RESULTS[label] = "did not finish"
        if services.conductor is None:
            services.conductor = await cloud.start_conductor("a")
            await cloud.wait_serving([services.conductor])
        before = await moves.one_server(cloud, f"{name}-host-{number}")
        if op.prepare is not None:
            await op.prepare(cloud, before, services)
        await services.conductor.kill()
        doomed = await cloud.start_conductor("b", crash_at=point)
        await cloud.wait_serving([doomed])
        await moves.ask(cloud, op.request, before["uuid"])
        code = await doomed.wait_exit(timeout=60)
        assert code == 137, f"{point}: the conductor exited with {code}:\n{doomed.tail()}"
        (task,) = [t for t in await moves.task_rows(cloud, before["uuid"]) if t["kind"] == name]
        host = task["payload"]["await"]["host"]
        await services.computes[host].kill()
        services.computes[host] = await cloud.start_compute(host)
        services.conductor = await cloud.start_conductor("a")
        await cloud.wait_serving([services.computes[host], services.conductor])
        await moves.settled(cloud, before["uuid"], timeout=90)
        problems = await moves.problems(cloud, before["uuid"])
        if op.prepare is _source_down:
            problems += await _source_back(cloud, before, services)
            problems += await moves.problems(cloud, before["uuid"])
        RESULTS[label] = "consistent" if not problems else "; ".join(problems)
        if problems:
            failed.append(f"{point}: {problems}")
    assert not failed, "\n".join(failed) + "\n" + cloud.describe()
