"""A server is idle exactly when its task is closed: a client that sees
task_state None may ask the next action at once (HTTP, every service in one
process: memory://, SQLite, the conductor's task engine, a fake host, the
image API on a socket for the snapshots).

The regression: the host saved the instance's end state (task_state None)
and the conductor closed the task in a later transaction, so the next
action asked in between was refused 409 "has an operation in progress"
(seen in CI by the real-guest pause/suspend test). Now the host reports the
end with its step and the commit that closes the task writes it
(``nubes/step_end.py``). No timing is asserted: each action of a long chain
is asked the moment the previous one shows task_state None, the chain is
walked several times, and every request must be accepted. The moves
(rebuild, resize and migrate with their confirm and revert, live migration,
evacuation from a host forced down) are walked the same way by an admin on
several hosts: the conductor decides their end and writes it in the commit
that closes the task, which this holds them to. The host's reports travel
slowly, as over a real bus under load (in one process the window was too
short to be caught reliably): whatever the host saved before its report
would show for that long while the task is still open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nubes.api import bootstrap
from nubes.api.app import build_app
from nubes.api.state import ApiState
from nubes.compute.manager import ComputeManager
from nubes.compute.steps import StepReporter
from nubes.context import RequestContext
from nubes.db.api import flavors, images, services
from nubes.injected_files import InjectedFiles
from nubes.notifications.relay import NotificationBatch
from nubes.step_end import EventEnd
from nubes.testing.allinone import AllInOne
from tests.functional.image_api import cloud_with_image_api

pytestmark = pytest.mark.timeout(240)

PASSWORD = "secret-pw"
IMAGE_ID = "0b7bd0a7-46a4-4f70-9a5b-2a2b6f1a9c11"
#: How many times the chain is walked: each walk has 15 chances to hit the window.
ROUNDS = 3
#: Seconds a host's report takes to reach the conductor.
REPORT_DELAY = 0.2
#: Hosts of the moves' cloud: each walk's evacuation forces one down for good,
#: and the last walk's moves still need two.
MOVE_HOSTS = ROUNDS + 1

#: Each server action that is a task with a task_state, in an order each may
#: follow the previous, with the status it ends in and its accepted code (a
#: rescue answers 200 with the password, as Nova's).
CHAIN: list[tuple[dict[str, Any], str, int]] = [
    ({"os-stop": None}, "SHUTOFF", 202),
    ({"os-start": None}, "ACTIVE", 202),
    ({"reboot": {"type": "SOFT"}}, "ACTIVE", 202),
    ({"reboot": {"type": "HARD"}}, "ACTIVE", 202),
    ({"pause": None}, "PAUSED", 202),
    ({"unpause": None}, "ACTIVE", 202),
    ({"suspend": None}, "SUSPENDED", 202),
    ({"resume": None}, "ACTIVE", 202),
    ({"rescue": {"adminPass": "rescue-pw"}}, "RESCUE", 200),
    ({"unrescue": None}, "ACTIVE", 202),
    ({"changePassword": {"adminPass": "new-pw"}}, "ACTIVE", 202),
    ({"createImage": {"name": "b2b-snap"}}, "ACTIVE", 202),
    # Kept on its host ([DEFAULT] shelved_offload_time = -1): the host ends both.
    ({"shelve": None}, "SHELVED", 202),
    ({"unshelve": None}, "ACTIVE", 202),
]

#: The moves, as :data:`CHAIN` (an admin asks them: migrate and live-migrate
#: are admin actions); the evacuation that ends each walk is asked apart, its
#: host forced down first (:func:`_evacuate_and_act`).
MOVES: list[tuple[dict[str, Any], str, int]] = [
    ({"rebuild": {"imageRef": IMAGE_ID}}, "ACTIVE", 202),
    ({"resize": {"flavorRef": "two"}}, "VERIFY_RESIZE", 202),
    ({"confirmResize": None}, "ACTIVE", 204),
    ({"resize": {"flavorRef": "one"}}, "VERIFY_RESIZE", 202),
    ({"revertResize": None}, "ACTIVE", 202),
    ({"migrate": None}, "VERIFY_RESIZE", 202),
    ({"confirmResize": None}, "ACTIVE", 204),
    ({"migrate": None}, "VERIFY_RESIZE", 202),
    ({"revertResize": None}, "ACTIVE", 202),
    ({"os-migrateLive": {"host": None, "block_migration": "auto"}}, "ACTIVE", 202),
    ({"os-stop": None}, "SHUTOFF", 202),
    # A stopped server's rebuild ends stopped, its move too.
    ({"rebuild": {"imageRef": IMAGE_ID}}, "SHUTOFF", 202),
    ({"migrate": None}, "VERIFY_RESIZE", 202),
    ({"confirmResize": None}, "SHUTOFF", 204),
    ({"os-start": None}, "ACTIVE", 202),
]

#: Actions that fail on the host (the fake driver's call named first, None:
#: it succeeds), as :data:`CHAIN`: a failed action ends too, with its
#: task_state dropped (the server as it was, or ERROR where Nova leaves it
#: so), and the next is asked the moment it shows task_state None.
FAILURES: list[tuple[str | None, dict[str, Any], str, int]] = [
    ("power_off", {"os-stop": None}, "ACTIVE", 202),
    (None, {"os-stop": None}, "SHUTOFF", 202),
    ("power_on", {"os-start": None}, "SHUTOFF", 202),
    (None, {"os-start": None}, "ACTIVE", 202),
    ("pause", {"pause": None}, "ACTIVE", 202),
    (None, {"pause": None}, "PAUSED", 202),
    ("unpause", {"unpause": None}, "PAUSED", 202),
    (None, {"unpause": None}, "ACTIVE", 202),
    ("suspend", {"suspend": None}, "ACTIVE", 202),
    (None, {"suspend": None}, "SUSPENDED", 202),
    ("resume", {"resume": None}, "SUSPENDED", 202),
    (None, {"resume": None}, "ACTIVE", 202),
    ("set_admin_password", {"changePassword": {"adminPass": "new-pw"}}, "ACTIVE", 202),
    ("snapshot", {"createImage": {"name": "b2b-snap"}}, "ACTIVE", 202),
    ("snapshot", {"shelve": None}, "ACTIVE", 202),
    (None, {"shelve": None}, "SHELVED", 202),
    ("power_on", {"unshelve": None}, "SHELVED", 202),
    (None, {"unshelve": None}, "ACTIVE", 202),
    (None, {"rescue": {"adminPass": "rescue-pw"}}, "RESCUE", 200),
    ("unrescue", {"unrescue": None}, "RESCUE", 202),
    (None, {"unrescue": None}, "ACTIVE", 202),
    ("rescue", {"rescue": {"adminPass": "rescue-pw"}}, "ERROR", 200),
    (None, {"reboot": {"type": "HARD"}}, "ACTIVE", 202),
    ("reboot", {"reboot": {"type": "SOFT"}}, "ERROR", 202),
    (None, {"reboot": {"type": "HARD"}}, "ACTIVE", 202),
    ("spawn", {"rebuild": {"imageRef": IMAGE_ID}}, "ERROR", 202),
    (None, {"rebuild": {"imageRef": IMAGE_ID}}, "ACTIVE", 202),
]


class SlowReports:
    """A host's reports to the conductor, each delivered REPORT_DELAY late."""

    def __init__(self, real: StepReporter) -> None:
        self.real = real
        self.reports_events = real.reports_events
        self.reports_notifications = real.reports_notifications
        self.reports_injected_files = real.reports_injected_files

    async def step_finished(
        self,
        context: RequestContext,
        task_id: int,
        step: str,
        attempt: int,
        ok: bool,
        error: str | None = None,
        details: dict[str, Any] | None = None,
        event: EventEnd | None = None,
        notifications: NotificationBatch | None = None,
        injected_files: InjectedFiles | None = None,
    ) -> None:
        await asyncio.sleep(REPORT_DELAY)
        await self.real.step_finished(
            context,
            task_id,
            step,
            attempt,
            ok,
            error=error,
            details=details,
            event=event,
            notifications=notifications,
            injected_files=injected_files,
        )


