"""A cloud for the move API tests: flavors, two compute hosts, images, a recording conductor.

No conductor runs: the API's records are read back from the database, and
the conductor client (:class:`Recorder`) remembers what it was asked.
Helpers put rows where a conductor would have left them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from nubes.db.api import actions as actions_db
from nubes.db.api import compute_nodes, services
from nubes.db.api import flavors as flavors_db
from nubes.db.api import instances as instances_db
from nubes.db.api import migrations as migrations_db
from nubes.db.api import tasks as tasks_db
from nubes.db.types import utcnow
from tests.unit.api.conftest import ApiHarness

URL = "/compute/v2.1/servers"
HOSTS = ("fake-0", "fake-1")


@dataclass
class Recorder:
    """The conductor client: remembers what the API asked of conductors."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    async def kick(self, context: Any, task_ids: list[int] | None = None) -> None:
        self.calls.append(("kick", list(task_ids or [])))

    async def live_migration_abort(self, context: Any, instance_uuid: str, mid: int) -> None:
        self.calls.append(("live_migration_abort", instance_uuid, mid))

    async def live_migration_force_complete(
        self, context: Any, instance_uuid: str, mid: int
    ) -> None:
        self.calls.append(("live_migration_force_complete", instance_uuid, mid))


@dataclass
class Cloud:
    api: ApiHarness
    conductor: Recorder
    image: str
    queued_image: str
    big_image: str
    wide_image: str
    flavors: dict[str, dict[str, Any]]
    tokens: dict[str, str] = field(default_factory=dict)

    async def login(self, user: str, version: str | None = None) -> httpx.AsyncClient:
        if user not in self.tokens:
            self.tokens[user] = await self.api.token(user)
        return self.api.client(self.tokens[user], version)


FLAVORS = {
    # flavorid: (name, vcpus, memory_mb, root_gb, ephemeral_gb, disabled)
    "1": ("m1.tiny", 1, 512, 1, 0, False),
    "2": ("m1.small", 1, 2048, 20, 0, False),
    "e": ("m1.ephemeral", 1, 2048, 20, 5, False),
    "z": ("zero-disk", 1, 2048, 0, 0, False),
    "m": ("small-memory", 1, 256, 30, 0, False),
    "d": ("disabled", 1, 4096, 40, 0, True),
}


async def _image(c: httpx.AsyncClient, name: str, upload: bool = True, **extra: Any) -> str:
    r = await c.post(
        "/image/v2/images",
        json={
            "name": name,
            "disk_format": "raw",
            "container_format": "bare",
            "visibility": "public",
            **extra,
        },
    )
    assert r.status_code == 201, r.text
    image_id = str(r.json()["id"])
    if upload:
        r = await c.put(
            f"/image/v2/images/{image_id}/file",
            content=b"x" * 100,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 204, r.text
    return image_id


async def make_cloud(api: ApiHarness) -> Cloud:
    """Flavors, two compute hosts reporting, four images, a recording conductor."""
    recorder = Recorder()
    api.state.extras["conductor"] = recorder
    made: dict[str, dict[str, Any]] = {}
    async with api.state.db.writer() as conn:
        for flavorid, (name, vcpus, ram, root, eph, disabled) in FLAVORS.items():
            made[flavorid] = await flavors_db.create(
                conn,
                {
                    "flavorid": flavorid,
                    "name": name,
                    "vcpus": vcpus,
                    "memory_mb": ram,
                    "root_gb": root,
                    "ephemeral_gb": eph,
                    "disabled": disabled,
                },
            )
        for host in HOSTS:
            svc = await services.create(
                conn, {"host": host, "binary": "compute", "topic": "compute"}
            )
            await services.heartbeat(conn, svc["id"])
            await compute_nodes.create(
                conn,
                {
                    "service_id": svc["id"],
                    "host": host,
                    "hypervisor_hostname": host,
                    "hypervisor_type": "fake",
                    "hypervisor_version": 1000,
                    "vcpus": 16,
                    "memory_mb": 16384,
                    "local_gb": 500,
                    "cpu_info": {"arch": "x86_64"},
                },
            )
    token = await api.token("admin")
    async with api.client(token) as c:
        image = await _image(c, "cirros")
        queued = await _image(c, "queued", upload=False)
        big = await _image(c, "big", min_disk=10, min_ram=1024)
        wide = await _image(c, "wide", min_disk=10)
    return Cloud(api, recorder, image, queued, big, wide, made, {"admin": token})


async def boot(cloud: Cloud, *, flavor: str = "1", user: str = "demo", **values: Any) -> str:
    """A server where a finished build leaves it: ACTIVE on fake-0 (or as ``values`` say)."""
    async with await cloud.login(user) as c:
        r = await c.post(
            URL,
            json={"server": {"name": "vm", "flavorRef": flavor, "imageRef": cloud.image}},
        )
        assert r.status_code == 202, r.text
        uuid = str(r.json()["server"]["id"])
    settled: dict[str, Any] = {
        "vm_state": "active",
        "task_state": None,
        "power_state": 1,
        "host": "fake-0",
        "node": "fake-0",
        "launched_at": utcnow(),
    }
    await settle(cloud, uuid, **{**settled, **values})
    cloud.conductor.calls.clear()
    return uuid


async def settle(cloud: Cloud, uuid: str, **values: Any) -> None:
    """End the instance's active task (as its conductor would) and set ``values``."""
    async with cloud.api.state.db.writer() as conn:
        task = await tasks_db.get_active_for_instance(conn, uuid)
        if task is not None:
            await tasks_db.cancel(conn, task["id"], reason="test")
        if values:
            await instances_db.update(conn, uuid, values)


async def records(cloud: Cloud, uuid: str) -> dict[str, Any]:
    """What the API wrote about ``uuid``: instance, migrations, newest action, active task."""
    async with cloud.api.state.db.reader() as conn:
        return {
            "instance": await instances_db.get_by_uuid(conn, uuid),
            "migrations": await migrations_db.list_by_instance(conn, uuid),
            "action": (await actions_db.actions_get(conn, uuid))[0],
            "task": await tasks_db.get_active_for_instance(conn, uuid),
        }


async def act(
    cloud: Cloud, uuid: str, body: Any, *, user: str = "admin", version: str | None = None
) -> httpx.Response:
    async with await cloud.login(user, version) as c:
        return await c.post(f"{URL}/{uuid}/action", json=body)


async def status(cloud: Cloud, uuid: str) -> str:
    async with await cloud.login("admin") as c:
        return str((await c.get(f"{URL}/{uuid}")).json()["server"]["status"])


def fault(r: httpx.Response, code: int) -> str:
    """The message of a Nova-style error body, after checking its code and name."""
    assert r.status_code == code, r.text
    (name,) = r.json()
    body = r.json()[name]
    assert body["code"] == code
    return str(body["message"])


async def assert_untouched(
    cloud: Cloud, uuid: str, vm_state: str = "active", action: str = "create"
) -> None:
    """A refused request wrote nothing: no migration, no task, the state unchanged."""
    found = await records(cloud, uuid)
    assert found["migrations"] == [] and found["task"] is None
    assert (found["instance"]["vm_state"], found["instance"]["task_state"]) == (vm_state, None)
    assert found["action"]["action"] == action


def migration_of(found: dict[str, Any]) -> dict[str, Any]:
    (migration,) = found["migrations"]
    return dict(migration)
