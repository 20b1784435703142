"""Nova's floating IP proxies: ``os-floating-ip-pools``, ``os-floating-ips`` (up to
2.35) and the ``addFloatingIp`` / ``removeFloatingIp`` server actions (up to 2.43).

Nova answers these from Neutron; nubes from its own network service
(:mod:`nubes.network.resources.floating_ips`), so the rules are the same
ones (a router must join the server's subnet to the pool, quotas, one
floating IP per fixed address). Shapes and texts are Nova's: a floating IP
is ``{id, ip, pool, fixed_ip, instance_id}``, a pool is an external network
named by its name (or id when unnamed); above their last microversion each
is 404, as in Nova.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.policy import Rule
from nubes.network.resources import NetworkService, Page, Row

#: The last microversion of os-floating-ips and os-floating-ip-pools (2.36 removed them).
LAST_PROXY = "2.35"
#: The last microversion of the addFloatingIp / removeFloatingIp actions (2.44 removed them).
LAST_ACTION = "2.43"

Handler = Callable[[Request], Awaitable[Response]]

# anyOf, not Nova's oneOf: no string is both, so they accept the same
# bodies, and a body generator (the schema fuzzer) can satisfy anyOf.
_ADDRESS = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
ADD_ACTION = {
    "type": "object",
    "properties": {"address": _ADDRESS, "fixed_address": _ADDRESS},
    "required": ["address"],
    "additionalProperties": False,
}
REMOVE_ACTION = {
    "type": "object",
    "properties": {"address": _ADDRESS},
    "required": ["address"],
    "additionalProperties": False,
}
CREATE = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"pool": {"type": ["string", "null"]}},
            "additionalProperties": False,
        },
        {"type": "null"},
    ]
}


def _until(last: str, handler: Handler) -> Handler:
    async def serve(request: Request) -> Response:
        if not common.version(request).matches(max_version=last):
            raise common.not_found("The resource could not be found.")
        return await handler(request)

    serve.__name__ = handler.__name__
    return serve


def _service(request: Request) -> NetworkService:
    service: NetworkService = common.state(request).network_service()
    return service


async def _pools(request: Request) -> list[Row]:
    """The external networks: the floating IP pools (every project reads them)."""
    return await _service(request).list_networks(
        common.ctx(request), Page(filters={"external": [True]})
    )


def _pool_name(network: Row) -> str:
    return str(network["name"] or network["id"])


async def _views(request: Request, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Nova's view of each floating IP: its pool's name and the server it maps to."""
    service, ctxt = _service(request), common.ctx(request).elevated()
    networks = {
        n["id"]: n
        for n in await service.list_networks(
            ctxt, Page(filters={"id": sorted({r["floating_network_id"] for r in rows})})
        )
    }
    mapped = sorted({r["fixed_port_id"] for r in rows if r["fixed_port_id"]})
    devices = {
        p["id"]: p["device_id"]
        for p in (await service.list_ports(ctxt, Page(filters={"id": mapped})) if mapped else [])
    }
    return [
        {
            "id": r["id"],
            "ip": r["floating_ip_address"],
            "pool": _pool_name(networks[r["floating_network_id"]])
            if r["floating_network_id"] in networks
            else r["floating_network_id"],
            "fixed_ip": r["fixed_ip_address"],
            "instance_id": devices.get(r["fixed_port_id"]) or None,
        }
        for r in rows
    ]


async def pools_index(request: Request) -> Response:
    common.authorize(request, "os-floating-ip-pools:list", Rule.PROJECT_READER)
    pools = [{"name": _pool_name(n)} for n in await _pools(request)]
    return common.json({"floating_ip_pools": pools})


async def index(request: Request) -> Response:
    common.authorize(request, "os-floating-ips:list", Rule.PROJECT_READER)
    ctxt = common.ctx(request)
    # Nova lists the project's floating IPs (an admin's too: its own project's).
    rows = await _service(request).list_floatingips(
        ctxt, Page(filters={"project_id": [ctxt.project_id]})
    )
    return common.json({"floating_ips": await _views(request, rows)})


async def _found(request: Request) -> Row:
    fip_id = request.path_params["ip_id"]
    try:
        return await _service(request).get_floatingip(common.ctx(request), fip_id)
    except exception.FloatingIPNotFound:
        raise common.not_found(f"Floating IP not found for ID {fip_id}") from None


async def show(request: Request) -> Response:
    common.authorize(request, "os-floating-ips:show", Rule.PROJECT_READER)
    (view,) = await _views(request, [await _found(request)])
    return common.json({"floating_ip": view})


