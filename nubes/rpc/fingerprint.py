"""Fingerprints of the RPC interfaces, so that a method cannot be added, removed
or given other arguments without bumping the API's version.

An interface is the endpoint classes that serve one RPC API (the compute
API is served by four, one per group of steps); what callers can reach of
it is what :func:`nubes.rpc.dispatcher.describe_endpoint` finds: every
public ``async`` method. Each method's fingerprint hashes its name and its
signature past ``self`` (argument names, kinds, defaults and annotations),
so the test holding the expected values
(``tests/unit/rpc/test_interface_fingerprints.py``) names the methods that
changed, not just the API.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Hex digits kept of a method's hash: a collision between two signatures of
#: one method is implausible, and a table of them stays readable.
HASH_DIGITS = 12


@dataclass(frozen=True)
class Interface:
    """One RPC API as served: its version and {method: fingerprint}."""

    version: str
    methods: dict[str, str]


def method_line(name: str, func: object) -> str:
    """What a method's fingerprint hashes: its name and signature without ``self``."""
    sig = inspect.signature(func)  # type: ignore[arg-type]
    params = list(sig.parameters.values())[1:]
    return f"{name}{sig.replace(parameters=params)}"


def method_fingerprint(name: str, func: object) -> str:
    digest = hashlib.sha256(method_line(name, func).encode()).hexdigest()
    return digest[:HASH_DIGITS]


def interface(classes: Iterable[type]) -> Interface:
    """The interface the endpoint ``classes`` of one API serve together.

    ValueError when they declare different versions or two serve one method
    name (the dispatcher would reach only one of them).
    """
    versions: set[str] = set()
    methods: dict[str, str] = {}
    for cls in classes:
        versions.add(cls.RPC_API_VERSION)  # type: ignore[attr-defined]
        for name in dir(cls):
            func = getattr(cls, name)
            if name.startswith("_") or not inspect.iscoroutinefunction(func):
                continue
            if name in methods:
                raise ValueError(f"{name} is served by two endpoint classes")
            methods[name] = method_fingerprint(name, func)
    if len(versions) != 1:
        raise ValueError(f"the endpoint classes declare versions {sorted(versions)}")
    return Interface(versions.pop(), dict(sorted(methods.items())))


def explain_mismatch(expected: Mapping[str, Interface], actual: Mapping[str, Interface]) -> str:
    """What changed in each API, and what to do about it; empty when nothing did."""
    lines: list[str] = []
    for api in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(api), actual.get(api)
        if want == have:
            continue
        if want is None or have is None:
            lines.append(f"{api}: API {'added' if want is None else 'removed'}")
            continue
        changes = []
        for name in sorted(want.methods.keys() | have.methods.keys()):
            if name not in want.methods:
                changes.append(f"{name} added")
            elif name not in have.methods:
                changes.append(f"{name} removed")
            elif want.methods[name] != have.methods[name]:
                changes.append(f"{name} changed its arguments")
        what = "; ".join(changes) or "no method changed"
        if want.version == have.version:
            lines.append(
                f"{api} {have.version}: {what}, but RPC_API_VERSION did not change. "
                f"Bump the version (rpcapi.VERSION, the endpoint's RPC_API_VERSION, the "
                f"rpcapi docstring's history, a new SERVICE_VERSION in nubes/versions.py) "
                f"and keep accepting what older senders send; then record the new table."
            )
        else:
            lines.append(f"{api} {want.version} -> {have.version}: {what}; record the new table.")
    if not lines:
        return ""
    return "RPC interfaces changed:\n  " + "\n  ".join(lines) + "\nNew table:\n" + table(actual)


def table(interfaces: Mapping[str, Interface]) -> str:
    """``interfaces`` as the Python literal the test keeps."""
    out = ["EXPECTED = {"]
    for api, iface in sorted(interfaces.items()):
        out.append(f'    "{api}": Interface(')
        out.append(f'        "{iface.version}",')
        out.append("        {")
        out += [f'            "{name}": "{fp}",' for name, fp in iface.methods.items()]
        out.append("        },")
        out.append("    ),")
    out.append("}")
    return "\n".join(out)
