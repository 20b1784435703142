"""Image members: the projects a ``shared`` image is shared with, and their answer.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "image_members",
        sa.Column("image_id", sa.String(36), primary_key=True),
        sa.Column("member", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", DateTime),
        sa.Column("updated_at", DateTime),
    )
    op.create_index("image_members_member_idx", "image_members", ["member"])


def downgrade() -> None:
    op.drop_index("image_members_member_idx", table_name="image_members")
    op.drop_table("image_members")
