"""The rules of the network service: validation, visibility, defaults, quotas.

Every write to a network resource goes through here, from the network API
(``nubes/api/network/routes.py``) and from the compute API (a server's
ports, :mod:`nubes.network.ports`). Bodies use Neutron's field names.

Visibility (Neutron's default policy): a project sees its own rows, and
networks marked ``shared``; admin sees everything. A row the caller may
not see is "not found" (404), never 403. Creating a shared or external
network, or a port on another project's behalf, is for admin only.

The rules live per resource, one module each, and :class:`NetworkService`
puts them together: :mod:`._common` (field checks, visibility, paging,
quotas), :mod:`.networks`, :mod:`.subnets`, :mod:`.security_groups` (with
their rules), :mod:`.ports` (which uses the groups), :mod:`.routers` (whose
gateway and interfaces are ports) and :mod:`.floating_ips` (mapped through
routers).
"""

from __future__ import annotations

from nubes.network.resources._common import Page, Row, can_see, check_body, is_admin
from nubes.network.resources.floating_ips import FloatingIPs
from nubes.network.resources.networks import Networks
from nubes.network.resources.ports import port_details, random_mac
from nubes.network.resources.security_groups import DEFAULT_GROUP

__all__ = [
    "DEFAULT_GROUP",
    "NetworkService",
    "Page",
    "Row",
    "can_see",
    "check_body",
    "is_admin",
    "port_details",
    "random_mac",
]


class NetworkService(Networks, FloatingIPs):
    """One per API process; every method runs its own transaction(s)."""
