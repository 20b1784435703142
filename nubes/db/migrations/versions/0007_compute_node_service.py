"""Bind every live compute node to its host's live compute service.

Placement by node (an instance that has no host yet) now goes through the
node row's ``service_id``, never by node name alone (docs/security.md); the
database API binds new nodes and newly registered services. Nodes created
before this revision may have none: they are bound here, as the API would.
No schema change.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    meta = sa.MetaData()
    nodes = sa.Table("compute_nodes", meta, autoload_with=op.get_bind())
    services = sa.Table("services", meta, autoload_with=op.get_bind())
    live_services = sa.select(services.c.id).where(services.c.deleted == 0)
    # The unique (host, binary, deleted) constraint: at most one live match.
    # MariaDB refuses a subquery on the table being updated, not on another.
    owner = (
        sa.select(services.c.id)
        .where(
            services.c.host == nodes.c.host,
            services.c.binary == "compute",
            services.c.deleted == 0,
        )
        .scalar_subquery()
    )
    op.get_bind().execute(
        sa.update(nodes)
        .where(
            nodes.c.deleted == 0,
            sa.or_(nodes.c.service_id.is_(None), nodes.c.service_id.not_in(live_services)),
        )
        .values(service_id=owner)
    )


def downgrade() -> None:
    # The binding is data the old code ignores.
    pass
