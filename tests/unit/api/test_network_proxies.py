"""The network-proxy APIs of the compute API: answered up to 2.35, 404 from 2.36.

os-networks and os-tenant-networks list the networks the project sees,
os-security-groups and os-security-group-rules change the network
service's groups and rules in Nova's shape, floating IPs are answered as
Nova answers without an L3 service, and the nova-network-only writes are
410 Gone.
"""

from __future__ import annotations

from tests.unit.api.conftest import ApiHarness

V21 = "/compute/v2.1"
NET = "/networking/v2.0"
OLD, NEW = "2.35", "2.36"


async def test_networks_and_tenant_networks(api: ApiHarness) -> None:
    async with await api.login("admin") as admin:
        r = await admin.post(
            f"{NET}/networks", json={"network": {"name": "public", "router:external": True}}
        )
        assert r.status_code == 201, r.text
    async with await api.login("demo", OLD) as c:
        r = await c.post(f"{NET}/networks", json={"network": {"name": "mine"}})
        mine = r.json()["network"]["id"]
        listed = (await c.get(f"{V21}/os-networks")).json()["networks"]
        assert [n["label"] for n in listed] == ["mine"]
        assert listed[0]["id"] == mine and listed[0]["cidr"] is None
        assert "project_id" not in listed[0]  # an admin field
        shown = (await c.get(f"{V21}/os-networks/{mine}")).json()["network"]
        assert shown["label"] == "mine"
        r = await c.get(f"{V21}/os-networks/{'0' * 8}-0000-0000-0000-{'0' * 12}")
        assert r.status_code == 404 and "itemNotFound" in r.json()
        tenant = (await c.get(f"{V21}/os-tenant-networks")).json()["networks"]
        assert tenant == [{"id": mine, "label": "mine", "cidr": None}]
        assert (await c.get(f"{V21}/os-tenant-networks/{mine}")).json()["network"]["id"] == mine
        for method, path in (
            ("POST", "/os-networks"),
            ("DELETE", f"/os-networks/{mine}"),
            ("POST", "/os-tenant-networks"),
            ("DELETE", f"/os-tenant-networks/{mine}"),
            ("GET", "/os-security-group-default-rules"),
        ):
            r = await c.request(method, V21 + path, json={})
            assert r.status_code == 410, (method, path, r.text)
            assert r.json()["computeFault"]["code"] == 410
        pools = (await c.get(f"{V21}/os-floating-ip-pools")).json()["floating_ip_pools"]
        assert pools == [{"name": "public"}]
        assert (await c.get(f"{V21}/os-floating-ips")).json() == {"floating_ips": []}
        r = await c.post(f"{V21}/os-floating-ips", json={"pool": "public"})
        assert r.status_code == 404 and "No more floating IPs" in r.text
        r = await c.post(f"{V21}/os-floating-ips", json={"pool": "nowhere"})
        assert r.status_code == 404 and "pool not found" in r.text
        assert (await c.get(f"{V21}/os-floating-ips/1")).status_code == 404
    async with await api.login("admin", OLD) as admin:
        listed = (await admin.get(f"{V21}/os-networks")).json()["networks"]
        assert {n["label"] for n in listed} == {"mine", "public"}
        assert all("project_id" in n and "mtu" in n for n in listed)


