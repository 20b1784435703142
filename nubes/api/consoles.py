"""Console tokens on the API side: issuing a console URL, showing and revoking a token.

A console URL carries a fresh random token (``secrets.token_urlsafe``); the
database keeps only its SHA-256 (``db/api/consoles.py``) with where the
console proxy reaches the guest (its host's console relay, which the host
named) and when the token expires (``[consoleauth] token_ttl``).
"""

from __future__ import annotations

import secrets
import urllib.parse
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.db.api import consoles
from nubes.db.engine import Database

#: The console types nubes serves, by protocol; every other known type is
#: answered as Nova answers a console switched off (ConsoleTypeUnavailable).
SERVED = {"vnc": {"novnc"}}

#: Nova's protocol -> console types (the pairing a request must respect).
PROTOCOL_TYPES: dict[str, frozenset[str]] = {
    "vnc": frozenset({"novnc", "xvpvnc"}),
    "spice": frozenset({"spice-html5", "spice-direct"}),
    "rdp": frozenset({"rdp-html5"}),
    "serial": frozenset({"serial"}),
    "mks": frozenset({"webmks"}),
}


def check_served(conf: cfg.ConfigOpts, protocol: str, console_type: str) -> None:
    """400 unless nubes hands out ``protocol``/``console_type`` consoles now."""
    if console_type not in PROTOCOL_TYPES.get(protocol, frozenset()):
        raise exception.Invalid(reason=f"Invalid console type {console_type}")
    if console_type not in SERVED.get(protocol, set()) or not conf.vnc.enabled:
        raise exception.ConsoleTypeUnavailable(console_type=console_type)


def access_url(base: str, console_type: str, token: str) -> str:
    """The URL a user opens: noVNC reads the websocket path (with the token)
    from its ``path`` parameter, as Nova builds it."""
    query = urllib.parse.urlencode({"path": f"?token={token}"})
    separator = "&" if urllib.parse.urlsplit(base).query else "?"
    return f"{base}{separator}{query}"


async def issue(
    db: Database,
    conf: cfg.ConfigOpts,
    instance: dict[str, Any],
    console_type: str,
    endpoint: dict[str, Any],
) -> str:
    """Store a new token for ``instance``'s console at ``endpoint`` (what
    its host answered: host, port, internal_access_path); the URL to give."""
    token = secrets.token_urlsafe(32)
    base = conf.vnc.novncproxy_base_url
    async with db.writer() as conn:
        # Expired tokens go as new ones come: the table never grows unbounded.
        await consoles.delete_expired(conn)
        await consoles.create(
            conn,
            token,
            conf.consoleauth.token_ttl,
            {
                "console_type": console_type,
                "instance_uuid": instance["uuid"],
                "compute_host": instance["host"],
                "host": endpoint["host"],
                "port": int(endpoint["port"]),
                "internal_access_path": endpoint.get("internal_access_path"),
                "access_url_base": base,
            },
        )
    return access_url(base, console_type, token)


async def show(db: Database, token: str) -> dict[str, Any]:
    """The unexpired, unspent token's row (reading does not spend it)."""
    async with db.reader() as conn:
        row = await consoles.get_valid(conn, token)
    if row is None:
        raise exception.ConsoleTokenNotFound()
    return row


async def revoke(db: Database, token: str) -> None:
    async with db.writer() as conn:
        if not await consoles.delete_token(conn, token):
            raise exception.ConsoleTokenNotFound()
