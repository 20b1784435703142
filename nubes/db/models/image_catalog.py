"""Glance's metadata definitions catalog (metadefs) and image tasks.

Metadefs describe which properties, objects and tags a kind of resource may
carry (Glance's ``/v2/metadefs``): a namespace owns its objects, properties
and tags, and is associated with resource types. Children are named within
their namespace and go with it. Rows are hard-deleted, as Glance's.

An image task (``/v2/tasks``) is the record of an asynchronous import:
its input as sent, its status, and what it produced (``image_id``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nubes.db.models.base import UUID_LEN, Base, TimestampMixin
from nubes.db.types import JSONEncoded, LongText, UTCDateTime

#: Glance's length of a namespace's, object's, property's, tag's and
#: resource type's name.
METADEF_NAME_LEN = 80
PROJECT_LEN = 64


class MetadefNamespace(Base, TimestampMixin):
    __tablename__ = "metadef_namespaces"
    __table_args__ = (UniqueConstraint("namespace", name="uniq_metadef_namespaces0namespace"),)

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(METADEF_NAME_LEN), nullable=False)
    display_name: Mapped[str | None] = mapped_column(String(METADEF_NAME_LEN))
    description: Mapped[str | None] = mapped_column(LongText)
    #: public (everyone reads it) or private (its owner's project and admins).
    visibility: Mapped[str] = mapped_column(String(32), nullable=False)
    #: A protected namespace cannot be deleted (Glance's 403) until unprotected.
    protected: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    owner: Mapped[str] = mapped_column(String(PROJECT_LEN), nullable=False)


class MetadefResourceType(Base, TimestampMixin):
    """A kind of resource metadefs apply to (``OS::Glance::Image``...).

    Glance's built-in ones are listed by nubes.api.metadefs whether or not
    a row exists; associating a namespace with a type writes its row
    (protected for a built-in one) if there is none yet."""

    __tablename__ = "metadef_resource_types"

    name: Mapped[str] = mapped_column(String(METADEF_NAME_LEN), primary_key=True)
    protected: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)


def _namespace_fk(table: str) -> Mapped[str]:
    return mapped_column(
        String(UUID_LEN),
        ForeignKey("metadef_namespaces.id", name=f"fk_{table}0namespace_id"),
        nullable=False,
    )


class MetadefNamespaceResourceType(Base, TimestampMixin):
    __tablename__ = "metadef_namespace_resource_types"

    namespace_id: Mapped[str] = mapped_column(
        String(UUID_LEN),
        ForeignKey("metadef_namespaces.id", name="fk_metadef_ns_res_types0namespace_id"),
        primary_key=True,
    )
    resource_type_name: Mapped[str] = mapped_column(
        String(METADEF_NAME_LEN),
        ForeignKey("metadef_resource_types.name", name="fk_metadef_ns_res_types0name"),
        primary_key=True,
    )
    #: Where a property applies on the resource (Glance's ``properties_target``).
    properties_target: Mapped[str | None] = mapped_column(String(METADEF_NAME_LEN))
    #: Prefix a property takes on this resource type (``hw_`` ...).
    prefix: Mapped[str | None] = mapped_column(String(METADEF_NAME_LEN))


class MetadefObject(Base, TimestampMixin):
    __tablename__ = "metadef_objects"
    __table_args__ = (
        UniqueConstraint("namespace_id", "name", name="uniq_metadef_objects0namespace_id0name"),
    )

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    namespace_id: Mapped[str] = _namespace_fk("metadef_objects")
    name: Mapped[str] = mapped_column(String(METADEF_NAME_LEN), nullable=False)
    description: Mapped[str | None] = mapped_column(LongText)
    #: Names of its properties an instance of the object must set.
    required: Mapped[Any | None] = mapped_column(JSONEncoded)
    #: Its properties: name -> JSON-schema definition (as a namespace property's).
    properties: Mapped[Any | None] = mapped_column(JSONEncoded)


class MetadefProperty(Base, TimestampMixin):
    __tablename__ = "metadef_properties"
    __table_args__ = (
        UniqueConstraint("namespace_id", "name", name="uniq_metadef_properties0namespace_id0name"),
    )

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    namespace_id: Mapped[str] = _namespace_fk("metadef_properties")
    name: Mapped[str] = mapped_column(String(METADEF_NAME_LEN), nullable=False)
    #: The property's definition: title, type, enum, description, bounds...
    json_schema: Mapped[Any] = mapped_column(JSONEncoded, nullable=False)


class MetadefTag(Base, TimestampMixin):
    __tablename__ = "metadef_tags"
    __table_args__ = (
        UniqueConstraint("namespace_id", "name", name="uniq_metadef_tags0namespace_id0name"),
    )

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    namespace_id: Mapped[str] = _namespace_fk("metadef_tags")
    name: Mapped[str] = mapped_column(String(METADEF_NAME_LEN), nullable=False)


class ImageTask(Base, TimestampMixin):
    __tablename__ = "image_tasks"
    __table_args__ = (
        Index("image_tasks_owner_idx", "owner"),
        Index("image_tasks_image_id_idx", "image_id"),
    )

    id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    type: Mapped[str] = mapped_column(String(30), nullable=False)
    #: pending -> processing -> success | failure (nubes.api.image_tasks).
    status: Mapped[str] = mapped_column(String(30), nullable=False)
    owner: Mapped[str] = mapped_column(String(PROJECT_LEN), nullable=False)
    #: The image the task made (set once it exists).
    image_id: Mapped[str | None] = mapped_column(String(UUID_LEN))
    input: Mapped[Any] = mapped_column(JSONEncoded, nullable=False)
    result: Mapped[Any | None] = mapped_column(JSONEncoded)
    message: Mapped[str | None] = mapped_column(LongText)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
