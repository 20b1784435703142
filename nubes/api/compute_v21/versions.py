"""The compute version documents (no token needed)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nubes.api import microversion
from nubes.api.compute_v21.common import state

UPDATED = "2013-07-23T11:33:21Z"
MEDIA_TYPES = [
    {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}
]


def _v21(request: Request, *, detailed: bool) -> dict[str, Any]:
    base = state(request).public_endpoint + "/compute"
    doc: dict[str, Any] = {
        "id": "v2.1",
        "status": "CURRENT",
        "version": microversion.MAX_VERSION,
        "min_version": microversion.MIN_VERSION,
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{base}/v2.1/"}],
    }
    if detailed:
        doc["links"].append(
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
        )
        doc["media-types"] = MEDIA_TYPES
    return doc


async def root(request: Request) -> Response:
    return JSONResponse({"versions": [_v21(request, detailed=False)]})


async def v21(request: Request) -> Response:
    return JSONResponse({"version": _v21(request, detailed=True)})
