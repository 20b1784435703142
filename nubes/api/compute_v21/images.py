"""``/images`` and ``/images/{id}/metadata`` (up to 2.35): Nova's proxy to the image service.

The images are the image service's (:mod:`nubes.api.images`, the same rules
of visibility and ownership); this module only answers in Nova's shape:
``minRam``/``minDisk``, an upper-case status with a progress, the size as
``OS-EXT-IMG-SIZE:size``, the image's properties as ``metadata`` and, for a
snapshot, the server it came from. Metadata changes are property changes of
the image (through :func:`nubes.api.image_changes.update_image`). From 2.36
the routes are not found, as in Nova.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import image_changes, image_import
from nubes.api import images as image_logic
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.compute_v21.network_proxies import LAST
from nubes.api.policy import Rule
from nubes.api.views import iso_z

#: Nova's status of an image per the image service's status.
STATUS = {
    "active": "ACTIVE",
    "queued": "SAVING",
    "saving": "SAVING",
    "uploading": "SAVING",
    "importing": "SAVING",
    "deleted": "DELETED",
    "pending_delete": "DELETED",
    "killed": "ERROR",
    "deactivated": "ERROR",
}
#: Nova's progress per the image service's status (0 for any other).
PROGRESS = {"queued": 25, "saving": 50, "active": 100}
#: Image service statuses per Nova's status filter.
STATUS_FILTER: dict[str, tuple[str, ...]] = {}
for _glance, _nova in STATUS.items():
    STATUS_FILTER.setdefault(_nova, ())
    STATUS_FILTER[_nova] += (_glance,)

METADATA_SCHEMA = {
    "type": "object",
    "properties": {
        "metadata": {
            "type": "object",
            "propertyNames": {"minLength": 1, "maxLength": 255},
            "additionalProperties": {"type": "string", "maxLength": 255},
        }
    },
    "required": ["metadata"],
    "additionalProperties": False,
}
META_SCHEMA = {
    "type": "object",
    "properties": {
        "meta": {
            "type": "object",
            "propertyNames": {"minLength": 1, "maxLength": 255},
            "additionalProperties": {"type": "string", "maxLength": 255},
            "minProperties": 1,
            "maxProperties": 1,
        }
    },
    "required": ["meta"],
    "additionalProperties": False,
}


def _check_version(request: Request) -> None:
    if not common.version(request).matches(max_version=LAST):
        raise common.not_found("The resource could not be found.")


def _links(request: Request, image_id: str) -> list[dict[str, str]]:
    image_url = common.state(request).public_endpoint + f"/image/images/{image_id}"
    return [
        *common.links(request, "images", image_id),
        {"rel": "alternate", "type": "application/vnd.openstack.image", "href": image_url},
    ]


def _view(request: Request, row: dict[str, Any], *, detail: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "links": _links(request, row["id"]),
    }
    if not detail:
        return body
    body.update(
        {
            "minRam": row["min_ram"],
            "minDisk": row["min_disk"],
            "metadata": dict(row["properties"]),
            "created": iso_z(row["created_at"]),
            "updated": iso_z(row["updated_at"] or row["created_at"]),
            "status": STATUS.get(row["status"], "UNKNOWN"),
            "progress": PROGRESS.get(row["status"], 0),
            "OS-EXT-IMG-SIZE:size": row["size"],
        }
    )
    server = row["properties"].get("instance_uuid")
    if server:
        body["server"] = {"id": server, "links": common.links(request, "servers", server)}
    return body


def _matches(row: dict[str, Any], params: Any) -> bool:
    """Nova's image filters that are not columns of the image service."""
    props = row["properties"]
    # A server filter is a server's id or any of its links (Nova keeps what
    # follows the last "/").
    if "server" in params and props.get("instance_uuid") != params["server"].rsplit("/", 1)[-1]:
        return False
    if "type" in params and props.get("image_type", "image") != params["type"]:
        return False
    for name, column in (("minRam", "min_ram"), ("minDisk", "min_disk")):
        if name in params and row[column] < v.to_int(name, params[name], 0):
            return False
    if "changes-since" in params:
        since = common.parse_time("changes-since", params["changes-since"])
        updated = row["updated_at"] or row["created_at"]
        if updated.replace(tzinfo=dt.UTC) < since.astimezone(dt.UTC):
            return False
    return True


async def _list(request: Request, *, detail: bool) -> Response:
    _check_version(request)
    common.authorize(request, "image-metadata:list", Rule.ANY)
    params = request.query_params
    filters: dict[str, Any] = {}
    if "name" in params:
        filters["name"] = params["name"]
    rows = await image_logic.list_images(
        common.state(request).db, common.ctx(request), filters=filters
    )
    if "status" in params:
        wanted = STATUS_FILTER.get(params["status"].upper(), ())
        rows = [r for r in rows if r["status"] in wanted]
    rows = [r for r in rows if _matches(r, params)]
    marker = params.get("marker")
    if marker is not None:
        positions = [i for i, r in enumerate(rows) if r["id"] == marker]
        if not positions:
            raise common.bad_request(f"marker [{marker}] not found")
        rows = rows[positions[0] + 1 :]
    limit = common.limit(request)
    body: dict[str, Any] = {}
    if len(rows) > limit:
        rows = rows[:limit]
        if "limit" in params:
            body["images_links"] = common.next_link(request, "images", rows[-1]["id"])
    body["images"] = [_view(request, r, detail=detail) for r in rows]
    return common.json(body)


