"""What ``nubes-manage status`` reads: queue depth samples and task takeovers.

``queue_samples`` keeps an hour of topic queue depths (how long a queue has
been growing); ``conductor_tasks.taken_over_at`` says when a conductor last
took a task over after another's lease ran out. Both are new and nullable
or separate, so release N's services run unchanged on this schema.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME_LEN = 255


def _datetime() -> sa.types.TypeEngine[Any]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    for table in ("conductor_tasks", "shadow_conductor_tasks"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("taken_over_at", _datetime(), nullable=True))
    op.create_table(
        "queue_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(NAME_LEN), nullable=False),
        sa.Column("taken_at", _datetime(), nullable=False),
        sa.Column("messages", sa.Integer, nullable=False),
        sa.Column("consumers", sa.Integer, nullable=False),
    )
    op.create_index("queue_samples_queue_taken_at_idx", "queue_samples", ["queue", "taken_at"])


def downgrade() -> None:
    op.drop_index("queue_samples_queue_taken_at_idx", table_name="queue_samples")
    op.drop_table("queue_samples")
    for table in ("conductor_tasks", "shadow_conductor_tasks"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("taken_over_at")
