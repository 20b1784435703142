"""Services, their heartbeats, compute nodes, resource allocations, aggregates."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from nubes.db.models.base import NAME_LEN, UUID_LEN, Base, SoftDeleteMixin, TimestampMixin
from nubes.db.types import JSONEncoded, UTCDateTime, utcnow

#: Nova's initial allocation ratios, used when a node reports none.
DEFAULT_CPU_ALLOCATION_RATIO = 16.0
DEFAULT_RAM_ALLOCATION_RATIO = 1.5
DEFAULT_DISK_ALLOCATION_RATIO = 1.0


class Service(Base, TimestampMixin, SoftDeleteMixin):
    """A running nubes-<binary> on a host; its liveness is in ServiceHeartbeat."""

    __tablename__ = "services"
    __table_args__ = (
        UniqueConstraint("host", "binary", "deleted", name="uniq_services0host0binary0deleted"),
        UniqueConstraint("uuid", name="uniq_services0uuid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    host: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    binary: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    topic: Mapped[str | None] = mapped_column(String(NAME_LEN))
    version: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    disabled_reason: Mapped[str | None] = mapped_column(String(NAME_LEN))
    forced_down: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)


class ServiceHeartbeat(Base):
    """The last report of a service.

    Kept apart from ``services`` so the most frequent write in the cloud
    touches a tiny row and never contends with (or bumps ``updated_at`` of)
    an operator disabling the service. Deleted with its service.
    """

    __tablename__ = "service_heartbeats"

    service_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("services.id", name="fk_service_heartbeats0service_id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    report_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class QueueSample(Base):
    """The depth of a topic queue on the bus at one moment.

    Written by ``nubes-manage status`` on each run and kept an hour: how long
    a queue has been growing is read from them (docs/deploy.md, scaling).
    """

    __tablename__ = "queue_samples"
    __table_args__ = (Index("queue_samples_queue_taken_at_idx", "queue", "taken_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    taken_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    messages: Mapped[int] = mapped_column(Integer, nullable=False)
    consumers: Mapped[int] = mapped_column(Integer, nullable=False)


class Generation(Base):
    """A counter bumped in the same transaction as every write to one set of facts.

    ``host_facts``: what the schedulers cache about hosts beyond their usage
    (services disabled or forced down, aggregates, their hosts and metadata,
    availability zones). A scheduler reads it once per request (one row by
    key) and reloads its cached facts only when it moved, so an operator's
    change takes effect on the very next request in every scheduler process.
    """

    __tablename__ = "generations"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class ComputeNode(Base, TimestampMixin, SoftDeleteMixin):
    """A hypervisor node's inventory and usage.

    ``generation`` increases on every change of usage or inventory: a
    scheduler that read a node can claim on it with a compare-and-set on the
    generation (no SELECT ... FOR UPDATE, which Galera turns into deadlocks).
    """

    __tablename__ = "compute_nodes"
    __table_args__ = (
        UniqueConstraint(
            "host",
            "hypervisor_hostname",
            "deleted",
            name="uniq_compute_nodes0host0hypervisor_hostname0deleted",
        ),
        UniqueConstraint("uuid", name="uniq_compute_nodes0uuid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    service_id: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    hypervisor_hostname: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    hypervisor_type: Mapped[str | None] = mapped_column(String(NAME_LEN))
    hypervisor_version: Mapped[int | None] = mapped_column(Integer)
    host_ip: Mapped[str | None] = mapped_column(String(39))
    cpu_info: Mapped[Any | None] = mapped_column(JSONEncoded)
    vcpus: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    local_gb: Mapped[int] = mapped_column(Integer, nullable=False)
    vcpus_used: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    memory_mb_used: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    local_gb_used: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    running_vms: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    cpu_allocation_ratio: Mapped[float] = mapped_column(
        Float, default=DEFAULT_CPU_ALLOCATION_RATIO, nullable=False
    )
    ram_allocation_ratio: Mapped[float] = mapped_column(
        Float, default=DEFAULT_RAM_ALLOCATION_RATIO, nullable=False
    )
    disk_allocation_ratio: Mapped[float] = mapped_column(
        Float, default=DEFAULT_DISK_ALLOCATION_RATIO, nullable=False
    )
    #: Monitor readings, e.g. {"cpu.percent": 12.5}; replaced as a whole.
    metrics: Mapped[Any | None] = mapped_column(JSONEncoded)
    stats: Mapped[Any | None] = mapped_column(JSONEncoded)
    generation: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class Allocation(Base):
    """Resources a consumer (instance or migration uuid) holds on one node.

    Rows are hard-deleted on release: an allocation has no history worth
    archiving, and a soft-deleted claim would keep blocking the unique key.
    """

    __tablename__ = "allocations"
    __table_args__ = (
        UniqueConstraint(
            "consumer_uuid",
            "compute_node_id",
            name="uniq_allocations0consumer_uuid0compute_node_id",
        ),
        Index("allocations_compute_node_id_idx", "compute_node_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consumer_uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    compute_node_id: Mapped[int] = mapped_column(Integer, nullable=False)
    vcpus: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    disk_gb: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=utcnow)


class Aggregate(Base, TimestampMixin, SoftDeleteMixin):
    __tablename__ = "aggregates"
    __table_args__ = (
        UniqueConstraint("name", "deleted", name="uniq_aggregates0name0deleted"),
        UniqueConstraint("uuid", name="uniq_aggregates0uuid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)


class AggregateHost(Base, TimestampMixin, SoftDeleteMixin):
    __tablename__ = "aggregate_hosts"
    __table_args__ = (
        UniqueConstraint(
            "host", "aggregate_id", "deleted", name="uniq_aggregate_hosts0host0aggregate_id0deleted"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    aggregate_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("aggregates.id", name="fk_aggregate_hosts0aggregate_id"),
        nullable=False,
    )


class AggregateMetadata(Base, TimestampMixin, SoftDeleteMixin):
    __tablename__ = "aggregate_metadata"
    __table_args__ = (
        UniqueConstraint(
            "aggregate_id",
            "key",
            "deleted",
            name="uniq_aggregate_metadata0aggregate_id0key0deleted",
        ),
        Index("aggregate_metadata_key_idx", "key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    aggregate_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("aggregates.id", name="fk_aggregate_metadata0aggregate_id"),
        nullable=False,
    )
    key: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    value: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)


__all__ = [
    "Aggregate",
    "AggregateHost",
    "AggregateMetadata",
    "Allocation",
    "ComputeNode",
    "Service",
    "ServiceHeartbeat",
]
