"""Snapshot uploads: a host sends a copy of its guest's disk to the image API.

The host holds no credential for the image API. For each createImage or
createBackup the conductor sends it an upload grant for the one queued image
the API recorded (:func:`nubes.grants.issue_upload`); the host PUTs the
data to ``/v2/images/{id}/file`` with the grant (header
:data:`nubes.grants.HEADER`), and the image API stores it
(queued -> saving -> active) for that image only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nubes import exception, grants

if TYPE_CHECKING:
    from nubes.compute.steps import StepRunner
    from nubes.context import RequestContext
    from nubes.objects.instance import Instance
    from nubes.objects.states import TaskState, VMState


class ImageUploader:
    """Uploads image data to the image API at ``endpoint`` with upload grants."""

    def __init__(self, endpoint: str, host: str, timeout: float = 600.0) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise exception.ConfigError(
                reason=f"[compute] image_api_endpoint {endpoint!r} is not an http(s) URL"
            )
        self.endpoint = endpoint.rstrip("/")
        self.host = host
        self.timeout = timeout

    def url(self, image_id: str) -> str:
        try:
            checked = str(uuid.UUID(image_id))
        except (ValueError, TypeError, AttributeError):
            raise exception.Invalid(reason=f"image id {image_id!r} is not a uuid") from None
        return f"{self.endpoint}/v2/images/{checked}/file"

    async def upload(self, image_id: str, source: Path, grant: str) -> None:
        """Send ``source``'s bytes as the data of ``image_id``
        (ImageUploadFailed with the image API's answer otherwise)."""
        await asyncio.to_thread(self._put, image_id, source, grant)

    def _put(self, image_id: str, source: Path, grant: str) -> None:
        size = os.path.getsize(source)
        with open(source, "rb") as data:
            request = urllib.request.Request(
                self.url(image_id),
                data=data,
                method="PUT",
                headers={
                    grants.HEADER: grant,
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(size),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                raise exception.ImageUploadFailed(
                    image_id=image_id,
                    host=self.host,
                    reason=f"the image API answered {exc.code}: "
                    f"{exc.read()[:300].decode(errors='replace')}",
                ) from None
            except (urllib.error.URLError, OSError) as exc:
                raise exception.ImageUploadFailed(
                    image_id=image_id, host=self.host, reason=f"upload failed: {exc}"
                ) from None


async def upload_guest_disk(
    runner: StepRunner,
    ctxt: RequestContext,
    instance: Instance,
    image_id: str,
    grant: str,
    *,
    vm_state: VMState,
    pending: TaskState,
    uploading: TaskState,
    started: Sequence[TaskState],
) -> str:
    """Copy the guest's disk (the driver's ``snapshot``) and upload it to
    ``image_id`` with ``grant``; the copy's disk format.

    The one home of a host's snapshot upload, for createImage and createBackup
    (``image_pending_upload``, ``image_uploading``) and for shelve
    (``shelving_image_pending_upload``, ``shelving_image_uploading``): the
    instance is saved ``pending`` (from one of ``started``, unless a repeat
    finds it there already) before the copy and ``uploading`` before the
    upload; the caller saves what follows. The copy lives in a temporary
    directory removed whatever happens. A host without an image API endpoint
    cannot upload: ImageUploadFailed before anything changes.
    """
    uploader = runner.uploader
    if uploader is None:
        raise exception.ImageUploadFailed(
            image_id=image_id,
            host=runner.host,
            reason="this host has no [compute] image_api_endpoint to upload to",
        )
    workdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="nubes-snapshot-")
    try:
        if instance.task_state != pending:
            await runner.reporter.save_state(
                ctxt, instance, vm_state, pending, expected_task_state=list(started)
            )
        disk = Path(workdir) / "disk"
        disk_format = await runner.driver.snapshot(ctxt, instance, disk)
        await runner.reporter.save_state(
            ctxt, instance, vm_state, uploading, expected_task_state=pending
        )
        await uploader.upload(image_id, disk, grant)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    return disk_format