async def test_security_groups_and_rules_in_novas_shape(api: ApiHarness) -> None:
    async with await api.login("demo", OLD) as c:
        r = await c.post(
            f"{V21}/os-security-groups",
            json={"security_group": {"name": "web", "description": "web servers"}},
        )
        assert r.status_code == 200, r.text
        web = r.json()["security_group"]
        assert (web["name"], web["description"], web["rules"]) == ("web", "web servers", [])
        gid = web["id"]
        r = await c.post(
            f"{V21}/os-security-group-rules",
            json={
                "security_group_rule": {
                    "parent_group_id": gid,
                    "ip_protocol": "tcp",
                    "from_port": 22,
                    "to_port": "22",
                    "cidr": "10.0.0.0/8",
                }
            },
        )
        assert r.status_code == 200, r.text
        rule = r.json()["security_group_rule"]
        assert rule["ip_range"] == {"cidr": "10.0.0.0/8"} and rule["group"] == {}
        assert (rule["ip_protocol"], rule["from_port"], rule["to_port"]) == ("tcp", 22, 22)
        # The same rule again is Nova's 400 (the network service's 409 underneath).
        again = {
            "security_group_rule": {
                "parent_group_id": gid,
                "ip_protocol": "tcp",
                "from_port": 22,
                "to_port": 22,
                "cidr": "10.0.0.0/8",
            }
        }
        r = await c.post(f"{V21}/os-security-group-rules", json=again)
        assert r.status_code == 400 and "already exists" in r.json()["badRequest"]["message"]
        # A CIDR with host bits comes back as given (Nova shows Neutron's value).
        hosty = {**again["security_group_rule"], "from_port": 80, "to_port": 80}
        hosty["cidr"] = "10.2.3.124/24"
        r = await c.post(f"{V21}/os-security-group-rules", json={"security_group_rule": hosty})
        assert r.status_code == 200, r.text
        assert r.json()["security_group_rule"]["ip_range"] == {"cidr": "10.2.3.124/24"}
        r = await c.delete(f"{V21}/os-security-group-rules/{r.json()['security_group_rule']['id']}")
        assert r.status_code == 202, r.text
        # A group a port uses cannot go: Nova's 400 (the network's 409 underneath).
        net = (await c.post(f"{NET}/networks", json={"network": {"name": "sgnet"}})).json()
        port = {"port": {"network_id": net["network"]["id"], "security_groups": [gid]}}
        made = await c.post(f"{NET}/ports", json=port)
        assert made.status_code == 201, made.text
        r = await c.delete(f"{V21}/os-security-groups/{gid}")
        assert r.status_code == 400 and "in use" in r.json()["badRequest"]["message"]
        await c.delete(f"{NET}/ports/{made.json()['port']['id']}")
        r = await c.post(
            f"{V21}/os-security-group-rules",
            json={
                "security_group_rule": {
                    "parent_group_id": gid,
                    "ip_protocol": "icmp",
                    "from_port": -1,
                    "to_port": -1,
                    "group_id": gid,
                }
            },
        )
        icmp = r.json()["security_group_rule"]
        assert icmp["group"] == {"name": "web", "tenant_id": web["tenant_id"]}
        assert (icmp["from_port"], icmp["to_port"]) == (-1, -1)
        # The same rule through Neutron's API: ingress, the given prefix.
        neutron = (await c.get(f"{NET}/security-group-rules/{rule['id']}")).json()
        assert neutron["security_group_rule"]["direction"] == "ingress"
        groups = (await c.get(f"{V21}/os-security-groups")).json()["security_groups"]
        assert {g["name"] for g in groups} == {"default", "web"}
        shown = (await c.get(f"{V21}/os-security-groups/{gid}")).json()["security_group"]
        assert {r["id"] for r in shown["rules"]} == {rule["id"], icmp["id"]}  # ingress only
        r = await c.put(
            f"{V21}/os-security-groups/{gid}",
            json={"security_group": {"name": "www", "description": "renamed"}},
        )
        assert r.json()["security_group"]["name"] == "www"
        bad = [
            {"security_group_rule": {"parent_group_id": gid, "from_port": 70000}},
            {"security_group_rule": {"parent_group_id": gid, "cidr": "nonsense"}},
            {"security_group_rule": {"parent_group_id": gid, "cidr": "1.0.0.0/8", "group_id": gid}},
            {"security_group_rule": {"parent_group_id": gid, "ip_protocol": "tcp", "from_port": 1}},
            {"nothing": {}},
        ]
        for body in bad:
            r = await c.post(f"{V21}/os-security-group-rules", json=body)
            assert r.status_code == 400 and "badRequest" in r.json(), (body, r.text)
        r = await c.post(f"{V21}/os-security-groups", json={"security_group": {"name": "x"}})
        assert r.status_code == 400
        assert (await c.delete(f"{V21}/os-security-group-rules/{rule['id']}")).status_code == 202
        r = await c.delete(f"{V21}/os-security-group-rules/{rule['id']}")
        assert r.status_code == 404 and "itemNotFound" in r.json()
        assert (await c.delete(f"{V21}/os-security-groups/{gid}")).status_code == 202
        assert (await c.get(f"{V21}/os-security-groups/{gid}")).status_code == 404
    async with await api.login("viewer", OLD) as c:
        r = await c.post(
            f"{V21}/os-security-groups", json={"security_group": {"name": "n", "description": ""}}
        )
        assert r.status_code == 403


async def test_gone_from_236(api: ApiHarness) -> None:
    paths = [
        "/os-networks",
        "/os-tenant-networks",
        "/os-security-groups",
        "/os-security-group-default-rules",
        "/os-floating-ip-pools",
        "/os-floating-ips",
    ]
    async with await api.login("demo", NEW) as c:
        for path in paths:
            r = await c.get(V21 + path)
            assert r.status_code == 404 and "itemNotFound" in r.json(), r.text
    async with await api.login("demo", OLD) as c:
        for path in paths:
            assert (await c.get(V21 + path)).status_code in (200, 410)
