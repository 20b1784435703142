"""A floating IP on a host in a namespace, reached from "outside".

One "host" (a network namespace) runs a :class:`NetworkAgent` talking to a
real conductor over the bus; its ``ext0`` (``[network]
physical_interface_mappings = physnet1:ext0``) is a veth whose peer is in a
namespace standing for the outside world on the external network (a
namespace rather than the machine's root namespace, so parallel runs and
the machine's own addresses stay apart). A "guest" is a namespace on a
veth named like the port's tap, as in ``test_dataplane_netns.py``. The
records are made through the network service's own rules (router, gateway,
interface, floating IP), as the API makes them. Real packets check: the
outside pings the floating IP, the port's security group still decides
(TCP refused until a rule allows it), the guest's connection out arrives
from the floating IP, the fixed address is not reachable from outside, and
after disassociation the floating IP answers no more and leaves the host.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nubes.compute.network import names
from nubes.compute.network.agent import NetworkAgent
from nubes.context import RequestContext
from nubes.network.resources import NetworkService
from nubes.testing.allinone import make_conf
from nubes.testing.cloud import Cloud
from nubes.testing.netlab import Namespaces
from tests.integration.test_dataplane_netns import CONVERGE, spaces  # noqa: F401

pytestmark = pytest.mark.dataplane

HOST = "fip-h1"
OUTSIDE = "203.0.113.100"
ADMIN = RequestContext(user_id="admin", project_id="admin", roles=["admin"])
MEMBER = RequestContext(user_id="u1", project_id="p1", roles=["member"])

#: Accepts connections and prints each peer's address (run in a namespace).
PEER_PRINTER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
while True:
    c, peer = s.accept()
    print(peer[0], flush=True)
    c.close()
"""
CONNECT = """
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
"""


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    cloud = await Cloud.start(f"sqlite:///{tmp_path / 'floating.sqlite'}")
    try:
        yield cloud
    finally:
        await cloud.stop()


def _ping(lab: Namespaces, ns: str, address: str) -> bool:
    done = lab.run(ns, "busybox", "ping", "-c", "1", "-W", "1", address, check=False)
    return done.returncode == 0


def _connects(lab: Namespaces, ns: str, address: str, port: int) -> bool:
    done = lab.run(ns, sys.executable, "-c", CONNECT, address, str(port), check=False)
    return done.returncode == 0


def _listen(lab: Namespaces, ns: str, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", PEER_PRINTER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
    return proc


async def _eventually(check: Any, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < CONVERGE:
        if await asyncio.to_thread(check):
            return time.monotonic() - start
        await asyncio.sleep(0.3)
    raise AssertionError(f"not within {CONVERGE} s: {what}")


async def _records(service: NetworkService) -> dict[str, Any]:
    """External network, a project's network behind a router, a port bound to
    the host in a group that lets ICMP in, and a floating IP mapped to it."""
    public = await service.create_network(ADMIN, {"name": "public", "router:external": True})
    await service.create_subnet(
        ADMIN,
        {
            "network_id": public["id"],
            "cidr": "203.0.113.0/24",
            "gateway_ip": "203.0.113.1",
            "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.50"}],
            "enable_dhcp": False,
        },
    )
    private = await service.create_network(MEMBER, {"name": "private"})
    subnet = await service.create_subnet(
        MEMBER, {"network_id": private["id"], "cidr": "10.77.0.0/24"}
    )
    router = await service.create_router(
        MEMBER, {"name": "r1", "external_gateway_info": {"network_id": public["id"]}}
    )
    await service.add_router_interface(MEMBER, router["id"], {"subnet_id": subnet["id"]})
    group = await service.create_security_group(MEMBER, {"name": "ping"})
    await service.create_rule(
        MEMBER,
        {"security_group_id": group["id"], "direction": "ingress", "protocol": "icmp"},
    )
    device = str(uuid.uuid4())
    port = await service.create_port(
        ADMIN,
        {
            "network_id": private["id"],
            "project_id": "p1",
            "device_id": device,
            "device_owner": "compute:nova",
            "binding:host_id": HOST,
            "security_groups": [group["id"]],
        },
    )
    fip = await service.create_floatingip(
        MEMBER, {"floating_network_id": public["id"], "port_id": port["id"]}
    )
    return {"public": public, "group": group, "port": port, "device": device, "fip": fip}


