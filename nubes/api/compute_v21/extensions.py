"""``/extensions``: the v2.0 extension names the v2.1 API answers for.

Nova froze this document when v2.1 replaced extensions with microversions; it
is informational only (clients such as Tempest and old novaclients read it to
find what a cloud has). nubes lists the extensions whose resources it serves,
in Nova's shape, so a client that looks for one finds it exactly when the
resource behind it answers.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api.compute_v21 import common
from nubes.api.policy import Rule

#: The namespace every v2.1 extension reports (as Nova does, a placeholder).
NAMESPACE = "http://docs.openstack.org/compute/ext/fake_xml"
#: The date Nova gives every extension of the v2.1 API.
UPDATED = "2014-12-03T00:00:00Z"

#: (alias, name, description) of each served extension.
EXTENSIONS: tuple[tuple[str, str, str], ...] = (
    ("os-admin-actions", "AdminActions", "Enable admin-only server actions (reset state)."),
    ("os-aggregates", "Aggregates", "Admin-only aggregate administration."),
    ("os-availability-zone", "AvailabilityZone", "Availability zones of hosts and servers."),
    ("os-console-output", "ConsoleOutput", "Console log output support."),
    ("os-consoles", "Consoles", "Interactive console support."),
    ("os-evacuate", "Evacuate", "Evacuate a server from a failed host to another."),
    ("os-extended-availability-zone", "ExtendedAvailabilityZone", "The server's zone."),
    ("os-extended-server-attributes", "ExtendedServerAttributes", "Admin attributes of servers."),
    ("os-extended-status", "ExtendedStatus", "Task and power state of servers."),
    ("os-flavor-access", "FlavorAccess", "Flavor access support."),
    ("os-flavor-extra-specs", "FlavorExtraSpecs", "Flavor extra specs support."),
    ("os-flavor-manage", "FlavorManage", "Flavor create and delete."),
    ("os-hosts", "Hosts", "Admin-only host administration."),
    ("os-hypervisors", "Hypervisors", "Admin-only hypervisor administration."),
    ("os-instance-actions", "InstanceActions", "View a log of actions done to a server."),
    ("os-instance-usage-audit-log", "OSInstanceUsageAuditLog", "Admin-only usage audit log."),
    ("os-keypairs", "Keypairs", "Key pair support."),
    ("os-lock-server", "LockServer", "Lock and unlock servers."),
    ("os-migrate-server", "MigrateServer", "Cold and live migration of servers."),
    ("os-migrations", "Migrations", "Admin-only migration records."),
    ("os-multinic", "Multinic", "Multiple network interfaces."),
    ("os-networks", "Networks", "Network proxy to the network service."),
    ("os-quota-class-sets", "QuotaClasses", "Quota classes management support."),
    ("os-quota-sets", "Quotas", "Quotas management support."),
    ("os-security-groups", "SecurityGroups", "Security group support."),
    ("os-server-external-events", "ServerExternalEvents", "Events from other services."),
    ("os-server-groups", "ServerGroups", "Server group support."),
    ("os-server-tags", "ServerTags", "Server tags support."),
    ("os-services", "Services", "Service support."),
    ("os-simple-tenant-usage", "SimpleTenantUsage", "Simple tenant usage extension."),
    ("os-tenant-networks", "OSTenantNetworks", "Project networks proxy."),
    ("os-attach-interfaces", "AttachInterfaces", "Attach interface support."),
    ("servers", "Servers", "Servers."),
    ("flavors", "Flavors", "Flavors."),
    ("ips", "Ips", "Server addresses."),
    ("limits", "Limits", "Limits support."),
    ("server-metadata", "ServerMetadata", "Server metadata support."),
    ("versions", "Versions", "API version information."),
)
_BY_ALIAS = {alias: (alias, name, text) for alias, name, text in EXTENSIONS}


def _view(alias: str, name: str, description: str) -> dict[str, Any]:
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "namespace": NAMESPACE,
        "updated": UPDATED,
        "links": [],
    }


async def index(request: Request) -> Response:
    common.authorize(request, "extensions", Rule.ANY)
    return common.json({"extensions": [_view(*e) for e in EXTENSIONS]})


async def show(request: Request) -> Response:
    common.authorize(request, "extensions", Rule.ANY)
    alias = request.path_params["alias"]
    found = _BY_ALIAS.get(alias)
    if found is None:
        raise common.not_found(f"Extension {alias} could not be found.")
    return common.json({"extension": _view(*found)})


ROUTES = [
    Route("/extensions", common.no_query(index), methods=["GET"]),
    Route("/extensions/{alias}", common.no_query(show), methods=["GET"]),
]
