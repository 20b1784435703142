"""The dashboard's session: a Fernet-sealed cookie holding the token and a CSRF secret.

Sealing (AES plus HMAC) keeps the token unreadable and unforgeable in the
browser; the cookie is HttpOnly, SameSite=Lax, and Secure when the page came
over https. The seal carries its time of making, so a session older than
``[dashboard] session_ttl`` is refused whatever the token's own expiry.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

#: Name of the session cookie.
COOKIE = "nubes_dashboard"
#: Name of the pre-login CSRF cookie (double submit: the login form repeats it).
LOGIN_COOKIE = "nubes_dashboard_login"


@dataclass
class Session:
    token: str
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: list[str]
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class Sealer:
    """Seals sessions into cookie values and opens them, refusing stale or forged ones."""

    def __init__(self, key: str | None, ttl: int) -> None:
        self.fernet = Fernet(key.encode() if key else Fernet.generate_key())
        self.ttl = ttl

    def seal(self, session: Session, *, at: float | None = None) -> str:
        data = json.dumps(asdict(session)).encode()
        when = int(time.time() if at is None else at)
        return self.fernet.encrypt_at_time(data, when).decode()

    def open(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            data = self.fernet.decrypt(value.encode(), ttl=self.ttl)
            return Session(**json.loads(data))
        except (InvalidToken, ValueError, TypeError):
            return None


def csrf_matches(expected: str, given: Any) -> bool:
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(expected, given)
