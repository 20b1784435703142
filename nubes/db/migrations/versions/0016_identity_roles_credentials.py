"""Implied roles as data, domain-specific roles, credentials, project parents.

Until now the chain admin > manager > member > reader was fixed in code.
It becomes rows of ``role_inferences`` (prior role, implied role), written
here as Keystone's bootstrap writes them: the four default roles are
created when missing (a cloud migrated before its bootstrap gets the same
rows the bootstrap would make; the bootstrap then finds them by name).

Roles gain ``domain_id``: a domain-specific role's domain, or ``''`` for a
global role. An empty string rather than NULL because a unique constraint
lets NULLs repeat on PostgreSQL and MariaDB, and a global role's name must
stay unique; the cloud-wide ``uniq_roles0name`` becomes
``(domain_id, name)``. Every existing role is global.

``credentials`` (Keystone's ``/v3/credentials``) is a new table whose blobs
are Fernet-encrypted by the API (``key_hash`` names the key that did it).
Projects gain ``parent_id`` (NULL for a project at the top of its domain).

Downgrading drops the credentials, the rules and the domain-specific roles
(with their assignments), and fails, rather than drop a project, if any
project has a parent by then: children would silently become top-level.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID_LEN = 64
NAME_LEN = 255
#: Keystone's default implied roles, strongest first; each implies the next.
DEFAULT_CHAIN = ("admin", "manager", "member", "reader")


def _stamps() -> list[sa.Column[Any]]:
    dt = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    return [sa.Column("created_at", dt), sa.Column("updated_at", dt)]


def _text() -> sa.types.TypeEngine[Any]:
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _default_rules() -> None:
    roles = sa.table("roles", sa.column("id", sa.String), sa.column("name", sa.String))
    bind = op.get_bind()
    ids = dict(bind.execute(sa.select(roles.c.name, roles.c.id)).all())
    for name in DEFAULT_CHAIN:
        if name not in ids:
            ids[name] = uuid.uuid4().hex
            bind.execute(sa.insert(roles).values(id=ids[name], name=name))
    rules = sa.table(
        "role_inferences",
        sa.column("prior_role_id", sa.String),
        sa.column("implied_role_id", sa.String),
    )
    bind.execute(
        sa.insert(rules),
        [
            {"prior_role_id": ids[prior], "implied_role_id": ids[implied]}
            for prior, implied in itertools.pairwise(DEFAULT_CHAIN)
        ],
    )


def upgrade() -> None:
    with op.batch_alter_table("roles") as batch:
        batch.add_column(
            sa.Column("domain_id", sa.String(ID_LEN), nullable=False, server_default="")
        )
        batch.drop_constraint("uniq_roles0name", type_="unique")
        batch.create_unique_constraint("uniq_roles0domain_id0name", ["domain_id", "name"])
    op.create_table(
        "role_inferences",
        sa.Column(
            "prior_role_id",
            sa.String(ID_LEN),
            sa.ForeignKey("roles.id", name="fk_role_inferences0prior_role_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "implied_role_id",
            sa.String(ID_LEN),
            sa.ForeignKey(
                "roles.id", name="fk_role_inferences0implied_role_id", ondelete="CASCADE"
            ),
            primary_key=True,
        ),
    )
    op.create_index("role_inferences_implied_role_id_idx", "role_inferences", ["implied_role_id"])
    _default_rules()
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(ID_LEN), primary_key=True),
        sa.Column("user_id", sa.String(ID_LEN), nullable=False),
        sa.Column("project_id", sa.String(ID_LEN)),
        sa.Column("type", sa.String(NAME_LEN), nullable=False),
        sa.Column("encrypted_blob", _text(), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        *_stamps(),
    )
    op.create_index("credentials_user_id_idx", "credentials", ["user_id"])
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(ID_LEN)))
        batch.create_index("projects_parent_id_idx", ["parent_id"])


def downgrade() -> None:
    bind = op.get_bind()
    parented = bind.execute(sa.text("SELECT COUNT(*) FROM projects WHERE parent_id IS NOT NULL"))
    if parented.scalar():
        raise RuntimeError("projects have parents: delete or re-parent them before downgrading")
    with op.batch_alter_table("projects") as batch:
        batch.drop_index("projects_parent_id_idx")
        batch.drop_column("parent_id")
    op.drop_index("credentials_user_id_idx", table_name="credentials")
    op.drop_table("credentials")
    op.drop_table("role_inferences")
    bind.execute(
        sa.text(
            "DELETE FROM assignments WHERE role_id IN (SELECT id FROM roles WHERE domain_id <> '')"
        )
    )
    bind.execute(sa.text("DELETE FROM roles WHERE domain_id <> ''"))
    with op.batch_alter_table("roles") as batch:
        batch.drop_constraint("uniq_roles0domain_id0name", type_="unique")
        batch.create_unique_constraint("uniq_roles0name", ["name"])
        batch.drop_column("domain_id")
