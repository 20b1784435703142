"""What a compute host learns about its network data plane, on the wire.

The conductor assembles these from the database (``nubes/conductor/dataplane.py``)
and a compute host's network agent (``nubes/compute/network/``) applies them.
Both sides import this module, which imports nothing from either (the
compute side may not reach the database layer, not even indirectly).

Need-to-know: a :class:`HostNetwork` holds the ports bound to the asking
host, the networks and subnets of those ports, and the rules of their
security groups with remote groups already resolved to addresses, and
the floating IPs mapped to those ports (only ports bound here: not those
of a guest still live-migrating in, whose source holds the address until
the binding moves) with their external networks; the VXLAN peers of a
network come from a second call (:class:`NetworkPeers`) that names only
networks the host has ports on.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec


class Subnet(msgspec.Struct, frozen=True):
    id: str
    ip_version: int
    cidr: str
    gateway_ip: str | None
    enable_dhcp: bool
    dns_nameservers: list[str] = []
    #: [(destination, nexthop)]
    host_routes: list[tuple[str, str]] = []


class Network(msgspec.Struct, frozen=True):
    id: str
    #: The VXLAN network identifier (``segmentation_id``).
    vni: int
    mtu: int
    subnets: list[Subnet] = []


class FixedIP(msgspec.Struct, frozen=True):
    subnet_id: str
    ip_address: str


class Port(msgspec.Struct, frozen=True):
    id: str
    network_id: str
    mac_address: str
    #: The instance it belongs to (``device_id``).
    device_id: str
    admin_state_up: bool
    port_security_enabled: bool
    fixed_ips: list[FixedIP] = []
    security_group_ids: list[str] = []


class Rule(msgspec.Struct, frozen=True):
    """A security group rule, its remote group replaced by that group's addresses."""

    direction: str  #: ingress | egress
    ethertype: str  #: IPv4 | IPv6
    protocol: str | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    #: Set when the rule named a remote group: its members' addresses (maybe none).
    remote_addresses: list[str] | None = None


class SecurityGroup(msgspec.Struct, frozen=True):
    id: str
    rules: list[Rule] = []


class ExternalNetwork(msgspec.Struct, frozen=True):
    """A flat external network a floating IP of this host's ports is on."""

    id: str
    #: The host maps it to an interface (``[network] physical_interface_mappings``).
    physical_network: str
    mtu: int
    subnets: list[Subnet] = []


class FloatingIP(msgspec.Struct, frozen=True):
    """A floating IP mapped to a fixed address of a port bound to this host."""

    floating_ip_address: str
    fixed_ip_address: str
    port_id: str
    #: The external network it is on (one of ``HostNetwork.external_networks``).
    network_id: str


class HostNetwork(msgspec.Struct, frozen=True):
    """Everything a host needs for the ports bound to it."""

    host: str
    ports: list[Port] = []
    networks: list[Network] = []
    security_groups: list[SecurityGroup] = []
    #: The floating IPs of the ports bound here and their external networks.
    #: Added fields with defaults, no RPC version: an older conductor sends
    #: none (the host applies none), an older host ignores them (msgspec
    #: drops unknown fields), as with any additive struct change.
    floating_ips: list[FloatingIP] = []
    external_networks: list[ExternalNetwork] = []

    def fingerprint(self) -> str:
        """Changes whenever anything the data plane is made from changes."""
        return hashlib.sha256(msgspec.msgpack.encode(self)).hexdigest()


class NetworkPeers(msgspec.Struct, frozen=True):
    """network id -> the tunnel addresses of the other hosts with ports on it."""

    peers: dict[str, list[str]] = {}


def to_wire(value: msgspec.Struct) -> Any:
    """Builtins for the RPC serializer."""
    return msgspec.to_builtins(value)


def host_network_from_wire(value: Any) -> HostNetwork:
    return msgspec.convert(value, HostNetwork)


def network_peers_from_wire(value: Any) -> NetworkPeers:
    return msgspec.convert(value, NetworkPeers)
