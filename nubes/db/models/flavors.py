"""Flavors with their extra specs and access lists, and server groups."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nubes.db.models.base import NAME_LEN, UUID_LEN, Base, SoftDeleteMixin, TimestampMixin
from nubes.db.types import JSONEncoded, LongText

DEFAULT_RXTX_FACTOR = 1.0


class Flavor(Base, TimestampMixin, SoftDeleteMixin):
    __tablename__ = "flavors"
    __table_args__ = (
        UniqueConstraint("name", "deleted", name="uniq_flavors0name0deleted"),
        UniqueConstraint("flavorid", "deleted", name="uniq_flavors0flavorid0deleted"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flavorid: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    vcpus: Mapped[int] = mapped_column(Integer, nullable=False)
    root_gb: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    ephemeral_gb: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    swap: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    rxtx_factor: Mapped[float] = mapped_column(Float, default=DEFAULT_RXTX_FACTOR, nullable=False)
    vcpu_weight: Mapped[int | None] = mapped_column(Integer)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    description: Mapped[str | None] = mapped_column(LongText)


class FlavorExtraSpec(Base, TimestampMixin, SoftDeleteMixin):
    __tablename__ = "flavor_extra_specs"
    __table_args__ = (
        UniqueConstraint(
            "flavor_id", "key", "deleted", name="uniq_flavor_extra_specs0flavor_id0key0deleted"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flavor_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("flavors.id", name="fk_flavor_extra_specs0flavor_id"), nullable=False
    )
    key: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    value: Mapped[str | None] = mapped_column(String(NAME_LEN))


class FlavorProject(Base, TimestampMixin, SoftDeleteMixin):
    """A project allowed to use a non-public flavor."""

    __tablename__ = "flavor_projects"
    __table_args__ = (
        UniqueConstraint(
            "flavor_id",
            "project_id",
            "deleted",
            name="uniq_flavor_projects0flavor_id0project_id0deleted",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flavor_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("flavors.id", name="fk_flavor_projects0flavor_id"), nullable=False
    )
    project_id: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)


class InstanceGroup(Base, TimestampMixin, SoftDeleteMixin):
    """A server group: instances placed under one policy (affinity, anti-affinity ...)."""

    __tablename__ = "instance_groups"
    __table_args__ = (UniqueConstraint("uuid", name="uniq_instance_groups0uuid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    name: Mapped[str | None] = mapped_column(String(NAME_LEN))
    project_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    user_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    policy: Mapped[str | None] = mapped_column(String(NAME_LEN))
    rules: Mapped[Any | None] = mapped_column(JSONEncoded)


class InstanceGroupMember(Base, TimestampMixin, SoftDeleteMixin):
    __tablename__ = "instance_group_members"
    __table_args__ = (
        UniqueConstraint(
            "group_id",
            "instance_uuid",
            "deleted",
            name="uniq_instance_group_members0group_id0instance_uuid0deleted",
        ),
        Index("instance_group_members_instance_uuid_idx", "instance_uuid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("instance_groups.id", name="fk_instance_group_members0group_id"),
        nullable=False,
    )
    instance_uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
