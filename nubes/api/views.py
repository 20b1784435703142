"""Views with microversion rules: one field list per resource.

A :class:`Field` says which versions carry it (``min``/``max`` inclusive)
and how to compute it from the record; :meth:`View.render` builds the body
for one version. So "description appears at 2.55" is one line, in one
place, and the tests walk each boundary.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from nubes.api.microversion import APIVersion

Getter = Callable[[Any, Any], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    name: str
    get: Getter | None = None
    min: str | None = None
    max: str | None = None
    #: Extra condition on the request (e.g. a policy check), given the extra argument.
    when: Callable[[Any], bool] | None = None

    def value(self, record: Mapping[str, Any], extra: Any) -> Any:
        return self.get(record, extra) if self.get is not None else record.get(self.name)


class View:
    def __init__(self, *fields: Field) -> None:
        self.fields = fields

    def names(self, version: APIVersion, extra: Any = None) -> list[str]:
        return [f.name for f in self._fields(version, extra)]

    def _fields(self, version: APIVersion, extra: Any) -> list[Field]:
        return [
            f
            for f in self.fields
            if version.matches(f.min, f.max) and (f.when is None or f.when(extra))
        ]

    def render(
        self, record: Mapping[str, Any], version: APIVersion, extra: Any = None
    ) -> dict[str, Any]:
        return {f.name: f.value(record, extra) for f in self._fields(version, extra)}


def nova_time(value: dt.datetime | None) -> str | None:
    """Nova's timestamp form: ``2016-12-27T22:51:32.877711`` (UTC, no zone)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def iso_z(value: dt.datetime | None) -> str | None:
    """``2016-12-27T22:51:32Z`` (Glance, and Keystone without the fraction)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def keystone_time(value: dt.datetime) -> str:
    """``2015-11-05T22:00:11.000000Z`` as Keystone writes token times."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
