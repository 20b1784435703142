"""Nova's floating IP proxies (os-floating-ips, os-floating-ip-pools, add/removeFloatingIp)
and a server's ``addresses`` listing its floating IP."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_servers import cloud, create, login, make_active  # noqa: F401

V21 = "/compute/v2.1"
NET = "/networking/v2.0"


async def _public(admin: httpx.AsyncClient) -> str:
    r = await admin.post(
        f"{NET}/networks", json={"network": {"name": "public", "router:external": True}}
    )
    net: str = r.json()["network"]["id"]
    r = await admin.post(
        f"{NET}/subnets",
        json={"subnet": {"network_id": net, "cidr": "198.51.100.0/29", "name": "public"}},
    )
    assert r.status_code == 201, r.text
    return net


async def _private_with_router(c: httpx.AsyncClient, public: str) -> dict[str, Any]:
    net = (await c.post(f"{NET}/networks", json={"network": {"name": "n1"}})).json()["network"]
    r = await c.post(
        f"{NET}/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.90.0.0/24"}}
    )
    subnet = r.json()["subnet"]["id"]
    router = (await c.post(f"{NET}/routers", json={"router": {"name": "r"}})).json()["router"]
    r = await c.put(
        f"{NET}/routers/{router['id']}",
        json={"router": {"external_gateway_info": {"network_id": public}}},
    )
    assert r.status_code == 200, r.text
    r = await c.put(
        f"{NET}/routers/{router['id']}/add_router_interface", json={"subnet_id": subnet}
    )
    assert r.status_code == 200, r.text
    return dict(net)


async def test_os_floating_ips_and_the_server_actions(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "admin") as admin:
        public = await _public(admin)
    async with await login(cloud, "demo", "2.35") as c, await login(cloud, "demo", "2.37") as c37:
        pools = (await c.get(f"{V21}/os-floating-ip-pools")).json()["floating_ip_pools"]
        assert pools == [{"name": "public"}]
        net = await _private_with_router(c, public)
        server = await create(c37, cloud, networks="none")
        await make_active(cloud, server["id"])
        r = await c37.post(
            f"{V21}/servers/{server['id']}/os-interface",
            json={"interfaceAttachment": {"net_id": net["id"]}},
        )
        assert r.status_code == 200, r.text
        fixed = r.json()["interfaceAttachment"]["fixed_ips"][0]["ip_address"]

        # No body: the default pool ([api] default_floating_pool = public).
        r = await c.post(f"{V21}/os-floating-ips")
        assert r.status_code == 200, r.text
        fip = r.json()["floating_ip"]
        assert fip["pool"] == "public" and fip["ip"] == "198.51.100.3"  # .2: the router's
        assert fip["fixed_ip"] is None and fip["instance_id"] is None
        r = await c.post(f"{V21}/os-floating-ips", json={"pool": "nowhere"})
        assert r.status_code == 404 and "Floating IP pool not found." in r.text
        r = await c.post(f"{V21}/os-floating-ips", json={"pool": "public", "x": 1})
        assert r.status_code == 400

        action = f"{V21}/servers/{server['id']}/action"
        r = await c.post(action, json={"addFloatingIp": {"address": "198.51.100.6"}})
        assert r.status_code == 404 and "floating IP not found" in r.text
        r = await c.post(
            action, json={"addFloatingIp": {"address": fip["ip"], "fixed_address": "10.1.1.1"}}
        )
        assert r.status_code == 400 and "not assigned to instance" in r.text
        r = await c.post(action, json={"removeFloatingIp": {"address": fip["ip"]}})
        assert r.status_code == 409 and "is not associated with instance" in r.text
        r = await c.post(action, json={"addFloatingIp": {"address": fip["ip"]}})
        assert r.status_code == 202, r.text

        shown = (await c.get(f"{V21}/os-floating-ips/{fip['id']}")).json()["floating_ip"]
        assert shown == {**fip, "fixed_ip": fixed, "instance_id": server["id"]}
        listed = (await c.get(f"{V21}/os-floating-ips")).json()["floating_ips"]
        assert listed == [shown]
        addresses = (await c.get(f"{V21}/servers/{server['id']}")).json()["server"]["addresses"]
        assert [(a["addr"], a["OS-EXT-IPS:type"]) for a in addresses["n1"]] == [
            (fixed, "fixed"),
            (fip["ip"], "floating"),
        ]
        ips = (await c.get(f"{V21}/servers/{server['id']}/ips")).json()["addresses"]
        assert {a["addr"] for a in ips["n1"]} == {fixed, fip["ip"]}

        r = await c.post(action, json={"removeFloatingIp": {"address": fip["ip"]}})
        assert r.status_code == 202, r.text
        shown = (await c.get(f"{V21}/os-floating-ips/{fip['id']}")).json()["floating_ip"]
        assert shown["fixed_ip"] is None and shown["instance_id"] is None
        addresses = (await c.get(f"{V21}/servers/{server['id']}")).json()["server"]["addresses"]
        assert [a["addr"] for a in addresses["n1"]] == [fixed]

        assert (await c.delete(f"{V21}/os-floating-ips/{fip['id']}")).status_code == 202
        r = await c.get(f"{V21}/os-floating-ips/{fip['id']}")
        assert r.status_code == 404 and "Floating IP not found for ID" in r.text

    # Above their last microversions: 404, as in Nova.
    async with await login(cloud, "demo", "2.36") as c:
        assert (await c.get(f"{V21}/os-floating-ips")).status_code == 404
        assert (await c.get(f"{V21}/os-floating-ip-pools")).status_code == 404
    async with await login(cloud, "demo", "2.44") as c:
        r = await c.post(
            f"{V21}/servers/{server['id']}/action",
            json={"addFloatingIp": {"address": "198.51.100.3"}},
        )
        assert r.status_code == 404
