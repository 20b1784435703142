"""The image registry's logic: records in the DB, data in files under ``[api] image_dir``.

Used by the image service's routes and by the compute API, which boots
only from an image that exists, is visible to the project and is active
(:func:`get_active_image`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import policy, quotas
from nubes.api.validation import validate
from nubes.context import RequestContext
from nubes.db.api import images as images_db
from nubes.db.engine import Connection, Database
from nubes.db.types import utcnow

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "private", "shared", "community")
#: Image attributes that are columns; anything else a user sets is a property.
CORE_ATTRIBUTES = (
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "disk_format",
    "container_format",
    "min_disk",
    "min_ram",
    "tags",
)
READ_ONLY = (
    "status",
    "size",
    "checksum",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
    "os_hash_algo",
    "os_hash_value",
    "virtual_size",
    "stores",
)
HASH_ALGO = "sha512"
#: Glance keeps properties under this prefix for itself (import and store
#: bookkeeping): a user can neither create an image with one nor add one.
RESERVED_PREFIX = "os_glance_"


#: An image create's body (Glance's image schema; other keys are properties).
CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {
            "type": "string",
            "pattern": "^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$",
        },
        "name": {"type": ["string", "null"], "maxLength": 255},
        "visibility": {"type": "string", "enum": list(VISIBILITIES)},
        "protected": {"type": "boolean"},
        "os_hidden": {"type": "boolean"},
        "disk_format": {"type": ["string", "null"], "enum": [None, *DISK_FORMATS]},
        "container_format": {
            "type": ["string", "null"],
            "enum": [None, *CONTAINER_FORMATS],
        },
        "min_disk": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "min_ram": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "tags": {
            "type": "array",
            "items": {"type": "string", "maxLength": 255},
            "maxItems": 128,
        },
        "owner": {"type": ["string", "null"], "maxLength": 64},
    },
    "propertyNames": {"maxLength": 255},
    "additionalProperties": {"type": ["string", "null"], "maxLength": 65535},
}


def check_settable(name: str) -> None:
    """ImageForbidden (403) for an attribute a user may not set: a read-only
    one, or a property in Glance's reserved namespace."""
    if name in READ_ONLY:
        raise exception.ImageForbidden(reason=f"Attribute '{name}' is read-only.")
    if name.startswith(RESERVED_PREFIX):
        raise exception.ImageForbidden(reason=f"Attribute '{name}' is reserved.")


def check_create_body(body: Any) -> None:
    """A create's body as Glance checks it: read-only attributes first (403
    whatever their type), then the schema (400)."""
    if not isinstance(body, dict):
        raise exception.Invalid(reason="the body must be a JSON object")
    for key in body:
        check_settable(key)
    validate(body, CREATE_SCHEMA)


def _visible(ctxt: RequestContext, row: Mapping[str, Any], member: bool = False) -> bool:
    """May the caller see the image? ``member``: its project is a member of it
    (any answer: a member uses a shared image by id before accepting, as in Glance)."""
    if policy.allowed(ctxt, policy.Rule.ADMIN):
        return True
    if row["visibility"] == "shared" and member:
        return True
    return row["visibility"] in ("public", "community") or row["owner"] == ctxt.project_id


async def get_image(db: Database, ctxt: RequestContext, image_id: str) -> dict[str, Any]:
    """The image if the caller may see it; ImageNotFound otherwise (never 403)."""
    async with db.reader() as conn:
        row = await images_db.get(conn, image_id)
        member = False
        if row["visibility"] == "shared" and row["owner"] != ctxt.project_id:
            member = await images_db.member_get(conn, image_id, ctxt.project_id or "") is not None
    if not _visible(ctxt, row, member):
        raise exception.ImageNotFound(image_id=image_id)
    return row


async def get_active_image(db: Database, ctxt: RequestContext, image_id: str) -> dict[str, Any]:
    """The image a server may boot from.

    Raises ImageNotFound (the compute API answers 400 "Can not find requested
    image") when it does not exist or is not visible to the project, and
    ImageNotActive (400) when it has no data yet or is being deleted.
    """
    row = await get_image(db, ctxt, image_id)
    if row["status"] != "active":
        raise exception.ImageNotActive(image_id=image_id)
    return row


