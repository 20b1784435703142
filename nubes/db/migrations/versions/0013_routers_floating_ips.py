"""Routers and floating IPs: ``routers`` and ``floatingips``; flat networks.

New tables and a nullable column (``networks.physical_network``, set only
for flat networks such as an external one), so release N's services run
unchanged on this schema.
Router interfaces, gateways and floating addresses are ports (with their
``ip_allocations``), as in Neutron; these tables point at them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID_LEN = 36
NAME_LEN = 255
PROJECT_LEN = 64
ADDRESS_LEN = 64


def _dt() -> sa.types.TypeEngine[Any]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _stamps() -> list[sa.Column[Any]]:
    return [sa.Column("created_at", _dt()), sa.Column("updated_at", _dt())]


def _fk(name: str, target: str, fk_name: str, nullable: bool = True) -> sa.Column[str]:
    return sa.Column(
        name, sa.String(UUID_LEN), sa.ForeignKey(target, name=fk_name), nullable=nullable
    )


def upgrade() -> None:
    op.add_column("networks", sa.Column("physical_network", sa.String(64), nullable=True))
    op.create_table(
        "routers",
        *_stamps(),
        sa.Column("id", sa.String(UUID_LEN), primary_key=True),
        sa.Column("project_id", sa.String(PROJECT_LEN), nullable=False),
        sa.Column("name", sa.String(NAME_LEN), nullable=False),
        sa.Column("description", sa.String(NAME_LEN), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _fk("gw_network_id", "networks.id", "fk_routers0gw_network_id"),
        _fk("gw_port_id", "ports.id", "fk_routers0gw_port_id"),
        sa.Column("enable_snat", sa.Boolean(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
    )
    op.create_index("routers_project_id_idx", "routers", ["project_id"])
    op.create_table(
        "floatingips",
        *_stamps(),
        sa.Column("id", sa.String(UUID_LEN), primary_key=True),
        sa.Column("project_id", sa.String(PROJECT_LEN), nullable=False),
        sa.Column("description", sa.String(NAME_LEN), nullable=False),
        _fk(
            "floating_network_id",
            "networks.id",
            "fk_floatingips0floating_network_id",
            nullable=False,
        ),
        _fk("floating_port_id", "ports.id", "fk_floatingips0floating_port_id", nullable=False),
        sa.Column("floating_ip_address", sa.String(ADDRESS_LEN), nullable=False),
        _fk("fixed_port_id", "ports.id", "fk_floatingips0fixed_port_id"),
        sa.Column("fixed_ip_address", sa.String(ADDRESS_LEN)),
        _fk("router_id", "routers.id", "fk_floatingips0router_id"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.UniqueConstraint(
            "floating_network_id",
            "fixed_port_id",
            "fixed_ip_address",
            name="uniq_floatingips0network0port0fixed_ip",
        ),
    )
    op.create_index("floatingips_project_id_idx", "floatingips", ["project_id"])
    op.create_index("floatingips_fixed_port_id_idx", "floatingips", ["fixed_port_id"])


def downgrade() -> None:
    op.drop_table("floatingips")
    op.drop_table("routers")
    op.drop_column("networks", "physical_network")