@pytest.mark.timeout(120)
async def test_a_floating_ip_reaches_its_guest_from_outside(
    spaces: Namespaces,  # noqa: F811
    cloud: Cloud,
) -> None:
    service = NetworkService(cloud.db, make_conf())
    made = await _records(service)
    fip = made["fip"]["floating_ip_address"]
    fixed = made["port"]["fixed_ips"][0]["ip_address"]
    assert made["fip"]["status"] == "ACTIVE" and made["fip"]["fixed_ip_address"] == fixed

    host, outside, guest = spaces.add("h1"), spaces.add("out"), spaces.add("g1")
    agent = NetworkAgent(
        HOST,
        (await cloud.host(HOST)).conductor,
        state_dir=Path("/run") / f"{spaces.tag}-{HOST}",
        sync_interval=1.0,
        command_prefix=("ip", "netns", "exec", host),
        physical_interfaces={"physnet1": "ext0"},
    )
    listeners: list[subprocess.Popen[str]] = []
    try:
        (vif,) = await agent.plug(RequestContext(), made["device"])
        spaces.veth(host, vif.tap, guest, "eth0")
        spaces.run(guest, "ip", "link", "set", "eth0", "down")
        spaces.run(guest, "ip", "link", "set", "eth0", "address", made["port"]["mac_address"])
        spaces.run(guest, "ip", "link", "set", "eth0", "up")
        spaces.run(guest, "ip", "addr", "add", f"{fixed}/24", "dev", "eth0")
        spaces.run(guest, "ip", "route", "add", "default", "via", "10.77.0.1")
        spaces.run(host, "ip", "link", "set", vif.tap, "master", vif.bridge)
        await agent.start()
        external = names.bridge(made["public"]["id"])
        # No ext0 yet: the plug above still worked (a missing interface costs its
        # floating IPs only); once it appears, the floating IP is applied.
        assert not _has_link(spaces, host, external)
        spaces.veth(host, "ext0", outside, "eth0")
        spaces.run(outside, "ip", "addr", "add", f"{OUTSIDE}/24", "dev", "eth0")

        # The outside reaches the guest at its floating IP (the host answers ARP for it).
        took = await _eventually(lambda: _ping(spaces, outside, fip), f"ping {fip}")
        print(f"\nfloating IP answering after {took:.1f} s")
        shown = spaces.run(host, "ip", "-4", "-o", "addr", "show", "dev", external).stdout
        assert f"{fip}/24" in shown, shown
        assert "master " + external in spaces.run(host, "ip", "link", "show", "ext0").stdout

        # The port's security group still decides: TCP is not let in until a rule says so.
        listeners.append(_listen(spaces, guest, 8000))
        assert not _connects(spaces, outside, fip, 8000)
        await service.create_rule(
            MEMBER,
            {
                "security_group_id": made["group"]["id"],
                "direction": "ingress",
                "protocol": "tcp",
                "port_range_min": 8000,
                "port_range_max": 8000,
            },
        )
        await _eventually(lambda: _connects(spaces, outside, fip, 8000), "TCP 8000 allowed")
        assert listeners[0].stdout is not None
        assert listeners[0].stdout.readline().strip() == OUTSIDE

        # The guest's own connection out arrives from its floating IP (SNAT).
        out = _listen(spaces, outside, 9000)
        listeners.append(out)
        assert _connects(spaces, guest, OUTSIDE, 9000)
        assert out.stdout is not None and out.stdout.readline().strip() == fip

        # The fixed address is not reachable from outside, even routed at the host.
        spaces.run(outside, "ip", "route", "add", "10.77.0.0/24", "via", fip)
        assert not _ping(spaces, outside, fixed)

        # Disassociated: the floating IP stops answering and leaves the host.
        await service.update_floatingip(MEMBER, made["fip"]["id"], {"port_id": None})
        took = await _eventually(lambda: not _ping(spaces, outside, fip), f"{fip} silent")
        print(f"floating IP silent {took:.1f} s after its disassociation")
        rules = spaces.run(host, "nft", "list", "table", "inet", "nubes").stdout
        assert fip not in rules and "floating-in" not in rules
        await _eventually(lambda: not _has_link(spaces, host, external), "external bridge removed")
        assert "master" not in spaces.run(host, "ip", "link", "show", "ext0").stdout

        # Associated again: back within seconds.
        await service.update_floatingip(MEMBER, made["fip"]["id"], {"port_id": made["port"]["id"]})
        await _eventually(lambda: _ping(spaces, outside, fip), f"ping {fip} again")
    finally:
        for proc in listeners:
            proc.kill()
            proc.wait()
        await agent.stop()
        for network_id in agent.dhcp.networks():
            await agent.dhcp.remove(network_id)


def _has_link(lab: Namespaces, ns: str, name: str) -> bool:
    return lab.run(ns, "ip", "link", "show", name, check=False).returncode == 0
