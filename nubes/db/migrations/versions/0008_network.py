"""Networking (networks, subnets, ports, IPAM, security groups, a server's requested
networks) and key pairs.

Hard-deleted tables, as Neutron keeps them: a port's addresses are free
again once its row (and its ``ip_allocations`` rows) are gone.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID_LEN = 36
NAME_LEN = 255
PROJECT_LEN = 64
ADDRESS_LEN = 64
MAC_LEN = 32


def _dt() -> sa.types.TypeEngine[Any]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _stamps() -> list[sa.Column[Any]]:
    return [sa.Column("created_at", _dt()), sa.Column("updated_at", _dt())]


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(UUID_LEN), primary_key=True)


def _project() -> sa.Column[str]:
    return sa.Column("project_id", sa.String(PROJECT_LEN), nullable=False)


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(NAME_LEN), nullable=False)


def _flag(name: str) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), nullable=False)


def _revision() -> sa.Column[int]:
    return sa.Column("revision_number", sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "networks",
        *_stamps(),
        _id(),
        _project(),
        _text("name"),
        _text("description"),
        _flag("admin_state_up"),
        _flag("shared"),
        _flag("external"),
        sa.Column("mtu", sa.Integer(), nullable=False),
        _flag("port_security_enabled"),
        sa.Column("segmentation_id", sa.Integer(), nullable=False, unique=True),
        _flag("auto_allocated"),
        _revision(),
    )
    op.create_index("networks_project_id_idx", "networks", ["project_id"])
    op.create_table(
        "subnets",
        *_stamps(),
        _id(),
        sa.Column(
            "network_id",
            sa.String(UUID_LEN),
            sa.ForeignKey("networks.id", name="fk_subnets0network_id"),
            nullable=False,
        ),
        _project(),
        _text("name"),
        _text("description"),
        sa.Column("ip_version", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(ADDRESS_LEN), nullable=False),
        sa.Column("gateway_ip", sa.String(ADDRESS_LEN)),
        _flag("enable_dhcp"),
        sa.Column("allocation_pools", _json(), nullable=False),
        sa.Column("dns_nameservers", _json(), nullable=False),
        sa.Column("host_routes", _json(), nullable=False),
        sa.Column("ipv6_ra_mode", sa.String(32)),
        sa.Column("ipv6_address_mode", sa.String(32)),
        sa.Column("ipam_generation", sa.Integer(), nullable=False),
        _revision(),
    )
    op.create_index("subnets_network_id_idx", "subnets", ["network_id"])
    op.create_table(
        "security_groups",
        *_stamps(),
        _id(),
        _project(),
        _text("name"),
        _text("description"),
        _flag("stateful"),
        _revision(),
    )
    op.create_index("security_groups_project_id_idx", "security_groups", ["project_id"])
    op.create_table(
        "default_security_groups",
        sa.Column("project_id", sa.String(PROJECT_LEN), primary_key=True),
        sa.Column(
            "security_group_id",
            sa.String(UUID_LEN),
            sa.ForeignKey(
                "security_groups.id",
                name="fk_default_security_groups0sg_id",
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
    )
    op.create_table(
        "security_group_rules",
        *_stamps(),
        _id(),
        sa.Column(
            "security_group_id",
            sa.String(UUID_LEN),
            sa.ForeignKey("security_groups.id", name="fk_sg_rules0sg_id", ondelete="CASCADE"),
            nullable=False,
        ),
        _project(),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("ethertype", sa.String(8), nullable=False),
        sa.Column("protocol", sa.String(40)),
        sa.Column("port_range_min", sa.Integer()),
        sa.Column("port_range_max", sa.Integer()),
        sa.Column("remote_ip_prefix", sa.String(ADDRESS_LEN)),
        sa.Column(
            "remote_group_id",
            sa.String(UUID_LEN),
            sa.ForeignKey(
                "security_groups.id", name="fk_sg_rules0remote_group_id", ondelete="CASCADE"
            ),
        ),
        _text("description"),
        _revision(),
    )
    op.create_index("security_group_rules_sg_id_idx", "security_group_rules", ["security_group_id"])
    op.create_table(
        "ports",
        *_stamps(),
        _id(),
        sa.Column(
            "network_id",
            sa.String(UUID_LEN),
            sa.ForeignKey("networks.id", name="fk_ports0network_id"),
            nullable=False,
        ),
        _project(),
        _text("name"),
        _text("description"),
        sa.Column("mac_address", sa.String(MAC_LEN), nullable=False),
        _flag("admin_state_up"),
        sa.Column("status", sa.String(16), nullable=False),
        _text("device_id"),
        _text("device_owner"),
        _text("binding_host_id"),
        _flag("port_security_enabled"),
        _revision(),
        sa.UniqueConstraint("network_id", "mac_address", name="uniq_ports0network_id0mac_address"),
    )
    op.create_index("ports_device_id_idx", "ports", ["device_id"])
    op.create_index("ports_project_id_idx", "ports", ["project_id"])
    op.create_table(
        "ip_allocations",
        sa.Column(
            "subnet_id",
            sa.String(UUID_LEN),
            sa.ForeignKey("subnets.id", name="fk_ip_allocations0subnet_id"),
            primary_key=True,
        ),
        sa.Column("ip_address", sa.String(ADDRESS_LEN), primary_key=True),
        sa.Column(
            "port_id",
            sa.String(UUID_LEN),
            sa.ForeignKey("ports.id", name="fk_ip_allocations0port_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("network_id", sa.String(UUID_LEN), nullable=False),
    )
    op.create_index("ip_allocations_port_id_idx", "ip_allocations", ["port_id"])
    op.create_table(
        "port_security_groups",
        sa.Column(
            "port_id",
            sa.String(UUID_LEN),
            sa.ForeignKey("ports.id", name="fk_port_sgs0port_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "security_group_id",
            sa.String(UUID_LEN),
            sa.ForeignKey("security_groups.id", name="fk_port_sgs0sg_id"),
            primary_key=True,
        ),
    )
    op.create_table(
        "instance_network_requests",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("instance_uuid", sa.String(UUID_LEN), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("network_id", sa.String(UUID_LEN), nullable=False),
        sa.Column("port_id", sa.String(UUID_LEN)),
        sa.Column("fixed_ip", sa.String(ADDRESS_LEN)),
        sa.Column("security_groups", _json(), nullable=False),
        _flag("preexisting"),
        sa.UniqueConstraint(
            "instance_uuid", "position", name="uniq_instance_network_requests0uuid0position"
        ),
    )
    op.create_table(
        "key_pairs",
        *_stamps(),
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _text("name"),
        sa.Column("user_id", sa.String(PROJECT_LEN), nullable=False),
        _text("fingerprint"),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.UniqueConstraint("user_id", "name", name="uniq_key_pairs0user_id0name"),
    )


def downgrade() -> None:
    for table in (
        "key_pairs",
        "instance_network_requests",
        "port_security_groups",
        "ip_allocations",
        "ports",
        "security_group_rules",
        "default_security_groups",
        "security_groups",
        "subnets",
        "networks",
    ):
        op.drop_table(table)
