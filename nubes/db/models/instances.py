"""Instances and what hangs off them: faults, actions, migrations, tasks."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nubes.db.models.base import NAME_LEN, UUID_LEN, Base, SoftDeleteMixin, TimestampMixin
from nubes.db.types import JSONEncoded, LongText, UTCDateTime

#: Longest server tag (Nova's limit).
TAG_LEN = 60
#: Length of a conductor task status (a short enum word).
STATUS_LEN = 32


def _instance_fk(table: str) -> ForeignKey:
    return ForeignKey("instances.uuid", name=f"fk_{table}0instance_uuid")


class Instance(Base, TimestampMixin, SoftDeleteMixin):
    """A server. ``flavor`` is a snapshot: later edits of the flavor do not move it."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("uuid", name="uniq_instances0uuid"),
        Index("instances_project_id_deleted_idx", "project_id", "deleted"),
        Index("instances_host_node_deleted_idx", "host", "node", "deleted"),
        Index("instances_deleted_created_at_idx", "deleted", "created_at"),
        # Not on updated_at, which every save sets: an index on it would make
        # every update of the row a non-HOT one (a new entry in each index),
        # and a host's power-state and progress saves are the commonest write
        # there is. The idle-since sweeps find their few rows by vm_state.
        Index("instances_vm_state_idx", "vm_state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    project_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    user_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    display_name: Mapped[str | None] = mapped_column(String(NAME_LEN))
    display_description: Mapped[str | None] = mapped_column(String(NAME_LEN))
    hostname: Mapped[str | None] = mapped_column(String(NAME_LEN))
    reservation_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    launch_index: Mapped[int | None] = mapped_column(Integer)
    key_name: Mapped[str | None] = mapped_column(String(NAME_LEN))
    image_ref: Mapped[str | None] = mapped_column(String(NAME_LEN))
    flavor: Mapped[Any | None] = mapped_column(JSONEncoded)
    # Both set only during a resize, until it is confirmed or reverted.
    old_flavor: Mapped[Any | None] = mapped_column(JSONEncoded)
    new_flavor: Mapped[Any | None] = mapped_column(JSONEncoded)
    # Copied out of the flavor so usage can be summed and filtered in SQL.
    vcpus: Mapped[int | None] = mapped_column(Integer)
    memory_mb: Mapped[int | None] = mapped_column(Integer)
    root_gb: Mapped[int | None] = mapped_column(Integer)
    ephemeral_gb: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(NAME_LEN))
    node: Mapped[str | None] = mapped_column(String(NAME_LEN))
    launched_on: Mapped[str | None] = mapped_column(String(NAME_LEN))
    vm_state: Mapped[str | None] = mapped_column(String(NAME_LEN))
    task_state: Mapped[str | None] = mapped_column(String(NAME_LEN))
    power_state: Mapped[int | None] = mapped_column(Integer)
    availability_zone: Mapped[str | None] = mapped_column(String(NAME_LEN))
    scheduled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    launched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    terminated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    user_data: Mapped[str | None] = mapped_column(LongText)
    config_drive: Mapped[str | None] = mapped_column(String(NAME_LEN))
    locked: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    locked_by: Mapped[str | None] = mapped_column(String(NAME_LEN))
    progress: Mapped[int | None] = mapped_column(Integer)
    shutdown_terminate: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # "metadata" is reserved on declarative classes; the column keeps Nova's name.
    metadata_: Mapped[Any | None] = mapped_column("metadata", JSONEncoded, key="metadata")
    system_metadata: Mapped[Any | None] = mapped_column(JSONEncoded)


class Tag(Base):
    """A server's tag (Nova's ``tags`` table): one row per (server, tag).

    Not history: a server's tags go with it when it is deleted, as in Nova,
    so nothing is archived.
    """

    __tablename__ = "tags"
    __table_args__ = (Index("tags_tag_idx", "tag"),)

    resource_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("instances.uuid", name="fk_tags0resource_id"),
        primary_key=True,
    )
    tag: Mapped[str] = mapped_column(String(TAG_LEN), primary_key=True)


