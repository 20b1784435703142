"""Names of users and projects unique per domain; domain-scoped tokens.

Keystone's rule: a user's or project's name is unique inside its domain,
not in the whole cloud, so two domains may each have a ``web`` project.
The cloud-wide ``uniq_users0name`` and ``uniq_projects0name`` become
``(domain_id, name)`` constraints (every existing row is in one domain,
``default``, so no row breaks the new rule). Tokens gain the domain they
are scoped to (``domain_id``) and Keystone's system scope
(``system_scope``: ``all``), both NULL for project-scoped and unscoped
tokens: nullable columns release N's services never read. System role
assignments are rows of ``assignments`` (``UserSystem``/``GroupSystem``),
no schema change.

The catalog gains what operators register beside nubes' own services:
``regions``, ``catalog_services`` and ``endpoints`` (new tables); projects
gain Keystone's tags (``project_tags``, a new table).

Downgrading restores the cloud-wide constraints and fails if two domains
hold the same name by then, rather than drop either row.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID_LEN = 64
NAME_LEN = 255


def _stamps() -> list[sa.Column[Any]]:
    dt = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    return [sa.Column("created_at", dt), sa.Column("updated_at", dt)]


def _text() -> sa.types.TypeEngine[Any]:
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    for table in ("users", "projects"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"uniq_{table}0name", type_="unique")
            batch.create_unique_constraint(f"uniq_{table}0domain_id0name", ["domain_id", "name"])
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("domain_id", sa.String(ID_LEN)))
        batch.add_column(sa.Column("system_scope", sa.String(16)))
    op.create_table(
        "regions",
        sa.Column("id", sa.String(NAME_LEN), primary_key=True),
        sa.Column("description", _text()),
        sa.Column("parent_region_id", sa.String(NAME_LEN)),
        *_stamps(),
    )
    op.create_table(
        "catalog_services",
        sa.Column("id", sa.String(ID_LEN), primary_key=True),
        sa.Column("type", sa.String(NAME_LEN), nullable=False),
        sa.Column("name", sa.String(NAME_LEN)),
        sa.Column("description", _text()),
        sa.Column("enabled", sa.Boolean, nullable=False),
        *_stamps(),
    )
    op.create_table(
        "endpoints",
        sa.Column("id", sa.String(ID_LEN), primary_key=True),
        sa.Column("service_id", sa.String(ID_LEN), nullable=False),
        sa.Column("interface", sa.String(8), nullable=False),
        sa.Column("region_id", sa.String(NAME_LEN)),
        sa.Column("url", _text(), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        *_stamps(),
    )
    op.create_index("endpoints_service_id_idx", "endpoints", ["service_id"])
    op.create_table(
        "project_tags",
        sa.Column("project_id", sa.String(ID_LEN), primary_key=True),
        sa.Column("name", sa.String(NAME_LEN), primary_key=True),
    )


def downgrade() -> None:
    op.drop_index("endpoints_service_id_idx", table_name="endpoints")
    for table in ("project_tags", "endpoints", "catalog_services", "regions"):
        op.drop_table(table)
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("system_scope")
        batch.drop_column("domain_id")
    for table in ("users", "projects"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"uniq_{table}0domain_id0name", type_="unique")
            batch.create_unique_constraint(f"uniq_{table}0name", ["name"])
