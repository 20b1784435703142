"""Compute API microversions: parsing the request headers, the supported range.

A request names its version with ``OpenStack-API-Version: compute X.Y`` or the
legacy ``X-OpenStack-Nova-API-Version: X.Y``; no header means the minimum,
``latest`` the maximum, a version outside the range is refused with 406.
Responses echo the version in both headers and say ``Vary`` on them.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from nubes import exception

MIN_VERSION = "2.1"
#: Raise with care: every response must match Nova's API reference at every
#: version up to this one (views and schemas carry "added in 2.N" rules).
MAX_VERSION = "2.104"

SERVICE_TYPE = "compute"
HEADER = "OpenStack-API-Version"
LEGACY_HEADER = "X-OpenStack-Nova-API-Version"
VARY = f"{HEADER}, {LEGACY_HEADER}"

# ASCII digits only (``\d`` would take "٢.١" as 2.1) and bounded, so a
# header of 5,000 digits is a 400 rather than a costly int() that fails.
_VERSION_RE = re.compile(r"^([1-9][0-9]{0,8})\.([1-9][0-9]{0,8}|0)$", re.ASCII)
#: How much of a refused version string an error message quotes.
_MAX_QUOTED_CHARS = 40


@functools.total_ordering
class APIVersion(NamedTuple):
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> APIVersion:
        match = _VERSION_RE.match(text.strip())
        if match is None:
            if len(text) > _MAX_QUOTED_CHARS:
                text = text[: _MAX_QUOTED_CHARS - 3] + "..."
            raise exception.InvalidVersionString(version=text)
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def at_least(self, other: str) -> bool:
        return self >= APIVersion.parse(other)

    def matches(self, min_version: str | None = None, max_version: str | None = None) -> bool:
        """Whether this version is in [min_version, max_version] (None: unbounded)."""
        if min_version is not None and self < APIVersion.parse(min_version):
            return False
        return max_version is None or self <= APIVersion.parse(max_version)


MIN = APIVersion.parse(MIN_VERSION)
MAX = APIVersion.parse(MAX_VERSION)


def _from_headers(headers: dict[str, str]) -> str | None:
    value = headers.get(HEADER.lower())
    if value is not None:
        # "compute 2.10, image 2.5": take this service's entry, if any.
        for item in value.split(","):
            parts = item.strip().split()
            if len(parts) == 2 and parts[0].lower() == SERVICE_TYPE:
                return parts[1]
    return headers.get(LEGACY_HEADER.lower())


def negotiate(headers: dict[str, str]) -> APIVersion:
    """The version a request asks for (headers with lower-case names)."""
    text = _from_headers(headers)
    if text is None:
        return MIN
    if text.strip().lower() == "latest":
        return MAX
    version = APIVersion.parse(text)
    if not MIN <= version <= MAX:
        raise exception.VersionNotAcceptable(version=text.strip(), min=MIN_VERSION, max=MAX_VERSION)
    return version


def response_headers(version: APIVersion) -> list[tuple[bytes, bytes]]:
    return [
        (HEADER.lower().encode(), f"{SERVICE_TYPE} {version}".encode()),
        (LEGACY_HEADER.lower().encode(), str(version).encode()),
        (b"vary", VARY.encode()),
    ]
