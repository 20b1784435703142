"""Every object nubes sends, pinned: changing one without a VERSION bump fails here.

If this test fails, read its message. In short: you changed the fields or
remotable methods of an object. Bump its VERSION (and the history in its
docstring; give new fields ``added_in``; override ``obj_make_compatible`` if
an existing field changed meaning), then paste the new fingerprint below.
"""

from __future__ import annotations

import re

import pytest

import nubes.notifications.objects  # registers the notification payloads
import nubes.objects  # noqa: F401  (registers every object)
from nubes.objects import base, fields, fingerprint
from nubes.objects.registry import REGISTRY

EXPECTED = {
    "ComputeNode": "1.0-1b7d87fb72aeefef",
    "ExceptionPayload": "1.0-444a250e67dde8df",
    "Flavor": "1.0-a47c0a5c20424e99",
    "Instance": "1.0-a719473d27b5c890",
    "InstanceAction": "1.0-06524253dcbfb677",
    "InstanceActionEvent": "1.0-08e3cad6e447b4f4",
    "InstanceActionPayload": "1.0-80e70b9b651c5049",
    "InstanceFault": "1.0-3944ba8c571fd624",
    "InstanceMetadata": "1.1-b7bd38bfcf9d0ab4",
    "InstancePayload": "1.0-d5a8069ea11bf737",
    "InstanceUpdatePayload": "1.0-05f939371464ac8c",
    "Migration": "1.2-eb982fd13c1d40ee",
    "RequestSpec": "1.0-ebb046026351a551",
    "Selection": "1.0-0f3f081d367cdc4b",
    "Service": "1.1-6401f997345c3470",
    "ServiceStatusPayload": "1.0-90502f19ba8be37a",
}


def test_object_fingerprints() -> None:
    actual = fingerprint.fingerprints(REGISTRY)
    assert actual == EXPECTED, fingerprint.explain_mismatch(EXPECTED, actual)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_docstring_lists_every_version(name: str) -> None:
    cls = REGISTRY.get(name)
    major, minor = cls._obj_version
    history = re.findall(r"^\s*(\d+\.\d+):", cls.__doc__ or "", re.MULTILINE)
    expected = [f"{major}.{n}" for n in range(minor + 1)]
    assert history[-len(expected) :] == expected, (
        f"{name}'s docstring must list its versions up to {cls.VERSION} ('1.0: ...' lines)"
    )


def _part(extra: dict[str, object]) -> type[base.VersionedObject]:
    return type("Part", (base.VersionedObject,), {"name": fields.String(), **extra})


async def _method(self: base.VersionedObject, context: object, how: int) -> None:
    pass


async def _other(self: base.VersionedObject, context: object, how: str) -> None:
    pass


def test_fingerprint_follows_fields_and_remotable_signatures() -> None:
    plain = fingerprint.fingerprint(_part({}))
    assert plain.startswith("1.0-")
    assert fingerprint.fingerprint(_part({})) == plain
    changed = [
        _part({"size": fields.Integer()}),
        _part({"name": fields.String(nullable=True)}),
        _part({"name": fields.String(default="x")}),
        _part({"name": fields.UUID()}),
        _part({"go": base.remotable(_method)}),
    ]
    prints = {fingerprint.fingerprint(cls) for cls in changed}
    assert plain not in prints and len(prints) == len(changed)
    assert fingerprint.fingerprint(_part({"go": base.remotable(_other)})) not in prints
    assert fingerprint.fingerprint(_part({"go": _method})) == plain, "plain methods do not count"


def test_mismatch_message_tells_what_to_do() -> None:
    message = fingerprint.explain_mismatch(
        {"A": "1.0-aaaa", "B": "1.0-bbbb", "C": "1.0-cccc"},
        {"A": "1.0-ffff", "B": "1.1-eeee", "D": "1.0-dddd"},
    )
    assert "A: fields or remotable methods changed but VERSION did not. Bump A.VERSION" in message
    assert "B: version changed; if intended, expect '1.1-eeee'" in message
    assert "C: no longer registered" in message
    assert "D: new object; add 'D': '1.0-dddd'" in message
