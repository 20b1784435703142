"""Bridges, VXLAN devices and their flood lists, through iproute2.

One bridge per network with ports on this host (``nbr-<network>``), made
with ``nf_call_iptables`` so the firewall's stateful rules see bridged
packets. For DHCP and the metadata service the bridge holds the gateway
address of each IPv4 subnet (every host holds it for its own ports: a
distributed gateway; the firewall keeps ARP about it off the tunnels).
Tenant networks reach the other hosts through a VXLAN device
(``nvx-<network>``, id = the network's VNI) on the bridge, which floods
broadcasts to each peer by head-end replication: one all-zeros FDB entry
per peer (``bridge fdb append 00:00:00:00:00:00 dst <peer>``).

A flat external network (floating IPs) has a bridge too, of the same
name, on the interface the host maps its physical network to; it holds
the floating IPs of this host's ports (so the host answers ARP for them)
and no gateway address. The guests' traffic out through a floating IP
follows a routing table of its own per external network (the connected
subnet and its gateway as default), chosen by a rule per fixed address,
so the host's own default route is not the guests'.

Every command goes through :class:`Commands`, whose ``prefix`` runs it
elsewhere (``ip netns exec <ns>`` in tests); a failing command raises
:class:`~nubes.exception.NetworkPlumbingError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nubes import exception, hostnet
from nubes.compute.network import names

VXLAN_PORT = 4789
_FLOOD = "00:00:00:00:00:00"
#: Priority of the agent's policy routing rules (before ``main`` at 32766):
#: every rule at this priority is the agent's.
RULE_PRIORITY = 30000
#: Routing tables of external networks: this base plus 24 bits of the network id.
_TABLE_BASE = 0x10000000


@dataclass(frozen=True)
class Commands:
    """Runs the data plane's commands (optionally under ``prefix``)."""

    prefix: Sequence[str] = field(default_factory=tuple)

    async def run(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if check and proc.returncode != 0:
            raise exception.NetworkPlumbingError(
                command=" ".join(argv[:4]), reason=err.decode(errors="replace").strip()[:500]
            )
        return out.decode(errors="replace")

    async def links(self) -> dict[str, dict[str, Any]]:
        """Every link of the namespace by name (``ip -j -d link``)."""
        return {
            link["ifname"]: link for link in json.loads(await self.run("ip", "-j", "-d", "link"))
        }


async def ensure_network(
    cmd: Commands,
    network: hostnet.Network,
    links: dict[str, dict[str, Any]],
    local_ip: str | None,
    peers: Sequence[str],
) -> None:
    """The network's bridge (with its gateway addresses) and VXLAN device, up."""
    bridge = await _ensure_bridge(cmd, network.id, network.mtu, links)
    wanted = set()
    for subnet in network.subnets:
        if subnet.ip_version == 4 and subnet.gateway_ip:
            prefix = ipaddress.ip_network(subnet.cidr).prefixlen
            wanted.add(f"{subnet.gateway_ip}/{prefix}")
    have = await _addresses(cmd, bridge)
    for address in sorted(wanted - have):
        await cmd.run("ip", "addr", "add", address, "dev", bridge)
    for address in sorted(have - wanted):
        await cmd.run("ip", "addr", "del", address, "dev", bridge)
    vxlan = names.vxlan(network.id)
    if local_ip is None:
        return  # one host: no tunnels
    if vxlan not in links:
        await cmd.run(
            "ip", "link", "add", vxlan, "type", "vxlan", "id", str(network.vni),
            "local", local_ip, "dstport", str(VXLAN_PORT),
        )  # fmt: skip
    await cmd.run("ip", "link", "set", vxlan, "master", bridge, "mtu", str(network.mtu), "up")
    await _set_flood_list(cmd, vxlan, peers)


async def _ensure_bridge(
    cmd: Commands, network_id: str, mtu: int, links: dict[str, dict[str, Any]]
) -> str:
    """The bridge of ``network_id``, marked as this agent's and up; its name."""
    bridge = names.bridge(network_id)
    if bridge not in links:
        await cmd.run(
            "ip", "link", "add", bridge, "type", "bridge",
            "nf_call_iptables", "1", "nf_call_ip6tables", "1",
        )  # fmt: skip
    alias = names.bridge_alias(network_id)
    if links.get(bridge, {}).get("ifalias") != alias:
        # Marks the bridge as this agent's (a bridge made before marks existed
        # gets it here too): only marked bridges are ever removed.
        await cmd.run("ip", "link", "set", "dev", bridge, "alias", alias)
    await cmd.run("ip", "link", "set", bridge, "mtu", str(mtu), "up")
    return bridge


async def _addresses(cmd: Commands, device: str) -> set[str]:
    found = json.loads(await cmd.run("ip", "-j", "-4", "addr", "show", "dev", device))
    return {f"{a['local']}/{a['prefixlen']}" for link in found for a in link.get("addr_info", [])}


async def _set_flood_list(cmd: Commands, vxlan: str, peers: Sequence[str]) -> None:
    entries = json.loads(await cmd.run("bridge", "-j", "fdb", "show", "dev", vxlan))
    have = {e["dst"] for e in entries if e.get("mac") == _FLOOD and "dst" in e}
    for peer in sorted(set(peers) - have):
        await cmd.run("bridge", "fdb", "append", _FLOOD, "dev", vxlan, "dst", peer)
    for peer in sorted(have - set(peers)):
        await cmd.run("bridge", "fdb", "del", _FLOOD, "dev", vxlan, "dst", peer)


async def remove_network(cmd: Commands, bridge: str, links: dict[str, dict[str, Any]]) -> None:
    """A bridge of a network this host has no port on any more, and its tunnel."""
    vxlan = names.VXLAN_PREFIX + bridge[len(names.BRIDGE_PREFIX) :]
    for device in (vxlan, bridge):
        if device in links:
            await cmd.run("ip", "link", "del", device, check=False)


def our_bridges(links: dict[str, dict[str, Any]]) -> set[str]:
    """The bridges this agent made: its prefix *and* its mark, so a bridge of
    someone else that merely shares the prefix is never taken down."""
    return {
        name
        for name, link in links.items()
        if name.startswith(names.BRIDGE_PREFIX)
        and str(link.get("ifalias", "")).startswith(names.ALIAS_PREFIX)
    }


# --- external networks (floating IPs) --------------------------------------------------------


def route_table(network_id: str) -> int:
    """The routing table of an external network's floating IP traffic."""
    return _TABLE_BASE + int(network_id.replace("-", "")[:6], 16)


def _prefix(network: hostnet.ExternalNetwork, address: str) -> int | None:
    ip = ipaddress.ip_address(address)
    for subnet in network.subnets:
        net = ipaddress.ip_network(subnet.cidr)
        if ip in net:
            return net.prefixlen
    return None


async def ensure_external(
    cmd: Commands,
    network: hostnet.ExternalNetwork,
    links: dict[str, dict[str, Any]],
    interface: str,
    floating: Sequence[hostnet.FloatingIP],
) -> None:
    """The external network's bridge on ``interface``, holding ``floating``'s
    addresses, and its routing table; a new address is announced
    (gratuitous ARP) so neighbours forget the host that held it before."""
    if interface not in links:
        raise exception.NetworkPlumbingError(
            command="ensure_external",
            reason=f"interface {interface} of physical network {network.physical_network} "
            "does not exist",
        )
    bridge = await _ensure_bridge(cmd, network.id, network.mtu, links)
    if links[interface].get("master") != bridge:
        await cmd.run("ip", "link", "set", interface, "master", bridge, "up")
    wanted = set()
    for fip in floating:
        prefix = _prefix(network, fip.floating_ip_address)
        if prefix is not None:
            wanted.add(f"{fip.floating_ip_address}/{prefix}")
    have = await _addresses(cmd, bridge)
    for address in sorted(have - wanted):
        await cmd.run("ip", "addr", "del", address, "dev", bridge)
    for address in sorted(wanted - have):
        await cmd.run("ip", "addr", "add", address, "dev", bridge)
        fip_address = address.split("/", 1)[0]
        try:
            await cmd.run(
                "busybox", "arping", "-U", "-c", "1", "-I", bridge, fip_address, check=False
            )  # fmt: skip
        except OSError:
            pass  # no busybox: neighbours learn the new holder when their entry expires
    table = str(route_table(network.id))
    for subnet in network.subnets:
        if subnet.ip_version == 4:
            await cmd.run(
                "ip", "route", "replace", subnet.cidr, "dev", bridge, "table", table
            )  # fmt: skip
            if subnet.gateway_ip:
                await cmd.run(
                    "ip", "route", "replace", "default", "via", subnet.gateway_ip,
                    "dev", bridge, "table", table,
                )  # fmt: skip


async def set_source_rules(cmd: Commands, wanted: dict[str, int]) -> None:
    """The policy rules ``from <fixed address> lookup <table>``: exactly ``wanted``."""
    rules = json.loads(await cmd.run("ip", "-j", "-4", "rule", "show"))
    have = {
        (r["src"], int(r["table"]))
        for r in rules
        if r.get("priority") == RULE_PRIORITY and str(r.get("table", "")).isdigit()
    }
    want = set(wanted.items())
    for source, table in sorted(have - want):
        await cmd.run(
            "ip", "rule", "del", "from", source, "lookup", str(table),
            "priority", str(RULE_PRIORITY), check=False,
        )  # fmt: skip
    for source, table in sorted(want - have):
        await cmd.run(
            "ip", "rule", "add", "from", source, "lookup", str(table),
            "priority", str(RULE_PRIORITY),
        )  # fmt: skip


async def enable_forwarding(cmd: Commands) -> None:
    """Floating IPs route between an external bridge and the guests' bridges."""
    await cmd.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
