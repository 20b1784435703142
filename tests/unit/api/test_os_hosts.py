"""``os-hosts`` (up to 2.42): hosts by service, a host's resources, enable/disable."""

from __future__ import annotations

from nubes.db.api import services
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_servers import create, login, make_active
from tests.unit.db import factories

__all__ = ["cloud"]

from tests.unit.api.test_servers import cloud

HOSTS = "/compute/v2.1/os-hosts"


async def test_os_hosts_lists_shows_and_disables(cloud: ApiHarness) -> None:
    async with cloud.state.db.writer() as conn:
        await factories.make_node(conn, host="fake-0", hypervisor_hostname="fake-0", vcpus=8)
        row = await factories.make_service(conn, host="fake-0", binary="compute", topic="compute")
        await factories.make_service(conn, host="ctl", binary="conductor", topic="conductor")
    async with await login(cloud, "demo", "2.37") as c:
        server = await create(c, cloud, name="vm", networks="none")
        await make_active(cloud, server["id"])
        assert (await c.get(HOSTS)).status_code == 403
    async with await login(cloud, "admin", "2.42") as c:
        listed = (await c.get(HOSTS)).json()["hosts"]
        assert {"host_name": "fake-0", "service": "compute", "zone": "nova"} in listed
        assert {"host_name": "ctl", "service": "conductor", "zone": "internal"} in listed
        assert [
            h["host_name"]
            for h in (await c.get(HOSTS, params={"zone": "internal"})).json()["hosts"]
        ] == ["ctl"]
        shown = (await c.get(f"{HOSTS}/fake-0")).json()["host"]
        by_project = {r["resource"]["project"]: r["resource"] for r in shown}
        assert by_project["(total)"]["cpu"] == 8
        assert by_project["(used_max)"]["cpu"] == 1 and by_project["(used_max)"]["memory_mb"] == 512
        assert by_project[cloud.projects["demo"]]["disk_gb"] == 1
        assert (await c.get(f"{HOSTS}/nowhere")).status_code == 404
        r = await c.put(f"{HOSTS}/fake-0", json={"status": "disable"})
        assert r.json() == {"host": "fake-0", "status": "disabled"}
        async with cloud.state.db.reader() as conn:
            assert (await services.get_by_id(conn, row["id"]))["disabled"] is True
        assert (await c.put(f"{HOSTS}/fake-0", json={"status": "enable"})).status_code == 200
        assert (await c.put(f"{HOSTS}/fake-0", json={"status": "sideways"})).status_code == 400
        r = await c.put(f"{HOSTS}/fake-0", json={"maintenance_mode": "enable"})
        assert r.status_code == 400 and "maintenance" in r.text
        # An unknown host is not found before anything else is checked.
        body = {"status": "enable", "maintenance_mode": "enable"}
        assert (await c.put(f"{HOSTS}/nowhere", json=body)).status_code == 404
        # An empty zone filters nothing.
        assert len((await c.get(HOSTS, params={"zone": ""})).json()["hosts"]) == len(listed)
        assert (await c.get(f"{HOSTS}/fake-0/reboot")).status_code == 400
        assert (await c.get(f"{HOSTS}/fake-0/explode")).status_code == 404
    async with await login(cloud, "admin", "2.43") as c:
        assert (await c.get(HOSTS)).status_code == 404
