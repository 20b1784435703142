"""Security groups as nftables rules: the whole ruleset, rendered from a host's view.

Two tables, replaced together in one ``nft -f`` transaction (so a guest is
never unfiltered between two versions):

* ``bridge nubes``: stateless anti-spoofing at the bridge ports. A frame
  from a port's tap must carry the port's MAC, and its ARP and IP sources
  must be the port's addresses (DHCP discovery from 0.0.0.0 excepted); a
  guest may not answer DHCP. Across the VXLAN ports, DHCP and ARP about
  the gateway address are dropped: every host serves DHCP and holds the
  gateway address for its own ports (see ``linux.py``), so those must stay
  on the host.
* ``inet nubes``: the groups' rules, stateful. Bridged IP traffic reaches
  the inet hooks through ``br_netfilter`` (the bridges are made with
  ``nf_call_iptables``), whose conntrack this kernel has (the bridge
  family's own conntrack is not always built). A packet is matched to a
  port by bridge and address, which the bridge table has made
  trustworthy: from a port's addresses it passes that port's egress rules
  (allowed: on to the next check), to them its ingress rules (Neutron's
  defaults: ingress denied, what a rule allows accepted). Traffic to the
  host itself from a guest is DHCP, ping of the gateway, and the metadata
  service (169.254.169.254:80, redirected per network to the metadata
  proxy's listener for that network) only.

A port with ``port_security_enabled`` false gets no chains at all.

Floating IPs (``inet nubes`` too): a packet arriving on an external
network's bridge for a floating IP is DNATed to its fixed address in
prerouting, routed to the port's bridge and filtered there by the port's
ingress rules like any other (its source is the outside address); what
the port sends out through that bridge is SNATed to the floating IP
after its egress rules. Nothing else crosses between an external bridge
and a guest's (no fixed address is reachable from outside), nor between
two guests' bridges (routing between networks needs a router, which is
not built); a flow that a floating IP let in or out is cut as soon as
that floating IP is gone from the view, established or not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from nubes import hostnet
from nubes.compute.network import names

TABLE = "nubes"
METADATA_ADDRESS = "169.254.169.254"

#: Protocol names Neutron takes, as IP protocol numbers.
_PROTOCOLS = {
    "tcp": 6,
    "udp": 17,
    "icmp": 1,
    "icmpv6": 58,
    "ipv6-icmp": 58,
    "sctp": 132,
    "dccp": 33,
    "udplite": 136,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "igmp": 2,
    "ospf": 89,
    "vrrp": 112,
}
#: Protocols whose rules' port ranges are transport ports.
_PORTED = frozenset({6, 17, 132, 33, 136})
_ICMP = {4: 1, 6: 58}


def _set(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _version(ethertype: str) -> int:
    return 6 if ethertype == "IPv6" else 4


def _ip(version: int) -> str:
    return "ip6" if version == 6 else "ip"


def _protocol(rule: hostnet.Rule, version: int) -> int | None:
    """The rule's protocol number; -1 for one nft cannot match (rule skipped)."""
    if rule.protocol in (None, "", "any"):
        return None
    assert rule.protocol is not None
    if rule.protocol.isdigit():
        number = int(rule.protocol)
    else:
        number = _PROTOCOLS.get(rule.protocol.lower(), -1)
    if number in (1, 58):
        return _ICMP[version]  # Neutron takes "icmp" for either family
    return number


def rule_match(rule: hostnet.Rule) -> str | None:
    """The nft match of one group rule (None: it can match nothing here)."""
    version = _version(rule.ethertype)
    parts = [f"meta nfproto ipv{version}"]
    side = "saddr" if rule.direction == "ingress" else "daddr"
    if rule.remote_addresses is not None:
        members = [a for a in rule.remote_addresses if ipaddress.ip_address(a).version == version]
        if not members:
            return None
        parts.append(f"{_ip(version)} {side} {_set(members)}")
    elif rule.remote_ip_prefix:
        net = ipaddress.ip_network(rule.remote_ip_prefix, strict=False)
        if net.version != version:
            return None
        if net.prefixlen:
            parts.append(f"{_ip(version)} {side} {net}")
    number = _protocol(rule, version)
    if number == -1:
        return None
    if number is not None:
        parts.append(f"meta l4proto {number}")
        low, high = rule.port_range_min, rule.port_range_max
        if number in _PORTED and low is not None:
            ports = str(low) if high in (None, low) else f"{low}-{high}"
            parts.append(f"th dport {ports}")
        elif number in (1, 58) and low is not None:
            icmp = "icmp" if number == 1 else "icmpv6"
            parts.append(f"{icmp} type {low}")
            if high is not None:
                parts.append(f"{icmp} code {high}")
    return " ".join(parts)