@contextlib.asynccontextmanager
async def _cloud(
    tmp_path: Path, *, hosts: int, user: str, roles: list[str]
) -> AsyncIterator[tuple[AllInOne, httpx.AsyncClient]]:
    """The cloud (its hosts' reports slowed down) and a client logged in as ``user``."""
    overrides = {"DEFAULT": {"shelved_offload_time": -1}}
    async with cloud_with_image_api(tmp_path, hosts=hosts, overrides=overrides) as cloud:
        async with cloud.db.writer() as conn:
            for flavorid, memory_mb in (("one", 256), ("two", 512)):
                await flavors.create(
                    conn,
                    {"flavorid": flavorid, "name": flavorid, "vcpus": 1, "memory_mb": memory_mb},
                )
            await images.create(
                conn,
                {
                    "id": IMAGE_ID,
                    "name": "cirros",
                    "status": "active",
                    "disk_format": "qcow2",
                    "container_format": "bare",
                    "visibility": "public",
                    "size": 1024,
                },
            )
        for svc in cloud.computes.values():
            for manager in svc.endpoints:
                if isinstance(manager, ComputeManager):
                    manager.runner.conductor = SlowReports(manager.runner.conductor)
        await bootstrap.ensure_user(cloud.db, user, PASSWORD, user, roles)
        state = ApiState(conf=cloud.conf, db=cloud.db, transport=cloud.api_transport)
        await state.refresh_caps()
        transport = httpx.ASGITransport(app=build_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://nubes.test") as c:
            r = await c.post("/identity/v3/auth/tokens", json=_auth(user))
            assert r.status_code == 201, r.text
            c.headers["X-Auth-Token"] = r.headers["X-Subject-Token"]
            c.headers["OpenStack-API-Version"] = "compute 2.37"
            yield cloud, c


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with _cloud(tmp_path, hosts=1, user="demo", roles=["member"]) as (_, c):
        yield c


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[tuple[AllInOne, httpx.AsyncClient]]:
    async with _cloud(tmp_path, hosts=1, user="demo", roles=["member"]) as found:
        yield found


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[tuple[AllInOne, httpx.AsyncClient]]:
    async with _cloud(tmp_path, hosts=MOVE_HOSTS, user="boss", roles=["admin"]) as found:
        yield found


def _auth(user: str) -> dict[str, Any]:
    scope = {"project": {"name": user, "domain": {"name": "Default"}}}
    identity = {
        "methods": ["password"],
        "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": PASSWORD}},
    }
    return {"auth": {"identity": identity, "scope": scope}}


