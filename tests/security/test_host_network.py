"""A compromised compute host asks for network facts that are not its own.

What a host learns about its data plane (ports, networks, security group
rules, VXLAN peers) comes from the conductor, need-to-know only
(``nubes/conductor/dataplane.py``): another host's ports and the peers of a
network the host has no port on are refused, and what it does get holds
nothing of other hosts' ports beyond the addresses its rules filter on.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from nubes import exception
from nubes.context import RequestContext
from nubes.db.api import network
from nubes.testing.cloud import Cloud
from tests.unit.db import factories

A, B, C = "host-a", "host-b", "host-c"
TUNNEL = {A: "192.0.2.1", B: "192.0.2.2", C: "192.0.2.3"}


def _id() -> str:
    return str(uuid.uuid4())


async def _seed(cloud: Cloud) -> dict[str, Any]:
    ids: dict[str, Any] = {"net1": _id(), "net2": _id(), "sub1": _id(), "sub2": _id()}
    ids.update(g1=_id(), g2=_id(), pa=_id(), pb=_id(), pb2=_id())
    async with cloud.db.writer() as conn:
        for host in (A, B, C):
            await factories.make_node(conn, host=host, host_ip=TUNNEL[host])
        for n, (net, sub, cidr, vni) in enumerate(
            (
                (ids["net1"], ids["sub1"], "10.1.0.0/24", 101),
                (ids["net2"], ids["sub2"], "10.2.0.0/24", 102),
            )
        ):
            await network.create(
                conn,
                "networks",
                {"id": net, "project_id": "p1", "mtu": 1450, "segmentation_id": vni},
            )
            await network.create(
                conn,
                "subnets",
                {
                    "id": sub,
                    "network_id": net,
                    "project_id": "p1",
                    "ip_version": 4,
                    "cidr": cidr,
                    "gateway_ip": cidr.replace("0/24", "1"),
                    "allocation_pools": [],
                    "dns_nameservers": ["192.0.2.53"] if n == 0 else [],
                    "host_routes": [],
                },
            )
        for group in ("g1", "g2"):
            await network.create(conn, "security_groups", {"id": ids[group], "project_id": "p1"})
        rules = [
            ("g1", "ingress", None, ids["g1"]),
            ("g1", "egress", None, None),
            ("g2", "ingress", "203.0.113.0/24", None),
        ]
        for group, direction, prefix, remote in rules:
            await network.create(
                conn,
                "security_group_rules",
                {
                    "id": _id(),
                    "security_group_id": ids[group],
                    "project_id": "p1",
                    "direction": direction,
                    "ethertype": "IPv4",
                    "remote_ip_prefix": prefix,
                    "remote_group_id": remote,
                },
            )
        ports = [
            ("pa", "net1", "sub1", "10.1.0.10", A, "g1"),
            ("pb", "net1", "sub1", "10.1.0.11", B, "g1"),
            ("pb2", "net2", "sub2", "10.2.0.10", B, "g2"),
        ]
        for i, (port, net, sub, address, host, group) in enumerate(ports):
            await network.create(
                conn,
                "ports",
                {
                    "id": ids[port],
                    "network_id": ids[net],
                    "project_id": "p1",
                    "mac_address": f"fa:16:3e:00:00:{i:02x}",
                    "device_id": _id(),
                    "binding_host_id": host,
                },
            )
            await network.allocate_addresses(
                conn,
                [
                    network.AddressRequest(
                        port_id=ids[port],
                        network_id=ids[net],
                        fixed_ips=[{"subnet_id": ids[sub], "ip_address": address}],
                    )
                ],
            )
            await network.set_port_groups(conn, ids[port], [ids[group]])
    return ids


@pytest.fixture
async def cloud(tmp_path: Path):
    cloud = await Cloud.start(f"sqlite:///{tmp_path / 'hostnet.sqlite'}")
    try:
        yield cloud
    finally:
        await cloud.stop()


async def test_a_host_gets_its_own_network_and_nothing_else(cloud: Cloud) -> None:
    ids = await _seed(cloud)
    attacker = (await cloud.host(A)).conductor
    ctxt = RequestContext()

    own = await attacker.get_host_network(ctxt, A)
    assert [p.id for p in own.ports] == [ids["pa"]]
    assert [(f.ip_address) for p in own.ports for f in p.fixed_ips] == ["10.1.0.10"]
    assert [n.id for n in own.networks] == [ids["net1"]]
    assert [(n.vni, n.mtu) for n in own.networks] == [(101, 1450)]
    assert own.networks[0].subnets[0].dns_nameservers == ["192.0.2.53"]
    # Its group's remote-group rule comes resolved to the members' addresses
    # (B's port's too: A filters on it); B's other group is not shown.
    assert [g.id for g in own.security_groups] == [ids["g1"]]
    ingress = [r for r in own.security_groups[0].rules if r.direction == "ingress"]
    assert ingress[0].remote_addresses == ["10.1.0.10", "10.1.0.11"]
    peers = await attacker.get_network_peers(ctxt, [ids["net1"]])
    assert peers.peers == {ids["net1"]: [TUNNEL[B]]}

    attacks = {
        "another host's ports": lambda: attacker.get_host_network(ctxt, B),
        "a host with no ports's view": lambda: attacker.get_host_network(ctxt, C),
        "peers of a network it has no port on": lambda: attacker.get_network_peers(
            ctxt, [ids["net2"]]
        ),
        "peers of its network and another": lambda: attacker.get_network_peers(
            ctxt, [ids["net1"], ids["net2"]]
        ),
        "peers of a made-up network": lambda: attacker.get_network_peers(ctxt, [_id()]),
    }
    refused = []
    for name, attack in attacks.items():
        with pytest.raises(exception.Forbidden):
            await attack()
        refused.append(name)
    assert len(refused) == len(attacks)
    # Malformed arguments are refused too, with a typed error.
    for bad in ("not-a-list", [1, 2], ["x"] * 5000):
        with pytest.raises(exception.NubesError):
            await attacker.client.prepare(version="1.3").call(
                ctxt, "get_network_peers", network_ids=bad
            )


async def test_a_controller_reads_any_host(cloud: Cloud) -> None:
    ids = await _seed(cloud)
    from nubes.conductor.rpcapi import ConductorAPI

    controller = ConductorAPI(cloud.conductor.transport)
    b = await controller.get_host_network(RequestContext(), B)
    assert sorted(p.id for p in b.ports) == sorted([ids["pb"], ids["pb2"]])
    peers = await controller.get_network_peers(RequestContext(), [ids["net2"]])
    assert peers.peers == {ids["net2"]: [TUNNEL[B]]}


async def test_a_live_migration_destination_gets_the_arriving_guests_ports_only(
    cloud: Cloud,
) -> None:
    """The destination of a live migration needs the guest's network before
    the copy (its binding moves only at the end); it gets exactly that
    guest's ports while the migration runs, and loses them once it ended."""
    from nubes.db.api import migrations

    ids = await _seed(cloud)
    async with cloud.db.reader() as conn:
        port = await network.get(conn, "ports", ids["pb2"])
    record = {
        "uuid": _id(),
        "instance_uuid": port["device_id"],
        "source_compute": B,
        "dest_compute": C,
        "migration_type": "live-migration",
        "status": "running",
    }
    async with cloud.db.writer() as conn:
        await factories.make_instance(conn, uuid=port["device_id"], host=B)
        row = await migrations.create(conn, record)
    dest = (await cloud.host(C)).conductor
    ctxt = RequestContext()
    view = await dest.get_host_network(ctxt, C)
    assert [p.id for p in view.ports] == [ids["pb2"]]
    assert [n.id for n in view.networks] == [ids["net2"]]
    peers = await dest.get_network_peers(ctxt, [ids["net2"]])
    assert peers.peers == {ids["net2"]: [TUNNEL[B]]}
    # B's other port (another instance) is still not C's business.
    with pytest.raises(exception.Forbidden):
        await dest.get_network_peers(ctxt, [ids["net1"]])
    for status in ("completed", "failed"):
        async with cloud.db.writer() as conn:
            await migrations.update(conn, row["id"], {"status": status})
        assert (await dest.get_host_network(ctxt, C)).ports == []
        with pytest.raises(exception.Forbidden):
            await dest.get_network_peers(ctxt, [ids["net2"]])


