"""Identity (a Keystone v3 subset) and the image registry (a Glance v2 subset).

These rows are hard-deleted: a user, a project, a revoked token or a
deleted image has no history worth archiving, and names are unique among
the rows that exist.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nubes.db.models.base import NAME_LEN, UUID_LEN, Base, TimestampMixin
from nubes.db.types import JSONEncoded, LongText, UTCDateTime

#: Keystone ids are 32 hex digits (a uuid4 without dashes).
ID_LEN = 64
#: A token is stored as the hex SHA-256 of its text, never the text itself.
TOKEN_HASH_LEN = 64


class Project(Base, TimestampMixin):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("name", name="uniq_projects0name"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    description: Mapped[str | None] = mapped_column(LongText)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)


class User(Base, TimestampMixin):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("name", name="uniq_users0name"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    #: An argon2id (or bcrypt) hash in its self-describing text form.
    password_hash: Mapped[str | None] = mapped_column(String(NAME_LEN))
    default_project_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)


class Role(Base, TimestampMixin):
    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("name", name="uniq_roles0name"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)


class RoleAssignment(Base, TimestampMixin):
    __tablename__ = "role_assignments"
    __table_args__ = (
        UniqueConstraint(
            "user_id",
            "project_id",
            "role_id",
            name="uniq_role_assignments0user_id0project_id0role_id",
        ),
        Index("role_assignments_project_id_idx", "project_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(
        String(ID_LEN),
        ForeignKey("users.id", name="fk_role_assignments0user_id", ondelete="CASCADE"),
        nullable=False,
    )
    project_id: Mapped[str] = mapped_column(
        String(ID_LEN),
        ForeignKey("projects.id", name="fk_role_assignments0project_id", ondelete="CASCADE"),
        nullable=False,
    )
    role_id: Mapped[str] = mapped_column(
        String(ID_LEN),
        ForeignKey("roles.id", name="fk_role_assignments0role_id", ondelete="CASCADE"),
        nullable=False,
    )


class Token(Base):
    """An issued token: who, for which project, which roles, until when."""

    __tablename__ = "tokens"
    __table_args__ = (
        Index("tokens_expires_at_idx", "expires_at"),
        Index("tokens_user_id_idx", "user_id"),
    )

    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LEN), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(ID_LEN), nullable=False)
    project_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    #: Role names at issue time (a token is a snapshot, like Keystone's).
    roles: Mapped[Any | None] = mapped_column(JSONEncoded)
    methods: Mapped[Any | None] = mapped_column(JSONEncoded)
    audit_id: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)


class Image(Base, TimestampMixin):
    """An image record; its data lives in a file named after the id."""

    __tablename__ = "images"
    __table_args__ = (
        Index("images_owner_idx", "owner"),
        Index("images_name_idx", "name"),
    )

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(NAME_LEN))
    owner: Mapped[str | None] = mapped_column(String(ID_LEN))
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    visibility: Mapped[str] = mapped_column(String(32), nullable=False)
    protected: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    os_hidden: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    disk_format: Mapped[str | None] = mapped_column(String(32))
    container_format: Mapped[str | None] = mapped_column(String(32))
    min_disk: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    min_ram: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    size: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(32))
    os_hash_algo: Mapped[str | None] = mapped_column(String(64))
    os_hash_value: Mapped[str | None] = mapped_column(String(128))
    #: Free-form string properties (key -> value).
    properties: Mapped[Any | None] = mapped_column(JSONEncoded)
    #: The image's tags, a sorted list of strings.
    tags: Mapped[Any | None] = mapped_column(JSONEncoded)


__all__ = ["Image", "Project", "Role", "RoleAssignment", "Token", "User"]
