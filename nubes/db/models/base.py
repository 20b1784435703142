"""Declarative base, the Nova-style mixins, and shadow tables for archiving.

Soft delete works like Nova's: ``deleted`` is 0 for a live row and the row's
own ``id`` once deleted. Unique constraints include ``deleted``, so at most
one *live* row holds a name while any number of deleted ones may, and a name
can be re-created after its holder was deleted.

Every soft-deletable table ``x`` has a ``shadow_x`` twin that
``nubes-manage db archive-deleted-rows`` moves deleted rows into. A shadow
table has the same columns and types but no unique constraints, foreign keys
or indexes: archived rows are history and must never collide with each other.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Integer, MetaData, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from nubes.db.types import UTCDateTime, utcnow

#: Prefix of the archive twin of a soft-deletable table.
SHADOW_PREFIX = "shadow_"

#: Value of ``deleted`` on a live row.
NOT_DELETED = 0

#: Length of the short string columns (Nova's choice; fits utf8mb4 index limits).
NAME_LEN = 255
#: Length of a canonical UUID string.
UUID_LEN = 36


class Base(DeclarativeBase):
    metadata = MetaData()


class TimestampMixin:
    created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, onupdate=utcnow)


class SoftDeleteMixin:
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deleted: Mapped[int] = mapped_column(Integer, default=NOT_DELETED, nullable=False)


def shadow_name(table_name: str) -> str:
    return SHADOW_PREFIX + table_name


def is_soft_deletable(table: Table) -> bool:
    return "deleted" in table.c and "deleted_at" in table.c


def make_shadow_table(table: Table, metadata: MetaData) -> Table:
    """The archive twin of ``table``: same columns, no constraints but the key."""
    columns = [
        Column(
            col.name,
            col.type,
            primary_key=col.primary_key,
            # Archived rows keep their original ids.
            autoincrement=False,
            nullable=col.nullable,
        )
        for col in table.columns
    ]
    return Table(shadow_name(table.name), metadata, *columns)
