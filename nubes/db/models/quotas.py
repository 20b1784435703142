"""Quota limits (per quota class, project and user) and the per-project quota lock.

Limits are hard-deleted rows: deleting one reverts to what the level above
says (user -> project -> quota class ``default`` -> ``[quota]`` config), as
Nova's ``quota_classes``, ``quotas`` and ``project_user_quotas`` do. Usage is
never stored: it is counted from the rows that use it (instances, server
groups, their members) in the transaction that adds to it, under the
project's row in ``quota_locks``.
"""

from __future__ import annotations

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from nubes.db.models.base import NAME_LEN, Base, TimestampMixin

#: Keystone ids (projects, users) are at most this long.
ID_LEN = 64


class QuotaClass(Base, TimestampMixin):
    """A limit of a quota class (Nova uses only the class ``default``)."""

    __tablename__ = "quota_classes"
    __table_args__ = (
        UniqueConstraint("class_name", "resource", name="uniq_quota_classes0class_name0resource"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    class_name: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    resource: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    hard_limit: Mapped[int] = mapped_column(Integer, nullable=False)


class Quota(Base, TimestampMixin):
    """A limit of a project (``user_id`` empty) or of one user in a project."""

    __tablename__ = "quotas"
    __table_args__ = (
        UniqueConstraint(
            "project_id", "user_id", "resource", name="uniq_quotas0project_id0user_id0resource"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(ID_LEN), nullable=False)
    #: '' for the project's own limit (a NULL would not take part in the unique key).
    user_id: Mapped[str] = mapped_column(String(ID_LEN), nullable=False, default="")
    resource: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    hard_limit: Mapped[int] = mapped_column(Integer, nullable=False)


class QuotaLock(Base):
    """One row per project, locked (SELECT ... FOR UPDATE) by every write that adds usage.

    Concurrent requests of one project then count and insert one after the
    other, so their sum never overshoots a limit; other projects never wait.
    """

    __tablename__ = "quota_locks"

    project_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
