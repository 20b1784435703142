"""Server tags in their own table, as Nova keeps them.

``tags`` holds one row per (server, tag) so ``GET /servers?tags=...`` (and
``tags-any``, ``not-tags``, ``not-tags-any``) filter in SQL. The tags a
server was created with were a JSON list on ``instances.tags``; they move to
the table (live servers only: a deleted server's tags go with it, as in
Nova) and the column goes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TAG_LEN = 60
UUID_LEN = 36
#: The type instances.tags had (0001), for a downgrade.
MediumText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _tags_of(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return sorted({str(t) for t in value}) if isinstance(value, list) else []


def upgrade() -> None:
    instances = sa.table(
        "instances",
        sa.column("uuid", sa.String),
        sa.column("tags", sa.Text),
        sa.column("deleted", sa.Integer),
    )
    bind = op.get_bind()
    found = bind.execute(
        sa.select(instances.c.uuid, instances.c.tags).where(
            instances.c.deleted == 0, instances.c.tags.is_not(None)
        )
    )
    rows = [{"resource_id": uuid, "tag": tag} for uuid, raw in found for tag in _tags_of(raw)]
    for table in ("instances", "shadow_instances"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("tags")
    tags = op.create_table(
        "tags",
        sa.Column(
            "resource_id",
            sa.String(UUID_LEN),
            sa.ForeignKey("instances.uuid", name="fk_tags0resource_id"),
            primary_key=True,
        ),
        sa.Column("tag", sa.String(TAG_LEN), primary_key=True),
    )
    op.create_index("tags_tag_idx", "tags", ["tag"])
    if rows:
        op.bulk_insert(tags, rows)


def downgrade() -> None:
    for table in ("instances", "shadow_instances"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tags", MediumText, nullable=True))
    tags = sa.table("tags", sa.column("resource_id", sa.String), sa.column("tag", sa.String))
    instances = sa.table("instances", sa.column("uuid", sa.String), sa.column("tags", sa.Text))
    bind = op.get_bind()
    by_uuid: dict[str, list[str]] = {}
    for uuid, tag in bind.execute(sa.select(tags.c.resource_id, tags.c.tag)):
        by_uuid.setdefault(uuid, []).append(tag)
    for uuid, names in by_uuid.items():
        bind.execute(
            instances.update()
            .where(instances.c.uuid == uuid)
            .values(tags=json.dumps(sorted(names)))
        )
    op.drop_index("tags_tag_idx", table_name="tags")
    op.drop_table("tags")
