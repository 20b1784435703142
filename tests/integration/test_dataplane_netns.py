"""The network agent on two hosts in namespaces, with namespaces standing in for guests.

Two "hosts" (network namespaces joined by a veth, their tunnel addresses
reported as their nodes' ``host_ip``) each run a :class:`NetworkAgent`
talking to a real conductor over the bus. A "guest" is a namespace whose
``eth0`` is the peer of a veth named like the port's tap, put on the
bridge as libvirt would put a tap. Real packets check what the agent made:
DHCP from the guest's own host (busybox ``udhcpc``), ping across hosts
through VXLAN, security groups (no ICMP rule: no ping; the rule added:
ping within seconds), anti-spoofing of IP and MAC, and removal when a
port goes (of the agent's own bridge only, not another named like it).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nubes.compute.network import names
from nubes.compute.network.agent import NetworkAgent
from nubes.context import RequestContext
from nubes.db.api import network
from nubes.testing.cloud import Cloud
from nubes.testing.netlab import Namespaces, missing
from tests.unit.db import factories

pytestmark = pytest.mark.dataplane

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew) busybox ip addr add "$ip/$subnet" dev "$interface"
               busybox ip route add default via "$router" ;;
esac
"""
#: Seconds a rule change may take to reach the hosts (the agents poll every second).
CONVERGE = 15.0


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def spaces() -> Any:
    why = missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI requires the data plane tools: {why}")
        pytest.skip(why)
    made = Namespaces()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    cloud = await Cloud.start(f"sqlite:///{tmp_path / 'dataplane.sqlite'}")
    try:
        yield cloud
    finally:
        await cloud.stop()


async def _rule(cloud: Cloud, group: str, direction: str, protocol: str | None) -> str:
    rule_id = _id()
    async with cloud.db.writer() as conn:
        await network.create(
            conn,
            "security_group_rules",
            {
                "id": rule_id,
                "security_group_id": group,
                "project_id": "p1",
                "direction": direction,
                "ethertype": "IPv4",
                "protocol": protocol,
            },
        )
    return rule_id


async def _seed(cloud: Cloud, tunnels: dict[str, str]) -> dict[str, Any]:
    ids: dict[str, Any] = {"net": _id(), "sub": _id(), "group": _id()}
    async with cloud.db.writer() as conn:
        for host, address in tunnels.items():
            await factories.make_node(conn, host=host, host_ip=address)
        await network.create(
            conn,
            "networks",
            {"id": ids["net"], "project_id": "p1", "mtu": 1450, "segmentation_id": 4242},
        )
        await network.create(
            conn,
            "subnets",
            {
                "id": ids["sub"],
                "network_id": ids["net"],
                "project_id": "p1",
                "ip_version": 4,
                "cidr": "10.77.0.0/24",
                "gateway_ip": "10.77.0.1",
                "allocation_pools": [{"start": "10.77.0.2", "end": "10.77.0.254"}],
                "dns_nameservers": [],
                "host_routes": [],
            },
        )
        await network.create(conn, "security_groups", {"id": ids["group"], "project_id": "p1"})
        ports = {}
        for i, host in enumerate(tunnels):
            port_id, device = _id(), _id()
            await network.create(
                conn,
                "ports",
                {
                    "id": port_id,
                    "network_id": ids["net"],
                    "project_id": "p1",
                    "mac_address": f"fa:16:3e:77:00:{i + 1:02x}",
                    "device_id": device,
                    "binding_host_id": host,
                },
            )
            allocated = await network.allocate_addresses(
                conn, [network.AddressRequest(port_id=port_id, network_id=ids["net"])]
            )
            (fixed,) = allocated[port_id]
            await network.set_port_groups(conn, port_id, [ids["group"]])
            ports[host] = {
                "id": port_id,
                "device": device,
                "ip": fixed["ip_address"],
                "mac": f"fa:16:3e:77:00:{i + 1:02x}",
            }
        ids["ports"] = ports
    # A group that lets everything out and, in, only SSH: no ping yet.
    await _rule(cloud, ids["group"], "egress", None)
    await _rule(cloud, ids["group"], "ingress", "tcp")
    return ids


