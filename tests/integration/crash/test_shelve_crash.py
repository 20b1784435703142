"""Kill the conductor at every step boundary of a shelve (with its offload) and
of an unshelve of an offloaded server; and, at each step a host is asked to
do, that host too.

Real processes on RabbitMQ and PostgreSQL, as ``test_move_crash.py``: a
conductor started as ``nubes.testing.crash`` exits with 137 at the point, a
new one carries the task on. The server must end consistent
(``nubes.testing.moves.check_consistent``: no task, claims where it is, none
when offloaded, ports bound where it is) and, when only the conductor died,
the operation completed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from nubes import config, exception
from nubes.api.servers import ServersAPI
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.rpc.transport import get_transport
from nubes.testing.processes import ProcessCloud
from tests.functional.api.cli import free_port
from tests.integration.crash import checks, moves
from tests.integration.crash.conftest import RESULTS, CloudFactory

Ask = Callable[[ServersAPI, RequestContext, str], Awaitable[None]]


async def _ask(cloud: ProcessCloud, request: Ask, uuid: str) -> None:
    """``request(api, ctxt, uuid)`` through a ServersAPI connected as the cloud's
    API (its config: ``shelved_offload_time`` 0, a shelve offloads at once)."""
    assert cloud.db is not None
    conf = config.new_config()
    conf([])
    transport = get_transport(cloud.url_for(f"api.{cloud.api_host}"))
    await transport.connect()
    try:
        await request(
            ServersAPI(cloud.db, ConductorAPI(transport), conf=conf), moves.context(), uuid
        )
    finally:
        await transport.close()


async def _shelve(api: ServersAPI, ctxt: RequestContext, uuid: str) -> None:
    await api.shelve_server(ctxt, uuid)


async def _unshelve(api: ServersAPI, ctxt: RequestContext, uuid: str) -> None:
    await api.unshelve_server(ctxt, uuid)


def _offloaded(after: dict[str, Any]) -> list[str]:
    if (after["vm_state"], after["host"]) != ("shelved_offloaded", None):
        return [f"ended {after['vm_state']} on {after['host']}"]
    return []


def _unshelved(after: dict[str, Any]) -> list[str]:
    if after["vm_state"] != "active" or not after["host"]:
        return [f"ended {after['vm_state']} on {after['host']}"]
    return []


async def _offload_first(cloud: ProcessCloud, row: dict[str, Any]) -> None:
    await _ask(cloud, _shelve, row["uuid"])
    after = await moves.settled(cloud, row["uuid"])
    assert after["vm_state"] == "shelved_offloaded", after


@dataclasses.dataclass(frozen=True)
class Operation:
    points: tuple[str, ...]
    request: Ask
    check: Callable[[dict[str, Any]], list[str]]
    prepare: Callable[[ProcessCloud, dict[str, Any]], Awaitable[None]] | None = None


OPERATIONS = {
    "shelve": Operation(
        (
            "shelve:sent:shelve",
            "shelve:after:shelve",
            "shelve:sent:offload",
            "shelve:after:offload",
            "shelve:after:release",
        ),
        _shelve,
        _offloaded,
    ),
    "unshelve": Operation(
        ("unshelve:after:schedule", "unshelve:sent:unshelve", "unshelve:after:unshelve"),
        _unshelve,
        _unshelved,
        _offload_first,
    ),
}


async def _image_record(cloud: ProcessCloud) -> None:
    """The image the crash servers are built from, in the registry (an offloaded
    server is spawned from it again)."""
    from nubes.db.api import images

    assert cloud.db is not None
    async with cloud.db.writer() as conn:
        try:
            await images.get(conn, checks.IMAGE["id"])
        except exception.ImageNotFound:
            await images.create(
                conn,
                {
                    "id": checks.IMAGE["id"],
                    "name": "crash-base",
                    "status": "active",
                    "disk_format": "qcow2",
                    "container_format": "bare",
                    "visibility": "public",
                    "size": 1024,
                },
            )


async def _snapshot_problems(
    cloud: ProcessCloud, after: dict[str, Any], image_dir: Path
) -> list[str]:
    """A shelved server names its snapshot, whole (active, its data there); a
    running one has none left: an unshelve deletes it, a failed shelve too."""
    from nubes.db.api import images

    assert cloud.db is not None
    named = (after["system_metadata"] or {}).get("shelved_image_id")
    async with cloud.db.reader() as conn:
        rows = await images.get_all(conn, all_visible=True)
    shelved = [r for r in rows if r["properties"].get("instance_uuid") == after["uuid"]]
    if after["vm_state"] in ("shelved", "shelved_offloaded"):
        if not named:
            return ["shelved without a snapshot"]
        if [(r["id"], r["status"]) for r in shelved] != [(named, "active")]:
            return [f"snapshots {[(r['id'], r['status']) for r in shelved]}, named {named}"]
        if not (image_dir / named).exists():
            return [f"the snapshot {named} has no data"]
        return []
    if named or shelved:
        return [f"{after['vm_state']} with snapshots left: {named}, {[r['id'] for r in shelved]}"]
    return []


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(OPERATIONS))
@pytest.mark.parametrize("kill_host", [False, True], ids=["conductor", "conductor+host"])
async def test_killed_at_each_step_boundary(
    process_cloud: CloudFactory, name: str, kill_host: bool, tmp_path: Path
) -> None:
    op = OPERATIONS[name]
    # The API serves the image API the hosts upload the shelved snapshots to.
    port = free_port()
    image_dir = tmp_path / "images"
    cloud = await process_cloud(
        {
            "compute": {"image_api_endpoint": f"http://127.0.0.1:{port}/image"},
            "api": {"image_dir": str(image_dir)},
        }
    )
    cloud.controller_options = {"DEFAULT": {"image_grant_secret": "controllers-only"}}
    scheduler = await cloud.start_scheduler()
    conductor = await cloud.start_conductor("a")
    api = await cloud.start_api(port, image_dir)
    await cloud.wait_serving([scheduler, conductor])
    await api.wait_log(r"API listening on", timeout=60)
    computes = await cloud.start_computes()
    await cloud.wait_serving(list(computes.values()))
    await cloud.wait_hosts_registered()
    await _image_record(cloud)
    points = [p for p in op.points if ":sent:" in p] if kill_host else list(op.points)
    failed: list[str] = []
    for number, point in enumerate(points):
        label = f"{point} ({'conductor and that host' if kill_host else 'conductor'} killed)"
        RESULTS[label] = "did not finish"
        before = await moves.one_server(cloud, f"{name}-{number}")
        if op.prepare is not None:
            await op.prepare(cloud, before)
        await conductor.kill()
        doomed = await cloud.start_conductor("b", crash_at=point)
        await cloud.wait_serving([doomed])
        await _ask(cloud, op.request, before["uuid"])
        code = await doomed.wait_exit(timeout=60)
        assert code == 137, f"{point}: the conductor exited with {code}:\n{doomed.tail()}"
        if kill_host:
            (task,) = [
                t
                for t in await moves.task_rows(cloud, before["uuid"])
                if t["kind"] == name and t["status"] in ("pending", "running")
            ]
            host = task["payload"]["await"]["host"]
            await computes[host].kill()
            computes[host] = await cloud.start_compute(host)
            await cloud.wait_serving([computes[host]])
        conductor = await cloud.start_conductor("a")
        await cloud.wait_serving([conductor])
        after = await moves.settled(cloud, before["uuid"], timeout=90)
        problems = await moves.problems(cloud, before["uuid"])
        problems += await _snapshot_problems(cloud, after, image_dir)
        if not kill_host:
            # Only the conductor failed: the operation must have completed.
            # With the host killed too it may end rolled back instead (the
            # host's restart repair decides), as test_move_crash.py allows.
            problems += op.check(after)
        RESULTS[label] = "consistent" if not problems else "; ".join(problems)
        if problems:
            failed.append(f"{point}: {problems}")
    assert not failed, "\n".join(failed) + "\n" + cloud.describe()
