"""Console authorisation tokens (Nova's ``console_auth_tokens``)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from nubes.db.models.base import NAME_LEN, UUID_LEN, Base
from nubes.db.types import UTCDateTime

#: A SHA-256 digest in hex.
TOKEN_HASH_LEN = 64


class ConsoleAuthToken(Base):
    """One console a user was given a URL for: only the token's SHA-256 is
    kept, so a read of the table opens no console. Hard-deleted when used,
    revoked, expired (swept) or when the instance goes."""

    __tablename__ = "console_auth_tokens"
    __table_args__ = (
        Index("console_auth_tokens_token_hash_idx", "token_hash", unique=True),
        Index("console_auth_tokens_instance_uuid_idx", "instance_uuid"),
        Index("console_auth_tokens_expires_idx", "expires"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(TOKEN_HASH_LEN), nullable=False)
    console_type: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    instance_uuid: Mapped[str] = mapped_column(String(UUID_LEN), nullable=False)
    #: The compute service host of the guest: only it may open the console.
    compute_host: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    #: Where the proxy connects: the host's console relay address and port.
    host: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    port: Mapped[int] = mapped_column(Integer, nullable=False)
    internal_access_path: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    access_url_base: Mapped[str] = mapped_column(String(NAME_LEN), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    expires: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