def _addresses(port: hostnet.Port, version: int) -> list[str]:
    return [
        f.ip_address
        for f in port.fixed_ips
        if ipaddress.ip_address(f.ip_address).version == version
    ]


def _chain_id(port: hostnet.Port) -> str:
    return port.id.replace("-", "")[:16]


def _gateways(view: hostnet.HostNetwork) -> list[str]:
    return sorted(
        {
            s.gateway_ip
            for n in view.networks
            for s in n.subnets
            if s.gateway_ip and s.ip_version == 4
        }
    )


def _bridge_table(view: hostnet.HostNetwork) -> list[str]:
    lines = [f"table bridge {TABLE} {{", "  chain prerouting {"]
    lines.append("    type filter hook prerouting priority -200; policy accept;")
    guarded = [p for p in view.ports if p.port_security_enabled]
    for port in guarded:
        lines.append(f'    iifname "{names.tap(port.id)}" jump port-{_chain_id(port)}')
    vxlans = f'"{names.VXLAN_PREFIX}*"'
    lines.append(f"    iifname {vxlans} udp dport {{ 67, 68 }} drop")
    gateways = _gateways(view)
    if gateways:
        lines.append(f"    iifname {vxlans} arp saddr ip {_set(gateways)} drop")
        lines.append(f"    iifname {vxlans} arp daddr ip {_set(gateways)} drop")
    lines.append("  }")
    lines.append("  chain postrouting {")
    lines.append("    type filter hook postrouting priority 200; policy accept;")
    lines.append(f"    oifname {vxlans} udp dport {{ 67, 68 }} drop")
    if gateways:
        lines.append(f"    oifname {vxlans} arp saddr ip {_set(gateways)} drop")
        lines.append(f"    oifname {vxlans} arp daddr ip {_set(gateways)} drop")
    lines.append("  }")
    for port in guarded:
        v4, v6 = _addresses(port, 4), _addresses(port, 6)
        mac = port.mac_address.lower()
        lines.append(f"  chain port-{_chain_id(port)} {{")
        lines.append(f"    ether saddr != {mac} drop")
        lines.append(f"    ether type arp arp saddr ether != {mac} drop")
        lines.append(f"    ether type arp arp saddr ip != {_set([*v4, '0.0.0.0'])} drop")
        lines.append(
            "    ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 "
            "udp sport 68 udp dport 67 accept"
        )
        lines.append("    ether type ip udp sport 67 drop")
        if v4:
            lines.append(f"    ether type ip ip saddr != {_set(v4)} drop")
        else:
            lines.append("    ether type ip drop")
        # Link-local and unspecified sources: IPv6 neighbour discovery.
        lines.append(f"    ether type ip6 ip6 saddr != {_set([*v6, 'fe80::/64', '::'])} drop")
        lines.append("    ether type { ip, arp, ip6 } accept")
        lines.append("    drop")
        lines.append("  }")
    lines.append("}")
    return lines


def _quoted(items: Iterable[str]) -> str:
    return _set(f'"{i}"' for i in sorted(set(items)))