async def _idle(c: httpx.AsyncClient, server_id: str, status: str) -> None:
    """Poll until the server is in ``status`` with no task_state (as a client would)."""
    async with asyncio.timeout(60):
        while True:
            r = await c.get(f"/compute/v2.1/servers/{server_id}")
            assert r.status_code == 200, r.text
            body = r.json()["server"]
            if body["OS-EXT-STS:task_state"] is None:
                # Idle in ERROR when it should not be: the action failed.
                assert body["status"] != "ERROR" or status == "ERROR", body
                if body["status"] == status:
                    return
            await asyncio.sleep(0)


async def _boot(c: httpx.AsyncClient) -> str:
    body = {"server": {"name": "b2b", "imageRef": IMAGE_ID, "flavorRef": "one", "networks": "none"}}
    r = await c.post("/compute/v2.1/servers", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["server"]["id"])


async def _walk(
    c: httpx.AsyncClient, server_id: str, chain: list[tuple[dict[str, Any], str, int]]
) -> str:
    """Ask each action of ``chain`` the moment the previous one left the server
    idle; the status the last one ends in."""
    status = "ACTIVE"
    for action, ends_in, accepted in chain:
        await _idle(c, server_id, status)
        r = await c.post(f"/compute/v2.1/servers/{server_id}/action", json=action)
        assert r.status_code == accepted, (action, status, r.status_code, r.text)
        status = ends_in
    return status


