"""Initial schema: services, compute nodes, instances and everything around them.

Written by hand and frozen: it must not import the models, which will move
on while this revision has to keep creating exactly the schema it always
did. The drift test (tests/*/db/test_migrations.py) checks that upgrading an
empty database to head yields what the models describe.

Every soft-deletable table gets a ``shadow_`` twin for archiving: same
columns, the primary key, nothing else.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Naive UTC; MariaDB needs the fraction asked for explicitly.
DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
#: JSON and long text; TEXT caps at 64 KiB on MariaDB.
MediumText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

NAME = 255
UUID = 36

ColumnsFn = Callable[[], list[sa.Column]]


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)


def _str(name: str, length: int = NAME, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _int(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.Integer, nullable=nullable)


def _bool(name: str) -> sa.Column:
    return sa.Column(name, sa.Boolean, nullable=False)


def _dt(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, DateTime, nullable=nullable)


def _text(name: str) -> sa.Column:
    return sa.Column(name, MediumText, nullable=True)


def _soft_delete() -> list[sa.Column]:
    return [
        _dt("created_at"),
        _dt("updated_at"),
        _dt("deleted_at"),
        _int("deleted", nullable=False),
    ]


def _create(
    name: str,
    columns: ColumnsFn,
    constraints: Sequence[sa.schema.SchemaItem] = (),
    indexes: Sequence[tuple[str, list[str]]] = (),
    shadow: bool = True,
) -> None:
    op.create_table(name, *columns(), *constraints)
    for index_name, index_columns in indexes:
        op.create_index(index_name, name, index_columns)
    if shadow:
        op.create_table(
            f"shadow_{name}",
            *[
                sa.Column(
                    col.name,
                    col.type,
                    primary_key=col.primary_key,
                    autoincrement=False,
                    nullable=col.nullable,
                )
                for col in columns()
            ],
        )


def _unique(table: str, *columns: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*columns, name=f"uniq_{table}0{'0'.join(columns)}")


def _fk(
    table: str, column: str, target: str, ondelete: str | None = None
) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [target], name=f"fk_{table}0{column}", ondelete=ondelete
    )


def upgrade() -> None:
    _create(
        "services",
        lambda: [
            _id(),
            _str("uuid", UUID, nullable=False),
            _str("host", nullable=False),
            _str("binary", nullable=False),
            _str("topic"),
            _int("version", nullable=False),
            _bool("disabled"),
            _str("disabled_reason"),
            _bool("forced_down"),
            *_soft_delete(),
        ],
        [_unique("services", "host", "binary", "deleted"), _unique("services", "uuid")],
    )
    _create(
        "service_heartbeats",
        lambda: [
            sa.Column("service_id", sa.Integer, primary_key=True, autoincrement=False),
            _dt("last_seen_at", nullable=False),
            _int("report_count", nullable=False),
        ],
        [_fk("service_heartbeats", "service_id", "services.id", ondelete="CASCADE")],
        shadow=False,
    )
    _create(
        "compute_nodes",
        lambda: [
            _id(),
            _str("uuid", UUID, nullable=False),
            _int("service_id"),
            _str("host", nullable=False),
            _str("hypervisor_hostname", nullable=False),
            _str("hypervisor_type"),
            _int("hypervisor_version"),
            _str("host_ip", 39),
            _text("cpu_info"),
            _int("vcpus", nullable=False),
            _int("memory_mb", nullable=False),
            _int("local_gb", nullable=False),
            _int("vcpus_used", nullable=False),
            _int("memory_mb_used", nullable=False),
            _int("local_gb_used", nullable=False),
            _int("running_vms", nullable=False),
            sa.Column("cpu_allocation_ratio", sa.Float, nullable=False),
            sa.Column("ram_allocation_ratio", sa.Float, nullable=False),
            sa.Column("disk_allocation_ratio", sa.Float, nullable=False),
            _text("metrics"),
            _text("stats"),
            _int("generation", nullable=False),
            *_soft_delete(),
        ],
        [
            _unique("compute_nodes", "host", "hypervisor_hostname", "deleted"),
            _unique("compute_nodes", "uuid"),
        ],
    )
    _create(
        "allocations",
        lambda: [
            _id(),
            _str("consumer_uuid", UUID, nullable=False),
            _int("compute_node_id", nullable=False),
            _int("vcpus", nullable=False),
            _int("memory_mb", nullable=False),
            _int("disk_gb", nullable=False),
            _dt("created_at"),
        ],
        [_unique("allocations", "consumer_uuid", "compute_node_id")],
        [("allocations_compute_node_id_idx", ["compute_node_id"])],
        shadow=False,
    )
    _create(
        "aggregates",
        lambda: [
            _id(),
            _str("uuid", UUID, nullable=False),
            _str("name", nullable=False),
            *_soft_delete(),
        ],
        [_unique("aggregates", "name", "deleted"), _unique("aggregates", "uuid")],
    )
    _create(
        "aggregate_hosts",
        lambda: [
            _id(),
            _str("host", nullable=False),
            _int("aggregate_id", nullable=False),
            *_soft_delete(),
        ],
        [
            _unique("aggregate_hosts", "host", "aggregate_id", "deleted"),
            _fk("aggregate_hosts", "aggregate_id", "aggregates.id"),
        ],
    )
    _create(
        "aggregate_metadata",
        lambda: [
            _id(),
            _int("aggregate_id", nullable=False),
            _str("key", nullable=False),
            _str("value", nullable=False),
            *_soft_delete(),
        ],
        [
            _unique("aggregate_metadata", "aggregate_id", "key", "deleted"),
            _fk("aggregate_metadata", "aggregate_id", "aggregates.id"),
        ],
        [("aggregate_metadata_key_idx", ["key"])],
    )
    _create(
        "instances",
        lambda: [
            _id(),
            _str("uuid", UUID, nullable=False),
            _str("project_id"),
            _str("user_id"),
            _str("display_name"),
            _str("display_description"),
            _str("hostname"),
            _str("reservation_id"),
            _int("launch_index"),
            _str("key_name"),
            _str("image_ref"),
            _text("flavor"),
            _text("old_flavor"),
            _text("new_flavor"),
            _int("vcpus"),
            _int("memory_mb"),
            _int("root_gb"),
            _int("ephemeral_gb"),
            _str("host"),
            _str("node"),
            _str("launched_on"),
            _str("vm_state"),
            _str("task_state"),
            _int("power_state"),
            _str("availability_zone"),
            _dt("scheduled_at"),
            _dt("launched_at"),
            _dt("terminated_at"),
            _text("user_data"),
            _str("config_drive"),
            _bool("locked"),
            _str("locked_by"),
            _int("progress"),
            _bool("shutdown_terminate"),
            _text("tags"),
            _text("metadata"),
            _text("system_metadata"),
            *_soft_delete(),
        ],
        [_unique("instances", "uuid")],
        [
            ("instances_project_id_deleted_idx", ["project_id", "deleted"]),
            ("instances_host_node_deleted_idx", ["host", "node", "deleted"]),
            ("instances_deleted_created_at_idx", ["deleted", "created_at"]),
            ("instances_task_state_updated_at_idx", ["task_state", "updated_at"]),
        ],
    )
    _create(
        "instance_faults",
        lambda: [
            _id(),
            _str("instance_uuid", UUID, nullable=False),
            _int("code", nullable=False),
            _str("message"),
            _text("details"),
            _str("host"),
            *_soft_delete(),
        ],
        [_fk("instance_faults", "instance_uuid", "instances.uuid")],
        [
            (
                "instance_faults_instance_uuid_deleted_created_at_idx",
                ["instance_uuid", "deleted", "created_at"],
            )
        ],
    )
    _create(
        "instance_actions",
        lambda: [
            _id(),
            _str("action"),
            _str("instance_uuid", UUID, nullable=False),
            _str("request_id"),
            _str("user_id"),
            _str("project_id"),
            _dt("start_time"),
            _dt("finish_time"),
            _str("message"),
            *_soft_delete(),
        ],
        [_fk("instance_actions", "instance_uuid", "instances.uuid")],
        [("instance_actions_instance_uuid_request_id_idx", ["instance_uuid", "request_id"])],
    )
    _create(
        "instance_actions_events",
        lambda: [
            _id(),
            _str("event"),
            _int("action_id", nullable=False),
            _dt("start_time"),
            _dt("finish_time"),
            _str("result"),
            _text("traceback"),
            _str("host"),
            _text("details"),
            *_soft_delete(),
        ],
        [_fk("instance_actions_events", "action_id", "instance_actions.id")],
        [("instance_actions_events_action_id_idx", ["action_id"])],
    )
    _create(
        "migrations",
        lambda: [
            _id(),
            _str("uuid", UUID, nullable=False),
            _str("instance_uuid", UUID),
            _str("source_compute"),
            _str("dest_compute"),
            _str("source_node"),
            _str("dest_node"),
            _str("dest_host"),
            _str("status"),
            _str("migration_type"),
            _bool("hidden"),
            _str("project_id"),
            _str("user_id"),
            *[
                sa.Column(name, sa.BigInteger, nullable=True)
                for name in (
                    "memory_total",
                    "memory_processed",
                    "memory_remaining",
                    "disk_total",
                    "disk_processed",
                    "disk_remaining",
                )
            ],
            *_soft_delete(),
        ],
        [_unique("migrations", "uuid"), _fk("migrations", "instance_uuid", "instances.uuid")],
        [
            ("migrations_instance_uuid_status_idx", ["instance_uuid", "deleted", "status"]),
            ("migrations_source_compute_status_idx", ["source_compute", "deleted", "status"]),
            ("migrations_dest_compute_status_idx", ["dest_compute", "deleted", "status"]),
        ],
    )
    _create(
        "conductor_tasks",
        lambda: [
            _id(),
            _str("uuid", UUID, nullable=False),
            _str("kind", nullable=False),
            _str("instance_uuid", UUID),
            _str("active_instance_uuid", UUID),
            _str("status", 32, nullable=False),
            _str("step"),
            _int("attempt", nullable=False),
            _str("owner"),
            _dt("lease_expires_at"),
            _dt("deadline"),
            _text("payload"),
            _text("context"),
            _text("last_error"),
            *_soft_delete(),
        ],
        [
            _unique("conductor_tasks", "uuid"),
            _unique("conductor_tasks", "active_instance_uuid"),
            _fk("conductor_tasks", "instance_uuid", "instances.uuid"),
        ],
        [
            ("conductor_tasks_status_lease_expires_at_idx", ["status", "lease_expires_at"]),
            ("conductor_tasks_instance_uuid_idx", ["instance_uuid"]),
        ],
    )
    _create(
        "flavors",
        lambda: [
            _id(),
            _str("flavorid", nullable=False),
            _str("name", nullable=False),
            _int("memory_mb", nullable=False),
            _int("vcpus", nullable=False),
            _int("root_gb", nullable=False),
            _int("ephemeral_gb", nullable=False),
            _int("swap", nullable=False),
            sa.Column("rxtx_factor", sa.Float, nullable=False),
            _int("vcpu_weight"),
            _bool("disabled"),
            _bool("is_public"),
            _text("description"),
            *_soft_delete(),
        ],
        [_unique("flavors", "name", "deleted"), _unique("flavors", "flavorid", "deleted")],
    )
    _create(
        "flavor_extra_specs",
        lambda: [
            _id(),
            _int("flavor_id", nullable=False),
            _str("key", nullable=False),
            _str("value"),
            *_soft_delete(),
        ],
        [
            _unique("flavor_extra_specs", "flavor_id", "key", "deleted"),
            _fk("flavor_extra_specs", "flavor_id", "flavors.id"),
        ],
    )
    _create(
        "flavor_projects",
        lambda: [
            _id(),
            _int("flavor_id", nullable=False),
            _str("project_id", nullable=False),
            *_soft_delete(),
        ],
        [
            _unique("flavor_projects", "flavor_id", "project_id", "deleted"),
            _fk("flavor_projects", "flavor_id", "flavors.id"),
        ],
    )
    _create(
        "instance_groups",
        lambda: [
            _id(),
            _str("uuid", UUID, nullable=False),
            _str("name"),
            _str("project_id"),
            _str("user_id"),
            _str("policy"),
            _text("rules"),
            *_soft_delete(),
        ],
        [_unique("instance_groups", "uuid")],
    )
    _create(
        "instance_group_members",
        lambda: [
            _id(),
            _int("group_id", nullable=False),
            _str("instance_uuid", UUID, nullable=False),
            *_soft_delete(),
        ],
        [
            _unique("instance_group_members", "group_id", "instance_uuid", "deleted"),
            _fk("instance_group_members", "group_id", "instance_groups.id"),
        ],
        [("instance_group_members_instance_uuid_idx", ["instance_uuid"])],
    )


#: Children before parents, so foreign keys never block a drop.
_DROP_ORDER = (
    "instance_group_members",
    "instance_groups",
    "flavor_projects",
    "flavor_extra_specs",
    "flavors",
    "conductor_tasks",
    "migrations",
    "instance_actions_events",
    "instance_actions",
    "instance_faults",
    "instances",
    "aggregate_metadata",
    "aggregate_hosts",
    "aggregates",
    "allocations",
    "compute_nodes",
    "service_heartbeats",
    "services",
)
_NO_SHADOW = ("allocations", "service_heartbeats")


def downgrade() -> None:
    for name in _DROP_ORDER:
        op.drop_table(name)
        if name not in _NO_SHADOW:
            op.drop_table(f"shadow_{name}")