async def create(request: Request) -> Response:
    common.authorize(request, "os-floating-ips:create", Rule.PROJECT_MEMBER)
    # The body is optional (no pool: the default pool, as Nova's).
    body = await v.json_body(request) if (await request.body()).strip() else None
    v.validate(body, CREATE)
    named = body.get("pool") if isinstance(body, dict) else None
    pool = named or str(common.state(request).conf.api.default_floating_pool)
    found = [n for n in await _pools(request) if pool in (n["name"], n["id"])]
    if not found:
        raise common.not_found("Floating IP pool not found.")
    where = f" in pool {pool}" if named else ""
    try:
        row = await _service(request).create_floatingip(
            common.ctx(request), {"floating_network_id": found[0]["id"]}
        )
    except (exception.IpAddressGenerationFailure, exception.NetworkBadRequest):
        raise common.not_found(
            f"No more floating IPs{where}." if named else "No more floating IPs available."
        ) from None
    except exception.NetworkOverQuota:
        raise exception.QuotaExceeded(message=f"IP allocation over quota{where}.") from None
    (view,) = await _views(request, [row])
    return common.json({"floating_ip": view})


async def delete(request: Request) -> Response:
    common.authorize(request, "os-floating-ips:delete", Rule.PROJECT_MEMBER)
    row = await _found(request)
    await _service(request).delete_floatingip(common.ctx(request), row["id"])
    return common.empty(202)


# -- the server actions ---------------------------------------------------------------------


async def _by_address(request: Request, address: str) -> Row:
    rows = await _service(request).list_floatingips(
        common.ctx(request), Page(filters={"floating_ip_address": [address]})
    )
    if not rows:
        raise common.not_found("floating IP not found")
    return rows[0]


def _action_version(request: Request) -> None:
    if not common.version(request).matches(max_version=LAST_ACTION):
        raise common.not_found("The resource could not be found.")


async def _add(request: Request, row: dict[str, Any], body: Any) -> None:
    _action_version(request)
    common.authorize(request, "os-floating-ips:add", Rule.PROJECT_MEMBER, row["project_id"])
    item = body["addFloatingIp"]
    v.validate(item, ADD_ACTION)
    address = item["address"]
    service, ctxt = _service(request), common.ctx(request)
    ports = await service.list_ports(ctxt, Page(filters={"device_id": [row["uuid"]]}))
    held = [(p["id"], f["ip_address"]) for p in ports for f in p["fixed_ips"]]
    if not held:
        raise common.bad_request("No fixed IPs associated to instance")
    fixed = item.get("fixed_address")
    if fixed is not None:
        chosen = [(port, ip) for port, ip in held if ip == fixed]
        if not chosen:
            raise common.bad_request("Specified fixed address not assigned to instance")
    else:
        chosen = [(port, ip) for port, ip in held if ":" not in ip]
        if not chosen:
            raise common.bad_request(
                f"Unable to associate floating IP {address} to any fixed IPs for instance "
                f"{row['uuid']}. Instance has no fixed IPv4 addresses to associate."
            )
    port_id, fixed_ip = chosen[0]
    fip = await _by_address(request, address)
    try:
        await service.update_floatingip(
            ctxt, fip["id"], {"port_id": port_id, "fixed_ip_address": fixed_ip}
        )
    except exception.NubesError as exc:
        if not exc.safe:
            raise
        # Nova turns the network service's refusal into a 400 with its text.
        raise common.bad_request(
            f"Unable to associate floating IP {address} to fixed IP {fixed_ip} for instance "
            f"{row['uuid']}. Error: {exc.message}"
        ) from None


async def _remove(request: Request, row: dict[str, Any], body: Any) -> None:
    _action_version(request)
    common.authorize(request, "os-floating-ips:remove", Rule.PROJECT_MEMBER, row["project_id"])
    item = body["removeFloatingIp"]
    v.validate(item, REMOVE_ACTION)
    fip = await _by_address(request, item["address"])
    service, ctxt = _service(request), common.ctx(request)
    device = None
    if fip["fixed_port_id"]:
        device = (await service.get_port(ctxt.elevated(), fip["fixed_port_id"]))["device_id"]
    if device != row["uuid"]:
        raise exception.Conflict(
            message=f"Floating IP {item['address']} is not associated with instance {row['uuid']}."
        )
    await service.update_floatingip(ctxt, fip["id"], {"port_id": None})


ACTIONS: dict[str, common.ActionHandler] = {
    "addFloatingIp": _add,
    "removeFloatingIp": _remove,
}

ROUTES = [
    Route("/os-floating-ip-pools", _until(LAST_PROXY, pools_index), methods=["GET"]),
    Route("/os-floating-ips", _until(LAST_PROXY, index), methods=["GET"]),
    Route("/os-floating-ips", _until(LAST_PROXY, create), methods=["POST"]),
    Route("/os-floating-ips/{ip_id}", _until(LAST_PROXY, show), methods=["GET"]),
    Route("/os-floating-ips/{ip_id}", _until(LAST_PROXY, delete), methods=["DELETE"]),
]
