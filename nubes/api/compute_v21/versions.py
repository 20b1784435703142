"""The compute version documents (no token needed).

As Nova lists them: v2.0 (``SUPPORTED``, served at ``/v2``: the same API as
v2.1 pinned to its first version, no microversions) and v2.1 (``CURRENT``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nubes.api import microversion
from nubes.api.compute_v21.common import state

UPDATED = "2013-07-23T11:33:21Z"
#: When v2.0 was last changed, as Nova dates it.
UPDATED_V20 = "2011-01-21T11:33:21Z"


def _media_types(version: str) -> list[dict[str, str]]:
    media = f"application/vnd.openstack.compute+json;version={version}"
    return [{"base": "application/json", "type": media}]


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
        doc["media-types"] = _media_types("2.1")
    return doc


def _v20(request: Request, *, detailed: bool) -> dict[str, Any]:
    base = state(request).public_endpoint + "/compute"
    # v2.0 has no microversions: Nova leaves both version fields empty.
    doc: dict[str, Any] = {
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": UPDATED_V20,
        "links": [{"rel": "self", "href": f"{base}/v2/"}],
    }
    if detailed:
        doc["links"].append(
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
        )
        doc["media-types"] = _media_types("2")
    return doc


async def root(request: Request) -> Response:
    versions = [_v20(request, detailed=False), _v21(request, detailed=False)]
    return JSONResponse({"versions": versions})


async def v20(request: Request) -> Response:
    return JSONResponse({"version": _v20(request, detailed=True)})


async def v21(request: Request) -> Response:
    return JSONResponse({"version": _v21(request, detailed=True)})
