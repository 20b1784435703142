"""What the metadata service and the config drive tell a guest about itself.

Two reads: which instance holds an address on a network (the metadata
proxy identifies a guest by the source address of its request and the
network it came in on), and everything a guest is told about its instance
(the instance row, its key pair's public key, its ports with their
addresses, subnets and networks). The conductor decides who may ask
(``nubes/conductor/authz.py``); rendering is ``nubes/metadata/content.py``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api import instances as instances_api
from nubes.db.api import keypairs, network
from nubes.db.api._common import live
from nubes.db.models import instances, ip_allocations, ports

Row = dict[str, Any]


async def holder_of_address(conn: AsyncConnection, network_id: str, address: str) -> Row | None:
    """The live instance whose port holds ``address`` on ``network_id``:
    ``{uuid, host, binding_host}``, or None when no instance's port holds it."""
    stmt = (
        select(
            instances.c.uuid,
            instances.c.host,
            ports.c.binding_host_id.label("binding_host"),
        )
        .select_from(
            ip_allocations.join(ports, ports.c.id == ip_allocations.c.port_id).join(
                instances, and_(instances.c.uuid == ports.c.device_id, live(instances))
            )
        )
        .where(ip_allocations.c.network_id == network_id, ip_allocations.c.ip_address == address)
    )
    found = (await conn.execute(stmt)).mappings().first()
    return dict(found) if found is not None else None


async def source(conn: AsyncConnection, instance_uuid: str) -> Row:
    """The live instance row, with ``public_key`` (its key pair's, or None)
    and ``ports``: each port with ``fixed_ips`` (address, its subnet's row as
    ``subnet``, the floating IPs mapped to it as ``floating_ips``) and
    ``network`` (its network's row). InstanceNotFound."""
    row = await instances_api.get_by_uuid(conn, instance_uuid)
    key = None
    if row["key_name"] and row["user_id"]:
        key = await keypairs.get_or_none(conn, row["user_id"], row["key_name"])
    row["public_key"] = key["public_key"] if key is not None else None
    row["password"] = password_of(row.get("system_metadata"))
    found = await network.ports_of_devices(conn, [instance_uuid])
    ips = await network.fixed_ips_by_port(conn, [p["id"] for p in found])
    floating: dict[tuple[str, str], list[str]] = {}
    for fip in await network.floating_ips_of_ports(conn, [p["id"] for p in found]):
        mapped_to = (fip["fixed_port_id"], fip["fixed_ip_address"])
        floating.setdefault(mapped_to, []).append(fip["floating_ip_address"])
    subnet_ids = {ip["subnet_id"] for fixed in ips.values() for ip in fixed}
    subnets = {s["id"]: s for s in await network.get_many(conn, "subnets", subnet_ids)}
    networks = {
        n["id"]: n
        for n in await network.get_many(conn, "networks", {p["network_id"] for p in found})
    }
    row["ports"] = [
        {
            **port,
            "network": networks.get(port["network_id"]),
            "fixed_ips": [
                {
                    "ip_address": ip["ip_address"],
                    "subnet": subnets.get(ip["subnet_id"]),
                    "floating_ips": floating.get((port["id"], ip["ip_address"]), []),
                }
                for ip in ips.get(port["id"], [])
            ],
        }
        for port in found
    ]
    return row


#: Nova keeps a server's (encrypted) password in system_metadata as up to
#: four 255-character chunks, password_0 .. password_3.
PASSWORD_CHUNKS = 4
PASSWORD_CHUNK_LEN = 255


def password_of(system_metadata: Any) -> str:
    """The password the chunks in ``system_metadata`` spell ("" when none)."""
    meta = system_metadata if isinstance(system_metadata, dict) else {}
    return "".join(str(meta.get(f"password_{i}") or "") for i in range(PASSWORD_CHUNKS))


async def set_password(
    conn: AsyncConnection, instance_uuid: str, password: str, *, only_if_unset: bool
) -> bool:
    """Store ``password`` ("" clears it); False, changing nothing, when
    ``only_if_unset`` and the server has one already (the metadata service
    takes a guest's password once, as Nova's)."""
    if len(password) > PASSWORD_CHUNKS * PASSWORD_CHUNK_LEN:
        raise exception.Invalid(reason="the password is too long")
    row = await instances_api.get_by_uuid(conn, instance_uuid)
    meta = dict(row.get("system_metadata") or {})
    if only_if_unset and password_of(meta):
        return False
    for i in range(PASSWORD_CHUNKS):
        meta[f"password_{i}"] = password[i * PASSWORD_CHUNK_LEN : (i + 1) * PASSWORD_CHUNK_LEN]
    await instances_api.update(conn, instance_uuid, {"system_metadata": meta})
    return True