async def _delete(c: httpx.AsyncClient, server_id: str, status: str) -> None:
    await _idle(c, server_id, status)
    r = await c.delete(f"/compute/v2.1/servers/{server_id}")
    assert r.status_code == 204, r.text


async def _gone(c: httpx.AsyncClient, server_id: str) -> None:
    """Poll until the server is gone (404), never idle on the way."""
    async with asyncio.timeout(60):
        while True:
            r = await c.get(f"/compute/v2.1/servers/{server_id}")
            if r.status_code == 404:
                return
            assert r.status_code == 200, r.text
            assert r.json()["server"]["OS-EXT-STS:task_state"] is not None, r.text
            await asyncio.sleep(0)


async def test_the_next_action_is_accepted_as_soon_as_task_state_is_none(
    client: httpx.AsyncClient,
) -> None:
    c = client
    for _ in range(ROUNDS):
        server_id = await _boot(c)
        await _delete(c, server_id, await _walk(c, server_id, CHAIN))


async def test_the_next_action_is_accepted_as_soon_as_a_failed_one_left_task_state_none(
    member: tuple[AllInOne, httpx.AsyncClient],
) -> None:
    cloud, c = member
    for _ in range(ROUNDS):
        server_id = await _boot(c)
        status = "ACTIVE"
        for fails, action, ends_in, accepted in FAILURES:
            await _idle(c, server_id, status)
            if fails is not None:
                cloud.faults.fail_next[fails] = 1
            r = await c.post(f"/compute/v2.1/servers/{server_id}/action", json=action)
            assert r.status_code == accepted, (action, status, r.status_code, r.text)
            status = ends_in
        # A delete that fails on the host leaves the server in ERROR; deleted again, it goes.
        await _idle(c, server_id, status)
        cloud.faults.fail_next["destroy"] = 1
        await _delete(c, server_id, status)
        await _delete(c, server_id, "ERROR")
        # Every fault injected was met by the call it was for.
        assert not any(cloud.faults.fail_next.values()), cloud.faults.fail_next
        await _gone(c, server_id)


async def _evacuate_and_act(cloud: AllInOne, c: httpx.AsyncClient, server_id: str) -> None:
    """Force the server's host down (its service stopped, as an operator
    would before an evacuation), evacuate it, and stop it the moment the
    evacuation left it idle."""
    r = await c.get(f"/compute/v2.1/servers/{server_id}")
    assert r.status_code == 200, r.text
    source = r.json()["server"]["OS-EXT-SRV-ATTR:host"]
    await cloud.stop_host(source)
    async with cloud.db.writer() as conn:
        svc = await services.get_by_host_and_binary(conn, source, "compute")
        await services.update(conn, svc["id"], {"forced_down": True})
    r = await c.post(f"/compute/v2.1/servers/{server_id}/action", json={"evacuate": {}})
    assert r.status_code == 200, r.text
    await _walk(c, server_id, [({"os-stop": None}, "SHUTOFF", 202)])
    await _delete(c, server_id, "SHUTOFF")


async def test_the_next_move_is_accepted_as_soon_as_task_state_is_none(
    admin: tuple[AllInOne, httpx.AsyncClient],
) -> None:
    cloud, c = admin
    for _ in range(ROUNDS):
        server_id = await _boot(c)
        await _idle(c, server_id, await _walk(c, server_id, MOVES))
        await _evacuate_and_act(cloud, c, server_id)
