"""Personality files: what a user asks to have written into a new or rebuilt guest.

Compute API ``personality`` (create and rebuild, up to 2.56) names files by
path with their base64 contents. Nova calls them injected files: the API
checks them against their quotas and hands them to the build or rebuild,
the compute host writes them on the guest's config drive
(``openstack/content/0000`` ..., listed in ``meta_data.json`` as ``files``)
and the guest's cloud-init (or cirros's init) copies each to its path.
They are never stored with the instance and never served by the metadata
service: only the build or rebuild that was given them carries them.

Neutral ground, as :mod:`nubes.step_key`: the API, the conductor's task
payloads, the compute RPC API and the config drive all use these structs,
and this module imports nothing of theirs.

The contents are a user's data: neither ``repr`` shows them (nor the
paths), so a log line or a traceback that prints an argument or a payload
carries none of it.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec


class InjectedFile(msgspec.Struct, frozen=True, kw_only=True):
    """One file: where the guest writes it, and its contents (decoded)."""

    path: str
    contents: bytes

    def __repr__(self) -> str:
        return f"InjectedFile(<{len(self.contents)} bytes>)"


class InjectedFiles(msgspec.Struct, frozen=True, kw_only=True):
    """The personality files of one build or rebuild, in the order the user gave them.

    One struct (a map on the wire) rather than a bare list, so the RPC
    dispatcher converts and checks it as any other struct argument.
    """

    files: tuple[InjectedFile, ...] = ()

    @classmethod
    def of(cls, files: Iterable[tuple[str, bytes]]) -> InjectedFiles:
        """From ``(path, contents)`` pairs, as the API decodes them."""
        return cls(files=tuple(InjectedFile(path=p, contents=c) for p, c in files))

    def __bool__(self) -> bool:
        return bool(self.files)

    def __repr__(self) -> str:
        return f"InjectedFiles(<{len(self.files)} files>)"
