"""The metadata service end to end: a guest's request at its host's proxy,
answered by the conductor under the host's identity (every service in one
process, fake hosts; no data plane, so a local forwarder names the guest).

A server with a key pair, user data, metadata and a port reads its
meta_data.json, network_data.json, user_data and the EC2 tree through the
proxy of its own host. The same request at another host's proxy, or for an
address no port holds, is 404 (the conductor refused it).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nubes.api import keypairs
from nubes.api.moves import MovesAPI
from nubes.compute.host import ComputeHost
from nubes.compute.virt.fake import FakeDriver, FakeInstance
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.api import flavors, services
from nubes.metadata import configdrive
from nubes.metadata.proxy import MetadataProxy
from nubes.network import ports as network_ports
from nubes.network.resources import NetworkService
from nubes.testing.allinone import AllInOne

pytestmark = pytest.mark.timeout(120)

IMAGE = {"id": "img-1", "properties": {}}
CTXT = RequestContext(user_id="u1", project_id="p1", roles=["member"])
ADMIN = RequestContext(user_id="admin", project_id="p1", roles=["admin", "member"])
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0bL2ZJc0uC6ZsmlhCXp4mnhmqmTJqSnyYzZq0pHi5G me@here"
USER_DATA = b"#cloud-config\nruncmd: [echo hello]\n"


class Guest:
    def __init__(self, cloud: AllInOne, uuid: str, host: str, network_id: str, address: str):
        self.cloud, self.uuid, self.host = cloud, uuid, host
        self.network_id, self.address = network_id, address
        self.service: NetworkService | None = None

    async def boot(self, **kwargs: Any) -> dict[str, Any]:
        """Another server on the network; its row once built."""
        assert self.service is not None
        nics = await network_ports.resolve(self.service, CTXT, [{"uuid": self.network_id}], None, 1)
        (inst,) = await self.cloud.api.create_servers(
            CTXT, name="db", flavor="small", image=IMAGE, network_requests=nics, **kwargs
        )
        await self.cloud.wait_tasks([inst.uuid], timeout=60)
        (row,) = await self.cloud.instances([inst.uuid])
        assert row["vm_state"] == "active"
        return row

    def guest_on(self, host: str, uuid: str) -> FakeInstance:
        node: ComputeHost = self.cloud.computes[host].hooks[0]  # type: ignore[assignment]
        assert isinstance(node.driver, FakeDriver)
        return node.driver.instances[uuid]

    def proxy(self, host: str | None = None) -> MetadataProxy:
        node: ComputeHost = self.cloud.computes[host or self.host].hooks[0]  # type: ignore[assignment]
        assert node.metadata is not None
        return node.metadata

    async def get(
        self, path: str, *, host: str | None = None, address: str | None = None
    ) -> tuple[int, bytes]:
        """GET ``path`` at a host's proxy as its local forwarder would send it."""
        proxy = self.proxy(host)
        if not proxy.listeners:
            await proxy.listen("127.0.0.1", 0)
        where = proxy.listeners[0].address
        reader, writer = await asyncio.open_connection(*where)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n"
            f"X-Forwarded-For: {address or self.address}\r\n"
            f"X-Nubes-Network-Id: {self.network_id}\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await reader.read()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), body


@pytest.fixture
async def guest(tmp_path: Path) -> AsyncIterator[Guest]:
    cloud = await AllInOne.start(f"sqlite:///{tmp_path / 'md.sqlite'}", hosts=2)
    try:
        async with cloud.db.writer() as conn:
            await flavors.create(
                conn,
                {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 64, "root_gb": 1},
            )
        service = NetworkService(cloud.db, cloud.conf)
        net = await service.create_network(CTXT, {"name": "net"})
        await service.create_subnet(
            CTXT,
            {"network_id": net["id"], "cidr": "10.7.0.0/24", "dns_nameservers": ["10.7.0.53"]},
        )
        await keypairs.create(
            cloud.db,
            cloud.conf,
            project_id="p1",
            user_id="u1",
            name="mykey",
            key_type="ssh",
            public_key=KEY,
        )
        nics = await network_ports.resolve(service, CTXT, [{"uuid": net["id"]}], None, 1)
        (inst,) = await cloud.api.create_servers(
            CTXT,
            name="web",
            flavor="small",
            image=IMAGE,
            network_requests=nics,
            key_name="mykey",
            metadata={"role": "web"},
            user_data=base64.b64encode(USER_DATA).decode(),
        )
        await cloud.wait_tasks([inst.uuid], timeout=60)
        (row,) = await cloud.instances([inst.uuid])
        assert row["vm_state"] == "active"
        async with cloud.db.reader() as conn:
            (port,) = await network_ports.interfaces(conn, inst.uuid)
        address = port["fixed_ips"][0]["ip_address"]
        found = Guest(cloud, inst.uuid, row["host"], net["id"], address)
        found.service = service
        yield found
    finally:
        await cloud.stop()


