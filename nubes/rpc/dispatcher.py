"""Finding and checking the endpoint method a request names.

An endpoint is any object with ``RPC_API_VERSION`` (``"major.minor"``), an
optional ``RPC_NAMESPACE`` and ``RPC_EXPECTED_ERRORS``; its public ``async``
methods, taking ``(self, context, **kwargs)``, are what callers can reach.
Everything about a method that a request is checked against — which
arguments are required, which are allowed, the simple types they must have —
is worked out once when the server starts, so the per-message check is a few
set and ``isinstance`` operations. An argument annotated with a
``msgspec.Struct`` travels as a map and reaches the method as the struct,
validated (``check_arguments`` converts it).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from nubes import exception, versions
from nubes.rpc import message

Checker = Callable[[Any], bool]

#: The namespace of the methods every server answers (liveness and identity).
BASE_NAMESPACE = "baseapi"


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    func: Callable[..., Any]
    required: frozenset[str]
    allowed: frozenset[str]
    takes_any: bool
    checks: tuple[tuple[str, Checker, str], ...]
    expected: tuple[type[BaseException], ...]
    #: Arguments that travel as a struct (a map on the wire) and are handed
    #: to the method as one, validated (``msgspec.Struct`` annotations).
    structs: tuple[tuple[str, type[msgspec.Struct]], ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    namespace: str | None
    version: tuple[int, int]
    version_text: str
    methods: dict[str, Method]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_SIMPLE: dict[Any, tuple[Checker, str]] = {
    int: (_is_int, "an integer"),
    float: (_is_float, "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
    bool: (lambda v: isinstance(v, bool), "a boolean"),
    dict: (lambda v: isinstance(v, dict), "a map"),
    list: (lambda v: isinstance(v, list), "a list"),
    bytes: (lambda v: isinstance(v, bytes), "bytes"),
}


def _struct(hint: Any) -> type[msgspec.Struct] | None:
    """The struct type an argument annotated ``hint`` is (maybe None); else None."""
    args = (
        typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else ()
    )
    candidates = [a for a in args if a is not type(None)] if args else [hint]
    if len(candidates) == 1:
        (only,) = candidates
        if isinstance(only, type) and issubclass(only, msgspec.Struct):
            return only
    return None


def _checker(hint: Any) -> tuple[Checker, str] | None:
    """An isinstance-style check for the annotations we can check cheaply."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_checker(arg) for arg in typing.get_args(hint) if arg is not type(None)]
        if any(p is None for p in parts):
            return None
        nullable = type(None) in typing.get_args(hint)
        checks = [p[0] for p in parts if p is not None]
        desc = " or ".join(p[1] for p in parts if p is not None)
        if nullable:
            desc += " or null"
        return (
            lambda v: (nullable and v is None) or any(c(v) for c in checks),
            desc,
        )
    base = origin if origin is not None else hint
    if base in _SIMPLE:
        return _SIMPLE[base]
    if isinstance(base, type) and base is not Any:
        try:
            isinstance(None, base)
        except TypeError:
            # Protocols and other special forms cannot be checked this way.
            return None
        return (lambda v: isinstance(v, base), f"a {base.__name__}")
    return None


def _method(func: Callable[..., Any], expected: tuple[type[BaseException], ...]) -> Method:
    sig = inspect.signature(func)
    params = list(sig.parameters.values())[1:]  # bound method: skip the context
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        # Unresolvable annotations only cost us the type checks.
        hints = {}
    required, allowed, checks, structs = set(), set(), [], []
    takes_any = False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            takes_any = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
            continue
        allowed.add(p.name)
        if p.default is p.empty:
            required.add(p.name)
        struct = _struct(hints[p.name]) if p.name in hints else None
        if struct is not None:
            structs.append((p.name, struct))
        check = _checker(hints[p.name]) if p.name in hints else None
        if check is not None:
            checks.append((p.name, check[0], check[1]))
    return Method(
        func.__name__,
        func,
        frozenset(required),
        frozenset(allowed),
        takes_any,
        tuple(checks),
        expected,
        tuple(structs),
    )


def describe_endpoint(obj: object) -> Endpoint:
    version_text = getattr(obj, "RPC_API_VERSION", None)
    if not isinstance(version_text, str):
        raise exception.ConfigError(reason=f"endpoint {obj!r} has no RPC_API_VERSION")
    expected = tuple(getattr(obj, "RPC_EXPECTED_ERRORS", ()))
    methods: dict[str, Method] = {}
    for name in dir(type(obj)):
        if name.startswith("_"):
            continue
        func = getattr(obj, name)
        if inspect.iscoroutinefunction(func):
            methods[name] = _method(func, expected)
    return Endpoint(
        getattr(obj, "RPC_NAMESPACE", None),
        message.parse_version(version_text),
        version_text,
        methods,
    )


class Dispatcher:
    """Picks the endpoint and method for a request, or says precisely why not."""

    def __init__(self, endpoints: list[object], topic: str) -> None:
        self.topic = topic
        self._by_ns: dict[str | None, list[Endpoint]] = {}
        for obj in endpoints:
            ep = describe_endpoint(obj)
            self._by_ns.setdefault(ep.namespace, []).append(ep)

    def find(self, namespace: str | None, version: str, method: str) -> Method:
        endpoints = self._by_ns.get(namespace)
        if not endpoints:
            raise exception.NoSuchMethod(method=method, namespace=namespace)
        try:
            major, minor = message.parse_version(version)
        except exception.ValidationError:
            raise exception.MalformedMessage(
                reason=f"version {versions.quote_version(version)} is not MAJOR.MINOR"
            ) from None
        found_method = False
        for ep in endpoints:
            m = ep.methods.get(method)
            if m is None:
                continue
            found_method = True
            if ep.version[0] == major and minor <= ep.version[1]:
                return m
        if not found_method:
            raise exception.NoSuchMethod(method=method, namespace=namespace)
        raise exception.UnsupportedVersion(
            topic=self.topic,
            version=version,
            implemented=", ".join(ep.version_text for ep in endpoints),
        )


def check_arguments(m: Method, args: dict[str, Any]) -> None:
    keys = args.keys()
    missing = m.required - keys
    if missing:
        raise exception.InvalidArguments(
            method=m.name, reason=f"missing {', '.join(sorted(missing))}"
        )
    if not m.takes_any:
        extra = keys - m.allowed
        if extra:
            raise exception.InvalidArguments(
                method=m.name, reason=f"unexpected {', '.join(sorted(extra))}"
            )
    for name, struct in m.structs:
        value = args.get(name)
        if value is not None and not isinstance(value, struct):
            try:
                args[name] = msgspec.convert(value, struct)
            except msgspec.ValidationError as exc:
                raise exception.InvalidArguments(method=m.name, reason=f"{name}: {exc}") from None
    for name, check, desc in m.checks:
        if name in args and not check(args[name]):
            raise exception.InvalidArguments(
                method=m.name,
                reason=f"{name} must be {desc}, not {type(args[name]).__name__}",
            )
