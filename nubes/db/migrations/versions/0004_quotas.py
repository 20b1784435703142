"""Quota limits per quota class, project and user, and the per-project quota lock.

Written by hand and frozen: it must not import the models. None of these
tables is soft-deletable, so none has a shadow twin.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

NAME = 255
ID = 64


def _timestamps() -> list[sa.Column]:
    return [sa.Column("created_at", DateTime), sa.Column("updated_at", DateTime)]


def upgrade() -> None:
    op.create_table(
        "quota_classes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("class_name", sa.String(NAME), nullable=False),
        sa.Column("resource", sa.String(NAME), nullable=False),
        sa.Column("hard_limit", sa.Integer, nullable=False),
        *_timestamps(),
        sa.UniqueConstraint(
            "class_name", "resource", name="uniq_quota_classes0class_name0resource"
        ),
    )
    op.create_table(
        "quotas",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(ID), nullable=False),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("resource", sa.String(NAME), nullable=False),
        sa.Column("hard_limit", sa.Integer, nullable=False),
        *_timestamps(),
        sa.UniqueConstraint(
            "project_id", "user_id", "resource", name="uniq_quotas0project_id0user_id0resource"
        ),
    )
    op.create_table(
        "quota_locks",
        sa.Column("project_id", sa.String(ID), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("quota_locks")
    op.drop_table("quotas")
    op.drop_table("quota_classes")
