"""How security group rules and DHCP entries are written for a host (no root needed).

The packets themselves are checked in tests/integration/test_dataplane_netns.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nubes import hostnet
from nubes.compute.network import dhcp, firewall, names

PORT = hostnet.Port(
    id="11111111-2222-3333-4444-555555555555",
    network_id="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    mac_address="FA:16:3E:00:00:01",
    device_id="i1",
    admin_state_up=True,
    port_security_enabled=True,
    fixed_ips=[hostnet.FixedIP("s4", "10.0.0.5"), hostnet.FixedIP("s6", "2001:db8::5")],
    security_group_ids=["g"],
)
SUBNET = hostnet.Subnet(
    id="s4",
    ip_version=4,
    cidr="10.0.0.0/24",
    gateway_ip="10.0.0.1",
    enable_dhcp=True,
    dns_nameservers=["192.0.2.53"],
    host_routes=[("192.168.0.0/16", "10.0.0.254")],
)
NETWORK = hostnet.Network(id=PORT.network_id, vni=7, mtu=1450, subnets=[SUBNET])


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        (hostnet.Rule("egress", "IPv4"), "meta nfproto ipv4"),
        (hostnet.Rule("ingress", "IPv6"), "meta nfproto ipv6"),
        (
            hostnet.Rule("ingress", "IPv4", "tcp", 22, 22, "0.0.0.0/0"),
            "meta nfproto ipv4 meta l4proto 6 th dport 22",
        ),
        (
            hostnet.Rule("ingress", "IPv4", "udp", 1000, 2000, "203.0.113.0/24"),
            "meta nfproto ipv4 ip saddr 203.0.113.0/24 meta l4proto 17 th dport 1000-2000",
        ),
        (
            hostnet.Rule("egress", "IPv4", "17", 53, None, "192.0.2.0/24"),
            "meta nfproto ipv4 ip daddr 192.0.2.0/24 meta l4proto 17 th dport 53",
        ),
        (
            hostnet.Rule("ingress", "IPv4", "icmp", 8, 0),
            "meta nfproto ipv4 meta l4proto 1 icmp type 8 icmp code 0",
        ),
        (hostnet.Rule("ingress", "IPv6", "icmp"), "meta nfproto ipv6 meta l4proto 58"),
        (
            hostnet.Rule("ingress", "IPv4", remote_addresses=["10.0.0.5", "2001:db8::5"]),
            "meta nfproto ipv4 ip saddr { 10.0.0.5 }",
        ),
        # A remote group with no members (of this family) matches nothing.
        (hostnet.Rule("ingress", "IPv4", remote_addresses=[]), None),
        (hostnet.Rule("ingress", "IPv6", remote_addresses=["10.0.0.5"]), None),
        # A prefix of the other family, or a protocol nft does not know.
        (hostnet.Rule("ingress", "IPv6", remote_ip_prefix="10.0.0.0/8"), None),
        (hostnet.Rule("ingress", "IPv4", "made-up"), None),
    ],
)
def test_rule_match(rule: hostnet.Rule, match: str | None) -> None:
    assert firewall.rule_match(rule) == match


def test_ruleset_guards_ports_with_port_security_only() -> None:
    open_port = hostnet.Port(
        id="99999999-0000-0000-0000-000000000000",
        network_id=PORT.network_id,
        mac_address="fa:16:3e:00:00:09",
        device_id="i2",
        admin_state_up=True,
        port_security_enabled=False,
    )
    view = hostnet.HostNetwork(
        host="h",
        ports=[PORT, open_port],
        networks=[NETWORK],
        security_groups=[
            hostnet.SecurityGroup("g", [hostnet.Rule("ingress", "IPv4", "tcp", 22, 22)])
        ],
    )
    rules = firewall.ruleset(view, {NETWORK.id: ("10.0.0.1", 8775)})
    tap = names.tap(PORT.id)
    assert f'iifname "{tap}" jump port-' in rules
    assert "ether saddr != fa:16:3e:00:00:01 drop" in rules
    assert "ip saddr != { 10.0.0.5 } drop" in rules
    assert "ip6 saddr != { 2001:db8::5, fe80::/64, :: } drop" in rules
    assert "meta l4proto 6 th dport 22 accept" in rules
    assert names.tap(open_port.id) not in rules
    assert (
        'iifname "nbr-aaaaaaaa-bb" ip daddr 169.254.169.254 tcp dport 80 dnat ip to 10.0.0.1:8775'
        in rules
    )
    assert "ct status dnat tcp dport { 8775 } accept" in rules
    # Both tables are replaced in the one script.
    assert rules.startswith("table bridge nubes\ndelete table bridge nubes\n")
    assert "metadata" not in firewall.ruleset(view)


def test_dhcp_serves_static_leases_with_the_subnet_options() -> None:
    assert dhcp.host_lines(NETWORK, [PORT]) == "fa:16:3e:00:00:01,10.0.0.5\n"
    options = dhcp.option_lines(NETWORK)
    assert "option:router,10.0.0.1" in options
    assert "option:dns-server,192.0.2.53" in options
    assert "option:classless-static-route,192.168.0.0/16,10.0.0.254,0.0.0.0/0,10.0.0.1" in options
    assert "option:mtu,1450" in options
    no_dhcp = hostnet.Network(
        id="n", vni=1, mtu=1450, subnets=[hostnet.Subnet("s", 4, "10.1.0.0/24", None, True)]
    )
    assert dhcp.host_lines(no_dhcp, [PORT]) == ""
    assert dhcp.option_lines(no_dhcp) == ""


def test_names_fit_linux_interface_names() -> None:
    for name in (names.bridge(PORT.network_id), names.vxlan(PORT.network_id), names.tap(PORT.id)):
        assert len(name) <= 15


async def test_the_agent_waits_for_conductors_that_serve_its_calls(tmp_path: Path) -> None:
    from nubes.compute.network.agent import NetworkAgent
    from nubes.conductor.rpcapi import ConductorAPI
    from nubes.context import RequestContext
    from nubes.rpc.transport import get_transport

    transport = get_transport("memory:///agent-cap", identity="compute.h")
    # Capped at 1.2 (an older conductor runs): no call is made, nothing applied.
    agent = NetworkAgent(
        "h",
        ConductorAPI(transport, version_cap="1.2"),
        state_dir=tmp_path,
        command_prefix=("false",),
    )
    assert await agent.sync(RequestContext()) is False
    assert agent.applied is None


EXTERNAL = hostnet.ExternalNetwork(
    id="eeeeeeee-0000-0000-0000-000000000001",
    physical_network="physnet1",
    mtu=1500,
    subnets=[
        hostnet.Subnet(
            id="x4", ip_version=4, cidr="203.0.113.0/24", gateway_ip="203.0.113.1",
            enable_dhcp=False,
        )
    ],
)  # fmt: skip
FLOATING = hostnet.FloatingIP("203.0.113.9", "10.0.0.5", PORT.id, EXTERNAL.id)


def test_floating_ips_nat_and_isolation() -> None:
    view = hostnet.HostNetwork(
        host="h",
        ports=[PORT],
        networks=[NETWORK],
        security_groups=[
            hostnet.SecurityGroup("g", [hostnet.Rule("ingress", "IPv4", "tcp", 22, 22)])
        ],
        floating_ips=[FLOATING],
        external_networks=[EXTERNAL],
    )
    rules = firewall.ruleset(view, floating=[FLOATING])
    ext, own = names.bridge(EXTERNAL.id), names.bridge(NETWORK.id)
    # In: DNAT on the external bridge, then the port's own ingress rules decide.
    assert f'iifname "{ext}" ip daddr 203.0.113.9 dnat ip to 10.0.0.5' in rules
    assert f'oifname "{own}" ip daddr {{ 10.0.0.5 }} jump ingress-' in rules
    # Out: SNAT after the egress rules; nothing else between the bridges.
    assert f'oifname "{ext}" ip saddr 10.0.0.5 snat ip to 203.0.113.9' in rules
    assert f'oifname {{ "{ext}" }} ip saddr {{ 10.0.0.5 }} accept' in rules
    assert f'iifname {{ "{ext}" }} jump from-outside' in rules
    assert f'iifname "{own}" oifname "nbr-*" oifname != "{own}" drop' in rules
    # Flows of floating IPs no longer there are cut, established or not.
    cut = "ct status dnat ct original ip daddr != { 203.0.113.9 } drop"
    assert rules.index(cut) < rules.index("ct state established,related accept")
    # Without floating IPs: no NAT chain, and any NATed flow is cut.
    bare = firewall.ruleset(
        hostnet.HostNetwork(host="h", ports=[PORT], networks=[NETWORK]), floating=[]
    )
    assert "floating-in" not in bare and "    ct status dnat drop" in bare


async def test_the_agent_applies_floating_ips_it_can_put_on_an_interface(tmp_path: Path) -> None:
    from nubes import exception
    from nubes.compute.network.agent import NetworkAgent, interface_mappings
    from nubes.conductor.rpcapi import ConductorAPI
    from nubes.rpc.transport import get_transport

    assert interface_mappings(["physnet1:eth1", " ext : veth0 "]) == {
        "physnet1": "eth1",
        "ext": "veth0",
    }
    for bad in (["physnet1"], ["physnet1:"], ["a:x", "a:y"]):
        with pytest.raises(exception.ConfigError):
            interface_mappings(bad)
    conductor = ConductorAPI(get_transport("memory:///agent-fip", identity="compute.h"))
    other_port = hostnet.FloatingIP("203.0.113.10", "10.0.0.6", "elsewhere", EXTERNAL.id)
    unmapped = hostnet.ExternalNetwork(
        id="eeeeeeee-0000-0000-0000-000000000002", physical_network="physnet9", mtu=1500
    )
    on_unmapped = hostnet.FloatingIP("198.51.100.9", "10.0.0.5", PORT.id, unmapped.id)
    view = hostnet.HostNetwork(
        host="h",
        ports=[PORT],
        networks=[NETWORK],
        floating_ips=[FLOATING, other_port, on_unmapped],
        external_networks=[EXTERNAL, unmapped],
    )
    agent = NetworkAgent(
        "h", conductor, state_dir=tmp_path, physical_interfaces={"physnet1": "eth1"}
    )
    # A port not in the view, or a network on no interface here: not applied.
    assert agent.floating(view) == [FLOATING]
