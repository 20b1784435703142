"""Request fields that create, rebuild and evacuate share: user data, personality
files, the admin password, what goes to system metadata, the key pair and the
networks asked for."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import secrets
import string
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from nubes.api import quotas
from nubes.api.compute_v21 import common
from nubes.db.api import keypairs as keypairs_db
from nubes.injected_files import InjectedFiles

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


async def injected_files(
    request: Request, server: Mapping[str, Any], project_id: str
) -> InjectedFiles | None:
    """A create's or rebuild's personality files, once they decode and fit the
    project's quotas (403 otherwise, as Nova); None without any.

    The schemas take ``personality`` up to 2.56 only, so from 2.57 there is
    none to find here (and a request naming it was refused already)."""
    files = personality(server)
    if not files:
        return None
    state = common.state(request)
    async with state.db.reader() as conn:
        await quotas.check_injected_files(conn, state.conf, project_id=project_id, files=files)
    return InjectedFiles.of(files)


def password(server: Mapping[str, Any]) -> str:
    """The admin password asked for, or a generated one."""
    given = server.get("adminPass")
    if given:
        return str(given)
    return "".join(secrets.choice(_PASSWORD_CHARS) for _ in range(PASSWORD_LENGTH))


def _canonical(address: str) -> str:
    if not address:
        return address
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def sysmeta_from(server: Mapping[str, Any]) -> dict[str, str]:
    """The request fields Nova keeps in system metadata, by their system metadata keys."""
    out: dict[str, str] = {}
    # Kept in canonical form (RFC 5952 for IPv6), as Nova's address columns
    # keep them; the schemas have checked they are addresses.
    if "accessIPv4" in server:
        out["access_ip_v4"] = _canonical(server["accessIPv4"])
    if "accessIPv6" in server:
        out["access_ip_v6"] = _canonical(server["accessIPv6"])
    if "OS-DCF:diskConfig" in server:
        out["disk_config"] = server["OS-DCF:diskConfig"]
    return out


#: Device tags (2.32/2.42 on networks and disks, 2.49 on attach): nubes writes
#: no device metadata for the guest, so a tag could not reach it. Nova
#: refuses a tag a host cannot honour, and so does nubes, at once.
NO_DEVICE_TAGS = "Device tagging is not supported by the hosts of this cloud."


def requested_networks(server: Mapping[str, Any]) -> Any:
    """``networks`` as :func:`nubes.network.ports.resolve` takes it (schemas checked the shape)."""
    networks = server.get("networks")
    if networks is None or isinstance(networks, str):
        return networks
    if any(n.get("tag") is not None for n in networks):
        raise common.bad_request(NO_DEVICE_TAGS)
    return [
        {"uuid": n.get("uuid"), "fixed_ip": n.get("fixed_ip"), "port": n.get("port")}
        for n in networks
    ]


async def key_name_of(request: Request, name: Any) -> str | None:
    """The caller's key pair of that name must exist (400 otherwise, as Nova)."""
    if not name:
        return None
    async with common.state(request).db.reader() as conn:
        found = await keypairs_db.get_or_none(conn, common.ctx(request).user_id or "", str(name))
    if found is None:
        raise common.bad_request("Invalid key_name provided.")
    return str(name)


def check_trusted_certs(body: Mapping[str, Any]) -> None:
    """2.63 ``trusted_image_certificates``: refused, never ignored.

    nubes does not verify image signatures, so it cannot check an image's
    signing certificate against the ones named.
    """
    if body.get("trusted_image_certificates"):
        raise common.bad_request(
            "Image signature certificate validation is not enabled in this cloud; "
            "trusted_image_certificates cannot be used."
        )
