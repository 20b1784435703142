"""A real guest answers on its floating IP from outside, and stops when it is removed.

Controllers as processes, a compute host in its own namespace with its own
libvirtd (nubes.testing.realhosts), its ``ext0`` a veth to a namespace
standing for the outside world on the external network (``[network]
physical_interface_mappings = physnet1:ext0``). One guest on a network
behind a router gets its address by DHCP; with a floating IP mapped to it,
the outside pings the floating IP and the guest's own pings out reach the
outside (SNAT); disassociated, the floating IP is silent again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nubes.network import ports
from nubes.network.resources import NetworkService
from nubes.testing.netlab import Namespaces
from nubes.testing.realhosts import RealHostsCloud, context

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt]

OUTSIDE = "203.0.113.100"
CMDLINE = f"console=ttyS0 no_timer_check nubes.dhcp=1 nubes.ping={OUTSIDE}"


def _ping(lab: Namespaces, ns: str, address: str) -> bool:
    done = lab.run(ns, "busybox", "ping", "-c", "1", "-W", "1", address, check=False)
    return done.returncode == 0


async def _until(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.5)
    return time.monotonic() - start


async def test_a_guest_answers_on_its_floating_ip(
    namespaced_hosts: None, rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    real = await RealHostsCloud.start(
        rabbit_url,
        postgres_url,
        tmp_path,
        hosts=1,
        network={"physical_interface_mappings": "physnet1:ext0"},
    )
    lab = Namespaces()
    try:
        db = real.cloud.db
        assert db is not None
        ctxt = context()
        (host,) = real.net.hosts
        outside = lab.add("out")
        # The host's interface on the external network, its peer the outside world.
        lab.veth(host.netns, "ext0", outside, "eth0")
        lab.run(outside, "ip", "addr", "add", f"{OUTSIDE}/24", "dev", "eth0")

        service = NetworkService(db, real._conf())
        public = await service.create_network(ctxt, {"name": "public", "router:external": True})
        await service.create_subnet(
            ctxt,
            {
                "network_id": public["id"],
                "cidr": "203.0.113.0/24",
                "enable_dhcp": False,
                "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.50"}],
            },
        )
        net = await service.create_network(ctxt, {"name": "fip"})
        subnet = await service.create_subnet(
            ctxt, {"network_id": net["id"], "cidr": "10.89.0.0/24"}
        )
        router = await service.create_router(
            ctxt, {"name": "r", "external_gateway_info": {"network_id": public["id"]}}
        )
        await service.add_router_interface(ctxt, router["id"], {"subnet_id": subnet["id"]})
        group = await service.create_security_group(ctxt, {"name": "ping"})
        await service.create_rule(
            ctxt, {"security_group_id": group["id"], "direction": "ingress", "protocol": "icmp"}
        )
        image = {
            **real.image,
            "properties": {**real.image["properties"], "os_command_line": CMDLINE},
        }
        nics = await ports.resolve(service, ctxt, [{"uuid": net["id"]}], [{"name": "ping"}], 1)
        uuid = await real.create_server("fip-0", image, network_requests=nics)
        row = await real.wait(uuid, lambda r: r["vm_state"] == "active", 180)
        async with db.reader() as conn:
            (port,) = await ports.interfaces(conn, uuid)
        fixed = port["fixed_ips"][0]["ip_address"]
        await real.wait_console(row["host"], uuid, f"NUBES-GUEST ip {fixed}", timeout=120)

        fip = await service.create_floatingip(
            ctxt, {"floating_network_id": public["id"], "port_id": port["id"]}
        )
        address = fip["floating_ip_address"]
        took = await _until(lambda: _ping(lab, outside, address), 60, f"ping {address}")
        print(f"\nthe guest answers on {address} {took:.1f} s after its association")
        # The guest's own pings out reach the outside from its floating IP.
        await real.wait_console(row["host"], uuid, f"NUBES-GUEST ping {OUTSIDE} ok", timeout=60)

        await service.update_floatingip(ctxt, fip["id"], {"port_id": None})
        took = await _until(lambda: not _ping(lab, outside, address), 30, f"{address} silent")
        print(f"silent {took:.1f} s after its disassociation")
    finally:
        lab.cleanup()
        await real.stop()
