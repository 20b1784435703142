"""Console authorisation tokens: ``console_auth_tokens``.

A new table only, so release N's services run unchanged on this schema.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME_LEN = 255
UUID_LEN = 36


def _datetime() -> sa.types.TypeEngine[Any]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "console_auth_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("console_type", sa.String(NAME_LEN), nullable=False),
        sa.Column("instance_uuid", sa.String(UUID_LEN), nullable=False),
        sa.Column("compute_host", sa.String(NAME_LEN), nullable=False),
        sa.Column("host", sa.String(NAME_LEN), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("internal_access_path", sa.String(NAME_LEN), nullable=True),
        sa.Column("access_url_base", sa.String(NAME_LEN), nullable=False),
        sa.Column("created_at", _datetime(), nullable=False),
        sa.Column("expires", _datetime(), nullable=False),
    )
    op.create_index(
        "console_auth_tokens_token_hash_idx", "console_auth_tokens", ["token_hash"], unique=True
    )
    op.create_index(
        "console_auth_tokens_instance_uuid_idx", "console_auth_tokens", ["instance_uuid"]
    )
    op.create_index("console_auth_tokens_expires_idx", "console_auth_tokens", ["expires"])


def downgrade() -> None:
    op.drop_table("console_auth_tokens")