def _inet_table(
    view: hostnet.HostNetwork,
    metadata: Mapping[str, tuple[str, int]],
    floating: Sequence[hostnet.FloatingIP],
) -> list[str]:
    groups = {g.id: g for g in view.security_groups}
    bridges = f'"{names.BRIDGE_PREFIX}*"'
    externals = sorted({names.bridge(f.network_id) for f in floating})
    addresses = _set(sorted({f.floating_ip_address for f in floating}))
    lines = [f"table inet {TABLE} {{"]
    lines.append("  chain forward {")
    lines.append("    type filter hook forward priority 0; policy accept;")
    lines.append(f"    iifname {bridges} jump guests")
    lines.append(f"    oifname {bridges} jump guests")
    lines.append("  }")
    lines.append("  chain guests {")
    # Flows a floating IP no longer in the view let through: cut (the only
    # NAT on the guests' forward path is the floating IPs').
    if floating:
        lines.append(
            f"    meta nfproto ipv4 ct status dnat ct original ip daddr != {addresses} drop"
        )
        lines.append(f"    meta nfproto ipv4 ct status snat ct reply ip daddr != {addresses} drop")
    else:
        lines.append("    ct status dnat drop")
        lines.append("    ct status snat drop")
    lines.append("    ct state established,related accept")
    lines.append("    ct state invalid drop")
    if externals:
        lines.append(f"    iifname {_quoted(externals)} jump from-outside")
    guarded = [p for p in view.ports if p.port_security_enabled]
    for direction, side, key in (("egress", "saddr", "iifname"), ("ingress", "daddr", "oifname")):
        for port in guarded:
            bridge = names.bridge(port.network_id)
            for version in (4, 6):
                own = _addresses(port, version)
                if own:
                    lines.append(
                        f'    {key} "{bridge}" {_ip(version)} {side} {_set(own)} '
                        f"jump {direction}-{_chain_id(port)}"
                    )
    if externals:
        fixed = _set(sorted({f.fixed_ip_address for f in floating}))
        lines.append(f"    oifname {_quoted(externals)} ip saddr {fixed} accept")
        lines.append(f"    oifname {_quoted(externals)} drop")
    for network in view.networks:
        mine = names.bridge(network.id)
        lines.append(f'    iifname "{mine}" oifname {bridges} oifname != "{mine}" drop')
    lines.append("  }")
    if externals:
        lines.append("  chain from-outside {")
        lines.append("    ct status dnat return")
        lines.append("    drop")
        lines.append("  }")
    for port in guarded:
        rules = [
            r
            for gid in port.security_group_ids
            for r in (groups[gid].rules if gid in groups else [])
        ]
        for direction, verdict in (("egress", "return"), ("ingress", "accept")):
            lines.append(f"  chain {direction}-{_chain_id(port)} {{")
            if direction == "ingress":
                # Neighbour discovery, as Neutron always allows it.
                lines.append("    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept")
            for rule in rules:
                if rule.direction != direction:
                    continue
                match = rule_match(rule)
                if match is not None:
                    lines.append(f"    {match} {verdict}")
            lines.append("    drop")
            lines.append("  }")
    lines.append("  chain input {")
    lines.append("    type filter hook input priority 0; policy accept;")
    lines.append(f"    iifname {bridges} jump to-host")
    lines.append("  }")
    lines.append("  chain to-host {")
    lines.append("    ct state established,related accept")
    lines.append("    udp dport 67 accept")
    lines.append("    icmp type echo-request accept")
    lines.append("    meta l4proto ipv6-icmp accept")
    if metadata:
        lines.append(
            "    ct status dnat tcp dport "
            + _set(sorted({str(port) for _gw, port in metadata.values()}))
            + " accept"
        )
    lines.append("    drop")
    lines.append("  }")
    if floating:
        lines.append("  chain floating-in {")
        lines.append("    type nat hook prerouting priority dstnat; policy accept;")
        for fip in floating:
            lines.append(
                f'    iifname "{names.bridge(fip.network_id)}" ip daddr {fip.floating_ip_address} '
                f"dnat ip to {fip.fixed_ip_address}"
            )
        lines.append("  }")
        lines.append("  chain floating-out {")
        lines.append("    type nat hook postrouting priority srcnat; policy accept;")
        for fip in floating:
            lines.append(
                f'    oifname "{names.bridge(fip.network_id)}" ip saddr {fip.fixed_ip_address} '
                f"snat ip to {fip.floating_ip_address}"
            )
        lines.append("  }")
    if metadata:
        lines.append("  chain metadata {")
        lines.append("    type nat hook prerouting priority dstnat; policy accept;")
        for network_id, (gateway, listener) in sorted(metadata.items()):
            lines.append(
                f'    iifname "{names.bridge(network_id)}" ip daddr {METADATA_ADDRESS} '
                f"tcp dport 80 dnat ip to {gateway}:{listener}"
            )
        lines.append("  }")
    lines.append("}")
    return lines


def ruleset(
    view: hostnet.HostNetwork,
    metadata: Mapping[str, tuple[str, int]] | None = None,
    floating: Sequence[hostnet.FloatingIP] = (),
) -> str:
    """The ``nft -f`` script that replaces both tables with what ``view`` needs;
    ``metadata``: network id -> (gateway, port) of its metadata proxy listener;
    ``floating``: the view's floating IPs this host applies (the agent's choice)."""
    lines = []
    for family in ("bridge", "inet"):
        # Declared first so the delete succeeds on a host that has none yet.
        lines += [f"table {family} {TABLE}", f"delete table {family} {TABLE}"]
    lines += _bridge_table(view)
    lines += _inet_table(view, metadata or {}, floating)
    return "\n".join(lines) + "\n"


def removal() -> str:
    """The script that removes both tables (the host has no ports left)."""
    return "".join(f"table {f} {TABLE}\ndelete table {f} {TABLE}\n" for f in ("bridge", "inet"))