async def list_images(
    db: Database,
    ctxt: RequestContext,
    *,
    filters: Mapping[str, Any] | None = None,
    ids: list[str] | None = None,
    sort_key: str = "created_at",
    sort_dir: str = "desc",
    limit: int | None = None,
    marker: str | None = None,
    member_status: str = "accepted",
    properties: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
) -> list[dict[str, Any]]:
    admin = policy.allowed(ctxt, policy.Rule.ADMIN)
    async with db.reader(allow_stale=True) as conn:
        if marker is not None:
            marker_row = await images_db.get(conn, marker) if marker else None
            member = bool(marker_row) and (
                await images_db.member_get(conn, marker, ctxt.project_id or "") is not None
            )
            if marker_row is None or not _visible(ctxt, marker_row, member):
                raise exception.MarkerNotFound(marker=marker)
        return await images_db.get_all(
            conn,
            project_id=ctxt.project_id,
            all_visible=admin,
            filters=filters,
            ids=ids,
            sort_key=sort_key,
            sort_dir=sort_dir,
            limit=limit,
            marker=marker,
            member_status=member_status,
            properties=properties,
            tags=tags,
        )


async def record_image(
    conn: Connection, conf: cfg.ConfigOpts, record: Mapping[str, Any]
) -> dict[str, Any]:
    """Insert a new image's row within its owner's ``image_count_total``
    quota, in the caller's write transaction: the one way an image comes to
    be (the image API's create, a task's import, createImage, createBackup
    and shelve's snapshot)."""
    await quotas.check_images(conn, conf, record["owner"], {"image_count_total": 1})
    return await images_db.create(conn, record)


