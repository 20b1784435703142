"""``os-aggregates``: host aggregates with hosts and metadata (availability_zone,
filter_tenant_id ...). Admin only."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.policy import Rule
from nubes.api.views import Field, View, nova_time
from nubes.db.api import groups, services

AZ = groups.AVAILABILITY_ZONE_KEY

VIEW = View(
    Field("availability_zone", lambda r, _: r["metadata"].get(AZ)),
    Field("created_at", lambda r, _: nova_time(r["created_at"])),
    Field("deleted", lambda r, _: False),
    Field("deleted_at", lambda r, _: None),
    Field("hosts", lambda r, _: list(r["hosts"])),
    Field("id"),
    Field("metadata", lambda r, _: dict(r["metadata"])),
    Field("name"),
    Field("updated_at", lambda r, _: nova_time(r["updated_at"])),
    Field("uuid", min="2.41"),
)
#: Nova's create answers without hosts and metadata.
CREATED = View(*[f for f in VIEW.fields if f.name not in ("hosts", "metadata")])

_AZ_NAME = {
    "type": ["string", "null"],
    "minLength": 1,
    "maxLength": 255,
    "pattern": r"^(?! )[\S ]*(?<! )$",
}
_NAME = {**v.NAME_WITH_SPACES, "pattern": r"^(?! )[\S ]*(?<! )$"}
CREATE = {
    "type": "object",
    "properties": {
        "aggregate": {
            "type": "object",
            "properties": {"name": _NAME, "availability_zone": _AZ_NAME},
            "required": ["name"],
            "additionalProperties": False,
        }
    },
    "required": ["aggregate"],
    "additionalProperties": False,
}
UPDATE = {
    "type": "object",
    "properties": {
        "aggregate": {
            "type": "object",
            "properties": {"name": _NAME, "availability_zone": _AZ_NAME},
            "additionalProperties": False,
            "minProperties": 1,
        }
    },
    "required": ["aggregate"],
    "additionalProperties": False,
}
_HOST = {
    "type": "object",
    "properties": {"host": v.NAME_WITH_SPACES},
    "required": ["host"],
    "additionalProperties": False,
}
ACTION = {
    "type": "object",
    "properties": {
        "add_host": _HOST,
        "remove_host": _HOST,
        "set_metadata": {
            "type": "object",
            "properties": {
                "metadata": {
                    "type": "object",
                    "patternProperties": {
                        r"^[a-zA-Z0-9-_:. /]{1,255}$": {
                            "type": ["string", "null"],
                            "maxLength": 255,
                        }
                    },
                    "additionalProperties": False,
                }
            },
            "required": ["metadata"],
            "additionalProperties": False,
        },
    },
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
}


def _id(request: Request) -> int:
    raw = request.path_params["aggregate_id"]
    try:
        number = int(raw)
    except ValueError:
        raise common.bad_request(f"Invalid aggregate id: {raw}") from None
    if not 0 <= number <= v.MAX_INT:
        # A number no aggregate can have names none, as in Nova: not found.
        raise exception.AggregateNotFound(aggregate_id=raw)
    return number


def _render(request: Request, row: dict[str, Any], view: View = VIEW) -> Response:
    return common.json({"aggregate": view.render(row, common.version(request))})


async def index(request: Request) -> Response:
    common.authorize(request, "os-aggregates:index", Rule.ADMIN)
    async with common.state(request).db.reader() as conn:
        rows = await groups.aggregate_get_all(conn)
    version = common.version(request)
    return common.json({"aggregates": [VIEW.render(r, version) for r in rows]})


async def _check_zone_name(request: Request, zone: str | None) -> None:
    if (
        zone is not None
        and zone == common.state(request).conf.api.internal_service_availability_zone
    ):
        raise common.bad_request(
            f"The availability zone {zone} is reserved for the internal services."
        )


async def create(request: Request) -> Response:
    common.authorize(request, "os-aggregates:create", Rule.ADMIN)
    body = await v.json_body(request)
    v.validate(body, CREATE)
    spec = body["aggregate"]
    zone = spec.get("availability_zone")
    await _check_zone_name(request, zone)
    async with common.state(request).db.writer() as conn:
        try:
            row = await groups.aggregate_create(
                conn, spec["name"], metadata={AZ: zone} if zone else None
            )
        except exception.DBDuplicateEntry:
            raise exception.Conflict(message=f"Aggregate {spec['name']} already exists.") from None
    return _render(request, row, CREATED)


async def show(request: Request) -> Response:
    common.authorize(request, "os-aggregates:show", Rule.ADMIN)
    async with common.state(request).db.reader() as conn:
        row = await groups.aggregate_get(conn, _id(request))
    return _render(request, row)


async def update(request: Request) -> Response:
    common.authorize(request, "os-aggregates:update", Rule.ADMIN)
    aggregate_id = _id(request)
    body = await v.json_body(request)
    v.validate(body, UPDATE)
    spec = body["aggregate"]
    await _check_zone_name(request, spec.get("availability_zone"))
    async with common.state(request).db.writer() as conn:
        row = await groups.aggregate_get(conn, aggregate_id)
        if "name" in spec and spec["name"] != row["name"]:
            try:
                await groups.aggregate_update_name(conn, aggregate_id, spec["name"])
            except exception.DBDuplicateEntry:
                raise exception.Conflict(
                    message=f"Aggregate {spec['name']} already exists."
                ) from None
        if "availability_zone" in spec:
            zone = spec["availability_zone"]
            await _check_hosts_zone(conn, row, zone)
            await groups.aggregate_metadata_update(conn, aggregate_id, {AZ: zone})
        row = await groups.aggregate_get(conn, aggregate_id)
    return _render(request, row)


async def _check_hosts_zone(conn: Any, row: dict[str, Any], zone: str | None) -> None:
    """A host can be in one availability zone only."""
    if not zone:
        return
    for host in row["hosts"]:
        for other in await groups.aggregate_get_by_host(conn, host, key=AZ):
            if other["id"] != row["id"] and other["metadata"].get(AZ) != zone:
                raise common.bad_request(
                    f"Cannot update aggregate {row['id']}. Reason: One or more hosts already "
                    f"in availability zone(s) [{other['metadata'].get(AZ)}]."
                )


async def delete(request: Request) -> Response:
    common.authorize(request, "os-aggregates:delete", Rule.ADMIN)
    aggregate_id = _id(request)
    async with common.state(request).db.writer() as conn:
        row = await groups.aggregate_get(conn, aggregate_id)
        if row["hosts"]:
            raise common.bad_request(
                f"Cannot remove aggregate {aggregate_id}. Reason: Host aggregate is not empty."
            )
        await groups.aggregate_destroy(conn, aggregate_id)
    return common.empty(200)


async def action(request: Request) -> Response:
    aggregate_id = _id(request)
    body = await v.json_body(request)
    v.validate(body, ACTION)
    ((name, args),) = body.items()
    common.authorize(request, f"os-aggregates:{name}", Rule.ADMIN)
    async with common.state(request).db.writer() as conn:
        row = await groups.aggregate_get(conn, aggregate_id)
        if name == "add_host":
            await _add_host(conn, row, args["host"])
        elif name == "remove_host":
            try:
                await groups.aggregate_host_delete(conn, aggregate_id, args["host"])
            except exception.NotFound:
                raise common.not_found(
                    f"Cannot remove host {args['host']} in aggregate {aggregate_id}: not found"
                ) from None
        else:
            metadata = args["metadata"]
            if AZ in metadata:
                await _check_zone_name(request, metadata[AZ])
                await _check_hosts_zone(conn, row, metadata[AZ])
            await groups.aggregate_metadata_update(conn, aggregate_id, metadata)
        row = await groups.aggregate_get(conn, aggregate_id)
    return _render(request, row)


async def _add_host(conn: Any, row: dict[str, Any], host: str) -> None:
    try:
        await services.get_by_host_and_binary(conn, host, "compute")
    except exception.ServiceNotFound:
        raise exception.ComputeHostNotFound(
            message=f"Compute host {host} could not be found."
        ) from None
    if host in row["hosts"]:
        raise exception.Conflict(message=f"Aggregate {row['id']} already has host {host}.")
    zone = row["metadata"].get(AZ)
    if zone:
        for other in await groups.aggregate_get_by_host(conn, host, key=AZ):
            if other["metadata"].get(AZ) != zone:
                raise exception.Conflict(
                    message=f"Cannot add host to aggregate {row['id']}. Reason: One or more "
                    f"hosts already in availability zone(s) [{other['metadata'].get(AZ)}]."
                )
    await groups.aggregate_host_add(conn, row["id"], host)


#: 2.81: images to have the aggregate's hosts download ahead of use.
CACHE_IMAGES = {
    "type": "object",
    "properties": {
        "cache": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"id": {"type": "string", "format": "uuid"}},
                "required": ["id"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["cache"],
    "additionalProperties": False,
}


async def images(request: Request) -> Response:
    """``POST /os-aggregates/{id}/images`` (2.81): refused after Nova's checks.

    The hosts keep no image cache that could be filled ahead of a boot, so
    a valid request is answered 400 rather than accepted and not done.
    """
    if not common.version(request).at_least("2.81"):
        raise exception.NotFound(message="The resource could not be found.")
    common.authorize(request, "os-aggregates:images", Rule.ADMIN)
    async with common.state(request).db.reader() as conn:
        await groups.aggregate_get(conn, _id(request))
    body = await v.json_body(request)
    v.validate(body, CACHE_IMAGES)
    raise common.bad_request("Image precaching is not supported by the hosts of this cloud.")


ROUTES = [
    Route("/os-aggregates/{aggregate_id}/images", images, methods=["POST"]),
    Route("/os-aggregates", common.no_query(index), methods=["GET"]),
    Route("/os-aggregates", create, methods=["POST"]),
    Route("/os-aggregates/{aggregate_id}", common.no_query(show), methods=["GET"]),
    Route("/os-aggregates/{aggregate_id}", update, methods=["PUT"]),
    Route("/os-aggregates/{aggregate_id}", delete, methods=["DELETE"]),
    Route("/os-aggregates/{aggregate_id}/action", action, methods=["POST"]),
]