async def index(request: Request) -> Response:
    return await _list(request, detail=False)


async def detail(request: Request) -> Response:
    return await _list(request, detail=True)


async def _image(request: Request) -> dict[str, Any]:
    image_id = request.path_params["image_id"]
    try:
        return await image_logic.get_image(common.state(request).db, common.ctx(request), image_id)
    except exception.ImageNotFound:
        raise common.not_found("Image not found.") from None


async def show(request: Request) -> Response:
    _check_version(request)
    common.authorize(request, "image-metadata:show", Rule.ANY)
    return common.json({"image": _view(request, await _image(request), detail=True)})


async def delete(request: Request) -> Response:
    _check_version(request)
    common.authorize(request, "image-metadata:delete", Rule.ANY)
    row = await _image(request)
    state = common.state(request)
    # The image service's refusals (not the owner, protected) stay 403, as in Nova.
    await image_import.delete_image(
        state.db, common.ctx(request), row["id"], image_dir=state.image_dir
    )
    return common.empty(204)


# --- metadata: the image's properties -----------------------------------------------------


def _check_keys(keys: Any) -> None:
    for name in keys:
        if name in image_logic.CORE_ATTRIBUTES or name in image_logic.READ_ONLY or name == "id":
            raise common.bad_request(f"{name} is an attribute of the image, not metadata.")


async def _change(
    request: Request, row: dict[str, Any], ops: list[dict[str, Any]]
) -> dict[str, Any]:
    """Apply property changes as the image service's JSON patch (its rules, its 403s)."""
    if not ops:
        return row
    # Only properties are changed here, so no attribute schema is needed.
    return await image_changes.update_image(
        common.state(request).db, common.ctx(request), row["id"], ops, {}
    )


def _set_ops(current: dict[str, str], wanted: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"op": "replace" if k in current else "add", "path": "/" + _escape(k), "value": val}
        for k, val in wanted.items()
        if current.get(k) != val
    ]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


async def metadata_index(request: Request) -> Response:
    _check_version(request)
    common.authorize(request, "image-metadata:index", Rule.ANY)
    return common.json({"metadata": dict((await _image(request))["properties"])})


async def metadata_update(request: Request) -> Response:
    """POST: merge the given items into the metadata."""
    _check_version(request)
    common.authorize(request, "image-metadata:create", Rule.ANY)
    row = await _image(request)
    body = await v.json_body(request)
    v.validate(body, METADATA_SCHEMA)
    _check_keys(body["metadata"])
    row = await _change(request, row, _set_ops(row["properties"], body["metadata"]))
    return common.json({"metadata": dict(row["properties"])})


async def metadata_replace(request: Request) -> Response:
    """PUT: the given items become the whole metadata."""
    _check_version(request)
    common.authorize(request, "image-metadata:update_all", Rule.ANY)
    row = await _image(request)
    body = await v.json_body(request)
    v.validate(body, METADATA_SCHEMA)
    wanted = body["metadata"]
    _check_keys(wanted)
    removes = [
        {"op": "remove", "path": "/" + _escape(k)} for k in row["properties"] if k not in wanted
    ]
    row = await _change(request, row, removes + _set_ops(row["properties"], wanted))
    return common.json({"metadata": dict(row["properties"])})


async def metadata_show(request: Request) -> Response:
    _check_version(request)
    common.authorize(request, "image-metadata:show", Rule.ANY)
    key = request.path_params["key"]
    props = (await _image(request))["properties"]
    if key not in props:
        raise common.not_found(f"Image metadata {key} not found.")
    return common.json({"meta": {key: props[key]}})


async def metadata_put(request: Request) -> Response:
    _check_version(request)
    common.authorize(request, "image-metadata:update", Rule.ANY)
    key = request.path_params["key"]
    row = await _image(request)
    body = await v.json_body(request)
    v.validate(body, META_SCHEMA)
    if key not in body["meta"]:
        raise common.bad_request("Request body and URI mismatch")
    _check_keys(body["meta"])
    row = await _change(request, row, _set_ops(row["properties"], body["meta"]))
    return common.json({"meta": {key: row["properties"][key]}})


async def metadata_delete(request: Request) -> Response:
    _check_version(request)
    common.authorize(request, "image-metadata:delete", Rule.ANY)
    key = request.path_params["key"]
    row = await _image(request)
    if key not in row["properties"]:
        raise common.not_found(f"Image metadata {key} not found.")
    await _change(request, row, [{"op": "remove", "path": "/" + _escape(key)}])
    return common.empty(204)


ROUTES = [
    Route("/images", index, methods=["GET"]),
    Route("/images/detail", detail, methods=["GET"]),
    Route("/images/{image_id}", show, methods=["GET"]),
    Route("/images/{image_id}", delete, methods=["DELETE"]),
    Route("/images/{image_id}/metadata", metadata_index, methods=["GET"]),
    Route("/images/{image_id}/metadata", metadata_update, methods=["POST"]),
    Route("/images/{image_id}/metadata", metadata_replace, methods=["PUT"]),
    Route("/images/{image_id}/metadata/{key}", metadata_show, methods=["GET"]),
    Route("/images/{image_id}/metadata/{key}", metadata_put, methods=["PUT"]),
    Route("/images/{image_id}/metadata/{key}", metadata_delete, methods=["DELETE"]),
]
