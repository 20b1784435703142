"""Column types that behave the same on SQLite, PostgreSQL and MariaDB.

Datetimes: every timestamp is stored as a *naive* UTC ``DATETIME`` (no time
zone column type exists on all three backends, and MariaDB's ``TIMESTAMP``
has a 2038 limit and implicit update rules). :class:`UTCDateTime` converts on
the way in (an aware value is converted to UTC; a naive one is taken to be
UTC already, as Nova code passes) and hands back aware UTC datetimes on the
way out, so nothing above the DB layer sees a naive datetime. On MariaDB the
column is ``DATETIME(6)``: without the fraction, two updates in the same
second are indistinguishable and leases would be rounded.

JSON: stored as text by :class:`JSONEncoded`. MariaDB's ``JSON`` is a
``LONGTEXT`` alias that reflects as text, so a native JSON type would make
the model and the migrated schema look different per backend; text with our
own encoding is identical everywhere and we never query inside the JSON.
The encoding is msgspec's (keys sorted, compact, UTF-8): every task step
and instance save encodes or decodes a column of it, and the stdlib's
encoder cost several times as much for the same text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy import DateTime, Dialect, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator, TypeEngine

UTC = dt.UTC

#: Fractional-second digits kept on MariaDB (it defaults to none).
MYSQL_DATETIME_FSP = 6


def utcnow() -> dt.datetime:
    """The current time as an aware UTC datetime (the one clock of the DB layer)."""
    return dt.datetime.now(UTC)


def _is_mysql(dialect: Dialect) -> bool:
    return dialect.name in ("mysql", "mariadb")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Naive UTC in the database, aware UTC in Python."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_mysql(dialect):
            return dialect.type_descriptor(mysql.DATETIME(fsp=MYSQL_DATETIME_FSP))
        return self.impl_instance

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            # Every write binds updated_at (and often more): SQLAlchemy's
            # SQLite path formats through a %-dict, several times the cost
            # of isoformat(), which writes the very same text.
            return _sqlite_datetime_text
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_datetime_value
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=UTC)


def _sqlite_datetime_text(value: dt.datetime | None) -> str | None:
    """SQLite's text for :class:`UTCDateTime` (what SQLAlchemy's DATETIME writes there)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        value = value.replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def _sqlite_datetime_value(value: str | None) -> dt.datetime | None:
    """An aware UTC datetime from SQLite's text (with or without the fraction)."""
    if value is None:
        return None
    return dt.datetime.fromisoformat(value).replace(tzinfo=UTC)


#: Sorted keys: the same value is always the same text.
_JSON_ENCODER = msgspec.json.Encoder(order="sorted")


class JSONEncoded(TypeDecorator[Any]):
    """Any JSON-serialisable value, stored as text (MEDIUMTEXT on MariaDB).

    MEDIUMTEXT because TEXT caps at 64 KiB on MariaDB, less than a user_data
    blob or a task payload may need.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_mysql(dialect):
            return dialect.type_descriptor(mysql.MEDIUMTEXT())
        return self.impl_instance

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return _JSON_ENCODER.encode(value).decode()

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return msgspec.json.decode(value)


class LongText(TypeDecorator[str]):
    """Free text that may exceed 64 KiB (tracebacks, user data)."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _is_mysql(dialect):
            return dialect.type_descriptor(mysql.MEDIUMTEXT())
        return self.impl_instance
