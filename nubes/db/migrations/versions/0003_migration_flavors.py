"""Migrations record the flavors a resize moves between.

``old_instance_type_id`` and ``new_instance_type_id`` are Nova's names (the
flavors' integer ids), shown by ``GET /os-migrations``; the flavor snapshots
themselves stay on the instance (``old_flavor``/``new_flavor``), so a revert
restores the old flavor even when it was deleted meanwhile.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("old_instance_type_id", "new_instance_type_id")


def upgrade() -> None:
    for table in ("migrations", "shadow_migrations"):
        with op.batch_alter_table(table) as batch:
            for name in _COLUMNS:
                batch.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in ("migrations", "shadow_migrations"):
        with op.batch_alter_table(table) as batch:
            for name in _COLUMNS:
                batch.drop_column(name)
