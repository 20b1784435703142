"""Who is calling, and may they call this method of this service at all.

The one home of two rules every RPC server shares:

* :func:`identify` maps the identity the transport verified (the broker user,
  ``<binary>.<host>``) to a :class:`Caller`; nothing in the message counts.
* :class:`MethodRules` is a service's deny-by-default rule table: each method
  it serves names the binaries that may call it, and anything not in the
  table is refused to everyone. The RPC server checks it before a method runs
  (:class:`nubes.rpc.server.RPCServer`); the tables themselves live next to
  the services (``nubes/compute/authz.py``, ``nubes/scheduler/authz.py``,
  ``nubes/conductor/authz.py``) and ``docs/authorization.md`` shows them.

What a permitted caller may then do *inside* a method (which instance, which
fields) is the service's own business: the conductor's object rules are in
``nubes/conductor/authz.py``.

This module imports nothing from the database layer: compute hosts use it.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nubes import exception

AUDIT = logging.getLogger("nubes.audit")

#: Binaries whose identities (``<binary>.<host>``) are controller services.
CONTROLLER_BINARIES = frozenset({"conductor", "scheduler", "api", "manage"})
COMPUTE_BINARY = "compute"
KNOWN_BINARIES = CONTROLLER_BINARIES | {COMPUTE_BINARY}
#: The namespace of the liveness methods every server answers (``baseapi``).
BASE_NAMESPACE = "baseapi"


class CallerKind(enum.StrEnum):
    """What kind of service is calling."""

    COMPUTE = "compute"  #: a hypervisor host: the least trusted
    CONTROLLER = "controller"  #: api, conductor, scheduler, manage


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str
    kind: CallerKind
    host: str | None = None
    #: The binary of the identity; None for an operator-listed controller
    #: identity (``[conductor] controller_identities``), which may do what
    #: any controller binary may.
    binary: str | None = None


def identify(identity: str | None, controller_identities: Iterable[str] = ()) -> Caller:
    """Map a verified bus identity to a caller, or refuse it."""
    if not identity:
        raise exception.Forbidden(reason="the caller's identity could not be verified")
    return _identify(identity, frozenset(controller_identities))


# Every message a service serves is identified (twice on the conductor: its
# rule table, then the authoriser), and a cloud has few identities: the
# answer, an immutable Caller, is kept. A refusal raises, so it is not kept,
# and each one is still logged.
@functools.lru_cache(maxsize=4096)
def _identify(identity: str, controller_identities: frozenset[str]) -> Caller:
    if identity in controller_identities:
        return Caller(identity, CallerKind.CONTROLLER)
    binary, _, host = identity.partition(".")
    if binary == COMPUTE_BINARY and host:
        return Caller(identity, CallerKind.COMPUTE, host, binary)
    if binary in CONTROLLER_BINARIES and host:
        return Caller(identity, CallerKind.CONTROLLER, host, binary)
    AUDIT.warning("REFUSED caller=%s reason=unknown identity", identity)
    raise exception.Forbidden(reason=f"identity {identity!r} is not a known service")


def may_answer(topic: str, server: str | None, identity: str | None) -> bool:
    """Whether a reply from ``identity`` to a call to ``topic`` (``.server``) is believable.

    A compute host answers only calls made to it: to ``compute.<its host>``
    (or the shared ``compute`` topic). A service's identity answers only its
    own service's topic: a conductor does not answer for the scheduler. Other
    identities (operator-listed controllers, test users) are trusted as the
    broker let them serve the queue.
    """
    if not identity:
        return False
    binary, _, host = identity.partition(".")
    if binary == COMPUTE_BINARY:
        return topic == COMPUTE_BINARY and bool(host) and server in (None, host)
    if binary in CONTROLLER_BINARIES and host and topic in KNOWN_BINARIES:
        return binary == topic and server in (None, host)
    return True


def identify_kind(identity: str) -> CallerKind | None:
    """The kind of a service identity by its name alone; None if it names no service."""
    binary, _, host = identity.partition(".")
    if not host:
        return None
    if binary == COMPUTE_BINARY:
        return CallerKind.COMPUTE
    return CallerKind.CONTROLLER if binary in CONTROLLER_BINARIES else None


#: Who may call what, as sets of binaries.
CONDUCTOR = frozenset({"conductor"})
CONTROLLERS = CONTROLLER_BINARIES
EVERY_SERVICE = CONTROLLER_BINARIES | {COMPUTE_BINARY}

#: The liveness methods (``ping``, ``whoami``): operators' probes and the
#: all-in-one readiness check come from controller identities.
BASE_RULES: Mapping[tuple[str | None, str], frozenset[str]] = {
    (BASE_NAMESPACE, "ping"): CONTROLLERS,
    (BASE_NAMESPACE, "whoami"): CONTROLLERS,
}


@dataclass(frozen=True)
class MethodRules:
    """A service's deny-by-default table: (namespace, method) -> binaries allowed."""

    service: str
    rules: Mapping[tuple[str | None, str], frozenset[str]]
    controller_identities: frozenset[str] = frozenset()

    def with_controllers(self, identities: Iterable[str]) -> MethodRules:
        """The same table, trusting ``identities`` as controllers too."""
        return MethodRules(self.service, self.rules, frozenset(identities))

    def allows(self, caller: Caller, namespace: str | None, method: str) -> bool:
        allowed = self.rules.get((namespace, method))
        if not allowed:
            return False
        if caller.binary is None:
            # Operator-listed controller identities: any controller's rights.
            return caller.kind is CallerKind.CONTROLLER and bool(allowed & CONTROLLER_BINARIES)
        return caller.binary in allowed

    def check(self, identity: str | None, namespace: str | None, method: str) -> Caller:
        """The caller, when it may call ``method``; Forbidden (and one audit line) if not."""
        caller = identify(identity, self.controller_identities)
        if not self.allows(caller, namespace, method):
            name = f"{namespace}.{method}" if namespace else method
            AUDIT.warning(
                "REFUSED caller=%s service=%s method=%s reason=not in the rule table",
                caller.identity,
                self.service,
                name,
            )
            raise exception.Forbidden(
                reason=f"{caller.identity} may not call {self.service} {name}"
            )
        return caller


def rules(service: str, table: Mapping[tuple[str | None, str], frozenset[str]]) -> MethodRules:
    """A service's table, with the liveness methods every server answers."""
    return MethodRules(service, {**BASE_RULES, **table})


#: The table of a service that serves nothing but liveness (the API's).
LIVENESS_ONLY = rules("liveness", {})


def for_endpoints(endpoints: Iterable[object]) -> MethodRules:
    """The table a server of ``endpoints`` enforces: theirs (``RPC_METHOD_RULES``).

    An endpoint without a table adds nothing, so its methods are refused to
    everyone: a new service cannot be left open by forgetting its rules.
    """
    tables = [t for t in (getattr(e, "RPC_METHOD_RULES", None) for e in endpoints) if t]
    if not tables:
        return LIVENESS_ONLY
    merged: dict[tuple[str | None, str], frozenset[str]] = {}
    for table in tables:
        merged.update(table.rules)
    return MethodRules("+".join(t.service for t in tables), merged)
