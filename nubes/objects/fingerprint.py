"""Fingerprints of object classes, so that a change to what goes on the wire
cannot be made without bumping VERSION.

A fingerprint is ``"<VERSION>-<hash>"``; the hash covers every field's name
and description (type, nullability, default, ``added_in``, nested class and
its version mapping) and every remotable method's name, kind and signature.
``tests/unit/objects/test_fingerprints.py`` holds the expected values.
"""

from __future__ import annotations

import hashlib
import inspect

from nubes.objects.base import VersionedObject, remotable_methods
from nubes.objects.registry import REGISTRY, ObjectRegistry

#: Hex digits of the hash kept in a fingerprint: enough to make a collision
#: between two versions of one class implausible, short enough to read.
HASH_DIGITS = 16


def describe(cls: type[VersionedObject]) -> list[str]:
    """The lines a fingerprint hashes, in a stable order."""
    lines = [
        f"field {name}: {cls._obj_field_map[name].describe()}" for name in sorted(cls.obj_fields)
    ]
    for name, (kind, func) in sorted(remotable_methods(cls).items()):
        lines.append(f"remotable {kind} {name}{inspect.signature(func)}")
    return lines


def fingerprint(cls: type[VersionedObject]) -> str:
    digest = hashlib.sha256("\n".join(describe(cls)).encode()).hexdigest()
    return f"{cls.VERSION}-{digest[:HASH_DIGITS]}"


def fingerprints(registry: ObjectRegistry = REGISTRY) -> dict[str, str]:
    """{object name: fingerprint} for every class in ``registry``."""
    return {name: fingerprint(registry.get(name)) for name in registry}


def explain_mismatch(expected: dict[str, str], actual: dict[str, str]) -> str:
    """A failure message telling the developer what to do about each difference."""
    lines = []
    for name in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(name), actual.get(name)
        if want == have:
            continue
        if want is None:
            lines.append(f"{name}: new object; add {name!r}: {have!r}")
        elif have is None:
            lines.append(f"{name}: no longer registered; remove it (and keep its name retired)")
        elif want.split("-")[0] == have.split("-")[0]:
            lines.append(
                f"{name}: fields or remotable methods changed but VERSION did not. "
                f"Bump {name}.VERSION (and its docstring history, and obj_make_compatible "
                f"if older versions need a conversion), then set the expected value to "
                f"the new fingerprint printed here after the bump (now {have!r})"
            )
        else:
            lines.append(f"{name}: version changed; if intended, expect {have!r} (was {want!r})")
    return "Object fingerprints changed:\n  " + "\n  ".join(lines)
