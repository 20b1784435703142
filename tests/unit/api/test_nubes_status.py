"""``GET /os-nubes-status``: the task backlog and service versions, for admins only."""

from __future__ import annotations

from nubes.db.api import services, tasks
from tests.unit.api.conftest import ApiHarness

BASE = "/compute/v2.1"


async def test_admin_sees_the_backlog_by_kind_and_status_and_each_service_version(
    api: ApiHarness,
) -> None:
    async with api.state.db.writer() as conn:
        svc = await services.create(
            conn, {"host": "h1", "binary": "compute", "topic": "compute", "version": 7}
        )
        await services.heartbeat(conn, svc["id"])
        await services.create(
            conn, {"host": "h2", "binary": "compute", "topic": "compute", "forced_down": True}
        )
        await tasks.create(conn, kind="build")
        await tasks.create(conn, kind="build")
        done = await tasks.create(conn, kind="resize")
        await tasks.cancel(conn, done["id"])
    async with await api.login("admin") as c:
        r = await c.get(f"{BASE}/os-nubes-status")
    assert r.status_code == 200, r.text
    status = r.json()["status"]
    assert status["tasks"] == {"build": {"pending": 2}, "resize": {"cancelled": 1}}
    assert [(s["binary"], s["host"], s["version"], s["state"]) for s in status["services"]] == [
        ("nubes-compute", "h1", 7, "up"),
        ("nubes-compute", "h2", 0, "down"),
    ]
    # Queue depth is not read by this API yet: said so, not invented.
    assert status["queues"] is None


async def test_members_may_not_read_the_status(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        r = await c.get(f"{BASE}/os-nubes-status")
    assert r.status_code == 403
    assert "os_compute_api:os-nubes-status" in r.json()["forbidden"]["message"]
