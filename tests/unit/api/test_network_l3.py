"""Routers and floating IPs of the network service: Neutron's shapes, rules and errors."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_network import V2, _network, _neutron_error


async def _external(admin: httpx.AsyncClient, cidr: str = "203.0.113.0/28") -> tuple[str, str]:
    r = await admin.post(
        f"{V2}/networks", json={"network": {"name": "public", "router:external": True}}
    )
    assert r.status_code == 201, r.text
    net = r.json()["network"]["id"]
    r = await admin.post(
        f"{V2}/subnets",
        json={"subnet": {"network_id": net, "cidr": cidr, "ip_version": 4, "name": "public"}},
    )
    assert r.status_code == 201, r.text
    return net, r.json()["subnet"]["id"]


async def _subnet_of(c: httpx.AsyncClient, net: str) -> str:
    r = await c.get(f"{V2}/subnets", params={"network_id": net})
    subnet_id: str = r.json()["subnets"][0]["id"]
    return subnet_id


async def _port(c: httpx.AsyncClient, net: str) -> dict[str, Any]:
    r = await c.post(f"{V2}/ports", json={"port": {"network_id": net}})
    assert r.status_code == 201, r.text
    port: dict[str, Any] = r.json()["port"]
    return port


async def test_router_gateway_interfaces_and_their_errors(api: ApiHarness) -> None:
    async with await api.login("admin") as admin, await api.login("demo") as demo:
        public, public_subnet = await _external(admin)
        net = await _network(demo, "private", "10.20.0.0/24")
        subnet = await _subnet_of(demo, net)
        # Every project sees the external network (to name it as a gateway or pool).
        seen = (await demo.get(f"{V2}/networks", params={"router:external": "true"})).json()
        assert [n["id"] for n in seen["networks"]] == [public]
        assert (await demo.get(f"{V2}/subnets/{public_subnet}")).status_code == 200
        # ... but cannot put a port on it.
        r = await demo.post(f"{V2}/ports", json={"port": {"network_id": public}})
        _neutron_error(r, 404, "NetworkNotFound")

        r = await demo.post(f"{V2}/routers", json={"router": {"name": "r1"}})
        assert r.status_code == 201, r.text
        router = r.json()["router"]
        assert router["external_gateway_info"] is None and router["status"] == "ACTIVE"
        rid = router["id"]
        # A gateway on a network that is not external: 400; on the external one: an address.
        r = await demo.put(
            f"{V2}/routers/{rid}",
            json={"router": {"external_gateway_info": {"network_id": net}}},
        )
        _neutron_error(r, 400, "BadRequest")
        r = await demo.put(
            f"{V2}/routers/{rid}",
            json={"router": {"external_gateway_info": {"network_id": public}}},
        )
        assert r.status_code == 200, r.text
        gateway = r.json()["router"]["external_gateway_info"]
        # No SNAT through the router for ports without a floating IP: shown as false.
        assert gateway["network_id"] == public and gateway["enable_snat"] is False
        assert gateway["external_fixed_ips"] == [
            {"subnet_id": public_subnet, "ip_address": "203.0.113.2"}
        ]
        # Setting SNAT is for admins (Neutron's policy), and only off is taken.
        r = await demo.put(
            f"{V2}/routers/{rid}",
            json={
                "router": {"external_gateway_info": {"network_id": public, "enable_snat": False}}
            },
        )
        _neutron_error(r, 403)
        r = await admin.put(
            f"{V2}/routers/{rid}",
            json={"router": {"external_gateway_info": {"network_id": public, "enable_snat": True}}},
        )
        _neutron_error(r, 400, "BadRequest")
        r = await demo.put(
            f"{V2}/routers/{rid}", json={"router": {"external_gateway_info": {"x": 1}}}
        )
        _neutron_error(r, 400)

        # An interface by subnet holds the subnet's gateway address.
        r = await demo.put(f"{V2}/routers/{rid}/add_router_interface", json={"subnet_id": subnet})
        assert r.status_code == 200, r.text
        interface = r.json()
        assert interface["id"] == rid and interface["subnet_id"] == subnet
        assert interface["subnet_ids"] == [subnet] and interface["network_id"] == net
        port = (await demo.get(f"{V2}/ports/{interface['port_id']}")).json()["port"]
        assert port["device_owner"] == "network:router_interface" and port["device_id"] == rid
        assert port["fixed_ips"] == [{"subnet_id": subnet, "ip_address": "10.20.0.1"}]
        # The port API neither deletes nor moves it; the same subnet again is 400;
        # on another router 409.
        _neutron_error(await demo.delete(f"{V2}/ports/{port['id']}"), 409, "ServicePortInUse")
        r = await demo.put(f"{V2}/ports/{port['id']}", json={"port": {"device_id": "x"}})
        _neutron_error(r, 409, "ServicePortInUse")
        # Nor may a project make a port of its own pass for a router's interface.
        for body in (
            {"port": {"network_id": net, "device_owner": "network:router_interface"}},
            {"port": {"network_id": net, "device_owner": "network:floatingip"}},
        ):
            _neutron_error(await demo.post(f"{V2}/ports", json=body), 403)
        mine = await _port(demo, net)
        r = await demo.put(
            f"{V2}/ports/{mine['id']}",
            json={"port": {"device_owner": "network:router_interface", "device_id": rid}},
        )
        _neutron_error(r, 403)
        assert (await demo.delete(f"{V2}/ports/{mine['id']}")).status_code == 204
        # Its address may change within its subnet (Neutron allows it), not its subnet.
        r = await demo.put(
            f"{V2}/ports/{port['id']}", json={"port": {"fixed_ips": [{"subnet_id": subnet}]}}
        )
        assert r.status_code == 200, r.text
        assert r.json()["port"]["fixed_ips"][0]["subnet_id"] == subnet
        other_net = await _network(demo, "third", "10.22.0.0/24")
        r = await demo.put(
            f"{V2}/ports/{port['id']}",
            json={"port": {"fixed_ips": [{"subnet_id": await _subnet_of(demo, other_net)}]}},
        )
        _neutron_error(r, 400)
        r = await demo.put(
            f"{V2}/ports/{port['id']}",
            json={"port": {"fixed_ips": [{"subnet_id": subnet, "ip_address": "10.20.0.1"}]}},
        )
        assert r.status_code == 200, r.text
        # distributed and ha: admin-only, and only false (one kind of router here).
        _neutron_error(
            await demo.post(f"{V2}/routers", json={"router": {"distributed": True}}), 403
        )
        r = await admin.post(f"{V2}/routers", json={"router": {"ha": True}})
        _neutron_error(r, 400, "BadRequest")
        r = await demo.put(f"{V2}/routers/{rid}/add_router_interface", json={"subnet_id": subnet})
        _neutron_error(r, 400, "BadRequest")
        r2 = (await demo.post(f"{V2}/routers", json={"router": {"name": "r2"}})).json()["router"]
        r = await demo.put(
            f"{V2}/routers/{r2['id']}/add_router_interface", json={"subnet_id": subnet}
        )
        _neutron_error(r, 409, "IpAddressAlreadyAllocated")
        r = await demo.put(f"{V2}/routers/{rid}/add_router_interface", json={})
        _neutron_error(r, 400)
        # A router with an interface cannot go; a subnet with one cannot either.
        _neutron_error(await demo.delete(f"{V2}/routers/{rid}"), 409, "RouterInUse")
        _neutron_error(await demo.delete(f"{V2}/subnets/{subnet}"), 409, "SubnetInUse")
        # Others see none of it.
        async with await api.login("other") as other:
            _neutron_error(await other.get(f"{V2}/routers/{rid}"), 404, "RouterNotFound")
            assert (await other.get(f"{V2}/routers")).json()["routers"] == []
        listed = (await demo.get(f"{V2}/routers", params={"name": "r1"})).json()["routers"]
        assert [r["id"] for r in listed] == [rid]

        # By port: a free port of the project becomes the interface.
        net2 = await _network(demo, "second", "10.21.0.0/24")
        given = await _port(demo, net2)
        r = await demo.put(
            f"{V2}/routers/{r2['id']}/add_router_interface", json={"port_id": given["id"]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["port_id"] == given["id"]
        r = await demo.put(
            f"{V2}/routers/{rid}/remove_router_interface", json={"port_id": given["id"]}
        )
        _neutron_error(r, 404, "RouterInterfaceNotFound")
        r = await demo.put(
            f"{V2}/routers/{r2['id']}/remove_router_interface", json={"subnet_id": subnet}
        )
        _neutron_error(r, 404, "RouterInterfaceNotFoundForSubnet")
        r = await demo.put(
            f"{V2}/routers/{r2['id']}/remove_router_interface", json={"port_id": given["id"]}
        )
        assert r.status_code == 200, r.text
        _neutron_error(await demo.get(f"{V2}/ports/{given['id']}"), 404)

        r = await demo.put(
            f"{V2}/routers/{rid}/remove_router_interface", json={"subnet_id": subnet}
        )
        assert r.status_code == 200, r.text
        assert (await demo.delete(f"{V2}/routers/{rid}")).status_code == 204
        # Its gateway port went with it: the external network can be deleted.
        assert (await demo.delete(f"{V2}/routers/{r2['id']}")).status_code == 204
        assert (await admin.delete(f"{V2}/networks/{public}")).status_code == 204


async def test_floating_ips_allocate_associate_and_errors(api: ApiHarness) -> None:
    async with await api.login("admin") as admin, await api.login("demo") as demo:
        public, public_subnet = await _external(admin)
        net = await _network(demo, "private", "10.30.0.0/24")
        subnet = await _subnet_of(demo, net)
        port = await _port(demo, net)

        r = await demo.post(f"{V2}/floatingips", json={"floatingip": {"floating_network_id": net}})
        _neutron_error(r, 400, "BadRequest")
        r = await demo.post(
            f"{V2}/floatingips",
            json={"floatingip": {"floating_network_id": public, "floating_ip_address": "1.2.3.4"}},
        )
        _neutron_error(r, 403)
        r = await demo.post(
            f"{V2}/floatingips", json={"floatingip": {"floating_network_id": public}}
        )
        assert r.status_code == 201, r.text
        fip = r.json()["floatingip"]
        assert fip["floating_ip_address"] == "203.0.113.2"
        assert fip["status"] == "DOWN" and fip["port_id"] is None and fip["router_id"] is None
        assert fip["project_id"] == api.projects["demo"]
        # No router joins the port's subnet to the external network: Neutron's 404.
        r = await demo.put(
            f"{V2}/floatingips/{fip['id']}", json={"floatingip": {"port_id": port["id"]}}
        )
        body = _neutron_error(r, 404, "ExternalGatewayForFloatingIPNotFound")
        assert f"External network {public} is not reachable from subnet {subnet}" in body["message"]

        router = (
            await demo.post(
                f"{V2}/routers",
                json={"router": {"name": "r", "external_gateway_info": {"network_id": public}}},
            )
        ).json()["router"]
        rid = router["id"]
        r = await demo.put(f"{V2}/routers/{rid}/add_router_interface", json={"subnet_id": subnet})
        assert r.status_code == 200, r.text
        r = await demo.put(
            f"{V2}/floatingips/{fip['id']}", json={"floatingip": {"port_id": port["id"]}}
        )
        assert r.status_code == 200, r.text
        mapped = r.json()["floatingip"]
        assert mapped["port_id"] == port["id"] and mapped["router_id"] == rid
        assert mapped["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
        assert mapped["status"] == "ACTIVE"
        # A second floating IP for the same fixed address: 409; on create with port too.
        r = await demo.post(
            f"{V2}/floatingips",
            json={"floatingip": {"floating_network_id": public, "port_id": port["id"]}},
        )
        _neutron_error(r, 409, "FloatingIPPortAlreadyAssociated")
        # ... and that failed create kept nothing (its address is free again).
        r = await demo.post(
            f"{V2}/floatingips", json={"floatingip": {"floating_network_id": public}}
        )
        second = r.json()["floatingip"]
        assert second["floating_ip_address"] == "203.0.113.4", second  # .3: the router's
        # Filters.
        r = await demo.get(f"{V2}/floatingips", params={"port_id": port["id"]})
        assert [f["id"] for f in r.json()["floatingips"]] == [fip["id"]]
        r = await demo.get(f"{V2}/floatingips", params={"floating_ip_address": "203.0.113.4"})
        assert [f["id"] for f in r.json()["floatingips"]] == [second["id"]]
        r = await demo.get(f"{V2}/floatingips", params={"status": "DOWN"})
        assert [f["id"] for f in r.json()["floatingips"]] == [second["id"]]
        async with await api.login("other") as other:
            assert (await other.get(f"{V2}/floatingips")).json()["floatingips"] == []
            _neutron_error(
                await other.get(f"{V2}/floatingips/{fip['id']}"), 404, "FloatingIPNotFound"
            )
            # Another project's port is not found for this floating IP either.
            theirs = (
                await other.post(
                    f"{V2}/floatingips", json={"floatingip": {"floating_network_id": public}}
                )
            ).json()["floatingip"]
            r = await other.put(
                f"{V2}/floatingips/{theirs['id']}", json={"floatingip": {"port_id": port["id"]}}
            )
            _neutron_error(r, 404, "PortNotFound")
            assert (await other.delete(f"{V2}/floatingips/{theirs['id']}")).status_code == 204

        # The port's fixed address changed: the floating IP mapped to the old one is unmapped.
        other = await _port(demo, net)
        r = await demo.put(
            f"{V2}/floatingips/{second['id']}", json={"floatingip": {"port_id": other["id"]}}
        )
        assert r.json()["floatingip"]["fixed_ip_address"] == other["fixed_ips"][0]["ip_address"]
        r = await demo.put(
            f"{V2}/ports/{other['id']}",
            json={"port": {"fixed_ips": [{"subnet_id": subnet, "ip_address": "10.30.0.99"}]}},
        )
        assert r.status_code == 200, r.text
        unmapped = (await demo.get(f"{V2}/floatingips/{second['id']}")).json()["floatingip"]
        assert unmapped["port_id"] is None and unmapped["status"] == "DOWN"
        assert (await demo.delete(f"{V2}/ports/{other['id']}")).status_code == 204

        # The interface carries a floating IP: it cannot be removed, nor the gateway cleared.
        r = await demo.put(
            f"{V2}/routers/{rid}/remove_router_interface", json={"subnet_id": subnet}
        )
        _neutron_error(r, 409, "RouterInterfaceInUseByFloatingIP")
        r = await demo.put(f"{V2}/routers/{rid}", json={"router": {"external_gateway_info": {}}})
        _neutron_error(r, 409, "RouterExternalGatewayInUseByFloatingIp")

        # Deleting the port disassociates its floating IP, which stays the project's.
        assert (await demo.delete(f"{V2}/ports/{port['id']}")).status_code == 204
        kept = (await demo.get(f"{V2}/floatingips/{fip['id']}")).json()["floatingip"]
        assert kept["port_id"] is None and kept["fixed_ip_address"] is None
        assert kept["status"] == "DOWN" and kept["router_id"] is None
        r = await demo.put(
            f"{V2}/routers/{rid}/remove_router_interface", json={"subnet_id": subnet}
        )
        assert r.status_code == 200, r.text

        # The external network is in use while floating IPs hold addresses on it.
        _neutron_error(await admin.delete(f"{V2}/networks/{public}"), 409, "NetworkInUse")
        for row in (fip, second):
            assert (await demo.delete(f"{V2}/floatingips/{row['id']}")).status_code == 204
        _neutron_error(await demo.get(f"{V2}/floatingips/{fip['id']}"), 404)
        assert (await demo.delete(f"{V2}/routers/{rid}")).status_code == 204
        assert (await admin.delete(f"{V2}/subnets/{public_subnet}")).status_code == 204


async def test_router_and_floating_ip_quotas(api: ApiHarness) -> None:
    async with await api.login("admin") as admin, await api.login("demo") as demo:
        public, _ = await _external(admin)
        project = api.projects["demo"]
        r = await admin.put(
            f"{V2}/quotas/{project}", json={"quota": {"router": 1, "floatingip": 1}}
        )
        assert r.status_code == 200, r.text
        assert r.json()["quota"]["router"] == 1 and r.json()["quota"]["floatingip"] == 1
        assert (await demo.post(f"{V2}/routers", json={"router": {}})).status_code == 201
        _neutron_error(await demo.post(f"{V2}/routers", json={"router": {}}), 409, "OverQuota")
        body = {"floatingip": {"floating_network_id": public}}
        assert (await demo.post(f"{V2}/floatingips", json=body)).status_code == 201
        _neutron_error(await demo.post(f"{V2}/floatingips", json=body), 409, "OverQuota")
        details = (await demo.get(f"{V2}/quotas/{project}/details.json")).json()["quota"]
        assert details["router"] == {"limit": 1, "used": 1, "reserved": 0}
        assert details["floatingip"] == {"limit": 1, "used": 1, "reserved": 0}