async def _floating(cloud: Cloud, ids: dict[str, Any]) -> dict[str, str]:
    """An external network with floating IPs mapped to A's port and B's ports."""
    ext, ext_sub = _id(), _id()
    fips = {"pa": "198.51.100.10", "pb": "198.51.100.11", "pb2": "198.51.100.12"}
    async with cloud.db.writer() as conn:
        await network.create(
            conn,
            "networks",
            {
                "id": ext,
                "project_id": "admin",
                "mtu": 1500,
                "segmentation_id": 999,
                "external": True,
                "physical_network": "physnet1",
            },
        )
        await network.create(
            conn,
            "subnets",
            {
                "id": ext_sub,
                "network_id": ext,
                "project_id": "admin",
                "ip_version": 4,
                "cidr": "198.51.100.0/24",
                "gateway_ip": "198.51.100.1",
                "allocation_pools": [],
                "dns_nameservers": [],
                "host_routes": [],
            },
        )
        fixed = await network.fixed_ips_by_port(conn, [ids[p] for p in fips])
        for n, (port, address) in enumerate(fips.items()):
            holder, fip = _id(), _id()
            await network.create(
                conn,
                "ports",
                {
                    "id": holder,
                    "network_id": ext,
                    "project_id": "",
                    "mac_address": f"fa:16:3e:01:00:{n:02x}",
                    "device_id": fip,
                    "device_owner": network.FLOATING_IP,
                },
            )
            await network.allocate_addresses(
                conn,
                [
                    network.AddressRequest(
                        holder, ext, [{"subnet_id": ext_sub, "ip_address": address}]
                    )
                ],
            )
            await network.create(
                conn,
                "floatingips",
                {
                    "id": fip,
                    "project_id": "p1",
                    "floating_network_id": ext,
                    "floating_port_id": holder,
                    "floating_ip_address": address,
                    "fixed_port_id": ids[port],
                    "fixed_ip_address": fixed[ids[port]][0]["ip_address"],
                    "status": "ACTIVE",
                },
            )
    return {"ext": ext, **fips}


