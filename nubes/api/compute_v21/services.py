"""``os-services``: list with filters, enable/disable (with a reason), force down, delete."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common, hosts
from nubes.api.policy import Rule
from nubes.api.views import Field, View, nova_time
from nubes.db.api import compute_nodes, instances, services

VIEW = View(
    Field("id", lambda r, _: r["id"], max="2.52"),
    Field("id", lambda r, _: r["uuid"], min="2.53"),
    Field("binary", lambda r, x: hosts.public_binary(r["binary"], x["prefix"])),
    Field("disabled_reason"),
    Field("host"),
    Field("state", lambda r, x: "up" if hosts.is_up(r, x["conf"]) else "down"),
    Field("status", lambda r, _: "disabled" if r["disabled"] else "enabled"),
    Field("updated_at", lambda r, _: nova_time(hosts.updated_at(r))),
    Field("zone", lambda r, x: hosts.zone_of(r, x["zones"], x["conf"])),
    Field("forced_down", lambda r, _: bool(r["forced_down"]), min="2.11"),
)

HIDDEN_BINARIES = ("api",)
_HOST_BINARY = {"host": v.NAME_WITH_SPACES, "binary": v.NAME_WITH_SPACES}
LEGACY = {
    "enable": {"properties": _HOST_BINARY, "required": ["host", "binary"]},
    "disable": {"properties": _HOST_BINARY, "required": ["host", "binary"]},
    "disable-log-reason": {
        "properties": {
            **_HOST_BINARY,
            "disabled_reason": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        "required": ["host", "binary"],
    },
    "force-down": {
        "properties": {**_HOST_BINARY, "forced_down": v.BOOLEAN},
        "required": ["host", "binary", "forced_down"],
    },
}
UPDATE_253 = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["enabled", "disabled"]},
        "disabled_reason": {"type": "string", "minLength": 1, "maxLength": 255},
        "forced_down": v.BOOLEAN,
    },
    "additionalProperties": False,
}


async def _render(
    request: Request, rows: list[dict[str, Any]], prefix: str = hosts.BINARY_PREFIX
) -> list[dict[str, Any]]:
    state = common.state(request)
    async with state.db.reader() as conn:
        zones = await hosts.host_zones(conn)
    extra = {"conf": state.conf, "zones": zones, "prefix": prefix}
    version = common.version(request)
    return [VIEW.render(r, version, extra) for r in rows]


async def _with_heartbeat(request: Request, service_id: int) -> dict[str, Any]:
    async with common.state(request).db.reader() as conn:
        for row in await hosts.all_services(conn):
            if row["id"] == service_id:
                return row
    raise exception.ServiceNotFound(service=service_id)


async def index(request: Request) -> Response:
    common.authorize(request, "os-services:list", Rule.ADMIN)
    host = request.query_params.get("host")
    binary = request.query_params.get("binary")
    async with common.state(request).db.reader() as conn:
        rows = await hosts.all_services(
            conn, binary=hosts.internal_binary(binary) if binary else None
        )
    # Like Nova's osapi_compute records, the API's own rows are not listed.
    rows = [r for r in rows if r["binary"] not in HIDDEN_BINARIES]
    if host is not None:
        rows = [r for r in rows if r["host"] == host]
    prefix = hosts.naming_prefix(binary)
    return common.json({"services": await _render(request, rows, prefix)})


async def _find(request: Request, service_id: str) -> dict[str, Any]:
    async with common.state(request).db.reader() as conn:
        if common.version(request).at_least("2.53"):
            if not v.is_uuid_like(service_id):
                raise common.bad_request(f"Invalid uuid {service_id}")
            return await services.get_by_uuid(conn, service_id)
        try:
            number = int(service_id)
        except ValueError:
            raise exception.ServiceNotFound(service=service_id) from None
        if not 0 <= number <= v.MAX_INT:
            raise exception.ServiceNotFound(service=service_id)
        return await services.get_by_id(conn, number)


async def update(request: Request) -> Response:
    common.authorize(request, "os-services:update", Rule.ADMIN)
    service_id = request.path_params["service_id"]
    version = common.version(request)
    body = await v.json_body(request)
    if not version.at_least("2.53"):
        return await _legacy_update(request, service_id, body)
    v.validate(body, UPDATE_253)
    row = await _find(request, service_id)
    if row["binary"] != "compute":
        raise common.bad_request(
            f"Updating a {hosts.public_binary(row['binary'])} service is not supported. "
            "Only nubes-compute services can be updated."
        )
    status = body.get("status")
    if "disabled_reason" in body and status != "disabled":
        raise common.bad_request("Specifying 'disabled_reason' with status 'enabled' is invalid.")
    if status is None and "forced_down" not in body:
        raise common.bad_request(
            "No updates were requested. Fields 'status' or 'forced_down' should be specified."
        )
    values: dict[str, Any] = {}
    if status == "disabled":
        values.update(disabled=True, disabled_reason=body.get("disabled_reason"))
    elif status == "enabled":
        values.update(disabled=False, disabled_reason=None)
    if "forced_down" in body:
        values["forced_down"] = v.parse_bool("forced_down", body["forced_down"])
    async with common.state(request).db.writer() as conn:
        await services.update(conn, row["id"], values)
    full = await _with_heartbeat(request, row["id"])
    return common.json({"service": (await _render(request, [full]))[0]})


async def _legacy_update(request: Request, action: str, body: Any) -> Response:
    version = common.version(request)
    if action not in LEGACY or (action == "force-down" and not version.at_least("2.11")):
        raise common.not_found("Unknown action")
    schema = {"type": "object", "additionalProperties": False, **LEGACY[action]}
    v.validate(body, schema)
    host, binary = body["host"], hosts.internal_binary(body["binary"])
    async with common.state(request).db.writer() as conn:
        try:
            row = await services.get_by_host_and_binary(conn, host, binary)
        except exception.ServiceNotFound:
            raise common.not_found(f"Host '{host}' is not found") from None
        result: dict[str, Any] = {"host": host, "binary": body["binary"]}
        if action == "force-down":
            forced = v.parse_bool("forced_down", body["forced_down"])
            await services.update(conn, row["id"], {"forced_down": forced})
            result["forced_down"] = forced
        elif action == "enable":
            await services.update(conn, row["id"], {"disabled": False, "disabled_reason": None})
            result["status"] = "enabled"
        else:
            reason = body.get("disabled_reason")
            await services.update(conn, row["id"], {"disabled": True, "disabled_reason": reason})
            result["status"] = "disabled"
            if action == "disable-log-reason":
                result["disabled_reason"] = reason
    return common.json({"service": result})


async def delete(request: Request) -> Response:
    common.authorize(request, "os-services:delete", Rule.ADMIN)
    row = await _find(request, request.path_params["service_id"])
    async with common.state(request).db.writer() as conn:
        if row["binary"] == "compute":
            if await instances.count_on_host(conn, row["host"]):
                raise exception.Conflict(
                    message="Unable to delete compute service that is hosting instances. "
                    "Migrate or delete the instances first."
                )
            for node in await compute_nodes.get_all(conn, host=row["host"]):
                await compute_nodes.destroy(conn, node["id"])
        await services.destroy(conn, row["id"])
    return common.empty(204)


ROUTES = [
    Route("/os-services", common.known_query(index, {"2.75": ("host", "binary")}), methods=["GET"]),
    Route("/os-services/{service_id}", update, methods=["PUT"]),
    Route("/os-services/{service_id}", delete, methods=["DELETE"]),
]
