"""``os-simple-tenant-usage``: hours in the period times the flavor, per project."""

from __future__ import annotations

import datetime as dt

from nubes.db.api import instances as instances_db
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_servers import create, login, make_active

__all__ = ["cloud"]

from tests.unit.api.test_servers import cloud

USAGE = "/compute/v2.1/os-simple-tenant-usage"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def _server(cloud: ApiHarness, c, name: str, launched: dt.datetime, ended=None) -> str:
    server = await create(c, cloud, name=name, networks="none")
    await make_active(cloud, server["id"])
    async with cloud.state.db.writer() as conn:
        await instances_db.update(
            conn, server["id"], {"launched_at": launched, "terminated_at": ended}
        )
    return str(server["id"])


async def test_usage_counts_the_hours_inside_the_period(cloud: ApiHarness) -> None:
    period = {"start": "2026-01-01T10:00:00", "end": "2026-01-01T20:00:00"}
    async with await login(cloud, "demo", "2.40") as c:
        whole = await _server(cloud, c, "whole", T0)  # running all along: 10 h
        half = await _server(
            cloud, c, "half", T0 + dt.timedelta(hours=15), T0 + dt.timedelta(hours=25)
        )  # 15:00 -> past the end: 5 h
        await _server(cloud, c, "before", T0, T0 + dt.timedelta(hours=5))  # ended before: out
        r = await c.get(f"{USAGE}/{cloud.projects['demo']}", params=period)
        assert r.status_code == 200, r.text
        usage = r.json()["tenant_usage"]
        by_id = {u["instance_id"]: u for u in usage["server_usages"]}
        assert set(by_id) == {whole, half}
        assert round(by_id[whole]["hours"], 6) == 10.0 and round(by_id[half]["hours"], 6) == 5.0
        assert by_id[half]["state"] == "terminated" and by_id[whole]["state"] == "active"
        flavor = by_id[whole]
        assert round(usage["total_hours"], 6) == 15.0
        assert round(usage["total_vcpus_usage"], 6) == 15.0 * flavor["vcpus"]
        assert round(usage["total_memory_mb_usage"], 6) == 15.0 * flavor["memory_mb"]
        assert usage["start"] == "2026-01-01T10:00:00"
        # Members see their own project only; the all-projects index is for admins.
        r = await c.get(USAGE, params=period)
        assert r.status_code == 403
        # Regression: the rule's name was printed with its prefix twice.
        rule = "os_compute_api:os-simple-tenant-usage:list"
        assert f"{rule} to be performed" in r.json()["forbidden"]["message"]
        r = await c.get(f"{USAGE}/{cloud.projects['other']}", params=period)
        assert r.status_code == 403
        assert "os_compute_api:os-simple-tenant-usage:show " in r.json()["forbidden"]["message"]
        assert "os_compute_api:os_compute_api" not in r.text
        bad = {"start": "2026-01-02T00:00:00", "end": "2026-01-01T00:00:00"}
        assert (await c.get(f"{USAGE}/{cloud.projects['demo']}", params=bad)).status_code == 400
        assert (await c.get(USAGE + "/x", params={"start": "yesterday"})).status_code in (400, 403)
    async with await login(cloud, "admin", "2.40") as c:
        r = await c.get(USAGE, params={**period, "detailed": "1", "limit": "1"})
        assert r.status_code == 200
        (page,) = r.json()["tenant_usages"]
        assert len(page["server_usages"]) == 1 and "tenant_usages_links" in r.json()
        r = await c.get(USAGE, params=period)
        (total,) = r.json()["tenant_usages"]
        assert "server_usages" not in total and round(total["total_hours"], 6) == 15.0
        r = await c.get(USAGE, params={**period, "marker": "nope"})
        assert r.status_code == 400