async def create_image(
    db: Database, conf: cfg.ConfigOpts, ctxt: RequestContext, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Record a queued image from validated attributes (extra keys become properties)."""
    policy.authorize(ctxt, "add_image", policy.Rule.PROJECT_MEMBER)
    data = dict(values)
    for key in data:
        check_settable(key)
    visibility = data.get("visibility", "shared")
    if visibility == "public" and not policy.allowed(ctxt, policy.Rule.ADMIN):
        raise exception.ImageForbidden(
            reason="You are not authorized to complete publicize_image action."
        )
    owner = data.pop("owner", None) or ctxt.project_id
    if owner != ctxt.project_id:
        policy.authorize(ctxt, "add_image:owner", policy.Rule.ADMIN)
    record = {
        "id": data.pop("id", None) or str(uuid.uuid4()),
        "name": data.pop("name", None),
        "owner": owner,
        "status": "queued",
        "visibility": data.pop("visibility", "shared"),
        "protected": bool(data.pop("protected", False)),
        "os_hidden": bool(data.pop("os_hidden", False)),
        "disk_format": data.pop("disk_format", None),
        "container_format": data.pop("container_format", None),
        "min_disk": int(data.pop("min_disk", 0)),
        "min_ram": int(data.pop("min_ram", 0)),
        "tags": sorted(set(data.pop("tags", []) or [])),
        "properties": {k: v for k, v in data.items() if v is not None},
        "created_at": utcnow(),
    }
    async with db.writer() as conn:
        try:
            return await record_image(conn, conf, record)
        except exception.DBDuplicateEntry:
            raise exception.Conflict(
                reason=f"Image with identifier {record['id']} already exists!"
            ) from None


def check_owner(ctxt: RequestContext, row: Mapping[str, Any], action: str) -> None:
    if not policy.allowed(ctxt, policy.Rule.PROJECT_MEMBER, row["owner"]):
        raise exception.ImageForbidden(
            reason=f"You are not authorized to complete {action} action."
        )


def data_path(image_dir: Path, image_id: str) -> Path:
    # The id was checked to be a uuid, so it is a safe file name.
    return image_dir / image_id


async def upload(
    db: Database,
    ctxt: RequestContext,
    image_id: str,
    chunks: AsyncIterator[bytes],
    *,
    conf: cfg.ConfigOpts,
    image_dir: Path,
    size_cap: int,
) -> dict[str, Any]:
    """Store the data of a queued image: queued -> saving -> active.

    On any failure the image goes back to queued and the partial file is removed.
    """
    row = await get_image(db, ctxt, image_id)
    check_owner(ctxt, row, "upload_image")
    return await store(
        db,
        image_id,
        chunks,
        conf=conf,
        image_dir=image_dir,
        size_cap=size_cap,
        start="queued",
        during="saving",
    )


async def store(
    db: Database,
    image_id: str,
    chunks: AsyncIterator[bytes],
    *,
    conf: cfg.ConfigOpts,
    image_dir: Path,
    size_cap: int,
    start: str,
    during: str,
    target: Path | None = None,
    done: str = "active",
) -> dict[str, Any]:
    """Write an image's data: ``start`` -> ``during`` -> ``done``, back to
    ``start`` on any failure with the partial file removed. The one code path
    for uploads, staging and imports. ``target``: where the data goes (the
    image's data file unless staging); ``done`` records the size, and the
    hashes only when it is ``active`` (a staged image's size counts against
    ``image_stage_total``).

    The move into ``during`` is where the image quotas are enforced, as
    Glance does before it takes data (:func:`check_upload_quotas`)."""
    async with db.writer() as conn:
        row = await images_db.get(conn, image_id)
        await check_upload_quotas(conn, conf, row["owner"], start, during)
        await images_db.update_fields(conn, image_id, {"status": during}, expected_status=start)
    final = target or data_path(image_dir, image_id)
    await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
    partial = final.with_suffix(".part")
    md5 = hashlib.md5(usedforsecurity=False)
    multihash = hashlib.new(HASH_ALGO)
    size = 0
    try:
        handle = await asyncio.to_thread(open, partial, "wb")
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > size_cap:
                    raise exception.ImageTooLarge(cap=size_cap)
                md5.update(chunk)
                multihash.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
        finally:
            await asyncio.to_thread(handle.close)
        await asyncio.to_thread(os.replace, partial, final)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        async with db.writer() as conn:
            with contextlib.suppress(exception.NubesError):
                await images_db.update_fields(
                    conn, image_id, {"status": start}, expected_status=during
                )
        raise
    values: dict[str, Any] = {"status": done, "size": size}
    if done == "active":
        values.update(
            checksum=md5.hexdigest(),
            os_hash_algo=HASH_ALGO,
            os_hash_value=multihash.hexdigest(),
        )
    async with db.writer() as conn:
        return await images_db.update_fields(conn, image_id, values, expected_status=during)


async def check_upload_quotas(
    conn: Connection, conf: cfg.ConfigOpts, owner: str | None, start: str, during: str
) -> None:
    """May the owner's image move from ``start`` into ``during`` (an upload,
    a stage, an import)? Glance's checks: one more image in upload
    (``image_count_uploading``) unless it is counted already (a staged
    image being imported), and the project not over its staging quota to
    stage, nor over its storage quota to store. An image without an owner
    (none is made so through the API) counts against no project."""
    if not owner:
        return
    uploading = images_db.UPLOADING_STATUSES
    deltas = {"image_count_uploading": 0 if start in uploading else 1}
    if during == images_db.STAGED_STATUS:
        deltas["image_stage_total"] = 0
    else:
        deltas["image_size_total"] = 0
    await quotas.check_images(conn, conf, owner, deltas)


async def delete_image(
    db: Database, ctxt: RequestContext, image_id: str, *, image_dir: Path
) -> None:
    row = await get_image(db, ctxt, image_id)
    check_owner(ctxt, row, "delete_image")
    if row["protected"]:
        raise exception.ImageForbidden(
            reason=f"Image {image_id} is protected and cannot be deleted."
        )
    async with db.writer() as conn:
        await images_db.destroy(conn, image_id)
    with contextlib.suppress(FileNotFoundError):
        await asyncio.to_thread(data_path(image_dir, image_id).unlink)
