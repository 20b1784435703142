"""HTTP routes of the image service (mounted at ``/image``)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nubes import exception, grants
from nubes.api import image_changes, image_import, image_members, images, policy, quotas
from nubes.api import image_tasks as image_tasks_api
from nubes.api.image import metadef_routes
from nubes.api.middleware import api_state, request_context, service_app
from nubes.api.state import ApiState
from nubes.api.validation import is_uuid_like, json_body, query_int, validate
from nubes.api.views import iso_z
from nubes.db.api import images as images_db

LOG = logging.getLogger(__name__)

CHUNK = 64 * 1024

_state = api_state
_ctx = request_context


def image_view(row: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = dict(row["properties"])
    body.update(
        {
            "id": row["id"],
            "name": row["name"],
            "status": row["status"],
            "visibility": row["visibility"],
            "protected": row["protected"],
            "os_hidden": row["os_hidden"],
            "checksum": row["checksum"],
            "os_hash_algo": row["os_hash_algo"],
            "os_hash_value": row["os_hash_value"],
            "owner": row["owner"],
            "size": row["size"],
            "virtual_size": None,
            "min_ram": row["min_ram"],
            "min_disk": row["min_disk"],
            "disk_format": row["disk_format"],
            "container_format": row["container_format"],
            "created_at": iso_z(row["created_at"]),
            "updated_at": iso_z(row["updated_at"] or row["created_at"]),
            "tags": list(row["tags"]),
            "self": f"/v2/images/{row['id']}",
            "file": f"/v2/images/{row['id']}/file",
            "schema": "/v2/schemas/image",
        }
    )
    return body


def _version(request: Request, status: str = "CURRENT", vid: str = "v2.9") -> dict[str, Any]:
    base = _state(request).public_endpoint + "/image"
    return {"id": vid, "status": status, "links": [{"rel": "self", "href": f"{base}/v2/"}]}


async def versions(request: Request) -> Response:
    values = [_version(request)] + [
        _version(request, "SUPPORTED", f"v2.{n}") for n in range(8, -1, -1)
    ]
    return JSONResponse({"versions": values}, status_code=300)


def _image_id(request: Request) -> str:
    image_id: str = request.path_params["image_id"]
    if not is_uuid_like(image_id):
        raise exception.ImageNotFound(image_id=image_id)
    return image_id


async def create(request: Request) -> Response:
    body = await json_body(request)
    images.check_create_body(body)
    state = _state(request)
    row = await images.create_image(state.db, state.conf, _ctx(request), body)
    headers = {
        "Location": f"/v2/images/{row['id']}",
        # Glance tells the client at create which import methods it may use next.
        "OpenStack-image-import-methods": ",".join(image_import.METHODS),
    }
    return JSONResponse(image_view(row), status_code=201, headers=headers)


async def empty_id(request: Request) -> Response:
    """``/v2/images/`` with an empty id: no such image (Glance's 404), rather
    than the listing a redirect to ``/v2/images`` would give a GET and the
    405 it would give a DELETE."""
    raise exception.ImageNotFound(image_id="")


async def show(request: Request) -> Response:
    row = await images.get_image(_state(request).db, _ctx(request), _image_id(request))
    return JSONResponse(image_view(row))


SORT_KEYS = ("name", "status", "created_at", "updated_at", "size", "min_disk", "min_ram", "id")
FILTERS = ("name", "status", "visibility", "owner", "disk_format", "container_format")
#: Query parameters of a listing that are not property filters: paging and
#: sorting, the filters above, and Glance's other attribute filters (which
#: nubes does not apply; an image's attribute is never one of its properties).
NOT_PROPERTIES = frozenset(
    {
        *FILTERS,
        *images.CORE_ATTRIBUTES,
        *images.READ_ONLY,
        "limit",
        "marker",
        "sort",
        "sort_key",
        "sort_dir",
        "member_status",
        "tag",
        "id",
        "size_min",
        "size_max",
        "os_hash_value",
        "os_hash_algo",
        "virtual_size",
    }
)


async def index(request: Request) -> Response:
    state = _state(request)
    params = request.query_params
    limit = query_int(request, "limit") or state.conf.api.max_limit
    limit = min(limit, state.conf.api.max_limit)
    filters = {k: params[k] for k in FILTERS if k in params}
    if "visibility" in filters and filters["visibility"] not in (*images.VISIBILITIES, "all"):
        raise exception.ValidationError(field="visibility", reason="unknown visibility")
    if filters.get("visibility") == "all":
        del filters["visibility"]
    ids = None
    if "id" in params:
        raw = params["id"]
        ids = raw[3:].split(",") if raw.startswith("in:") else [raw]
    sort_key = params.get("sort_key", "created_at")
    sort_dir = params.get("sort_dir", "desc")
    if "sort" in params:
        first = params["sort"].split(",")[0]
        sort_key, _, direction = first.partition(":")
        sort_dir = direction or "desc"
    if sort_key not in SORT_KEYS:
        raise exception.ValidationError(field="sort_key", reason=f"unknown sort key {sort_key}")
    if sort_dir not in ("asc", "desc"):
        raise exception.ValidationError(field="sort_dir", reason="must be asc or desc")
    member_status = params.get("member_status", "accepted")
    if member_status not in (*image_members.STATUSES, "all"):
        raise exception.ValidationError(field="member_status", reason="unknown member status")
    rows = await images.list_images(
        state.db,
        _ctx(request),
        member_status=member_status,
        filters=filters,
        ids=ids,
        sort_key=sort_key,
        sort_dir=sort_dir,
        limit=limit,
        marker=params.get("marker"),
        # Any other parameter is an additional property to match exactly, as
        # Glance has it (``?image_type=backup&instance_uuid=...``).
        properties={k: v for k, v in params.items() if k not in NOT_PROPERTIES},
        tags=params.getlist("tag"),
    )
    body: dict[str, Any] = {
        "images": [image_view(r) for r in rows],
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    }
    if rows and len(rows) == limit:
        query = {k: v for k, v in params.items() if k != "marker"}
        query["marker"] = rows[-1]["id"]
        body["next"] = "/v2/images?" + urlencode(query)
    return JSONResponse(body)


async def delete(request: Request) -> Response:
    state = _state(request)
    image_id = _image_id(request)
    await image_import.delete_image(state.db, _ctx(request), image_id, image_dir=state.image_dir)
    return Response(status_code=204)


async def upload(request: Request) -> Response:
    state = _state(request)
    _octet_stream(request)
    grant = getattr(request.state, "grant", None)
    if grant is not None:
        # A compute host uploading a snapshot of its guest with the
        # conductor's upload grant for this one (queued) image: no user
        # context; the grant is the permission (nubes/grants.py).
        image_id = _image_id(request)
        host = grants.verify_upload(state.conf.image_grant_secret, grant, image_id)
        async with state.db.reader() as conn:
            await images_db.get(conn, image_id)
        await images.store(
            state.db,
            image_id,
            request.stream(),
            conf=state.conf,
            image_dir=state.image_dir,
            size_cap=state.conf.api.image_size_cap,
            start="queued",
            during="saving",
        )
        LOG.info("Image %s uploaded by host %s on its grant", image_id, host)
        return Response(status_code=204)
    await images.upload(
        state.db,
        _ctx(request),
        _image_id(request),
        request.stream(),
        conf=state.conf,
        image_dir=state.image_dir,
        size_cap=state.conf.api.image_size_cap,
    )
    return Response(status_code=204)


def _octet_stream(request: Request) -> None:
    content_type = request.headers.get("content-type", "application/octet-stream")
    if content_type.split(";")[0].strip() != "application/octet-stream":
        raise exception.UnsupportedMediaType(content_type=content_type)


async def update(request: Request) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in image_changes.PATCH_MEDIA_TYPES:
        raise exception.UnsupportedMediaType(content_type=content_type)
    ops = image_changes.patch_operations(content_type, await json_body(request))
    row = await image_changes.update_image(
        _state(request).db,
        _ctx(request),
        _image_id(request),
        ops,
        images.CREATE_SCHEMA["properties"],
    )
    return JSONResponse(image_view(row))


async def put_tag(request: Request) -> Response:
    tag = request.path_params["tag"]
    await image_changes.add_tag(_state(request).db, _ctx(request), _image_id(request), tag)
    return Response(status_code=204)


async def delete_tag(request: Request) -> Response:
    tag = request.path_params["tag"]
    await image_changes.delete_tag(_state(request).db, _ctx(request), _image_id(request), tag)
    return Response(status_code=204)


async def deactivate(request: Request) -> Response:
    await image_changes.deactivate(_state(request).db, _ctx(request), _image_id(request))
    return Response(status_code=204)


async def reactivate(request: Request) -> Response:
    await image_changes.reactivate(_state(request).db, _ctx(request), _image_id(request))
    return Response(status_code=204)


MEMBER_CREATE = {
    "type": "object",
    "properties": {"member": {"type": "string", "minLength": 1, "maxLength": 64}},
    "required": ["member"],
}
MEMBER_UPDATE = {
    "type": "object",
    "properties": {"status": {"enum": list(image_members.STATUSES)}},
    "required": ["status"],
}


async def add_member(request: Request) -> Response:
    body = await json_body(request)
    validate(body, MEMBER_CREATE)
    row = await image_members.add_member(
        _state(request).db, _ctx(request), _image_id(request), body["member"]
    )
    return JSONResponse(image_members.member_view(row))


async def list_members(request: Request) -> Response:
    rows = await image_members.list_members(_state(request).db, _ctx(request), _image_id(request))
    return JSONResponse(
        {"members": [image_members.member_view(r) for r in rows], "schema": "/v2/schemas/members"}
    )


async def show_member(request: Request) -> Response:
    row = await image_members.get_member(
        _state(request).db, _ctx(request), _image_id(request), request.path_params["member"]
    )
    return JSONResponse(image_members.member_view(row))


async def update_member(request: Request) -> Response:
    body = await json_body(request)
    validate(body, MEMBER_UPDATE)
    row = await image_members.update_member(
        _state(request).db,
        _ctx(request),
        _image_id(request),
        request.path_params["member"],
        body["status"],
    )
    return JSONResponse(image_members.member_view(row))


async def delete_member(request: Request) -> Response:
    await image_members.delete_member(
        _state(request).db, _ctx(request), _image_id(request), request.path_params["member"]
    )
    return Response(status_code=204)


async def import_info(request: Request) -> Response:
    return JSONResponse(image_import.info())


async def stage(request: Request) -> Response:
    _octet_stream(request)
    state = _state(request)
    await image_import.stage(
        state.db,
        _ctx(request),
        _image_id(request),
        request.stream(),
        conf=state.conf,
        image_dir=state.image_dir,
        size_cap=state.conf.api.image_size_cap,
    )
    return Response(status_code=204)


async def import_image(request: Request) -> Response:
    body = await json_body(request)
    validate(body, image_import.IMPORT_SCHEMA)
    state = _state(request)
    await image_import.import_image(
        state.db,
        _ctx(request),
        _image_id(request),
        body,
        conf=state.conf,
        image_dir=state.image_dir,
        size_cap=state.conf.api.image_size_cap,
        allowed_hosts=list(state.conf.api.image_import_allowed_hosts),
    )
    return Response(status_code=202)


async def usage(request: Request) -> Response:
    """``GET /v2/info/usage``: the caller's project's image quotas and usage
    (Glance's unified limits; sizes in MiB)."""
    state = _state(request)
    project_id = _ctx(request).project_id or ""
    async with state.db.reader() as conn:
        limits = await quotas.image_limits(conn, state.conf, project_id)
        used = await quotas.image_usage(conn, project_id)
    return JSONResponse(
        {"usage": {name: {"limit": limits[name], "usage": used[name]} for name in limits}}
    )


async def image_tasks(request: Request) -> Response:
    rows = await image_tasks_api.tasks_of_image(
        _state(request).db, _ctx(request), _image_id(request)
    )
    return JSONResponse({"tasks": [image_tasks_api.image_task_view(r) for r in rows]})


async def create_task(request: Request) -> Response:
    state = _state(request)
    row = await image_tasks_api.create_task(
        state.db,
        state.conf,
        _ctx(request),
        await json_body(request),
        image_dir=state.image_dir,
        size_cap=state.conf.api.image_size_cap,
        allowed_hosts=list(state.conf.api.image_import_allowed_hosts),
    )
    return JSONResponse(
        image_tasks_api.task_view(row),
        status_code=201,
        headers={"Location": f"/v2/tasks/{row['id']}"},
    )


async def show_task(request: Request) -> Response:
    row = await image_tasks_api.get_task(
        _state(request).db, _ctx(request), request.path_params["task_id"]
    )
    return JSONResponse(image_tasks_api.task_view(row))


async def list_tasks(request: Request) -> Response:
    state = _state(request)
    params = request.query_params
    limit = min(
        query_int(request, "limit", minimum=1) or state.conf.api.max_limit, state.conf.api.max_limit
    )
    rows = await image_tasks_api.list_tasks(
        state.db,
        _ctx(request),
        filters={k: params[k] for k in image_tasks_api.LIST_FILTERS if k in params},
        sort_key=params.get("sort_key", "created_at"),
        sort_dir=params.get("sort_dir", "desc"),
        limit=limit,
        marker=params.get("marker"),
    )
    body: dict[str, Any] = {
        "tasks": [image_tasks_api.task_view(r, full=False) for r in rows],
        "first": "/v2/tasks",
        "schema": "/v2/schemas/tasks",
    }
    if rows and len(rows) == limit:
        query = {k: v for k, v in params.items() if k != "marker"}
        query["marker"] = rows[-1]["id"]
        body["next"] = "/v2/tasks?" + urlencode(query)
    return JSONResponse(body)


async def task_schema(request: Request) -> Response:
    return JSONResponse({"name": "task", **image_tasks_api.CREATE_SCHEMA})


async def tasks_schema(request: Request) -> Response:
    item = {"name": "task", **image_tasks_api.CREATE_SCHEMA}
    return JSONResponse(
        {"name": "tasks", "properties": {"tasks": {"type": "array", "items": item}}}
    )


#: The requests an image grant opens: the file of one image, read (a
#: download grant) or written (an upload grant); the handler checks which.
GRANTED = re.compile(r"/v2/images/[^/]+/file:(GET|PUT)")


async def download(request: Request) -> Response:
    state = _state(request)
    grant = getattr(request.state, "grant", None)
    if grant is not None:
        # A compute host with the conductor's grant for this one image: it
        # has no user context; the grant is the permission (nubes/grants.py).
        image_id = _image_id(request)
        host = grants.verify(state.conf.image_grant_secret, grant, image_id)
        async with state.db.reader() as conn:
            row = await images_db.get(conn, image_id)
        LOG.debug("Image %s sent to host %s on its grant", image_id, host)
    else:
        row = await images.get_image(state.db, _ctx(request), _image_id(request))
        if row["status"] == "deactivated" and not policy.allowed(_ctx(request), policy.Rule.ADMIN):
            raise exception.ImageForbidden(reason="The requested image has been deactivated.")
    # Only admins get this far with a deactivated image (a grant needs an active one).
    readable = ("active",) if grant is not None else ("active", "deactivated")
    if row["status"] not in readable:
        return Response(status_code=204)
    path = images.data_path(state.image_dir, row["id"])
    try:
        handle = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        raise exception.NotFound(reason=f"Image {row['id']} has no data.") from None

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    headers = {"Content-MD5": row["checksum"] or "", "Content-Length": str(row["size"] or 0)}
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


async def image_schema(request: Request) -> Response:
    properties = {k: dict(v) for k, v in images.CREATE_SCHEMA["properties"].items()}
    properties["status"] = {"type": "string", "readOnly": True}
    return JSONResponse(
        {"name": "image", "properties": properties, "additionalProperties": {"type": "string"}}
    )


async def member_schema(request: Request) -> Response:
    return JSONResponse(image_members.member_schema())


async def members_schema(request: Request) -> Response:
    return JSONResponse(image_members.members_schema())


def build_app(state: ApiState) -> Starlette:
    routes = [
        Route("/", versions, methods=["GET"]),
        Route("/versions", versions, methods=["GET"]),
        Route("/v2/images", index, methods=["GET"]),
        Route("/v2/images", create, methods=["POST"]),
        Route("/v2/images/", empty_id, methods=["GET", "DELETE", "PATCH"]),
        Route("/v2/images/{image_id}", show, methods=["GET"]),
        Route("/v2/images/{image_id}", delete, methods=["DELETE"]),
        Route("/v2/images/{image_id}", update, methods=["PATCH"]),
        Route("/v2/images/{image_id}/tags/{tag}", put_tag, methods=["PUT"]),
        Route("/v2/images/{image_id}/tags/{tag}", delete_tag, methods=["DELETE"]),
        Route("/v2/images/{image_id}/actions/deactivate", deactivate, methods=["POST"]),
        Route("/v2/images/{image_id}/actions/reactivate", reactivate, methods=["POST"]),
        Route("/v2/images/{image_id}/members", add_member, methods=["POST"]),
        Route("/v2/images/{image_id}/members", list_members, methods=["GET"]),
        Route("/v2/images/{image_id}/members/{member}", show_member, methods=["GET"]),
        Route("/v2/images/{image_id}/members/{member}", update_member, methods=["PUT"]),
        Route("/v2/images/{image_id}/members/{member}", delete_member, methods=["DELETE"]),
        Route("/v2/images/{image_id}/stage", stage, methods=["PUT"]),
        Route("/v2/images/{image_id}/import", import_image, methods=["POST"]),
        Route("/v2/info/import", import_info, methods=["GET"]),
        Route("/v2/info/usage", usage, methods=["GET"]),
        Route("/v2/images/{image_id}/tasks", image_tasks, methods=["GET"]),
        Route("/v2/tasks", create_task, methods=["POST"]),
        Route("/v2/tasks", list_tasks, methods=["GET"]),
        Route("/v2/tasks/{task_id}", show_task, methods=["GET"]),
        Route("/v2/schemas/task", task_schema, methods=["GET"]),
        Route("/v2/schemas/tasks", tasks_schema, methods=["GET"]),
        Route("/v2/images/{image_id}/file", upload, methods=["PUT"]),
        Route("/v2/images/{image_id}/file", download, methods=["GET"]),
        Route("/v2/schemas/image", image_schema, methods=["GET"]),
        Route("/v2/schemas/member", member_schema, methods=["GET"]),
        Route("/v2/schemas/members", members_schema, methods=["GET"]),
        *metadef_routes.ROUTES,
    ]
    return service_app(
        state, routes, service="image", public=("", "/", "/versions"), granted=GRANTED
    )
