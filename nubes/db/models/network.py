"""Networking (a Neutron v2.0 subset) and key pairs.

Like Neutron's, these rows are hard-deleted: a deleted port has no history
worth archiving, and its addresses must be free again once it is gone.

IPAM: ``ip_allocations`` holds one row per address a port holds, unique per
(subnet, address), so a database refuses a duplicate whatever the code above
it does. Allocations on one subnet are serialised by write-locking the
subnet row (``subnets.ipam_generation`` is bumped first in the allocating
transaction), so the lowest free address is taken without retries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nubes.db.models.base import NAME_LEN, UUID_LEN, Base, TimestampMixin
from nubes.db.types import JSONEncoded

#: Keystone ids (32 hex digits), as in the identity tables.
PROJECT_LEN = 64
#: Longest textual IPv6 address or CIDR (with an IPv4 tail and a prefix).
ADDRESS_LEN = 64
MAC_LEN = 32


class Network(Base, TimestampMixin):
    __tablename__ = "networks"
    __table_args__ = (Index("networks_project_id_idx", "project_id"),)

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(PROJECT_LEN), nullable=False)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    description: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    shared: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    external: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    mtu: Mapped[int] = mapped_column(Integer, nullable=False)
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    #: The VXLAN id the data plane will use (allocated at create, unique).
    segmentation_id: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    #: A flat network's physical network (``provider:physical_network``), which each
    #: host maps to an interface (``[network] physical_interface_mappings``); None:
    #: a VXLAN network (``segmentation_id`` its VNI).
    physical_network: Mapped[str | None] = mapped_column(String(64))
    #: Set for the network get-me-a-network created for its project.
    auto_allocated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    revision_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Subnet(Base, TimestampMixin):
    __tablename__ = "subnets"
    __table_args__ = (Index("subnets_network_id_idx", "network_id"),)

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    network_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("networks.id", name="fk_subnets0network_id"),
        nullable=False,
    )
    project_id: Mapped[str] = mapped_column(String(PROJECT_LEN), nullable=False)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    description: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    ip_version: Mapped[int] = mapped_column(Integer, nullable=False)
    cidr: Mapped[str] = mapped_column(String(ADDRESS_LEN), nullable=False)
    gateway_ip: Mapped[str | None] = mapped_column(String(ADDRESS_LEN))
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    #: [{"start": ..., "end": ...}]
    allocation_pools: Mapped[Any] = mapped_column(JSONEncoded, nullable=False)
    dns_nameservers: Mapped[Any] = mapped_column(JSONEncoded, nullable=False)
    #: [{"destination": ..., "nexthop": ...}]
    host_routes: Mapped[Any] = mapped_column(JSONEncoded, nullable=False)
    ipv6_ra_mode: Mapped[str | None] = mapped_column(String(32))
    ipv6_address_mode: Mapped[str | None] = mapped_column(String(32))
    #: Bumped by every allocation: the row lock that serialises IPAM on the subnet.
    ipam_generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    revision_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class SecurityGroup(Base, TimestampMixin):
    __tablename__ = "security_groups"
    __table_args__ = (Index("security_groups_project_id_idx", "project_id"),)

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(PROJECT_LEN), nullable=False)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    description: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    stateful: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    revision_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class DefaultSecurityGroup(Base):
    """Which group is a project's ``default`` (one per project, as Neutron keeps it)."""

    __tablename__ = "default_security_groups"

    project_id: Mapped[str] = mapped_column(String(PROJECT_LEN), primary_key=True)
    security_group_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey(
            "security_groups.id", name="fk_default_security_groups0sg_id", ondelete="CASCADE"
        ),
        nullable=False,
    )


class SecurityGroupRule(Base, TimestampMixin):
    __tablename__ = "security_group_rules"
    __table_args__ = (Index("security_group_rules_sg_id_idx", "security_group_id"),)

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    security_group_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("security_groups.id", name="fk_sg_rules0sg_id", ondelete="CASCADE"),
        nullable=False,
    )
    project_id: Mapped[str] = mapped_column(String(PROJECT_LEN), nullable=False)
    direction: Mapped[str] = mapped_column(String(16), nullable=False)
    ethertype: Mapped[str] = mapped_column(String(8), nullable=False)
    protocol: Mapped[str | None] = mapped_column(String(40))
    port_range_min: Mapped[int | None] = mapped_column(Integer)
    port_range_max: Mapped[int | None] = mapped_column(Integer)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(ADDRESS_LEN))
    remote_group_id: Mapped[str | None] = mapped_column(
        String(UUID_LEN),
        ForeignKey("security_groups.id", name="fk_sg_rules0remote_group_id", ondelete="CASCADE"),
    )
    description: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    revision_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Port(Base, TimestampMixin):
    __tablename__ = "ports"
    __table_args__ = (
        UniqueConstraint("network_id", "mac_address", name="uniq_ports0network_id0mac_address"),
        Index("ports_device_id_idx", "device_id"),
        Index("ports_project_id_idx", "project_id"),
    )

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    network_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("networks.id", name="fk_ports0network_id"),
        nullable=False,
    )
    project_id: Mapped[str] = mapped_column(String(PROJECT_LEN), nullable=False)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    description: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    mac_address: Mapped[str] = mapped_column(String(MAC_LEN), nullable=False)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="DOWN")
    device_id: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    device_owner: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    binding_host_id: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    revision_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class IPAllocation(Base):
    __tablename__ = "ip_allocations"
    __table_args__ = (Index("ip_allocations_port_id_idx", "port_id"),)

    subnet_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("subnets.id", name="fk_ip_allocations0subnet_id"),
        primary_key=True,
    )
    ip_address: Mapped[str] = mapped_column(String(ADDRESS_LEN), primary_key=True)
    port_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("ports.id", name="fk_ip_allocations0port_id", ondelete="CASCADE"),
        nullable=False,
    )
    network_id: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)


