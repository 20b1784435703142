"""Request fields that create, rebuild and evacuate share: user data, personality
files, the admin password, and what goes to system metadata."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import string
from collections.abc import Mapping
from typing import Any

from nubes.api.compute_v21 import common

#: Length of a generated admin password (Nova's [DEFAULT] password_length).
PASSWORD_LENGTH = 12
_PASSWORD_CHARS = string.ascii_letters + string.digits


def user_data(server: Mapping[str, Any]) -> str | None:
    """The base64 user data as given, once it is known to decode."""
    data = server.get("user_data")
    if data is None:
        return None
    try:
        base64.b64decode(re.sub(r"\s", "", data), validate=True)
    except (binascii.Error, ValueError):
        raise common.bad_request("Userdata content cannot be decoded") from None
    return str(data)


def personality(server: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The personality files as (path, decoded contents), for their quotas."""
    files = []
    for item in server.get("personality") or []:
        path = str(item.get("path") or "")
        try:
            data = base64.b64decode(re.sub(r"\s", "", item.get("contents") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise common.bad_request(f"Personality content for {path} cannot be decoded") from None
        files.append((path, data))
    return files


def password(server: Mapping[str, Any]) -> str:
    """The admin password asked for, or a generated one."""
    given = server.get("adminPass")
    if given:
        return str(given)
    return "".join(secrets.choice(_PASSWORD_CHARS) for _ in range(PASSWORD_LENGTH))


def sysmeta_from(server: Mapping[str, Any]) -> dict[str, str]:
    """The request fields Nova keeps in system metadata, by their system metadata keys."""
    out: dict[str, str] = {}
    if "accessIPv4" in server:
        out["access_ip_v4"] = server["accessIPv4"]
    if "accessIPv6" in server:
        out["access_ip_v6"] = server["accessIPv6"]
    if "OS-DCF:diskConfig" in server:
        out["disk_config"] = server["OS-DCF:diskConfig"]
    return out