class InstanceFault(Base, TimestampMixin, SoftDeleteMixin):
    __tablename__ = "instance_faults"
    __table_args__ = (
        Index(
            "instance_faults_instance_uuid_deleted_created_at_idx",
            "instance_uuid",
            "deleted",
            "created_at",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_uuid: Mapped[str] = mapped_column(
        String(UUID_LEN), _instance_fk("instance_faults"), nullable=False
    )
    code: Mapped[int] = mapped_column(Integer, nullable=False)
    message: Mapped[str | None] = mapped_column(String(NAME_LEN))
    details: Mapped[str | None] = mapped_column(LongText)
    host: Mapped[str | None] = mapped_column(String(NAME_LEN))


class InstanceAction(Base, TimestampMixin, SoftDeleteMixin):
    """One user-visible operation on an instance, keyed by the request that asked for it."""

    __tablename__ = "instance_actions"
    __table_args__ = (
        Index("instance_actions_instance_uuid_request_id_idx", "instance_uuid", "request_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    action: Mapped[str | None] = mapped_column(String(NAME_LEN))
    instance_uuid: Mapped[str] = mapped_column(
        String(UUID_LEN), _instance_fk("instance_actions"), nullable=False
    )
    request_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    user_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    project_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    start_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finish_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    message: Mapped[str | None] = mapped_column(String(NAME_LEN))


class InstanceActionEvent(Base, TimestampMixin, SoftDeleteMixin):
    __tablename__ = "instance_actions_events"
    __table_args__ = (Index("instance_actions_events_action_id_idx", "action_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event: Mapped[str | None] = mapped_column(String(NAME_LEN))
    action_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("instance_actions.id", name="fk_instance_actions_events0action_id"),
        nullable=False,
    )
    start_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finish_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[str | None] = mapped_column(String(NAME_LEN))
    traceback: Mapped[str | None] = mapped_column(LongText)
    host: Mapped[str | None] = mapped_column(String(NAME_LEN))
    details: Mapped[str | None] = mapped_column(LongText)


class Migration(Base, TimestampMixin, SoftDeleteMixin):
    __tablename__ = "migrations"
    __table_args__ = (
        UniqueConstraint("uuid", name="uniq_migrations0uuid"),
        Index("migrations_instance_uuid_status_idx", "instance_uuid", "deleted", "status"),
        Index("migrations_source_compute_status_idx", "source_compute", "deleted", "status"),
        Index("migrations_dest_compute_status_idx", "dest_compute", "deleted", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    instance_uuid: Mapped[str | None] = mapped_column(String(UUID_LEN), _instance_fk("migrations"))
    source_compute: Mapped[str | None] = mapped_column(String(NAME_LEN))
    dest_compute: Mapped[str | None] = mapped_column(String(NAME_LEN))
    source_node: Mapped[str | None] = mapped_column(String(NAME_LEN))
    dest_node: Mapped[str | None] = mapped_column(String(NAME_LEN))
    dest_host: Mapped[str | None] = mapped_column(String(NAME_LEN))
    status: Mapped[str | None] = mapped_column(String(NAME_LEN))
    migration_type: Mapped[str | None] = mapped_column(String(NAME_LEN))
    # The flavors' integer ids (Nova's names); the snapshots are on the instance.
    old_instance_type_id: Mapped[int | None] = mapped_column(Integer)
    new_instance_type_id: Mapped[int | None] = mapped_column(Integer)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    project_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    user_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    memory_total: Mapped[int | None] = mapped_column(BigInteger)
    memory_processed: Mapped[int | None] = mapped_column(BigInteger)
    memory_remaining: Mapped[int | None] = mapped_column(BigInteger)
    disk_total: Mapped[int | None] = mapped_column(BigInteger)
    disk_processed: Mapped[int | None] = mapped_column(BigInteger)
    disk_remaining: Mapped[int | None] = mapped_column(BigInteger)


class ConductorTask(Base, TimestampMixin, SoftDeleteMixin):
    """A durable multi-step operation, owned by one conductor through an expiring lease.

    ``active_instance_uuid`` equals ``instance_uuid`` while the task is
    active and is NULL once it ended: its unique constraint allows one
    active task per instance, any number of finished ones, and works the
    same on all three backends (each treats NULLs as distinct), unlike a
    partial index.
    """

    __tablename__ = "conductor_tasks"
    __table_args__ = (
        UniqueConstraint("uuid", name="uniq_conductor_tasks0uuid"),
        UniqueConstraint("active_instance_uuid", name="uniq_conductor_tasks0active_instance_uuid"),
        Index("conductor_tasks_status_lease_expires_at_idx", "status", "lease_expires_at"),
        Index("conductor_tasks_instance_uuid_idx", "instance_uuid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    kind: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    instance_uuid: Mapped[str | None] = mapped_column(
        String(UUID_LEN), _instance_fk("conductor_tasks")
    )
    active_instance_uuid: Mapped[str | None] = mapped_column(String(UUID_LEN))
    status: Mapped[str] = mapped_column(String(STATUS_LEN), nullable=False)
    step: Mapped[str | None] = mapped_column(String(NAME_LEN))
    attempt: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    #: When a conductor last claimed the task after another's lease ran out
    #: (``nubes-manage status`` counts the takeovers of the last hour).
    #: Declared before ``owner``: the claim's SET reads the old ``owner``, and
    #: MariaDB evaluates SET assignments in order, seeing earlier ones.
    taken_over_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    owner: Mapped[str | None] = mapped_column(String(NAME_LEN))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deadline: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    payload: Mapped[Any | None] = mapped_column(JSONEncoded)
    #: The request context (request id, user, project) to resume the task with.
    context: Mapped[Any | None] = mapped_column(JSONEncoded)
    last_error: Mapped[str | None] = mapped_column(LongText)