class NamespacedListeners:
    """The metadata proxy's side of the agent, in a host's namespace: each
    listener answers with the peer it saw and the network it serves."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.servers: dict[str, asyncio.Server] = {}

    def _socket(self, host: str) -> socket.socket:
        # A thread of its own enters the namespace (setns is per thread), so
        # the socket lives there; the event loop then serves it from here.
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{self.netns}") as target, open("/proc/self/ns/net") as home:
            if libc.setns(target.fileno(), 0x40000000) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            try:
                sock = socket.socket()
                sock.bind((host, 0))
                sock.listen()
            finally:
                libc.setns(home.fileno(), 0x40000000)
        return sock

    async def listen(self, host: str, port: int, network_id: str | None = None) -> tuple[str, int]:
        sock = await asyncio.to_thread(self._socket, host)

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            peer = writer.get_extra_info("peername")[0]
            body = f"{network_id} {peer}".encode()
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()

        self.servers[str(network_id)] = await asyncio.start_server(answer, sock=sock)
        return sock.getsockname()[:2]

    async def close(self, network_id: str) -> None:
        server = self.servers.pop(network_id, None)
        if server is not None:
            server.close()


def _ping(spaces: Namespaces, ns: str, address: str, *extra: str) -> bool:
    done = spaces.run(ns, "busybox", "ping", "-c", "1", "-W", "1", *extra, address, check=False)
    return done.returncode == 0


async def _eventually_ping(spaces: Namespaces, ns: str, address: str, ok: bool) -> float:
    start = time.monotonic()
    while time.monotonic() - start < CONVERGE:
        if await asyncio.to_thread(_ping, spaces, ns, address) == ok:
            return time.monotonic() - start
        await asyncio.sleep(0.3)
    raise AssertionError(f"ping {address} from {ns} still {'fails' if ok else 'works'}")


@pytest.mark.timeout(120)
async def test_two_hosts_dhcp_vxlan_security_groups(
    spaces: Namespaces, cloud: Cloud, tmp_path: Path
) -> None:
    hosts = {"dp-h1": "192.0.2.1", "dp-h2": "192.0.2.2"}
    ns = {h: spaces.add(h[-2:]) for h in hosts}
    spaces.veth(ns["dp-h1"], "under", ns["dp-h2"], "under")
    for host, address in hosts.items():
        spaces.run(ns[host], "ip", "addr", "add", f"{address}/24", "dev", "under")
    # Not the agent's though named like its bridges (an operator's, or a test
    # harness's): regression, an agent took down every nbr-* bridge it did not want.
    spaces.run(ns["dp-h2"], "ip", "link", "add", "nbr-notours", "type", "bridge")
    ids = await _seed(cloud, hosts)
    agents = {}
    for host in hosts:
        state = Path("/run") / f"{spaces.tag}-{host}"
        agents[host] = NetworkAgent(
            host,
            (await cloud.host(host)).conductor,
            state_dir=state,
            local_ip=hosts[host],
            sync_interval=1.0,
            command_prefix=("ip", "netns", "exec", ns[host]),
            metadata=NamespacedListeners(ns[host]),
        )
    guests = {}
    try:
        for host, agent in agents.items():
            port = ids["ports"][host]
            (vif,) = await agent.plug(RequestContext(), port["device"])
            assert (vif.bridge, vif.tap, vif.mtu) == (
                names.bridge(ids["net"]),
                names.tap(port["id"]),
                1450,
            )
            guest = spaces.add(f"g{host[-1]}")
            guests[host] = guest
            # What libvirt does with <interface type='bridge'>: a tap on the bridge.
            spaces.veth(ns[host], vif.tap, guest, "eth0")
            spaces.run(guest, "ip", "link", "set", "eth0", "down")
            spaces.run(guest, "ip", "link", "set", "eth0", "address", port["mac"], "mtu", "1450")
            spaces.run(guest, "ip", "link", "set", "eth0", "up")
            spaces.run(ns[host], "ip", "link", "set", vif.tap, "master", vif.bridge)
            await agent.start()
        script = tmp_path / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        for host, guest in guests.items():
            got = spaces.run(
                guest, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1",
                "-s", str(script), check=False,
            )  # fmt: skip
            assert got.returncode == 0, got.stderr
            shown = spaces.run(guest, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
            assert f"{ids['ports'][host]['ip']}/24" in shown, shown
        g1, g2 = guests["dp-h1"], guests["dp-h2"]
        ip1, ip2 = ids["ports"]["dp-h1"]["ip"], ids["ports"]["dp-h2"]["ip"]
        assert "dst 192.0.2.2" in _flood(spaces, ns["dp-h1"], ids["net"])
        assert "dst 192.0.2.1" in _flood(spaces, ns["dp-h2"], ids["net"])
        # Each host's DHCP served only its own port: the leases say so.
        for host in hosts:
            leases = (agents[host].dhcp.state_dir / ids["net"] / "leases").read_text()
            assert ids["ports"][host]["mac"] in leases
            other = next(h for h in hosts if h != host)
            assert ids["ports"][other]["mac"] not in leases

        # No ICMP rule: the ping (across the tunnel) is dropped by the group.
        assert not _ping(spaces, g1, ip2)
        rule = await _rule(cloud, ids["group"], "ingress", "icmp")
        took = await _eventually_ping(spaces, g1, ip2, ok=True)
        print(f"\nICMP rule effective on both hosts after {took:.1f} s")
        assert _ping(spaces, g2, ip1)

        # 169.254.169.254 reaches the metadata listener of the guest's network
        # on its own host, which sees the guest's own address.
        # (In a thread: the listener answers from this event loop.)
        got = await asyncio.to_thread(
            spaces.run, g1, "busybox", "wget", "-q", "-O", "-", "http://169.254.169.254/x"
        )
        assert got.stdout == f"{ids['net']} {ip1}", got

        # Anti-spoofing: another address, or another port's MAC, gets nowhere.
        spaces.run(g1, "ip", "addr", "add", "10.77.0.200/24", "dev", "eth0")
        assert not _ping(spaces, g1, ip2, "-I", "10.77.0.200")
        spaces.run(g1, "ip", "addr", "del", "10.77.0.200/24", "dev", "eth0")
        spaces.run(g1, "ip", "addr", "add", f"{ip2}/32", "dev", "eth0")
        assert not _ping(spaces, g1, "10.77.0.1", "-I", ip2)
        spaces.run(g1, "ip", "addr", "del", f"{ip2}/32", "dev", "eth0")
        spaces.run(g1, "ip", "link", "set", "eth0", "address", ids["ports"]["dp-h2"]["mac"])
        assert not _ping(spaces, g1, ip2)
        spaces.run(g1, "ip", "link", "set", "eth0", "address", ids["ports"]["dp-h1"]["mac"])
        spaces.run(g1, "ip", "neigh", "flush", "all")
        await _eventually_ping(spaces, g1, ip2, ok=True)

        # The rule removed: ping stops again (new flows; conntrack keeps none here).
        async with cloud.db.writer() as conn:
            await network.delete_row(conn, "security_group_rules", rule)
        await _eventually_ping(spaces, g1, ip2, ok=False)

        # The port on h2 deleted (its server deleted): h2 has nothing left.
        async with cloud.db.writer() as conn:
            await network.delete_port(conn, ids["ports"]["dp-h2"]["id"])
        shown = spaces.run(ns["dp-h2"], "ip", "link", "show", names.bridge(ids["net"])).stdout
        assert f"alias {names.bridge_alias(ids['net'])}" in shown, shown
        await _wait(lambda: not _has_link(spaces, ns["dp-h2"], names.bridge(ids["net"])))
        assert _has_link(spaces, ns["dp-h2"], "nbr-notours")
        assert not (agents["dp-h2"].dhcp.state_dir / ids["net"]).exists()
        rules = spaces.run(ns["dp-h2"], "nft", "list", "tables").stdout
        assert "nubes" not in rules
        # ... and h1 no longer floods to it.
        await _wait(lambda: "192.0.2.2" not in _flood(spaces, ns["dp-h1"], ids["net"]))
    finally:
        for agent in agents.values():
            await agent.stop()
            for network_id in agent.dhcp.networks():
                await agent.dhcp.remove(network_id)
            shutil.rmtree(agent.dhcp.state_dir.parent, ignore_errors=True)


def _has_link(spaces: Namespaces, ns: str, name: str) -> bool:
    return spaces.run(ns, "ip", "link", "show", name, check=False).returncode == 0


def _flood(spaces: Namespaces, ns: str, network_id: str) -> str:
    """The tunnel's flood list (the all-zeros entries, not the learned MACs)."""
    fdb = spaces.run(ns, "bridge", "fdb", "show", "dev", names.vxlan(network_id)).stdout
    return "".join(line for line in fdb.splitlines(True) if line.startswith("00:00:00:00:00:00"))


async def _wait(predicate: Any) -> None:
    start = time.monotonic()
    while time.monotonic() - start < CONVERGE:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.3)
    raise AssertionError("the data plane did not converge")
