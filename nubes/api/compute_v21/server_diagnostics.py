"""``GET /servers/{id}/diagnostics`` (admin): a running guest's counters, asked
of its host (compute RPC ``get_instance_diagnostics``).

From 2.48 the body is Nova's driver-neutral shape as the host sends it. Before
2.48 Nova answered whatever its driver returned; nubes answers the flat
libvirt-style dictionary derived from the same counters (``cpu0_time``,
``memory``, ``memory-rss``, ``vda_read`` ..., ``vnet0_rx`` ...), disks named
``vda``, ``vdb`` ... and NICs ``vnet0``, ``vnet1`` ... in the order the guest
has them, so one path serves both.
"""

from __future__ import annotations

import string
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api.compute_v21 import common, guest_host, servers
from nubes.api.policy import Rule

#: The first microversion with the driver-neutral body.
STANDARD_SHAPE = "2.48"


def legacy(diags: dict[str, Any]) -> dict[str, Any]:
    """The pre-2.48 flat body for the 2.48-shaped ``diags``."""
    flat: dict[str, Any] = {}
    for cpu in diags["cpu_details"]:
        flat[f"cpu{cpu['id']}_time"] = cpu["time"]
    memory = diags["memory_details"]
    flat["memory"] = memory["maximum"]
    flat["memory-rss"] = memory["used"]
    for i, disk in enumerate(diags["disk_details"]):
        name = "vd" + string.ascii_lowercase[i % 26]
        flat[f"{name}_read"] = disk["read_bytes"]
        flat[f"{name}_read_req"] = disk["read_requests"]
        flat[f"{name}_write"] = disk["write_bytes"]
        flat[f"{name}_write_req"] = disk["write_requests"]
        flat[f"{name}_errors"] = disk["errors_count"]
    for i, nic in enumerate(diags["nic_details"]):
        name = f"vnet{i}"
        for direction in ("rx", "tx"):
            flat[f"{name}_{direction}"] = nic[f"{direction}_octets"]
            flat[f"{name}_{direction}_packets"] = nic[f"{direction}_packets"]
            flat[f"{name}_{direction}_errors"] = nic[f"{direction}_errors"]
            flat[f"{name}_{direction}_drop"] = nic[f"{direction}_drop"]
    return flat


async def show(request: Request) -> Response:
    row = await servers.get_server(request, request.path_params["server_id"])
    common.authorize(request, "os-server-diagnostics", Rule.ADMIN)
    ctxt = common.ctx(request)
    uuid = row["uuid"]
    diags = await guest_host.ask(
        request,
        row,
        "diagnostics",
        lambda compute, host: compute.get_instance_diagnostics(ctxt, host, uuid),
    )
    if common.version(request).at_least(STANDARD_SHAPE):
        return common.json(diags)
    return common.json(legacy(diags))


ROUTES = [Route("/servers/{server_id}/diagnostics", common.no_query(show), methods=["GET"])]
