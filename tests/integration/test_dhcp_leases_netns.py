"""A freed address given to a new port is served to it by DHCP.

IPAM reuses a deleted port's address; dnsmasq keeps the old port's lease
(leases outlive the port by a day) and refuses a leased address to another
MAC, so the new port's guest got no address (Tempest's reassign-port test
booted a guest that printed "dhcp failed"). The host's DHCP now drops the
leases of ports gone. A namespace is the host (a bridge holding the
gateway), another the guest on a veth into it, asking with busybox udhcpc.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nubes import hostnet
from nubes.compute.network import dhcp, names
from nubes.compute.network.linux import Commands
from nubes.testing.netlab import Namespaces
from tests.integration import test_dataplane_netns as dataplane
from tests.integration.test_dataplane_netns import UDHCPC_SCRIPT

pytestmark = pytest.mark.dataplane

NETWORK_ID = "d4c0ffee-0000-4000-8000-000000000001"
SUBNET = hostnet.Subnet("s-lease", 4, "10.66.0.0/24", "10.66.0.1", True)
NETWORK = hostnet.Network(id=NETWORK_ID, vni=66, mtu=1500, subnets=[SUBNET])
ADDRESS = "10.66.0.5"


def _port(mac: str) -> hostnet.Port:
    return hostnet.Port(
        id=f"port-{mac}",
        network_id=NETWORK_ID,
        mac_address=mac,
        device_id="vm",
        admin_state_up=True,
        port_security_enabled=False,
        fixed_ips=[hostnet.FixedIP(SUBNET.id, ADDRESS)],
    )


#: The data-plane tests' namespaces fixture (skips, or fails under CI, without the tools).
spaces = dataplane.spaces


@pytest.mark.timeout(60)
def _lab(spaces: Namespaces, tmp_path: Path, prefix: str) -> tuple[str, str, Path]:
    """A host namespace (the network's bridge holding the gateway), a guest on a
    veth into it, and the udhcpc script the guest asks with."""
    host, guest = spaces.add(f"{prefix}h"), spaces.add(f"{prefix}g")
    bridge = names.bridge(NETWORK_ID)
    spaces.run(host, "ip", "link", "add", bridge, "type", "bridge")
    spaces.run(host, "ip", "addr", "add", "10.66.0.1/24", "dev", bridge)
    spaces.run(host, "ip", "link", "set", bridge, "up")
    spaces.veth(host, f"tap-{prefix}", guest, "eth0")
    spaces.run(host, "ip", "link", "set", f"tap-{prefix}", "master", bridge)
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    return host, guest, script


async def test_an_address_freed_by_a_port_is_served_to_the_next(
    spaces: Namespaces, tmp_path: Path
) -> None:
    host, guest, script = _lab(spaces, tmp_path, "l")
    servers = dhcp.DhcpServers(
        Path("/run") / f"{spaces.tag}-dhcp", Commands(("ip", "netns", "exec", host))
    )

    def ask(mac: str) -> str:
        spaces.run(guest, "ip", "addr", "flush", "dev", "eth0")
        spaces.run(guest, "ip", "link", "set", "eth0", "down")
        spaces.run(guest, "ip", "link", "set", "eth0", "address", mac)
        spaces.run(guest, "ip", "link", "set", "eth0", "up")
        spaces.run(
            guest, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1",
            "-s", str(script), check=False,
        )  # fmt: skip
        return spaces.run(guest, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout

    try:
        first, second = "fa:16:3e:00:66:01", "fa:16:3e:00:66:02"
        await servers.ensure(NETWORK, [_port(first)])
        assert f"{ADDRESS}/24" in ask(first)
        leases = servers.state_dir / NETWORK_ID / "leases"
        assert first in leases.read_text()
        # The port deleted, its address given to a new port with another MAC.
        await servers.ensure(NETWORK, [_port(second)])
        assert first not in leases.read_text()
        assert f"{ADDRESS}/24" in ask(second)
        assert second in leases.read_text()
    finally:
        await servers.remove(NETWORK_ID)


async def test_a_private_state_directory_still_serves_leases(
    spaces: Namespaces, tmp_path: Path
) -> None:
    # Regression: dnsmasq dropped to ``nobody`` and could not read its hosts
    # file under a 0700 state directory (a mkdtemp one, /root): it answered
    # no request and every guest of the Tempest libvirt cloud printed "dhcp
    # failed". It now keeps the agent's user, and logs to a file of its own.
    host, guest, script = _lab(spaces, tmp_path, "p")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    servers = dhcp.DhcpServers(private / "dhcp", Commands(("ip", "netns", "exec", host)))
    mac = "fa:16:3e:00:66:03"
    try:
        await servers.ensure(NETWORK, [_port(mac)])
        spaces.run(guest, "ip", "link", "set", "eth0", "address", mac)
        spaces.run(guest, "ip", "link", "set", "eth0", "up")
        spaces.run(
            guest, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1",
            "-s", str(script), check=False,
        )  # fmt: skip
        shown = spaces.run(guest, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        assert f"{ADDRESS}/24" in shown
        log = (servers.state_dir / NETWORK_ID / "dnsmasq.log").read_text()
        assert "DHCPACK" in log and "Permission denied" not in log
    finally:
        await servers.remove(NETWORK_ID)
