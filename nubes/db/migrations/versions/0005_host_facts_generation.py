"""A generation counter per set of cached facts (``generations``).

Every write to what schedulers cache about hosts (services disabled or
forced down, aggregates, their hosts and metadata) bumps the
``host_facts`` row in its own transaction; schedulers read that one row per
request and reload only when it moved. The row is made by the first bump
(an upsert), so the table starts empty.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "generations",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("generations")
