"""Glance's metadata definitions catalog (metadefs) and image tasks.

New tables only, so release N's services run unchanged on this schema.
Image quotas need no table: their limits are rows of ``quotas`` (resource
names ``image_count_total``...) and their usage is counted from ``images``.
The resource types Glance ships are built in
(nubes.api.metadefs); a row is written for each one a namespace uses.

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID_LEN = 36
NAME_LEN = 80
PROJECT_LEN = 64


def _dt() -> sa.types.TypeEngine[Any]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _text() -> sa.types.TypeEngine[Any]:
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _stamps() -> list[sa.Column[Any]]:
    return [sa.Column("created_at", _dt()), sa.Column("updated_at", _dt())]


def _namespace_fk(table: str, primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        "namespace_id",
        sa.String(UUID_LEN),
        sa.ForeignKey("metadef_namespaces.id", name=f"fk_{table}0namespace_id"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "metadef_namespaces",
        *_stamps(),
        sa.Column("id", sa.String(UUID_LEN), primary_key=True),
        sa.Column("namespace", sa.String(NAME_LEN), nullable=False),
        sa.Column("display_name", sa.String(NAME_LEN)),
        sa.Column("description", _text()),
        sa.Column("visibility", sa.String(32), nullable=False),
        sa.Column("protected", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(PROJECT_LEN), nullable=False),
        sa.UniqueConstraint("namespace", name="uniq_metadef_namespaces0namespace"),
    )
    op.create_table(
        "metadef_resource_types",
        *_stamps(),
        sa.Column("name", sa.String(NAME_LEN), primary_key=True),
        sa.Column("protected", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "metadef_namespace_resource_types",
        *_stamps(),
        _namespace_fk("metadef_ns_res_types", primary_key=True),
        sa.Column(
            "resource_type_name",
            sa.String(NAME_LEN),
            sa.ForeignKey("metadef_resource_types.name", name="fk_metadef_ns_res_types0name"),
            primary_key=True,
        ),
        sa.Column("properties_target", sa.String(NAME_LEN)),
        sa.Column("prefix", sa.String(NAME_LEN)),
    )
    op.create_table(
        "metadef_objects",
        *_stamps(),
        sa.Column("id", sa.String(UUID_LEN), primary_key=True),
        _namespace_fk("metadef_objects"),
        sa.Column("name", sa.String(NAME_LEN), nullable=False),
        sa.Column("description", _text()),
        sa.Column("required", _text()),
        sa.Column("properties", _text()),
        sa.UniqueConstraint("namespace_id", "name", name="uniq_metadef_objects0namespace_id0name"),
    )
    op.create_table(
        "metadef_properties",
        *_stamps(),
        sa.Column("id", sa.String(UUID_LEN), primary_key=True),
        _namespace_fk("metadef_properties"),
        sa.Column("name", sa.String(NAME_LEN), nullable=False),
        sa.Column("json_schema", _text(), nullable=False),
        sa.UniqueConstraint(
            "namespace_id", "name", name="uniq_metadef_properties0namespace_id0name"
        ),
    )
    op.create_table(
        "metadef_tags",
        *_stamps(),
        sa.Column("id", sa.String(UUID_LEN), primary_key=True),
        _namespace_fk("metadef_tags"),
        sa.Column("name", sa.String(NAME_LEN), nullable=False),
        sa.UniqueConstraint("namespace_id", "name", name="uniq_metadef_tags0namespace_id0name"),
    )
    op.create_table(
        "image_tasks",
        *_stamps(),
        sa.Column("id", sa.String(UUID_LEN), primary_key=True),
        sa.Column("type", sa.String(30), nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("owner", sa.String(PROJECT_LEN), nullable=False),
        sa.Column("image_id", sa.String(UUID_LEN)),
        sa.Column("input", _text(), nullable=False),
        sa.Column("result", _text()),
        sa.Column("message", _text()),
        sa.Column("expires_at", _dt()),
    )
    op.create_index("image_tasks_owner_idx", "image_tasks", ["owner"])
    op.create_index("image_tasks_image_id_idx", "image_tasks", ["image_id"])


def downgrade() -> None:
    op.drop_index("image_tasks_image_id_idx", table_name="image_tasks")
    op.drop_index("image_tasks_owner_idx", table_name="image_tasks")
    for table in (
        "image_tasks",
        "metadef_tags",
        "metadef_properties",
        "metadef_objects",
        "metadef_namespace_resource_types",
        "metadef_resource_types",
        "metadef_namespaces",
    ):
        op.drop_table(table)
