"""Bytes for values that may hold versioned objects: msgpack for RPC, JSON too.

msgpack is the wire format. msgspec encodes datetimes natively (the
timestamp extension, decoded back as aware UTC datetimes), so an object's
data goes out as it is held, with no per-field conversion: :func:`enc_hook`
hands msgspec an envelope that shares the object's ``_data``, and msgspec
calls the hook again for each nested object.

JSON is for logs, fixtures and anything human-facing: msgspec writes
datetimes as ISO 8601 strings, and decoding accepts those where a datetime
field expects one. To feed another JSON library, turn a primitive into JSON
builtins with ``msgspec.to_builtins(obj.obj_to_primitive())``.

Decoding is two steps: bytes to builtins, then :func:`decode_entity`, which
rebuilds every envelope (a dict with the ``nubes_object.name`` key) into its
object, validating every field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from nubes import exception
from nubes.objects.base import VersionedObject
from nubes.objects.registry import NAME_KEY, REGISTRY, ObjectRegistry
from nubes.versions import parse_version

#: How deep lists and dicts may nest around objects in a decoded message;
#: deeper is junk, refused before it costs a deep recursion.
MAX_NESTING = 32


def _unsupported(obj: object) -> NotImplementedError:
    # NotImplementedError is msgspec's convention for "this hook cannot help".
    return NotImplementedError(f"cannot encode a {type(obj).__qualname__}")


def enc_hook(obj: Any) -> Any:
    """msgspec ``enc_hook``: versioned objects at their current version."""
    if isinstance(obj, VersionedObject):
        return obj.obj_to_wire()
    raise _unsupported(obj)


def versioned_enc_hook(object_versions: Mapping[str, str]) -> Callable[[Any], Any]:
    """An ``enc_hook`` that backports each object to the version a peer
    runs, as ``object_versions`` ({name: version}) gives it."""

    def hook(obj: Any) -> Any:
        if isinstance(obj, VersionedObject):
            target = object_versions.get(obj.obj_name())
            if target is None or target == obj.VERSION:
                return obj.obj_to_wire()
            try:
                parsed = parse_version(target)
            except ValueError:
                parsed = None
            if (
                parsed is not None
                and parsed[0] == obj._obj_version[0]
                and parsed > obj._obj_version
            ):
                return obj.obj_to_wire()  # the peer is newer and reads ours
            return obj.obj_to_primitive(target_version=target)
        raise _unsupported(obj)

    return hook


def _refuse_extension(code: int, data: memoryview) -> Any:
    raise exception.MalformedMessage(reason=f"msgpack extension type {code} is not allowed")


_msgpack_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_msgpack_decoder = msgspec.msgpack.Decoder(ext_hook=_refuse_extension)
_json_encoder = msgspec.json.Encoder(enc_hook=enc_hook)
_json_decoder = msgspec.json.Decoder()


def encode(value: Any, object_versions: Mapping[str, str] | None = None) -> bytes:
    """msgpack bytes for ``value``; objects anywhere in it are encoded, at
    the versions in ``object_versions`` if given (see :func:`versioned_enc_hook`)."""
    if object_versions is None:
        return _msgpack_encoder.encode(value)
    return msgspec.msgpack.encode(value, enc_hook=versioned_enc_hook(object_versions))


def decode_builtins(data: bytes) -> Any:
    """msgpack bytes to builtins, envelopes left as dicts."""
    try:
        return _msgpack_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError, ValueError) as bad:
        # ValueError: msgspec lets UnicodeDecodeError out for a bad str.
        raise exception.MalformedMessage(reason=f"undecodable msgpack: {bad}") from None


def decode(data: bytes, registry: ObjectRegistry = REGISTRY) -> Any:
    """The value :func:`encode` made, objects rebuilt and validated."""
    return decode_entity(decode_builtins(data), registry)


def json_encode(value: Any) -> bytes:
    """JSON bytes for ``value``; datetimes become ISO 8601 strings."""
    return _json_encoder.encode(value)


def json_decode(data: bytes | str, registry: ObjectRegistry = REGISTRY) -> Any:
    """The value :func:`json_encode` made, objects rebuilt and validated."""
    try:
        value = _json_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError, ValueError) as bad:
        raise exception.MalformedMessage(reason=f"undecodable JSON: {bad}") from None
    return decode_entity(value, registry)


def decode_entity(value: Any, registry: ObjectRegistry = REGISTRY) -> Any:
    """Rebuild the objects in decoded builtins: each dict holding the
    ``nubes_object.name`` key becomes its object. Other values are returned
    as they are (lists and dicts around objects are rebuilt)."""
    if type(value) is dict and NAME_KEY in value:
        return registry.obj_from_primitive(value)
    return _walk(value, registry, MAX_NESTING)


def _walk(value: Any, registry: ObjectRegistry, depth: int) -> Any:
    kind = type(value)
    if kind is dict:
        if NAME_KEY in value:
            return registry.obj_from_primitive(value)
        if not depth:
            raise exception.MalformedMessage(reason=f"nested deeper than {MAX_NESTING} levels")
        # Most containers in a message hold scalars only (an image's
        # properties, a call's keyword arguments): nothing in them can be an
        # object, so they are kept as decoded rather than rebuilt item by item.
        for item in value.values():
            if type(item) in _CONTAINERS:
                break
        else:
            return value
        return {key: _walk(item, registry, depth - 1) for key, item in value.items()}
    if kind is list:
        if not depth:
            raise exception.MalformedMessage(reason=f"nested deeper than {MAX_NESTING} levels")
        for item in value:
            if type(item) in _CONTAINERS:
                break
        else:
            return value
        return [_walk(item, registry, depth - 1) for item in value]
    return value


_CONTAINERS = frozenset({dict, list})
