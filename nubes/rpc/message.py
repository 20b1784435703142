"""The RPC wire format: msgpack requests and replies, and how errors travel.

A request is a msgpack map ``{v, ns, m, a, c}``: the RPC API version the
caller needs, the endpoint namespace (None for the service's main API), the
method, its keyword arguments and the request context. A reply carries either
``r`` (the result) or ``e`` (an error by class name, message and keyword
arguments). The envelopes are msgspec Structs, so their shape is checked in C
and a malformed body is refused with a message that says where it is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

import msgspec

from nubes import exception, versions

EncHook = Callable[[Any], Any]

#: Errors of the RPC machinery itself: every caller may receive them as-is.
FRAMEWORK_ERRORS: tuple[type[exception.NubesError], ...] = (
    exception.UnsupportedVersion,
    exception.MalformedMessage,
    exception.NoSuchMethod,
    exception.InvalidArguments,
    exception.IdentityMismatch,
    exception.Forbidden,
    exception.TooLarge,
    exception.MessagingTimeout,
    exception.TransportError,
    # Arguments that do not decode into objects this side can use.
    exception.UnknownObject,
    exception.IncompatibleObjectVersion,
    exception.ObjectFieldError,
    exception.MalformedObject,
)


class Request(msgspec.Struct, omit_defaults=True):
    m: str
    v: str = "1.0"
    ns: str | None = None
    a: dict[str, Any] = {}
    c: dict[str, Any] = {}


class ErrorInfo(msgspec.Struct, omit_defaults=True):
    t: str
    m: str = ""
    k: dict[str, Any] = {}


class Reply(msgspec.Struct, omit_defaults=True):
    r: Any = None
    e: ErrorInfo | None = None


_REQUEST_DECODER = msgspec.msgpack.Decoder(Request)
_REPLY_DECODER = msgspec.msgpack.Decoder(Reply)
_PLAIN_ENCODER = msgspec.msgpack.Encoder()


@lru_cache(maxsize=64)
def _encoder(enc_hook: EncHook | None) -> msgspec.msgpack.Encoder:
    return msgspec.msgpack.Encoder(enc_hook=enc_hook) if enc_hook else _PLAIN_ENCODER


def parse_version(version: str) -> tuple[int, int]:
    """``"1.3"`` -> ``(1, 3)``; anything else is a ValidationError."""
    try:
        return versions.parse_version(version)
    except ValueError as exc:
        raise exception.ValidationError(field="version", reason=str(exc)) from None


def encode_request(req: Request, enc_hook: EncHook | None = None) -> bytes:
    try:
        return _encoder(enc_hook).encode(req)
    except (TypeError, msgspec.EncodeError) as exc:
        raise exception.InvalidArguments(method=req.m, reason=f"cannot encode: {exc}") from exc


def decode_request(body: bytes) -> Request:
    try:
        return _REQUEST_DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise exception.MalformedMessage(reason=str(exc)) from None
    except RecursionError:
        # msgspec recurses per nesting level: a body nested thousands deep
        # exhausts the stack before any depth check could see it.
        raise exception.MalformedMessage(reason="nested too deep") from None
    except ValueError:
        # msgspec lets a UnicodeDecodeError out for a str that is not UTF-8.
        raise exception.MalformedMessage(reason="a string is not valid UTF-8") from None


def encode_result(result: Any, enc_hook: EncHook | None = None) -> bytes:
    return _encoder(enc_hook).encode(Reply(r=result))


def _primitive_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    # Only scalars cross: the kwargs rebuild the message on the other side,
    # and an object in them could not be decoded there.
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if value is None or isinstance(value, str | int | float | bool):
            out[key] = value
        else:
            out[key] = str(value)
    return out


def encode_error(exc: BaseException) -> bytes:
    if isinstance(exc, exception.NubesError):
        info = ErrorInfo(t=type(exc).__name__, m=exc.message, k=_primitive_kwargs(exc.kwargs))
    else:
        info = ErrorInfo(t=type(exc).__name__, m=str(exc))
    return _PLAIN_ENCODER.encode(Reply(e=info))


ErrorTable = tuple[type[exception.NubesError], ...]


def error_table(expected: Iterable[type[exception.NubesError]]) -> ErrorTable:
    """The error classes a caller re-raises as themselves, with their subclasses."""
    return (*FRAMEWORK_ERRORS, *expected)


def decode_reply(body: bytes, errors: ErrorTable, method: str) -> Any:
    """Return the result of a reply, or raise the error it carries."""
    try:
        reply = _REPLY_DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise exception.MalformedMessage(reason=f"reply to {method}: {exc}") from None
    except (RecursionError, ValueError):
        raise exception.MalformedMessage(reason=f"reply to {method}: undecodable") from None
    if reply.e is None:
        return reply.r
    info = reply.e
    cls = exception.ERRORS_BY_NAME.get(info.t)
    if cls is not None and issubclass(cls, errors):
        raise cls(info.m, **info.k)
    raise exception.RemoteError(exc_type=info.t, value=info.m)
