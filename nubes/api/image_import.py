"""Glance's interoperable image import: ``glance-direct`` (stage, then
import) and ``web-download`` (the API fetches the data from a URL).

States, as in Glance: queued -> uploading (being staged) -> uploading
(staged) -> importing -> active for glance-direct; queued -> importing ->
active for web-download. Any failure puts the image back where it was
(queued, or staged) with no partial file left (:func:`nubes.api.images.store`).
The import runs within the request, so no image is ever left ``importing``
by a crash of anything but this process, and the caller gets 202 only once
the data is in place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from oslo_config import cfg

from nubes import exception
from nubes.api import images
from nubes.context import RequestContext
from nubes.db.engine import Database

METHODS = ("glance-direct", "web-download")
CHUNK = 64 * 1024
#: A staged image's status while it is written, and once written (Glance's).
STAGING = "uploading"
STAGED = "uploading"

IMPORT_SCHEMA = {
    "type": "object",
    "properties": {
        "method": {
            "type": "object",
            "properties": {
                "name": {"enum": list(METHODS)},
                "uri": {"type": "string", "maxLength": 2048},
            },
            "required": ["name"],
        },
        "stores": {"type": "array"},
        "all_stores": {"type": "boolean"},
        "all_stores_must_succeed": {"type": "boolean"},
    },
    "required": ["method"],
}


def staging_path(image_dir: Path, image_id: str) -> Path:
    return image_dir / "staging" / image_id


def info() -> dict[str, Any]:
    """``GET /v2/info/import``."""
    return {
        "import-methods": {
            "description": "Import methods available.",
            "type": "array",
            "value": list(METHODS),
        }
    }


async def stage(
    db: Database,
    ctxt: RequestContext,
    image_id: str,
    chunks: AsyncIterator[bytes],
    *,
    conf: cfg.ConfigOpts,
    image_dir: Path,
    size_cap: int,
) -> None:
    """``PUT /v2/images/{id}/stage``: keep the data aside for a glance-direct import."""
    row = await images.get_image(db, ctxt, image_id)
    images.check_owner(ctxt, row, "stage_image")
    if row["status"] != "queued":
        raise exception.Conflict(reason=f"Image {image_id} is {row['status']}, not queued.")
    # The image stays "uploading" once staged: that is how import knows it is.
    await images.store(
        db,
        image_id,
        chunks,
        conf=conf,
        image_dir=image_dir,
        size_cap=size_cap,
        start="queued",
        during=STAGING,
        target=staging_path(image_dir, image_id),
        done=STAGED,
    )


async def import_image(
    db: Database,
    ctxt: RequestContext,
    image_id: str,
    body: Mapping[str, Any],
    *,
    conf: cfg.ConfigOpts,
    image_dir: Path,
    size_cap: int,
    allowed_hosts: list[str],
) -> None:
    """``POST /v2/images/{id}/import``."""
    row = await images.get_image(db, ctxt, image_id)
    images.check_owner(ctxt, row, "import_image")
    method = body["method"]["name"]
    if method == "glance-direct":
        staged = staging_path(image_dir, image_id)
        if row["status"] != STAGED or not staged.exists():
            raise exception.Conflict(
                reason=f"Image {image_id} has no staged data: PUT it to /stage first."
            )
        await images.store(
            db,
            image_id,
            _read(staged),
            conf=conf,
            image_dir=image_dir,
            size_cap=size_cap,
            start=STAGED,
            during="importing",
        )
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(staged.unlink)
        return
    uri = body["method"].get("uri")
    if not uri:
        raise exception.ValidationError(field="method.uri", reason="web-download needs a uri")
    check_uri(uri, allowed_hosts)
    if row["status"] != "queued":
        raise exception.Conflict(reason=f"Image {image_id} is {row['status']}, not queued.")
    # Refused before anything is fetched when over quota, as Glance refuses
    # the import request itself; store() checks again as it starts writing.
    async with db.writer() as conn:
        await images.check_upload_quotas(conn, conf, row["owner"], "queued", "importing")
    try:
        async with httpx.AsyncClient(timeout=30.0, follow_redirects=False) as client:
            async with client.stream("GET", uri) as response:
                if response.status_code != 200:
                    raise exception.Invalid(
                        reason=f"web-download: {uri} answered {response.status_code}"
                    )
                await images.store(
                    db,
                    image_id,
                    response.aiter_bytes(CHUNK),
                    conf=conf,
                    image_dir=image_dir,
                    size_cap=size_cap,
                    start="queued",
                    during="importing",
                )
    except httpx.HTTPError as exc:
        raise exception.Invalid(reason=f"web-download: cannot fetch {uri}: {exc}") from None


def check_uri(uri: str, allowed_hosts: list[str]) -> None:
    """A web-download URL nubes fetches: http(s), from an allowed host."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise exception.ValidationError(field="method.uri", reason="an http or https URL")
    if allowed_hosts and parts.hostname not in allowed_hosts:
        raise exception.ImageForbidden(
            reason=f"web-download from {parts.hostname} is not allowed on this cloud."
        )


async def _read(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def discard_staged(image_id: str, image_dir: Path) -> None:
    """Remove a deleted image's staged data (if any)."""
    with contextlib.suppress(FileNotFoundError):
        await asyncio.to_thread(staging_path(image_dir, image_id).unlink)


async def delete_image(
    db: Database, ctxt: RequestContext, image_id: str, *, image_dir: Path
) -> None:
    """Delete an image with all its data, staged too: what both the image
    service's DELETE and the compute API's image proxy do."""
    await images.delete_image(db, ctxt, image_id, image_dir=image_dir)
    await discard_staged(image_id, image_dir)