async def test_a_host_learns_only_its_own_ports_floating_ips(cloud: Cloud) -> None:
    ids = await _seed(cloud)
    fips = await _floating(cloud, ids)
    ctxt = RequestContext()
    a = await (await cloud.host(A)).conductor.get_host_network(ctxt, A)
    assert [(f.floating_ip_address, f.fixed_ip_address, f.port_id) for f in a.floating_ips] == [
        (fips["pa"], "10.1.0.10", ids["pa"])
    ]
    assert [(n.id, n.physical_network) for n in a.external_networks] == [(fips["ext"], "physnet1")]
    assert [s.cidr for s in a.external_networks[0].subnets] == ["198.51.100.0/24"]
    # The external network is no network of A's data plane (no bridge with its gateway).
    assert fips["ext"] not in {n.id for n in a.networks}
    b = await (await cloud.host(B)).conductor.get_host_network(ctxt, B)
    assert sorted(f.floating_ip_address for f in b.floating_ips) == [fips["pb"], fips["pb2"]]
    # A host with no port has no floating IP to learn; nor may it ask for another's.
    c = await (await cloud.host(C)).conductor.get_host_network(ctxt, C)
    assert c.floating_ips == [] and c.external_networks == []
    with pytest.raises(exception.Forbidden):
        await (await cloud.host(C)).conductor.get_host_network(ctxt, B)
    # A guest live-migrating in brings its ports, not its floating IP: the
    # source answers for the address until the binding moves.
    from nubes.db.api import migrations

    async with cloud.db.reader() as conn:
        port = await network.get(conn, "ports", ids["pb2"])
    async with cloud.db.writer() as conn:
        await factories.make_instance(conn, uuid=port["device_id"], host=B)
        await migrations.create(
            conn,
            {
                "uuid": _id(),
                "instance_uuid": port["device_id"],
                "source_compute": B,
                "dest_compute": C,
                "migration_type": "live-migration",
                "status": "running",
            },
        )
    c = await (await cloud.host(C)).conductor.get_host_network(ctxt, C)
    assert [p.id for p in c.ports] == [ids["pb2"]] and c.floating_ips == []
    # The port deleted: its floating IP is unmapped and leaves B's view.
    async with cloud.db.writer() as conn:
        await network.delete_port(conn, ids["pb2"])
    b = await (await cloud.host(B)).conductor.get_host_network(ctxt, B)
    assert [f.floating_ip_address for f in b.floating_ips] == [fips["pb"]]
