"""The network service (Neutron v2.0 subset): every resource, its policy and its errors."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.api.conftest import ApiHarness

V2 = "/networking/v2.0"


def _neutron_error(r: httpx.Response, code: int, kind: str | None = None) -> dict[str, Any]:
    assert r.status_code == code, r.text
    body: dict[str, Any] = r.json()["NeutronError"]
    assert body["message"] and body["detail"] == ""
    if kind is not None:
        assert body["type"] == kind, body
    return body


async def _network(c: httpx.AsyncClient, name: str = "net", cidr: str = "10.1.0.0/24") -> str:
    r = await c.post(f"{V2}/networks", json={"network": {"name": name}})
    assert r.status_code == 201, r.text
    net_id: str = r.json()["network"]["id"]
    r = await c.post(
        f"{V2}/subnets",
        json={"subnet": {"network_id": net_id, "cidr": cidr, "ip_version": 4, "name": name}},
    )
    assert r.status_code == 201, r.text
    return net_id


async def test_catalog_and_versions(api: ApiHarness) -> None:
    async with api.client() as c:
        r = await c.get("/networking")
        assert r.status_code == 200
        assert r.json()["versions"][0]["id"] == "v2.0"
        r = await c.get(f"{V2}/networks")
        assert r.status_code == 401
    async with await api.login("demo") as c:
        r = await c.get(f"{V2}/extensions")
        aliases = {e["alias"] for e in r.json()["extensions"]}
        assert {"security-group", "binding", "port-security", "external-net"} <= aliases
        _neutron_error(await c.get(f"{V2}/extensions/nope"), 404)
        _neutron_error(await c.get(f"{V2}/nothing"), 404)


async def test_network_and_subnet_lifecycle(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        r = await c.post(f"{V2}/networks", json={"network": {"name": "n1", "mtu": 1400}})
        assert r.status_code == 201, r.text
        net = r.json()["network"]
        assert net["status"] == "ACTIVE" and net["shared"] is False
        assert net["router:external"] is False and net["mtu"] == 1400
        assert net["project_id"] == api.projects["demo"] == net["tenant_id"]
        body = {
            "subnet": {
                "network_id": net["id"],
                "cidr": "192.168.5.0/24",
                "ip_version": 4,
                "dns_nameservers": ["8.8.8.8"],
                "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "192.168.5.254"}],
                "allocation_pools": [{"start": "192.168.5.10", "end": "192.168.5.20"}],
                "enable_dhcp": False,
            }
        }
        r = await c.post(f"{V2}/subnets", json=body)
        assert r.status_code == 201, r.text
        subnet = r.json()["subnet"]
        assert subnet["gateway_ip"] == "192.168.5.1"
        assert subnet["allocation_pools"] == [{"start": "192.168.5.10", "end": "192.168.5.20"}]
        assert subnet["enable_dhcp"] is False and subnet["dns_nameservers"] == ["8.8.8.8"]
        r = await c.post(
            f"{V2}/subnets",
            json={"subnet": {"network_id": net["id"], "cidr": "fd00:1::/64", "ip_version": 6}},
        )
        assert r.status_code == 201, r.text
        v6 = r.json()["subnet"]
        assert v6["gateway_ip"] == "fd00:1::1"
        shown = (await c.get(f"{V2}/networks/{net['id']}")).json()["network"]
        assert sorted(shown["subnets"]) == sorted([subnet["id"], v6["id"]])
        # Filters, fields and paging.
        await c.post(f"{V2}/networks", json={"network": {"name": "n2"}})
        r = await c.get(f"{V2}/networks", params={"name": "n1", "fields": ["id", "name"]})
        assert r.json()["networks"] == [{"id": net["id"], "name": "n1"}]
        page = (await c.get(f"{V2}/networks", params={"limit": 1})).json()
        assert len(page["networks"]) == 1 and page["networks_links"][0]["rel"] == "next"
        nxt = (
            await c.get(f"{V2}/networks", params={"limit": 1, "marker": page["networks"][0]["id"]})
        ).json()
        assert nxt["networks"][0]["id"] != page["networks"][0]["id"]
        r = await c.put(f"{V2}/networks/{net['id']}", json={"network": {"name": "renamed"}})
        assert r.json()["network"]["name"] == "renamed"
        assert r.json()["network"]["revision_number"] == 1
        assert (await c.get(f"{V2}/subnets", params={"ip_version": 6})).json()["subnets"][0][
            "id"
        ] == v6["id"]
        assert (await c.delete(f"{V2}/networks/{net['id']}")).status_code == 204
        _neutron_error(await c.get(f"{V2}/networks/{net['id']}"), 404, "NetworkNotFound")
        _neutron_error(await c.get(f"{V2}/subnets/{subnet['id']}"), 404, "SubnetNotFound")


async def test_bad_input_is_400_in_neutron_shape(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        net_id = await _network(c)
        bad: list[tuple[str, Any]] = [
            ("networks", {"network": {"bogus": 1}}),
            ("networks", {"network": {"mtu": "big"}}),
            ("networks", {"network": {"admin_state_up": "perhaps"}}),
            ("networks", {"network": []}),
            ("networks", {"networks": [{}]}),
            ("networks", [1, 2]),
            ("subnets", {"subnet": {"network_id": net_id, "cidr": "nonsense"}}),
            ("subnets", {"subnet": {"network_id": net_id, "cidr": "10.2.0.0/24", "ip_version": 5}}),
            ("subnets", {"subnet": {"network_id": net_id, "cidr": "10.1.0.0/25"}}),  # overlaps
            ("subnets", {"subnet": {"network_id": net_id, "cidr": "10.3.0.0/32"}}),
            ("subnets", {"subnet": {"network_id": "x", "cidr": "10.4.0.0/24"}}),
            ("subnets", {"subnet": {"network_id": net_id}}),
            (
                "subnets",
                {
                    "subnet": {
                        "network_id": net_id,
                        "cidr": "10.5.0.0/24",
                        "allocation_pools": [{"start": "10.6.0.1", "end": "10.6.0.9"}],
                    }
                },
            ),
            (
                "subnets",
                {
                    "subnet": {
                        "network_id": net_id,
                        "cidr": "10.5.0.0/24",
                        "gateway_ip": "10.5.0.5",
                        "allocation_pools": [{"start": "10.5.0.2", "end": "10.5.0.9"}],
                    }
                },
            ),
            (
                "subnets",
                {"subnet": {"network_id": net_id, "cidr": "10.7.0.0/24", "dns_nameservers": ["x"]}},
            ),
            ("ports", {"port": {"network_id": net_id, "fixed_ips": "10.1.0.5"}}),
            ("ports", {"port": {"network_id": net_id, "fixed_ips": [{"ip_address": "1.2.3.4"}]}}),
            ("ports", {"port": {"network_id": net_id, "fixed_ips": [{"subnet_id": "nope"}]}}),
            ("ports", {"port": {}}),
            ("security-group-rules", {"security_group_rule": {"direction": "sideways"}}),
        ]
        for path, body in bad:
            r = await c.post(f"{V2}/{path}", json=body)
            assert r.status_code == 400, (path, body, r.text)
            assert "NeutronError" in r.json(), r.text
        r = await c.post(f"{V2}/networks", content=b"{not json")
        assert r.status_code == 400 and "NeutronError" in r.json()
        r = await c.get(f"{V2}/networks", params={"limit": "x"})
        _neutron_error(r, 400)
        r = await c.get(f"{V2}/networks", params={"shared": "maybe"})
        _neutron_error(r, 400)


async def test_visibility_shared_and_admin(api: ApiHarness) -> None:
    async with await api.login("admin") as admin, await api.login("demo") as demo:
        async with await api.login("other") as other:
            demo_net = await _network(demo, "demo-net", "10.10.0.0/24")
            r = await admin.post(
                f"{V2}/networks", json={"network": {"name": "public", "shared": True}}
            )
            shared = r.json()["network"]
            r = await demo.post(f"{V2}/networks", json={"network": {"shared": True}})
            _neutron_error(r, 403)
            r = await demo.post(f"{V2}/networks", json={"network": {"router:external": True}})
            _neutron_error(r, 403)
            seen = {n["id"] for n in (await other.get(f"{V2}/networks")).json()["networks"]}
            assert shared["id"] in seen and demo_net not in seen
            _neutron_error(await other.get(f"{V2}/networks/{demo_net}"), 404, "NetworkNotFound")
            _neutron_error(await other.delete(f"{V2}/networks/{demo_net}"), 404)
            # Shared: others may see it and put a port on it, not change it.
            _neutron_error(
                await other.put(f"{V2}/networks/{shared['id']}", json={"network": {"name": "x"}}),
                404,
            )
            seen = {n["id"] for n in (await admin.get(f"{V2}/networks")).json()["networks"]}
            assert {shared["id"], demo_net} <= seen
        async with await api.login("viewer") as viewer:
            _neutron_error(await viewer.post(f"{V2}/networks", json={"network": {}}), 403)
            assert (await viewer.get(f"{V2}/networks/{demo_net}")).status_code == 200


async def test_ports_ipam_and_release(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        net_id = await _network(c, "small", "10.20.0.0/29")  # .2 - .6 usable
        made = []
        for _ in range(5):
            r = await c.post(f"{V2}/ports", json={"port": {"network_id": net_id}})
            assert r.status_code == 201, r.text
            made.append(r.json()["port"])
        addresses = [p["fixed_ips"][0]["ip_address"] for p in made]
        assert addresses == [f"10.20.0.{n}" for n in range(2, 7)]
        port = made[0]
        assert port["mac_address"].startswith("fa:16:3e:")
        assert port["status"] == "DOWN" and port["binding:vif_type"] == "unbound"
        assert len(port["security_groups"]) == 1 and port["port_security_enabled"] is True
        r = await c.post(f"{V2}/ports", json={"port": {"network_id": net_id}})
        _neutron_error(r, 409, "IpAddressGenerationFailure")
        _neutron_error(await c.delete(f"{V2}/networks/{net_id}"), 409, "NetworkInUse")
        # An address comes back only when its port is gone.
        assert (await c.delete(f"{V2}/ports/{made[2]['id']}")).status_code == 204
        r = await c.post(
            f"{V2}/ports",
            json={"port": {"network_id": net_id, "fixed_ips": [{"ip_address": "10.20.0.4"}]}},
        )
        assert r.status_code == 201, r.text
        r = await c.post(
            f"{V2}/ports",
            json={"port": {"network_id": net_id, "fixed_ips": [{"ip_address": "10.20.0.4"}]}},
        )
        _neutron_error(r, 409, "IpAddressAlreadyAllocated")
        r = await c.get(f"{V2}/ports", params={"fixed_ips": "ip_address=10.20.0.3"})
        assert [p["id"] for p in r.json()["ports"]] == [made[1]["id"]]
        r = await c.put(
            f"{V2}/ports/{made[1]['id']}",
            json={"port": {"name": "web", "device_id": "vm-1", "device_owner": "compute:nova"}},
        )
        assert r.status_code == 200 and r.json()["port"]["name"] == "web"
        r = await c.get(f"{V2}/ports", params={"device_id": "vm-1"})
        assert len(r.json()["ports"]) == 1
        r = await c.put(f"{V2}/ports/{made[1]['id']}", json={"port": {"binding:host_id": "fake-0"}})
        _neutron_error(r, 403)
        r = await c.put(
            f"{V2}/ports/{made[1]['id']}", json={"port": {"port_security_enabled": False}}
        )
        _neutron_error(r, 400)
        r = await c.put(
            f"{V2}/ports/{made[1]['id']}",
            json={"port": {"port_security_enabled": False, "security_groups": []}},
        )
        assert r.status_code == 200 and r.json()["port"]["security_groups"] == []


async def test_ipv6_subnet_is_addressed(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        r = await c.post(f"{V2}/networks", json={"network": {}})
        net_id = r.json()["network"]["id"]
        r = await c.post(
            f"{V2}/subnets",
            json={"subnet": {"network_id": net_id, "cidr": "fd00:9::/64", "ip_version": 6}},
        )
        assert r.status_code == 201
        seen = set()
        for _ in range(3):
            r = await c.post(f"{V2}/ports", json={"port": {"network_id": net_id}})
            address = r.json()["port"]["fixed_ips"][0]["ip_address"]
            assert address.startswith("fd00:9::") and address != "fd00:9::1"
            seen.add(address)
        assert len(seen) == 3


async def test_security_groups_and_rules(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        groups = (await c.get(f"{V2}/security-groups")).json()["security_groups"]
        assert [g["name"] for g in groups] == ["default"]
        default = groups[0]
        rules = default["security_group_rules"]
        assert sorted((r["direction"], r["ethertype"]) for r in rules) == [
            ("egress", "IPv4"),
            ("egress", "IPv6"),
            ("ingress", "IPv4"),
            ("ingress", "IPv6"),
        ]
        assert all(
            r["remote_group_id"] == default["id"] for r in rules if r["direction"] == "ingress"
        )
        # Listing again makes no second default group.
        assert len((await c.get(f"{V2}/security-groups")).json()["security_groups"]) == 1
        r = await c.post(f"{V2}/security-groups", json={"security_group": {"name": "web"}})
        assert r.status_code == 201, r.text
        web = r.json()["security_group"]
        assert len(web["security_group_rules"]) == 2
        rule = {
            "security_group_id": web["id"],
            "direction": "ingress",
            "protocol": "tcp",
            "port_range_min": 22,
            "port_range_max": 22,
            "remote_ip_prefix": "0.0.0.0/0",
        }
        r = await c.post(f"{V2}/security-group-rules", json={"security_group_rule": rule})
        assert r.status_code == 201, r.text
        made = r.json()["security_group_rule"]
        assert made["ethertype"] == "IPv4" and made["port_range_min"] == 22
        r = await c.post(f"{V2}/security-group-rules", json={"security_group_rule": rule})
        _neutron_error(r, 409, "SecurityGroupRuleExists")
        # A prefix with host bits is kept as given, as Neutron keeps it; it
        # matches its network (normalized_cidr), and a rule for the same
        # network is the same rule.
        hosty = {
            **rule,
            "port_range_min": 80,
            "port_range_max": 80,
            "remote_ip_prefix": "10.2.3.124/24",
        }
        r = await c.post(f"{V2}/security-group-rules", json={"security_group_rule": hosty})
        assert r.status_code == 201, r.text
        kept = r.json()["security_group_rule"]
        assert (kept["remote_ip_prefix"], kept["normalized_cidr"]) == (
            "10.2.3.124/24",
            "10.2.3.0/24",
        )
        same = {**hosty, "remote_ip_prefix": "10.2.3.0/24"}
        r = await c.post(f"{V2}/security-group-rules", json={"security_group_rule": same})
        _neutron_error(r, 409, "SecurityGroupRuleExists")
        one = {**hosty, "remote_ip_prefix": "10.9.9.9"}
        r = await c.post(f"{V2}/security-group-rules", json={"security_group_rule": one})
        one_id = r.json()["security_group_rule"]["id"]
        assert r.json()["security_group_rule"]["remote_ip_prefix"] == "10.9.9.9/32", r.text
        # Gone again, so the counts below are of the rules above.
        for rule_id in (kept["id"], one_id):
            r = await c.delete(f"{V2}/security-group-rules/{rule_id}")
            assert r.status_code == 204, r.text
        for broken in (
            {**rule, "port_range_min": 30, "port_range_max": 20},
            {**rule, "protocol": "bogus"},
            {**rule, "remote_ip_prefix": "::/0"},
            {**rule, "port_range_max": 70000},
            {**rule, "protocol": "gre"},
            {**rule, "remote_group_id": default["id"]},
            {**rule, "ethertype": "IPv5"},
        ):
            r = await c.post(f"{V2}/security-group-rules", json={"security_group_rule": broken})
            _neutron_error(r, 400)
        r = await c.post(
            f"{V2}/security-group-rules",
            json={
                "security_group_rule": {
                    "security_group_id": web["id"],
                    "direction": "ingress",
                    "protocol": "icmp",
                    "remote_group_id": default["id"],
                }
            },
        )
        assert r.status_code == 201, r.text
        listed = (
            await c.get(f"{V2}/security-group-rules", params={"security_group_id": web["id"]})
        ).json()["security_group_rules"]
        assert len(listed) == 4
        assert (await c.delete(f"{V2}/security-group-rules/{made['id']}")).status_code == 204
        _neutron_error(
            await c.get(f"{V2}/security-group-rules/{made['id']}"), 404, "SecurityGroupRuleNotFound"
        )
        # A group in use by a port cannot go.
        net_id = await _network(c, "sg-net", "10.30.0.0/24")
        r = await c.post(
            f"{V2}/ports", json={"port": {"network_id": net_id, "security_groups": [web["id"]]}}
        )
        assert r.json()["port"]["security_groups"] == [web["id"]]
        _neutron_error(await c.delete(f"{V2}/security-groups/{web['id']}"), 409)
        assert (await c.delete(f"{V2}/ports/{r.json()['port']['id']}")).status_code == 204
        assert (await c.delete(f"{V2}/security-groups/{web['id']}")).status_code == 204
        _neutron_error(await c.delete(f"{V2}/security-groups/{default['id']}"), 400)
    async with await api.login("other") as other:
        _neutron_error(await other.get(f"{V2}/security-groups/{default['id']}"), 404)


async def test_quotas_are_neutron_409(api: ApiHarness) -> None:
    async with await api.login("admin") as admin:
        project = api.projects["demo"]
        r = await admin.put(f"{V2}/quotas/{project}", json={"quota": {"network": 1, "port": 1}})
        assert r.status_code == 200, r.text
        assert r.json()["quota"]["network"] == 1
        r = await admin.put(f"{V2}/quotas/{project}", json={"quota": {"network": "x"}})
        _neutron_error(r, 400)
    async with await api.login("demo") as c:
        net_id = await _network(c)
        _neutron_error(await c.post(f"{V2}/networks", json={"network": {}}), 409, "OverQuota")
        assert (
            await c.post(f"{V2}/ports", json={"port": {"network_id": net_id}})
        ).status_code == 201
        _neutron_error(
            await c.post(f"{V2}/ports", json={"port": {"network_id": net_id}}), 409, "OverQuota"
        )
        details = (await c.get(f"{V2}/quotas/{project}/details.json")).json()["quota"]
        assert details["network"] == {"limit": 1, "used": 1, "reserved": 0}
        assert details["port"]["used"] == 1
        _neutron_error(await c.put(f"{V2}/quotas/{project}", json={"quota": {"port": 9}}), 403)
