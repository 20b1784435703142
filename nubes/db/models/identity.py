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


#: The domain every cloud has, which the bootstrap users and projects are in.
DEFAULT_DOMAIN_ID = "default"


class Domain(Base, TimestampMixin):
    """A Keystone domain: a namespace of projects, users and groups."""

    __tablename__ = "domains"
    __table_args__ = (UniqueConstraint("name", name="uniq_domains0name"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    description: Mapped[str | None] = mapped_column(LongText)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)


class Project(Base, TimestampMixin):
    __tablename__ = "projects"
    # Names are unique inside a domain (Keystone's rule); nubes' own tools
    # address projects and users by bare name in the default domain.
    __table_args__ = (
        UniqueConstraint("domain_id", "name", name="uniq_projects0domain_id0name"),
        Index("projects_parent_id_idx", "parent_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    description: Mapped[str | None] = mapped_column(LongText)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    domain_id: Mapped[str] = mapped_column(
        String(ID_LEN), default=DEFAULT_DOMAIN_ID, server_default=DEFAULT_DOMAIN_ID, nullable=False
    )
    #: The parent project (Keystone's hierarchies); NULL at the top of its domain.
    parent_id: Mapped[str | None] = mapped_column(String(ID_LEN))


class ProjectTag(Base):
    """A tag on a project (Keystone's project tags)."""

    __tablename__ = "project_tags"

    project_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)


class User(Base, TimestampMixin):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("domain_id", "name", name="uniq_users0domain_id0name"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    #: An argon2id (or bcrypt) hash in its self-describing text form.
    password_hash: Mapped[str | None] = mapped_column(String(NAME_LEN))
    default_project_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    domain_id: Mapped[str] = mapped_column(
        String(ID_LEN), default=DEFAULT_DOMAIN_ID, server_default=DEFAULT_DOMAIN_ID, nullable=False
    )
    #: Keystone's free-form attributes (``description``, ``email``, ...).
    extra: Mapped[Any | None] = mapped_column(JSONEncoded)


class Group(Base, TimestampMixin):
    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("domain_id", "name", name="uniq_groups0domain_id0name"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    domain_id: Mapped[str] = mapped_column(String(ID_LEN), nullable=False)
    description: Mapped[str | None] = mapped_column(LongText)


class GroupMember(Base):
    __tablename__ = "group_members"
    __table_args__ = (Index("group_members_user_id_idx", "user_id"),)

    group_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)


#: ``roles.domain_id`` of a global role: an empty string, not NULL, so the
#: ``(domain_id, name)`` constraint also keeps global names unique (NULLs
#: repeat in a unique constraint on PostgreSQL and MariaDB).
GLOBAL_ROLE_DOMAIN = ""


class Role(Base, TimestampMixin):
    """A role: global, or specific to a domain (``domain_id``; Keystone's
    domain-specific roles, never put in tokens themselves but able to imply
    global roles)."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("domain_id", "name", name="uniq_roles0domain_id0name"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    description: Mapped[str | None] = mapped_column(LongText)
    domain_id: Mapped[str] = mapped_column(
        String(ID_LEN),
        default=GLOBAL_ROLE_DOMAIN,
        server_default=GLOBAL_ROLE_DOMAIN,
        nullable=False,
    )


class RoleInference(Base):
    """A rule "holding ``prior_role_id`` implies holding ``implied_role_id``"
    (Keystone's implied roles); the default chain admin > manager > member >
    reader is three of these rows."""

    __tablename__ = "role_inferences"
    __table_args__ = (Index("role_inferences_implied_role_id_idx", "implied_role_id"),)

    prior_role_id: Mapped[str] = mapped_column(
        String(ID_LEN),
        ForeignKey("roles.id", name="fk_role_inferences0prior_role_id", ondelete="CASCADE"),
        primary_key=True,
    )
    implied_role_id: Mapped[str] = mapped_column(
        String(ID_LEN),
        ForeignKey("roles.id", name="fk_role_inferences0implied_role_id", ondelete="CASCADE"),
        primary_key=True,
    )


class Credential(Base, TimestampMixin):
    """A user's stored secret (Keystone's ``/v3/credentials``: ec2, totp,
    cert...). The blob is kept Fernet-encrypted; ``key_hash`` names the key
    that encrypted it."""

    __tablename__ = "credentials"
    __table_args__ = (Index("credentials_user_id_idx", "user_id"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(ID_LEN), nullable=False)
    project_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    type: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    encrypted_blob: Mapped[str] = mapped_column(LongText, nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)


class Assignment(Base):
    """A role given to a user or group on a project or domain (Keystone's shape).

    ``type`` is one of the ``*_PROJECT``, ``*_DOMAIN`` and ``*_SYSTEM`` names of
    :mod:`nubes.db.api.identity`.
    There are no foreign keys, as in Keystone: the actor and the target are
    in different tables by type, and deleting either deletes its rows in the
    same transaction (:mod:`nubes.db.api.identity`, :mod:`nubes.db.api.roles`).
    """

    __tablename__ = "assignments"
    __table_args__ = (
        Index("assignments_actor_id_idx", "actor_id"),
        Index("assignments_target_id_idx", "target_id"),
    )

    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    actor_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    target_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    role_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)


class ApplicationCredential(Base, TimestampMixin):
    """A user's delegated credential for one project, with a subset of its roles."""

    __tablename__ = "application_credentials"
    __table_args__ = (
        UniqueConstraint("user_id", "name", name="uniq_application_credentials0user_id0name"),
    )

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    user_id: Mapped[str] = mapped_column(String(ID_LEN), nullable=False)
    project_id: Mapped[str] = mapped_column(String(ID_LEN), nullable=False)
    #: The secret's hash, as for passwords; the secret is shown once, at creation.
    secret_hash: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    description: Mapped[str | None] = mapped_column(LongText)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: May it create application credentials itself (Keystone's ``unrestricted``)?
    unrestricted: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    #: The role ids it was given (a subset of the user's on the project).
    roles: Mapped[Any] = mapped_column(JSONEncoded, nullable=False)


class Token(Base):
    """An issued token: who, for which project or domain, which roles, until when."""

    __tablename__ = "tokens"
    __table_args__ = (
        Index("tokens_expires_at_idx", "expires_at"),
        Index("tokens_user_id_idx", "user_id"),
    )

    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LEN), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(ID_LEN), nullable=False)
    project_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    #: The domain a domain-scoped token is for (None when project-scoped or unscoped).
    domain_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    #: ``all`` for a system-scoped token (Keystone's only system), else None.
    system_scope: Mapped[str | None] = mapped_column(String(16))
    #: Role names at issue time (a token is a snapshot, like Keystone's).
    roles: Mapped[Any | None] = mapped_column(JSONEncoded)
    methods: Mapped[Any | None] = mapped_column(JSONEncoded)
    audit_id: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    #: The application credential it was issued for, if any (revoked with it).
    application_credential_id: Mapped[str | None] = mapped_column(String(ID_LEN))


class Region(Base, TimestampMixin):
    """A catalog region an operator registered (the configured
    ``[api] region_name`` is built in and has no row)."""

    __tablename__ = "regions"

    id: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    description: Mapped[str | None] = mapped_column(LongText)
    parent_region_id: Mapped[str | None] = mapped_column(String(NAME_LEN))


class CatalogService(Base, TimestampMixin):
    """A service an operator registered in the catalog (nubes' own four are
    built in, their URLs following ``[api]``, and have no row)."""

    __tablename__ = "catalog_services"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    type: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    name: Mapped[str | None] = mapped_column(String(NAME_LEN))
    description: Mapped[str | None] = mapped_column(LongText)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)


class Endpoint(Base, TimestampMixin):
    """An endpoint of a registered service."""

    __tablename__ = "endpoints"
    __table_args__ = (Index("endpoints_service_id_idx", "service_id"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(ID_LEN), nullable=False)
    interface: Mapped[str] = mapped_column(String(8), nullable=False)
    region_id: Mapped[str | None] = mapped_column(String(NAME_LEN))
    url: Mapped[str] = mapped_column(LongText, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)


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


class ImageMember(Base, TimestampMixin):
    """A project an image's owner shares it with (visibility ``shared``).

    ``status`` is the member's answer: pending, accepted or rejected; an
    accepted image is listed for the member, any membership lets it use the
    image by id, as in Glance.
    """

    __tablename__ = "image_members"
    __table_args__ = (Index("image_members_member_idx", "member"),)

    image_id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    member: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False)


__all__ = [
    "DEFAULT_DOMAIN_ID",
    "ApplicationCredential",
    "Assignment",
    "Domain",
    "Group",
    "GroupMember",
    "Image",
    "ImageMember",
    "Project",
    "Role",
    "Token",
    "User",
]