class Router(Base, TimestampMixin):
    """A Neutron router: a gateway on an external network and interfaces on subnets.

    The gateway is a port on the external network (``gw_port_id``, owner
    ``network:router_gateway``); each interface is a port on a subnet
    holding that subnet's gateway address (owner ``network:router_interface``,
    ``device_id`` the router). The data plane is distributed: no host runs
    the router; the hosts of the ports behind it apply its floating IPs.
    """

    __tablename__ = "routers"
    __table_args__ = (Index("routers_project_id_idx", "project_id"),)

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(PROJECT_LEN), nullable=False)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    description: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="ACTIVE")
    gw_network_id: Mapped[str | None] = mapped_column(
        String(UUID_LEN), ForeignKey("networks.id", name="fk_routers0gw_network_id")
    )
    gw_port_id: Mapped[str | None] = mapped_column(
        String(UUID_LEN), ForeignKey("ports.id", name="fk_routers0gw_port_id")
    )
    #: Always false: ports without a floating IP get no SNAT (no network node).
    enable_snat: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    revision_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class FloatingIP(Base, TimestampMixin):
    """A floating IP: an address of an external network (held by a port owned
    ``network:floatingip``, so IPAM is the ports' one write path), maybe
    mapped to one fixed address of a port behind a router.

    At most one floating IP per fixed address and external network (the
    unique constraint, as Neutron's), whatever the code above does.
    """

    __tablename__ = "floatingips"
    __table_args__ = (
        UniqueConstraint(
            "floating_network_id",
            "fixed_port_id",
            "fixed_ip_address",
            name="uniq_floatingips0network0port0fixed_ip",
        ),
        Index("floatingips_project_id_idx", "project_id"),
        Index("floatingips_fixed_port_id_idx", "fixed_port_id"),
    )

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(PROJECT_LEN), nullable=False)
    description: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False, default="")
    floating_network_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("networks.id", name="fk_floatingips0floating_network_id"),
        nullable=False,
    )
    floating_port_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("ports.id", name="fk_floatingips0floating_port_id"),
        nullable=False,
    )
    floating_ip_address: Mapped[str] = mapped_column(String(ADDRESS_LEN), nullable=False)
    fixed_port_id: Mapped[str | None] = mapped_column(
        String(UUID_LEN), ForeignKey("ports.id", name="fk_floatingips0fixed_port_id")
    )
    fixed_ip_address: Mapped[str | None] = mapped_column(String(ADDRESS_LEN))
    router_id: Mapped[str | None] = mapped_column(
        String(UUID_LEN), ForeignKey("routers.id", name="fk_floatingips0router_id")
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="DOWN")
    revision_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class PortSecurityGroup(Base):
    __tablename__ = "port_security_groups"

    port_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("ports.id", name="fk_port_sgs0port_id", ondelete="CASCADE"),
        primary_key=True,
    )
    security_group_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("security_groups.id", name="fk_port_sgs0sg_id"),
        primary_key=True,
    )


class InstanceNetworkRequest(Base):
    """What a server asked for, one row per NIC in order, recorded with the server.

    The build task makes the ports from these (``port_id`` is set in the
    transaction that creates one, which makes allocation idempotent);
    ``preexisting`` marks a port the user gave, which a delete unbinds
    rather than deletes.
    """

    __tablename__ = "instance_network_requests"
    __table_args__ = (
        UniqueConstraint(
            "instance_uuid", "position", name="uniq_instance_network_requests0uuid0position"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    network_id: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    port_id: Mapped[str | None] = mapped_column(String(UUID_LEN))
    fixed_ip: Mapped[str | None] = mapped_column(String(ADDRESS_LEN))
    #: Security group ids for a port nubes makes (a given port keeps its own).
    security_groups: Mapped[Any] = mapped_column(JSONEncoded, nullable=False)
    preexisting: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class KeyPair(Base, TimestampMixin):
    """Nova's ``key_pairs``: per user, the name unique among the user's key pairs."""

    __tablename__ = "key_pairs"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uniq_key_pairs0user_id0name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    user_id: Mapped[str] = mapped_column(String(PROJECT_LEN), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    public_key: Mapped[str] = mapped_column(Text, nullable=False)
    type: Mapped[str] = mapped_column(String(8), nullable=False, default="ssh")
