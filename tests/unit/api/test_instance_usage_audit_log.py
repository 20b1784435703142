"""``os-instance-usage-audit-log``: admins only, Nova's period, every host not run."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from nubes.api.compute_v21.instance_usage_audit_log import audit_period
from tests.unit.api.conftest import ApiHarness
from tests.unit.db import factories

LOG = "/compute/v2.1/os-instance_usage_audit_log"


def test_period_is_the_last_whole_month() -> None:
    start, end = audit_period(dt.datetime(2026, 3, 15, 12, 30))
    assert (start, end) == (dt.datetime(2026, 2, 1), dt.datetime(2026, 3, 1))
    start, end = audit_period(dt.datetime(2026, 1, 1, 0, 0))
    assert (start, end) == (dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1))


async def test_admin_sees_every_compute_host_not_run(api: ApiHarness) -> None:
    async with api.state.db.writer() as conn:
        await factories.make_service(conn, host="cmp-b", binary="compute", topic="compute")
        await factories.make_service(conn, host="cmp-a", binary="compute", topic="compute")
        await factories.make_service(conn, host="ctl", binary="conductor", topic="conductor")
    client = await api.login("admin")
    async with client as c:
        listed = (await c.get(LOG)).json()["instance_usage_audit_logs"]
        assert listed["hosts_not_run"] == ["cmp-a", "cmp-b"]
        assert listed["num_hosts"] == listed["num_hosts_not_run"] == 2
        assert listed["overall_status"] == "0 of 2 hosts done. 0 errors."
        r = await c.get(f"{LOG}/{quote('2026-03-15 12:30:00')}")
        assert r.status_code == 200
        shown = r.json()["instance_usage_audit_log"]
        assert (shown["period_beginning"], shown["period_ending"]) == (
            "2026-02-01 00:00:00",
            "2026-03-01 00:00:00",
        )
        assert (await c.get(f"{LOG}/{quote('2026-03-15 12:30:00.5')}")).status_code == 200
        r = await c.get(f"{LOG}/invalid_time")
        assert r.status_code == 400 and "invalid_time" in r.json()["badRequest"]["message"]


async def test_members_are_refused(api: ApiHarness) -> None:
    client = await api.login("demo")
    async with client as c:
        assert (await c.get(LOG)).status_code == 403
        assert (await c.get(f"{LOG}/{quote('2026-03-15 12:30:00')}")).status_code == 403
