"""Identity (projects, users, roles, assignments, tokens) and the image registry.

Written by hand and frozen like 0001: it must not import the models. None of
these tables is soft-deletable, so none has a shadow twin.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MediumText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

NAME = 255
ID = 64
UUID = 36


def _timestamps() -> list[sa.Column]:
    return [sa.Column("created_at", DateTime), sa.Column("updated_at", DateTime)]


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("description", MediumText),
        sa.Column("enabled", sa.Boolean, nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("name", name="uniq_projects0name"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("password_hash", sa.String(NAME)),
        sa.Column("default_project_id", sa.String(ID)),
        sa.Column("enabled", sa.Boolean, nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("name", name="uniq_users0name"),
    )
    op.create_table(
        "roles",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("name", sa.String(NAME), nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("name", name="uniq_roles0name"),
    )
    op.create_table(
        "role_assignments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("project_id", sa.String(ID), nullable=False),
        sa.Column("role_id", sa.String(ID), nullable=False),
        *_timestamps(),
        sa.UniqueConstraint(
            "user_id",
            "project_id",
            "role_id",
            name="uniq_role_assignments0user_id0project_id0role_id",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_role_assignments0user_id", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_role_assignments0project_id",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name="fk_role_assignments0role_id", ondelete="CASCADE"
        ),
    )
    op.create_index("role_assignments_project_id_idx", "role_assignments", ["project_id"])
    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("project_id", sa.String(ID)),
        sa.Column("roles", MediumText),
        sa.Column("methods", MediumText),
        sa.Column("audit_id", sa.String(NAME), nullable=False),
        sa.Column("issued_at", DateTime, nullable=False),
        sa.Column("expires_at", DateTime, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
    )
    op.create_index("tokens_expires_at_idx", "tokens", ["expires_at"])
    op.create_index("tokens_user_id_idx", "tokens", ["user_id"])
    op.create_table(
        "images",
        sa.Column("id", sa.String(UUID), primary_key=True),
        sa.Column("name", sa.String(NAME)),
        sa.Column("owner", sa.String(ID)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("visibility", sa.String(32), nullable=False),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("os_hidden", sa.Boolean, nullable=False),
        sa.Column("disk_format", sa.String(32)),
        sa.Column("container_format", sa.String(32)),
        sa.Column("min_disk", sa.Integer, nullable=False),
        sa.Column("min_ram", sa.Integer, nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("checksum", sa.String(32)),
        sa.Column("os_hash_algo", sa.String(64)),
        sa.Column("os_hash_value", sa.String(128)),
        sa.Column("properties", MediumText),
        sa.Column("tags", MediumText),
        *_timestamps(),
    )
    op.create_index("images_owner_idx", "images", ["owner"])
    op.create_index("images_name_idx", "images", ["name"])


def downgrade() -> None:
    for name in ("images", "tokens", "role_assignments", "roles", "users", "projects"):
        op.drop_table(name)
