"""DHCP for this host's own ports: one dnsmasq per network, static leases only.

Each network with a DHCP-enabled IPv4 subnet (with a gateway: the bridge
serves from that address) gets a dnsmasq bound to its bridge, with one
``dhcp-host`` line per port of this host and no dynamic range, so it
answers nobody else (and the firewall keeps DHCP off the tunnels). The
options are the subnet's: router, DNS servers, host routes, and the
network's MTU. A change of the files is a SIGHUP (dnsmasq re-reads its
hosts and options files), except when a host line went: dnsmasq keeps the
lease of a port gone and refuses its address to the next port (addresses
are reused), so it is restarted without the leases of ports gone; a
network gone is a SIGTERM to the PID its pid file names, once the command
line confirms it is ours.

Files live in ``<state_dir>/<network id>/``; dnsmasq drops to its own
user after start, so they are world-readable (they hold nothing a guest on
the network cannot learn by asking).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import pwd
import shutil
import signal
from pathlib import Path

from nubes import hostnet
from nubes.compute.network import names
from nubes.compute.network.linux import Commands

LEASE_SECONDS = 86400


def _served(network: hostnet.Network) -> list[hostnet.Subnet]:
    return [s for s in network.subnets if s.ip_version == 4 and s.enable_dhcp and s.gateway_ip]


def host_lines(network: hostnet.Network, ports: list[hostnet.Port]) -> str:
    served = {s.id for s in _served(network)}
    lines = []
    for port in ports:
        for fixed in port.fixed_ips:
            if fixed.subnet_id in served:
                lines.append(f"{port.mac_address.lower()},{fixed.ip_address}\n")
    return "".join(sorted(lines))


def option_lines(network: hostnet.Network) -> str:
    lines = []
    for subnet in _served(network):
        tag = f"tag:s{subnet.id[:8]}"
        lines.append(f"{tag},option:router,{subnet.gateway_ip}")
        if subnet.dns_nameservers:
            lines.append(f"{tag},option:dns-server,{','.join(subnet.dns_nameservers)}")
        if subnet.host_routes:
            routes = [f"{d},{n}" for d, n in subnet.host_routes]
            # Classless routes replace the router option: the default one too.
            routes.append(f"0.0.0.0/0,{subnet.gateway_ip}")
            lines.append(f"{tag},option:classless-static-route,{','.join(routes)}")
        lines.append(f"{tag},option:mtu,{network.mtu}")
    return "".join(f"{line}\n" for line in lines)


def _prune_leases(directory: Path) -> None:
    """Keep only the leases of ``directory``'s host lines (MAC and address)."""
    leases = directory / "leases"
    if not leases.exists():
        return
    hosts = {tuple(line.split(",")) for line in (directory / "hosts").read_text().splitlines()}
    # A lease line: expiry, MAC, address, hostname, client id.
    kept = [
        line
        for line in leases.read_text().splitlines()
        if len(fields := line.split()) >= 3 and (fields[1].lower(), fields[2]) in hosts
    ]
    leases.write_text("".join(f"{line}\n" for line in kept))


class DhcpServers:
    """The dnsmasq processes of this host, one per served network."""

    def __init__(self, state_dir: Path, cmd: Commands) -> None:
        self.state_dir = state_dir
        self.cmd = cmd

    def _dir(self, network_id: str) -> Path:
        return self.state_dir / network_id

    def _pid(self, network_id: str) -> int | None:
        """The PID of this network's running dnsmasq, if it is ours and alive."""
        directory = self._dir(network_id)
        try:
            pid = int((directory / "pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"dnsmasq" in cmdline and str(directory).encode() in cmdline else None

    async def ensure(self, network: hostnet.Network, ports: list[hostnet.Port]) -> None:
        served = _served(network)
        if not served:
            await self.remove(network.id)
            return
        directory = self._dir(network.id)
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        for path in (self.state_dir, directory):
            os.chmod(path, 0o755)
        hosts = directory / "hosts"
        before = set(hosts.read_text().splitlines()) if hosts.exists() else set()
        changed = False
        for name, text in (("hosts", host_lines(network, ports)), ("opts", option_lines(network))):
            path = directory / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                path.chmod(0o644)
                changed = True
        pid = self._pid(network.id)
        if pid is not None and before - set(hosts.read_text().splitlines()):
            # A port gone keeps its lease in dnsmasq, which then refuses its
            # address to the next port given it (IPAM reuses freed addresses):
            # leases are read at start only, so stop it, drop the leases no
            # host line holds, and start it again.
            await self._stop(pid)
            await asyncio.to_thread(_prune_leases, directory)
            pid = None
        if pid is None:
            await self._start(network, served)
        elif changed:
            os.kill(pid, signal.SIGHUP)

    async def _stop(self, pid: int) -> None:
        """SIGTERM to dnsmasq (ours: see :meth:`_pid`), and its end awaited, so
        the lease file is written and the bridge's DHCP port free again."""
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    async def _start(self, network: hostnet.Network, served: list[hostnet.Subnet]) -> None:
        directory = self._dir(network.id)
        argv = [
            "dnsmasq",
            "--conf-file=/dev/null",
            "--no-hosts",
            "--no-resolv",
            "--port=0",  # no DNS: DHCP only
            "--bind-interfaces",
            f"--interface={names.bridge(network.id)}",
            "--except-interface=lo",
            "--dhcp-authoritative",
            f"--dhcp-hostsfile={directory / 'hosts'}",
            f"--dhcp-optsfile={directory / 'opts'}",
            f"--dhcp-leasefile={directory / 'leases'}",
            f"--pid-file={directory / 'pid'}",
            # dnsmasq drops to ``nobody`` by default, and then cannot read its
            # hosts and options files under a private state directory (0700,
            # as /root or a mkdtemp one is): it answered no DHCP request at
            # all, and guests booted without an address. It keeps the agent's
            # own user, who wrote those files (no more privilege than the agent).
            f"--user={pwd.getpwuid(os.geteuid()).pw_name}",
            # Its reasons in a file next to its state: a host without syslog
            # (no /dev/log) lost every line it wrote.
            f"--log-facility={directory / 'dnsmasq.log'}",
        ]
        for subnet in served:
            net = ipaddress.ip_network(subnet.cidr)
            argv.append(
                f"--dhcp-range=set:s{subnet.id[:8]},{net.network_address},static,"
                f"{net.netmask},{LEASE_SECONDS}s"
            )
        # dnsmasq forks and writes its pid file before this returns.
        await self.cmd.run(*argv)

    async def remove(self, network_id: str) -> None:
        pid = self._pid(network_id)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        await asyncio.to_thread(shutil.rmtree, self._dir(network_id), True)

    def networks(self) -> set[str]:
        """Networks this host has DHCP state for (found again after a restart)."""
        if not self.state_dir.is_dir():
            return set()
        return {p.name for p in self.state_dir.iterdir() if p.is_dir()}
