"""The InstanceMetadata object: what a guest is told about itself.

Read by a compute host for the metadata proxy (a guest identified by the
source address of its request and the network it came in on:
:meth:`InstanceMetadata.get_by_address`) and for a config drive
(:meth:`InstanceMetadata.get_by_instance_uuid`). Both run in a conductor,
which answers only for an instance on the calling host whose port holds
that address on that network (``docs/authorization.md``). Rendering it as
the OpenStack and EC2 formats is ``nubes/metadata/content.py``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from nubes.objects import backend, base, fields

if TYPE_CHECKING:
    from nubes.context import RequestContext

#: Subnet columns a guest is told (network_data.json).
_SUBNET_KEYS = (
    "id",
    "ip_version",
    "cidr",
    "gateway_ip",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "ipv6_address_mode",
)


def _port(port: dict[str, Any]) -> dict[str, Any]:
    """A port as a guest is told it: plain values only (they cross the wire)."""
    net = port.get("network") or {}
    return {
        "id": port["id"],
        "mac_address": port["mac_address"],
        "network_id": port["network_id"],
        "mtu": net.get("mtu"),
        "fixed_ips": [
            {
                "ip_address": ip["ip_address"],
                "subnet": {k: (ip.get("subnet") or {}).get(k) for k in _SUBNET_KEYS},
                # Nova's network info carries a fixed IP's floating IPs too
                # (inside the JSON string: the object's fields are unchanged).
                "floating_ips": [str(a) for a in ip.get("floating_ips", [])],
            }
            for ip in port.get("fixed_ips", [])
        ],
    }


@base.register
class InstanceMetadata(base.VersionedObject):
    """An instance as its guest sees it through the metadata service.

    Version history:

    1.0: Initial version
    1.1: password (what the guest posted, for GET .../password) and
         set_password (a guest's POST to the metadata service)
    """

    VERSION = "1.1"

    uuid = fields.UUID()
    name = fields.String(nullable=True, default=None)
    hostname = fields.String(nullable=True, default=None)
    project_id = fields.String(nullable=True, default=None)
    availability_zone = fields.String(nullable=True, default=None)
    launch_index = fields.Integer(nullable=True, default=None)
    reservation_id = fields.String(nullable=True, default=None)
    key_name = fields.String(nullable=True, default=None)
    public_key = fields.String(nullable=True, default=None)
    #: The instance's metadata (``meta`` in meta_data.json).
    meta = fields.Dict(fields.String(), default={})
    #: Base64, as the API took it.
    user_data = fields.String(nullable=True, default=None)
    flavor_name = fields.String(nullable=True, default=None)
    image_ref = fields.String(nullable=True, default=None)
    #: Whether the server was created with ``config_drive`` (a rebuild gives it one again).
    config_drive = fields.Boolean(default=False)
    #: The ports as JSON (as Nova's InstanceInfoCache.network_info): a list
    #: of id, mac_address, network_id, mtu, fixed_ips (ip_address, subnet,
    #: floating_ips: the addresses mapped to it; absent from older conductors).
    network_info = fields.String(default="[]")
    #: The (encrypted) password the guest posted, "" when none.
    password = fields.String(default="", added_in="1.1")

    @property
    def ports(self) -> list[dict[str, Any]]:
        return list(json.loads(self.network_info or "[]"))

    @classmethod
    def _from_source(cls, row: dict[str, Any]) -> InstanceMetadata:
        flavor = row.get("flavor") or {}
        return cls(
            uuid=row["uuid"],
            name=row.get("display_name"),
            hostname=row.get("hostname"),
            project_id=row.get("project_id"),
            availability_zone=row.get("availability_zone"),
            launch_index=row.get("launch_index"),
            reservation_id=row.get("reservation_id"),
            key_name=row.get("key_name"),
            public_key=row.get("public_key"),
            meta={str(k): str(v) for k, v in (row.get("metadata") or {}).items()},
            user_data=row.get("user_data"),
            flavor_name=flavor.get("name"),
            image_ref=row.get("image_ref"),
            # Stored as Nova stores it: "True", or empty.
            config_drive=str(row.get("config_drive") or "").lower() in ("true", "1"),
            network_info=json.dumps([_port(p) for p in row.get("ports", [])]),
            password=row.get("password") or "",
        )

    @base.remotable_classmethod
    async def get_by_instance_uuid(
        cls: type[InstanceMetadata], context: RequestContext, instance_uuid: str
    ) -> InstanceMetadata:
        """The live instance's metadata (InstanceNotFound)."""
        return cls._from_source(await backend.get().instance_metadata_get(context, instance_uuid))

    @base.remotable_classmethod
    async def get_by_address(
        cls: type[InstanceMetadata], context: RequestContext, network_id: str, address: str
    ) -> InstanceMetadata:
        """The metadata of the instance whose port holds ``address`` on
        ``network_id`` (InstanceNotFound when none does)."""
        row = await backend.get().instance_metadata_get_by_address(context, network_id, address)
        return cls._from_source(row)

    @base.remotable_classmethod
    async def set_password(
        cls: type[InstanceMetadata],
        context: RequestContext,
        network_id: str,
        address: str,
        password: str,
    ) -> bool:
        """Store the password the guest holding ``address`` on ``network_id``
        posted (Nova's metadata ``POST .../password``): once only, so False
        when the server has one already (the API's DELETE clears it)."""
        return bool(
            await backend.get().instance_password_set_by_address(
                context, network_id, address, password
            )
        )
