"""A server's networks in the compute API: create's networks, os-interface, security groups.

No bus here (see test_servers.py): the build task that makes the ports does
not run, so ports come from the allocation function itself or os-interface.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from nubes import exception
from nubes.network import ports
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_servers import body, cloud, create, login, make_active  # noqa: F401

URL = "/compute/v2.1/servers"
NET = "/networking/v2.0"


async def _network(c: httpx.AsyncClient, name: str, cidr: str) -> dict[str, Any]:
    net = (await c.post(f"{NET}/networks", json={"network": {"name": name}})).json()["network"]
    r = await c.post(f"{NET}/subnets", json={"subnet": {"network_id": net["id"], "cidr": cidr}})
    assert r.status_code == 201, r.text
    return dict(net)


async def test_create_refuses_what_cannot_be_used(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo", "2.37") as c, await login(cloud, "other") as o:
        net = await _network(c, "n1", "10.70.0.0/24")
        theirs = (await o.post(f"{NET}/networks", json={"network": {}})).json()["network"]
        their_port = await o.post(
            f"{NET}/ports",
            json={"port": {"network_id": (await _network(o, "o", "10.71.0.0/24"))["id"]}},
        )
        cases: list[tuple[dict[str, Any], str]] = [
            ({}, "networks"),  # required from 2.37
            ({"networks": [{"uuid": theirs["id"]}]}, "could not be found"),
            ({"networks": [{"port": their_port.json()["port"]["id"]}]}, "could not be found"),
            (
                {"networks": [{"uuid": net["id"], "fixed_ip": "10.99.0.5"}]},
                "is not on any subnet",
            ),
            (
                {"networks": [{"uuid": net["id"], "fixed_ip": "10.70.0.5"}], "max_count": 2},
                "multiple instances",
            ),
            (
                {"networks": [{"uuid": net["id"]}], "security_groups": [{"name": "nope"}]},
                "Security group nope not found",
            ),
        ]
        for server, words in cases:
            r = await c.post(URL, json=body(cloud, **server))
            assert r.status_code == 400, (server, r.text)
            assert words in r.json()["badRequest"]["message"], r.text
        await _network(c, "n2", "10.72.0.0/24")
        r = await c.post(URL, json=body(cloud, networks="auto"))
        assert r.status_code == 400 and "several networks" in r.text
        # A given port is claimed at once: a second server cannot take it.
        port = (await c.post(f"{NET}/ports", json={"port": {"network_id": net["id"]}})).json()
        server = await create(c, cloud, networks=[{"port": port["port"]["id"]}])
        r = await c.post(URL, json=body(cloud, networks=[{"port": port["port"]["id"]}]))
        assert r.status_code == 409, r.text
        shown = (await c.get(f"{NET}/ports/{port['port']['id']}")).json()["port"]
        assert shown["device_id"] == server["id"]


async def test_auto_makes_one_network_for_the_project(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo", "2.37") as c:
        first = await create(c, cloud, networks="auto")
        second = await create(c, cloud, networks="auto")
        nets = (await c.get(f"{NET}/networks")).json()["networks"]
        assert [n["name"] for n in nets] == ["auto_allocated_network"]
        for server in (first, second):
            made = await ports.allocate_for_instance(cloud.state.db, cloud.state.conf, server["id"])
            assert len(made) == 1
            # A repeat (a retried step) makes nothing new.
            assert (
                await ports.allocate_for_instance(cloud.state.db, cloud.state.conf, server["id"])
                == made
            )
        await make_active(cloud, first["id"])
        shown = (await c.get(f"{URL}/{first['id']}")).json()["server"]
        (entry,) = shown["addresses"]["auto_allocated_network"]
        assert entry["addr"] == "10.0.0.2" and entry["version"] == 4
        assert entry["OS-EXT-IPS:type"] == "fixed"
        assert entry["OS-EXT-IPS-MAC:mac_addr"].startswith("fa:16:3e:")
        r = await c.get(f"{URL}/{first['id']}/ips")
        assert r.json() == {
            "addresses": {"auto_allocated_network": [{"version": 4, "addr": "10.0.0.2"}]}
        }
        r = await c.get(f"{URL}/{first['id']}/ips/auto_allocated_network")
        assert r.status_code == 200
        assert (await c.get(f"{URL}/{first['id']}/ips/other")).status_code == 404
        listed = (await c.get(f"{URL}/detail", params={"ip": r"10\.0\.0\.3"})).json()
        assert [s["id"] for s in listed["servers"]] == [second["id"]]
        assert (await c.get(URL, params={"ip": "("})).status_code == 400


async def test_interfaces_and_security_groups(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo", "2.37") as c:
        net = await _network(c, "n1", "10.80.0.0/24")
        server = await create(c, cloud, networks="none")
        await make_active(cloud, server["id"])
        iface = f"{URL}/{server['id']}/os-interface"
        r = await c.post(iface, json={"interfaceAttachment": {"net_id": net["id"]}})
        assert r.status_code == 200, r.text
        made = r.json()["interfaceAttachment"]
        assert made["fixed_ips"][0]["ip_address"] == "10.80.0.2"
        given = (await c.post(f"{NET}/ports", json={"port": {"network_id": net["id"]}})).json()
        given_id = given["port"]["id"]
        r = await c.post(iface, json={"interfaceAttachment": {"port_id": given_id}})
        assert r.status_code == 200, r.text
        listed = (await c.get(iface)).json()["interfaceAttachments"]
        assert {i["port_id"] for i in listed} == {made["port_id"], given_id}
        bound = (await c.get(f"{NET}/ports/{given_id}")).json()["port"]
        assert bound["binding:host_id"] == "fake-0" and bound["status"] == "ACTIVE"
        for bad in (
            {"interfaceAttachment": {}},
            {"interfaceAttachment": {"port_id": given_id, "net_id": net["id"]}},
            {"interfaceAttachment": {"bogus": 1}},
        ):
            assert (await c.post(iface, json=bad)).status_code == 400
        r = await c.post(iface, json={"interfaceAttachment": {"port_id": given_id}})
        assert r.status_code == 409  # in use

        action = f"{URL}/{server['id']}/action"
        web = await c.post(f"{NET}/security-groups", json={"security_group": {"name": "web"}})
        assert web.status_code == 201
        r = await c.post(action, json={"addSecurityGroup": {"name": "web"}})
        assert r.status_code == 202, r.text
        groups = (await c.get(f"{URL}/{server['id']}/os-security-groups")).json()
        assert sorted(g["name"] for g in groups["security_groups"]) == ["default", "web"]
        shown = (await c.get(f"{URL}/{server['id']}")).json()["server"]
        assert shown["security_groups"] == [{"name": "default"}, {"name": "web"}]
        # An update's short body (before 2.75) has no groups, as Nova's; 2.75's full one has.
        r = await c.put(f"{URL}/{server['id']}", json={"server": {"name": "renamed"}})
        assert r.status_code == 200 and "security_groups" not in r.json()["server"]
        # Its addresses without the extended attributes (MAC, type), as Nova's.
        short = [a for addrs in r.json()["server"]["addresses"].values() for a in addrs]
        assert short and all(set(a) == {"version", "addr"} for a in short)
        full = [a for addrs in shown["addresses"].values() for a in addrs]
        assert all("OS-EXT-IPS-MAC:mac_addr" in a for a in full)
        headers = {"OpenStack-API-Version": "compute 2.75"}
        r = await c.put(f"{URL}/{server['id']}", json={"server": {}}, headers=headers)
        assert r.json()["server"]["security_groups"] == [{"name": "default"}, {"name": "web"}]
        r = await c.post(action, json={"addSecurityGroup": {"name": "web"}})
        assert r.status_code == 400
        r = await c.post(action, json={"addSecurityGroup": {"name": "nope"}})
        assert r.status_code == 404
        r = await c.post(action, json={"removeSecurityGroup": {"name": "web"}})
        assert r.status_code == 202
        r = await c.post(action, json={"removeSecurityGroup": {"name": "web"}})
        assert r.status_code == 400

        # Detach: a port nubes made goes; the user's port stays, unbound.
        assert (await c.delete(f"{iface}/{made['port_id']}")).status_code == 202
        assert (await c.get(f"{NET}/ports/{made['port_id']}")).status_code == 404
        assert (await c.delete(f"{iface}/{given_id}")).status_code == 202
        kept = (await c.get(f"{NET}/ports/{given_id}")).json()["port"]
        assert kept["device_id"] == "" and kept["binding:host_id"] == ""
        assert (await c.delete(f"{iface}/{given_id}")).status_code == 404


@pytest.mark.parametrize("version", ["2.1", "2.36"])
async def test_before_237_the_one_network_is_used(cloud: ApiHarness, version: str) -> None:  # noqa: F811
    async with await login(cloud, "demo", version) as c:
        server = await create(c, cloud)  # no network: boots without ports
        assert (
            await ports.allocate_for_instance(cloud.state.db, cloud.state.conf, server["id"]) == []
        )
        await _network(c, "only", "10.90.0.0/24")
        server = await create(c, cloud)
        made = await ports.allocate_for_instance(cloud.state.db, cloud.state.conf, server["id"])
        assert len(made) == 1
        await _network(c, "second", "10.91.0.0/24")
        r = await c.post(URL, json=body(cloud))
        assert r.status_code == 409 and "Multiple possible networks" in r.text


async def test_concurrent_allocations_share_a_transaction_and_fail_alone(
    cloud: ApiHarness,  # noqa: F811
) -> None:
    """Builds' ports are made together; when the subnet runs out, only the ones
    that did not fit fail, and they leave no port behind."""
    async with await login(cloud, "demo", "2.37") as c:
        net = await _network(c, "small", "10.93.0.0/29")  # .2 - .6: five addresses
        r = await c.post(
            URL,
            json=body(
                cloud, networks=[{"uuid": net["id"]}], max_count=8, return_reservation_id=True
            ),
        )
        assert r.status_code == 202, r.text
        listed = (await c.get(URL, params={"reservation_id": r.json()["reservation_id"]})).json()
        uuids = [s["id"] for s in listed["servers"]]
        assert len(uuids) == 8
        db, conf = cloud.state.db, cloud.state.conf
        outcomes = await asyncio.gather(
            *(ports.allocate_for_instance(db, conf, u) for u in uuids), return_exceptions=True
        )
        made = [o for o in outcomes if isinstance(o, list)]
        refused = [o for o in outcomes if isinstance(o, exception.IpAddressGenerationFailure)]
        assert len(made) == 5 and len(refused) == 3, outcomes
        held = (await c.get(f"{NET}/ports?network_id={net['id']}")).json()["ports"]
        assert sorted(p["id"] for p in held) == sorted(p for ids in made for p in ids)
        assert sorted(p["fixed_ips"][0]["ip_address"] for p in held) == [
            f"10.93.0.{n}" for n in range(2, 7)
        ]
        # Five of eight fit: the shared transaction failed and each ran alone.
        batcher = ports.allocation_batcher(db)
        assert batcher is not None and (batcher.batches, batcher.keys) == (8, 8)


async def test_interface_tag_from_2_70_and_device_tags_refused(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo", "2.69") as c:
        net = await _network(c, "n1", "10.81.0.0/24")
        server = await create(c, cloud, networks="none")
        await make_active(cloud, server["id"])
        iface = f"{URL}/{server['id']}/os-interface"
        tagged = {"interfaceAttachment": {"net_id": net["id"], "tag": "nic1"}}
        r = await c.post(iface, json=tagged)
        assert r.json()["badRequest"]["message"] == (
            "Tagged network interface attachment is not supported for this instance."
        )
        r = await c.post(iface, json={"interfaceAttachment": {"net_id": net["id"]}})
        assert "tag" not in r.json()["interfaceAttachment"]
        (listed,) = (await c.get(iface)).json()["interfaceAttachments"]
        assert "tag" not in listed
        # Nothing can be tagged at create either (networks and disks).
        nets = [{"uuid": net["id"], "tag": "nic1"}]
        r = await c.post(URL, json=body(cloud, networks=nets))
        assert r.status_code == 400 and "Device tagging" in r.json()["badRequest"]["message"]
    async with await login(cloud, "demo", "2.70") as c:
        (listed,) = (await c.get(iface)).json()["interfaceAttachments"]
        assert listed["tag"] is None
        shown = (await c.get(f"{iface}/{listed['port_id']}")).json()["interfaceAttachment"]
        assert shown == listed