async def test_a_guest_reads_its_openstack_metadata(guest: Guest) -> None:
    status, body = await guest.get("/openstack/latest/meta_data.json")
    assert status == 200
    meta = json.loads(body)
    assert meta["uuid"] == guest.uuid
    assert (meta["name"], meta["project_id"], meta["meta"]) == ("web", "p1", {"role": "web"})
    assert meta["public_keys"] == {"mykey": KEY}
    assert meta["keys"] == [{"name": "mykey", "type": "ssh", "data": KEY}]
    assert await guest.get("/openstack/latest/user_data") == (200, USER_DATA)
    status, body = await guest.get("/openstack/latest/network_data.json")
    data = json.loads(body)
    (link,) = data["links"]
    (network,) = data["networks"]
    assert (network["ip_address"], network["netmask"]) == (guest.address, "255.255.255.0")
    assert network["link"] == link["id"] and network["network_id"] == guest.network_id
    assert {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.7.0.1"} in network["routes"]
    assert data["services"] == [{"type": "dns", "address": "10.7.0.53"}]
    assert await guest.get("/openstack/latest/vendor_data2.json") == (200, b"{}")
    status, listing = await guest.get("/openstack")
    assert status == 200 and listing.decode().split("\n")[-1] == "latest"


async def test_a_guest_reads_its_ec2_metadata(guest: Guest) -> None:
    assert await guest.get("/latest/meta-data/public-keys/0/openssh-key") == (200, KEY.encode())
    assert await guest.get("/latest/meta-data/public-keys") == (200, b"0=mykey")
    assert await guest.get("/latest/meta-data/local-ipv4") == (200, guest.address.encode())
    assert await guest.get("/latest/meta-data/instance-type") == (200, b"small")
    assert await guest.get("/latest/user-data") == (200, USER_DATA)
    status, listing = await guest.get("/latest/meta-data/")
    assert status == 200
    assert {"instance-id", "hostname", "placement/", "public-keys/"} <= set(
        listing.decode().split("\n")
    )
    assert (await guest.get("/latest/meta-data/nothing-here"))[0] == 404


async def test_ec2_public_ipv4_is_the_guests_floating_ip(guest: Guest) -> None:
    # (Asked once it is mapped: a host caches a guest's metadata, as Nova's.)
    service = guest.service
    admin = RequestContext(user_id="admin", project_id="admin", roles=["admin"])
    public = await service.create_network(admin, {"name": "public", "router:external": True})
    await service.create_subnet(admin, {"network_id": public["id"], "cidr": "203.0.113.0/24"})
    router = await service.create_router(
        CTXT, {"external_gateway_info": {"network_id": public["id"]}}
    )
    (subnet,) = (await service.get_network(CTXT, guest.network_id))["subnets"]
    await service.add_router_interface(CTXT, router["id"], {"subnet_id": subnet})
    async with guest.cloud.db.reader() as conn:
        (port,) = await network_ports.interfaces(conn, guest.uuid)
    fip = await service.create_floatingip(
        CTXT, {"floating_network_id": public["id"], "port_id": port["id"]}
    )
    address = fip["floating_ip_address"].encode()
    assert await guest.get("/latest/meta-data/public-ipv4") == (200, address)
    assert await guest.get("/latest/meta-data/local-ipv4") == (200, guest.address.encode())


async def test_another_hosts_proxy_and_unknown_addresses_get_nothing(guest: Guest) -> None:
    other = next(h for h in guest.cloud.computes if h != guest.host)
    # The other host's proxy asks as that host: the conductor refuses it.
    assert (await guest.get("/openstack/latest/meta_data.json", host=other))[0] == 404
    # No port holds this address on the network.
    assert (await guest.get("/latest/meta-data/", address="10.7.0.250"))[0] == 404
    assert (await guest.get("/openstack/latest/meta_data.json"))[0] == 200


async def test_a_config_drive_holds_the_same_metadata(guest: Guest, tmp_path: Path) -> None:
    assert guest.guest_on(guest.host, guest.uuid).config_drive is None  # not asked for
    row = await guest.boot(
        config_drive=True, key_name="mykey", user_data=base64.b64encode(USER_DATA).decode()
    )
    drive = guest.guest_on(row["host"], row["uuid"]).config_drive
    assert drive is not None
    # The ISO the libvirt driver attaches: label config-2, Nova's file layout.
    iso = tmp_path / "disk.config"
    drive.write_iso(iso)
    label, files = configdrive.read_iso(iso)
    assert label == "config-2" and files == drive.files
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert (meta["uuid"], meta["public_keys"]) == (row["uuid"], {"mykey": KEY})
    assert files["openstack/latest/user_data"] == USER_DATA
    network = json.loads(files["openstack/latest/network_data.json"])["networks"][0]
    assert network["network_id"] == guest.network_id
    ec2 = json.loads(files["ec2/latest/meta-data.json"])
    assert ec2["public-keys"]["0"]["openssh-key"] == KEY
    assert ec2["local-ipv4"] == network["ip_address"]
    assert files["ec2/2009-04-04/user-data"] == USER_DATA


async def test_force_config_drive_gives_every_guest_one(tmp_path: Path) -> None:
    cloud = await AllInOne.start(
        f"sqlite:///{tmp_path / 'force.sqlite'}",
        hosts=1,
        overrides={"DEFAULT": {"force_config_drive": True}},
    )
    try:
        async with cloud.db.writer() as conn:
            await flavors.create(
                conn,
                {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 64, "root_gb": 1},
            )
        (inst,) = await cloud.api.create_servers(CTXT, name="plain", flavor="small", image=IMAGE)
        await cloud.wait_tasks([inst.uuid], timeout=60)
        (row,) = await cloud.instances([inst.uuid])
        node: ComputeHost = cloud.computes[row["host"]].hooks[0]  # type: ignore[assignment]
        assert isinstance(node.driver, FakeDriver)
        drive = node.driver.instances[inst.uuid].config_drive
        assert drive is not None
        meta = json.loads(drive.files["openstack/latest/meta_data.json"])
        assert (meta["uuid"], meta["name"], meta["public_keys"]) == (inst.uuid, "plain", {})
        assert "openstack/latest/user_data" not in drive.files
    finally:
        await cloud.stop()


async def test_an_evacuated_guest_gets_its_config_drive_again(guest: Guest) -> None:
    row = await guest.boot(config_drive=True)
    uuid, source = row["uuid"], row["host"]
    plain = guest.uuid if guest.host == source else None  # the fixture's, when on the same host
    await guest.cloud.stop_host(source)
    async with guest.cloud.db.writer() as conn:
        svc = await services.get_by_host_and_binary(conn, source, "compute")
        await services.update(conn, svc["id"], {"forced_down": True})
    moves = MovesAPI(guest.cloud.db, ConductorAPI(guest.cloud.api_transport), conf=guest.cloud.conf)
    for evacuated in filter(None, (uuid, plain)):
        await moves.evacuate_server(ADMIN, evacuated)
    await guest.cloud.wait_tasks([uuid], timeout=60)
    (moved,) = await guest.cloud.instances([uuid])
    assert moved["vm_state"] == "active" and moved["host"] != source
    drive = guest.guest_on(moved["host"], uuid).config_drive
    assert drive is not None
    assert json.loads(drive.files["openstack/latest/meta_data.json"])["uuid"] == uuid
    if plain is not None:
        await guest.cloud.wait_tasks([plain], timeout=60)
        (other,) = await guest.cloud.instances([plain])
        assert guest.guest_on(other["host"], plain).config_drive is None


async def test_a_live_migrated_guest_keeps_its_config_drive(guest: Guest) -> None:
    row = await guest.boot(config_drive=True, key_name="mykey")
    uuid, source = row["uuid"], row["host"]
    before = guest.guest_on(source, uuid).config_drive
    assert before is not None
    moves = MovesAPI(guest.cloud.db, ConductorAPI(guest.cloud.api_transport), conf=guest.cloud.conf)
    await moves.live_migrate_server(ADMIN, uuid)
    await guest.cloud.wait_tasks([uuid], timeout=60)
    (moved,) = await guest.cloud.instances([uuid])
    assert moved["vm_state"] == "active" and moved["host"] != source
    # The destination built it in pre_live_migration from the conductor's answer.
    drive = guest.guest_on(moved["host"], uuid).config_drive
    assert drive is not None and drive.files == before.files
    node: ComputeHost = guest.cloud.computes[moved["host"]].hooks[0]  # type: ignore[assignment]
    assert isinstance(node.driver, FakeDriver) and not node.driver.arriving_config_drives
