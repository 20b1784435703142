"""Identity administration: domains, groups, application credentials, and
role assignments in Keystone's shape.

``role_assignments`` (a user's role on a project) becomes ``assignments``
(a user's or group's role on a project or domain: ``type``, ``actor_id``,
``target_id``, ``role_id``), its rows copied as ``UserProject``. Users and
projects gain a ``domain_id`` (every existing one is in ``default``, the
domain this migration creates); users gain Keystone's free-form ``extra``,
roles a description, tokens the application credential they came from.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MediumText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
NAME = 255
ID = 64
DEFAULT = "default"


def _timestamps() -> list[sa.Column]:
    return [sa.Column("created_at", DateTime), sa.Column("updated_at", DateTime)]


def upgrade() -> None:
    domains = op.create_table(
        "domains",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("description", MediumText),
        sa.Column("enabled", sa.Boolean, nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("name", name="uniq_domains0name"),
    )
    op.bulk_insert(
        domains,
        [{"id": DEFAULT, "name": "Default", "description": "The default domain", "enabled": True}],
    )
    for table in ("projects", "users"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("domain_id", sa.String(ID), server_default=DEFAULT, nullable=False)
            )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("extra", MediumText))
    with op.batch_alter_table("roles") as batch:
        batch.add_column(sa.Column("description", MediumText))
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("application_credential_id", sa.String(ID)))
    op.create_table(
        "groups",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("domain_id", sa.String(ID), nullable=False),
        sa.Column("description", MediumText),
        *_timestamps(),
        sa.UniqueConstraint("domain_id", "name", name="uniq_groups0domain_id0name"),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(ID), primary_key=True),
        sa.Column("user_id", sa.String(ID), primary_key=True),
    )
    op.create_index("group_members_user_id_idx", "group_members", ["user_id"])
    assignments = op.create_table(
        "assignments",
        sa.Column("type", sa.String(16), primary_key=True),
        sa.Column("actor_id", sa.String(ID), primary_key=True),
        sa.Column("target_id", sa.String(ID), primary_key=True),
        sa.Column("role_id", sa.String(ID), primary_key=True),
    )
    op.create_index("assignments_actor_id_idx", "assignments", ["actor_id"])
    op.create_index("assignments_target_id_idx", "assignments", ["target_id"])
    old = sa.table(
        "role_assignments",
        sa.column("user_id", sa.String),
        sa.column("project_id", sa.String),
        sa.column("role_id", sa.String),
    )
    rows = [
        {"type": "UserProject", "actor_id": u, "target_id": p, "role_id": r}
        for u, p, r in op.get_bind().execute(
            sa.select(old.c.user_id, old.c.project_id, old.c.role_id)
        )
    ]
    if rows:
        op.bulk_insert(assignments, rows)
    # drop_table takes its indexes along; dropping the index first fails on
    # MariaDB, where it backs the project foreign key.
    op.drop_table("role_assignments")
    op.create_table(
        "application_credentials",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("project_id", sa.String(ID), nullable=False),
        sa.Column("secret_hash", sa.String(NAME), nullable=False),
        sa.Column("description", MediumText),
        sa.Column("expires_at", DateTime),
        sa.Column("unrestricted", sa.Boolean, nullable=False),
        sa.Column("roles", MediumText, nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("user_id", "name", name="uniq_application_credentials0user_id0name"),
    )


def downgrade() -> None:
    op.drop_table("application_credentials")
    op.create_table(
        "role_assignments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("project_id", sa.String(ID), nullable=False),
        sa.Column("role_id", sa.String(ID), nullable=False),
        *_timestamps(),
        sa.UniqueConstraint(
            "user_id",
            "project_id",
            "role_id",
            name="uniq_role_assignments0user_id0project_id0role_id",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_role_assignments0user_id", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_role_assignments0project_id",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name="fk_role_assignments0role_id", ondelete="CASCADE"
        ),
    )
    op.create_index("role_assignments_project_id_idx", "role_assignments", ["project_id"])
    new = sa.table(
        "assignments",
        sa.column("type", sa.String),
        sa.column("actor_id", sa.String),
        sa.column("target_id", sa.String),
        sa.column("role_id", sa.String),
    )
    bind = op.get_bind()
    # Only a user's role on a project existed before; the rest is lost.
    kept = bind.execute(
        sa.select(new.c.actor_id, new.c.target_id, new.c.role_id).where(new.c.type == "UserProject")
    )
    rows = [{"user_id": u, "project_id": p, "role_id": r} for u, p, r in kept]
    if rows:
        old = sa.table(
            "role_assignments",
            sa.column("user_id", sa.String),
            sa.column("project_id", sa.String),
            sa.column("role_id", sa.String),
        )
        op.bulk_insert(old, rows)
    op.drop_table("assignments")
    op.drop_table("group_members")
    op.drop_table("groups")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("application_credential_id")
    with op.batch_alter_table("roles") as batch:
        batch.drop_column("description")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("extra")
    for table in ("users", "projects"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("domain_id")
    op.drop_table("domains")
