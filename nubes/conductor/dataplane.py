"""A compute host's network data plane, read for it from the database.

Need-to-know, like every other read a host makes through the conductor
(``docs/authorization.md``): a host gets the ports bound to it, the
networks and subnets of those ports, the rules of their security groups
(a remote group resolved to its members' addresses: the host needs them
to filter, not the ports behind them), and the tunnel addresses of the
other hosts with ports on a network it has a port on, and the floating IPs
of the ports bound to it (with their external networks). Who asks is the
transport's verified identity; a host naming another host, or a network
it has no port on, is refused with an audit line.
"""

from __future__ import annotations

from typing import Any

from nubes import exception, hostnet
from nubes.access import Caller, CallerKind
from nubes.conductor.authz import Authorizer
from nubes.db.api import host_network, network
from nubes.db.engine import Database

#: Most networks one peers request may name (a host with more asks again).
MAX_NETWORKS = 1024


def _strings(method: str, name: str, value: Any, limit: int) -> list[str]:
    if type(value) is not list or len(value) > limit or any(type(v) is not str for v in value):
        raise exception.InvalidArguments(
            method=method, reason=f"{name} must be a list of at most {limit} strings"
        )
    return value


def _rule(row: dict[str, Any], members: dict[str, list[str]]) -> hostnet.Rule:
    remote = row["remote_group_id"]
    return hostnet.Rule(
        direction=row["direction"],
        ethertype=row["ethertype"],
        protocol=row["protocol"],
        port_range_min=row["port_range_min"],
        port_range_max=row["port_range_max"],
        remote_ip_prefix=row["remote_ip_prefix"],
        remote_addresses=list(members.get(remote, [])) if remote else None,
    )


async def host_network_view(
    db: Database, authz: Authorizer, caller: Caller, host: Any
) -> hostnet.HostNetwork:
    """The ports bound to ``host`` and what filtering and serving them takes."""
    if type(host) is not str:
        raise exception.InvalidArguments(method="get_host_network", reason="host must be a string")
    if caller.kind is CallerKind.COMPUTE and host != caller.host:
        authz.refuse(caller, "HostNetwork", "get", None, f"host {host!r} is not the caller")
    async with db.reader() as conn:
        port_rows = await host_network.ports_bound_to(conn, host)
        port_ids = [p["id"] for p in port_rows]
        fixed = await network.fixed_ips_by_port(conn, port_ids)
        groups = await network.groups_by_port(conn, port_ids)
        network_ids = sorted({p["network_id"] for p in port_rows})
        network_rows = await network.get_many(conn, "networks", network_ids)
        subnet_rows = await host_network.subnets_of_networks(conn, network_ids)
        group_ids = sorted({g for p in port_rows for g in groups.get(p["id"], [])})
        rules = await network.rules_by_group(conn, group_ids)
        remotes = sorted(
            {r["remote_group_id"] for rs in rules.values() for r in rs if r["remote_group_id"]}
        )
        members = await host_network.addresses_of_groups(conn, remotes)
        fips = await host_network.floating_ips_bound_to(conn, host)
        external_ids = sorted({f["floating_network_id"] for f in fips})
        external_rows = await network.get_many(conn, "networks", external_ids)
        subnet_rows += await host_network.subnets_of_networks(conn, external_ids)
    subnets_by_network: dict[str, list[hostnet.Subnet]] = {}
    for s in subnet_rows:
        subnets_by_network.setdefault(s["network_id"], []).append(
            hostnet.Subnet(
                id=s["id"],
                ip_version=s["ip_version"],
                cidr=s["cidr"],
                gateway_ip=s["gateway_ip"],
                enable_dhcp=s["enable_dhcp"],
                dns_nameservers=list(s["dns_nameservers"] or []),
                host_routes=[(r["destination"], r["nexthop"]) for r in s["host_routes"] or []],
            )
        )
    return hostnet.HostNetwork(
        host=host,
        ports=[
            hostnet.Port(
                id=p["id"],
                network_id=p["network_id"],
                mac_address=p["mac_address"],
                device_id=p["device_id"],
                admin_state_up=p["admin_state_up"],
                port_security_enabled=p["port_security_enabled"],
                fixed_ips=[hostnet.FixedIP(**f) for f in fixed.get(p["id"], [])],
                security_group_ids=list(groups.get(p["id"], [])),
            )
            for p in port_rows
        ],
        networks=[
            hostnet.Network(
                id=n["id"],
                vni=n["segmentation_id"],
                mtu=n["mtu"],
                subnets=subnets_by_network.get(n["id"], []),
            )
            for n in sorted(network_rows, key=lambda n: n["id"])
        ],
        security_groups=[
            hostnet.SecurityGroup(id=g, rules=[_rule(r, members) for r in rules.get(g, [])])
            for g in group_ids
        ],
        floating_ips=[
            hostnet.FloatingIP(
                floating_ip_address=f["floating_ip_address"],
                fixed_ip_address=f["fixed_ip_address"],
                port_id=f["fixed_port_id"],
                network_id=f["floating_network_id"],
            )
            for f in fips
        ],
        external_networks=[
            hostnet.ExternalNetwork(
                id=n["id"],
                # Not flat (an admin made it VXLAN): no host can put it on an
                # interface; the agent skips its floating IPs and says so.
                physical_network=n["physical_network"] or "",
                mtu=n["mtu"],
                subnets=subnets_by_network.get(n["id"], []),
            )
            for n in sorted(external_rows, key=lambda n: n["id"])
        ],
    )


async def network_peers(
    db: Database, authz: Authorizer, caller: Caller, network_ids: Any
) -> hostnet.NetworkPeers:
    """The other hosts' tunnel addresses on each of ``network_ids``.

    A compute host may name only networks it has a port bound on; a
    controller asks for no host of its own and gets every host's address.
    """
    wanted = _strings("get_network_peers", "network_ids", network_ids, MAX_NETWORKS)
    host = caller.host if caller.kind is CallerKind.COMPUTE else ""
    async with db.reader() as conn:
        if caller.kind is CallerKind.COMPUTE:
            assert host is not None
            mine = await host_network.networks_with_ports_on(conn, host, wanted)
            others = sorted(set(wanted) - mine)
            if others:
                authz.refuse(caller, "HostNetwork", "peers", None, f"no port on networks {others}")
        peers = await host_network.tunnel_peers(conn, host or "", wanted)
    return hostnet.NetworkPeers(peers=peers)
