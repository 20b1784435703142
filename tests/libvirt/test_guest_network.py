"""Real guests on two hosts reach each other through the data plane.

Controllers as processes, each compute host in its own namespace with its
own libvirtd (nubes.testing.realhosts) and its network agent. Two guests
on one network, placed on different hosts, get their addresses by DHCP
from their own host, and ping each other through VXLAN between the hosts'
namespaces once their security group has an ICMP rule (without it, the
ping is dropped), and a ping that claims another port's address or
another port's MAC never gets through. Deleting a server removes its port,
its tap and its host's DHCP entry. One guest pair does every step (TCG
boots are slow).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from nubes.api.servers import ServersAPI
from nubes.compute.network import names
from nubes.conductor.rpcapi import ConductorAPI
from nubes.db.api import network as net_db
from nubes.network import ports
from nubes.network.resources import NetworkService
from nubes.rpc.transport import get_transport
from nubes.testing.realhosts import NETWORK_STATE, RealHostsCloud, context

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt]

ADDRESSES = ("10.88.0.10", "10.88.0.11")
#: Another port's address and MAC (a port of no guest): the guests also ping
#: from that address, and with that MAC.
SPOOFED, SPOOFED_MAC = "10.88.0.99", "fa:16:3e:88:00:99"
CMDLINE = (
    f"console=ttyS0 no_timer_check nubes.dhcp=1 nubes.ping={','.join(ADDRESSES)} "
    f"nubes.spoof={SPOOFED} nubes.spoofmac={SPOOFED_MAC}"
)


async def _until(check, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.25)
    return time.monotonic() - start


async def _more_of(real: RealHostsCloud, wanted: list[tuple[str, str, str, int]]) -> None:
    """Until each (host, guest, marker, n) has ``n`` more of ``marker`` on the
    guest's console than now. Every count is taken before the first wait: the
    guests tick side by side, so the waits overlap instead of adding up (each
    a few seconds a tick under TCG)."""
    seen = [real.console(host, uuid).count(marker) for host, uuid, marker, _ in wanted]
    for (host, uuid, marker, more), before in zip(wanted, seen, strict=True):
        await real.wait_console(host, uuid, marker, count=before + more)


async def test_two_guests_on_two_hosts_dhcp_ping_security_group_and_delete(
    namespaced_hosts: None, rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    real = await RealHostsCloud.start(rabbit_url, postgres_url, tmp_path)
    try:
        db = real.cloud.db
        assert db is not None
        ctxt = context()
        service = NetworkService(db, real._conf())
        net = await service.create_network(ctxt, {"name": "dp"})
        await service.create_subnet(
            ctxt,
            {"network_id": net["id"], "ip_version": 4, "cidr": "10.88.0.0/24"},
        )
        await service.create_port(
            ctxt,
            {
                "network_id": net["id"],
                "mac_address": SPOOFED_MAC,
                "fixed_ips": [{"ip_address": SPOOFED}],
            },
        )
        # A new group lets everything out and nothing in: no ICMP rule yet.
        group = await service.create_security_group(ctxt, {"name": "dp"})
        image = {
            **real.image,
            "properties": {**real.image["properties"], "os_command_line": CMDLINE},
        }
        uuids: list[str] = []
        for i, address in enumerate(ADDRESSES):
            nics = await ports.resolve(
                service, ctxt, [{"uuid": net["id"], "fixed_ip": address}], [{"name": "dp"}], 1
            )
            hints = {"different_host": uuids} if uuids else None
            uuids.append(
                await real.create_server(
                    f"dp-{i}", image, network_requests=nics, scheduler_hints=hints
                )
            )
        rows = [await real.wait(u, lambda r: r["vm_state"] == "active", 180) for u in uuids]
        hosts = [r["host"] for r in rows]
        assert hosts[0] != hosts[1]

        # Each guest gets its own address from the DHCP server of its host.
        for uuid, host, address in zip(uuids, hosts, ADDRESSES, strict=True):
            await real.wait_console(host, uuid, f"NUBES-GUEST ip {address}", timeout=120)
        # Without an ICMP rule the other guest does not answer (both have
        # their addresses now: two more tries each, and not one answered).
        pairs = list(zip(uuids, hosts, reversed(ADDRESSES), strict=True))
        await _more_of(real, [(h, u, f"NUBES-GUEST ping {o} fail", 2) for u, h, o in pairs])
        for uuid, host, other in pairs:
            assert f"NUBES-GUEST ping {other} ok" not in real.console(host, uuid)

        await service.create_rule(
            ctxt, {"security_group_id": group["id"], "direction": "ingress", "protocol": "icmp"}
        )
        start = time.monotonic()
        for uuid, host, other in zip(uuids, hosts, reversed(ADDRESSES), strict=True):
            await real.wait_console(host, uuid, f"NUBES-GUEST ping {other} ok", timeout=30)
        print(f"\nguests ping each other {time.monotonic() - start:.1f} s after the ICMP rule")
        # The same ping from another port's address, or with another port's
        # MAC: dropped at the guest's tap (two more tries of each since ICMP is
        # let in, and not one answered) ...
        spoofs = ("spoof", "spoofmac")
        await _more_of(
            real, [(h, u, f"NUBES-GUEST {w} {o} fail", 2) for u, h, o in pairs for w in spoofs]
        )
        for uuid, host, other in pairs:
            for what in spoofs:
                assert f"NUBES-GUEST {what} {other} ok" not in real.console(host, uuid)
        # ... while the guest's own ping, with its own MAC put back, goes on.
        await _more_of(real, [(h, u, f"NUBES-GUEST ping {o} ok", 1) for u, h, o in pairs])

        # Deleting the second server frees its port, its tap and its DHCP entry.
        transport = get_transport(real.cloud.url_for(f"api.{real.cloud.api_host}"))
        await transport.connect()
        try:
            api = ServersAPI(db, ConductorAPI(transport), conf=real._conf())
            await api.delete_server(ctxt, uuids[1])
        finally:
            await transport.close()

        async def port_gone() -> bool:
            async with db.reader() as conn:
                return not await net_db.ports_of_devices(conn, [uuids[1]])

        deadline = time.monotonic() + 90
        while not await port_gone():
            assert time.monotonic() < deadline, "the deleted server's port is still there"
            await asyncio.sleep(0.5)
        b = real.host(hosts[1])
        async with db.reader() as conn:
            [port_a] = await net_db.ports_of_devices(conn, [uuids[0]])
        await _until(
            lambda: (
                b.run(["ip", "link", "show", names.bridge(net["id"])], check=False).returncode != 0
            ),
            30,
            "the bridge removed from the host with no port left",
        )
        assert not (NETWORK_STATE / b.netns / "dhcp" / net["id"]).exists()
        a = real.host(hosts[0])
        taps = a.run(["ip", "-o", "link", "show", "master", names.bridge(net["id"])]).stdout
        assert names.tap(port_a["id"]) in taps
    finally:
        await real.stop()
