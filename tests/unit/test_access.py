"""Every RPC server's rule table, walked: who may call what (nubes/access.py).

For each service, every method its endpoint serves is in its table (so none
is open by omission and none is refused by mistake), and for every method of
every table each kind of caller is allowed exactly when the table names its
binary. Unknown identities and unlisted methods are refused to everyone.
"""

from __future__ import annotations

import inspect

import pytest

from nubes import access, exception
from nubes.compute import authz as compute_authz
from nubes.compute.actions import ActionSteps
from nubes.compute.live_migration import LiveMigrationSteps
from nubes.compute.manager import ComputeManager
from nubes.compute.rebuild import RebuildSteps
from nubes.compute.resize import ResizeSteps
from nubes.compute.shelve import ShelveSteps
from nubes.conductor import authz as conductor_authz
from nubes.conductor.manager import ConductorManager
from nubes.rpc.server import BaseAPI
from nubes.scheduler import authz as scheduler_authz
from nubes.scheduler.manager import SchedulerManager

#: Each service's endpoint classes (a compute host serves its manager and its step groups).
SERVICES: dict[str, tuple[tuple[type, ...], access.MethodRules]] = {
    "compute": (
        (
            ComputeManager,
            ResizeSteps,
            LiveMigrationSteps,
            RebuildSteps,
            ActionSteps,
            ShelveSteps,
        ),
        compute_authz.METHOD_RULES,
    ),
    "scheduler": ((SchedulerManager,), scheduler_authz.METHOD_RULES),
    "conductor": ((ConductorManager,), conductor_authz.METHOD_RULES),
}
#: One identity of every binary, and the binary it is.
IDENTITIES = {
    "compute.host-a": "compute",
    "conductor.ctl-1": "conductor",
    "scheduler.ctl-1": "scheduler",
    "api.ctl-1": "api",
    "manage.ctl-1": "manage",
}
#: Methods that are not served over RPC (lifecycle hooks of the manager).
NOT_SERVED = {"close"}


def _served(classes: tuple[type, ...]) -> set[tuple[str | None, str]]:
    names = {
        n
        for cls in classes
        for n in dir(cls)
        if not n.startswith("_") and inspect.iscoroutinefunction(getattr(cls, n))
    }
    base = {
        (access.BASE_NAMESPACE, n)
        for n in dir(BaseAPI)
        if not n.startswith("_") and inspect.iscoroutinefunction(getattr(BaseAPI, n))
    }
    return {(None, n) for n in names - NOT_SERVED} | base


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_method_a_service_serves_has_a_rule(service: str):
    classes, rules = SERVICES[service]
    assert set(rules.rules) == _served(classes)
    for cls in classes:
        assert cls.RPC_METHOD_RULES is rules  # type: ignore[attr-defined]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_rule_allows_exactly_the_services_it_names(service: str):
    _, rules = SERVICES[service]
    tried = 0
    for (namespace, method), allowed in rules.rules.items():
        assert allowed, f"{service} {method} allows nobody: remove it instead"
        for identity, binary in IDENTITIES.items():
            tried += 1
            if binary in allowed:
                assert rules.check(identity, namespace, method).identity == identity
            else:
                with pytest.raises(exception.Forbidden, match="may not call"):
                    rules.check(identity, namespace, method)
        for stranger in ("guest", "compute.", "", None, "rabbit.admin"):
            with pytest.raises(exception.Forbidden):
                rules.check(stranger, namespace, method)
    assert tried == len(rules.rules) * len(IDENTITIES)


def test_compute_hosts_obey_only_the_conductor():
    rules = compute_authz.METHOD_RULES
    for (namespace, method), allowed in rules.rules.items():
        if namespace is None and method not in API_QUESTIONS:
            assert allowed == {"conductor"}, method
    # The questions the API may ask: no compute identity may ask them.
    for method in API_QUESTIONS:
        assert rules.rules[(None, method)] == {"api"}


#: What the API asks a compute host directly: reads, never changes.
API_QUESTIONS = (
    "get_host_uptime",
    "get_console_output",
    "get_instance_diagnostics",
    "get_vnc_console",
)


def test_the_scheduler_serves_controllers_only():
    for allowed in scheduler_authz.METHOD_RULES.rules.values():
        assert "compute" not in allowed


def test_a_method_missing_from_the_table_is_refused_to_everyone():
    for _, rules in SERVICES.values():
        for identity in IDENTITIES:
            with pytest.raises(exception.Forbidden):
                rules.check(identity, None, "no_such_method")
            with pytest.raises(exception.Forbidden):
                rules.check(identity, "other", "ping")


def test_an_endpoint_without_a_table_serves_only_liveness():
    rules = access.for_endpoints([object()])
    assert rules is access.LIVENESS_ONLY
    with pytest.raises(exception.Forbidden):
        rules.check("conductor.c", None, "anything")
    assert rules.check("conductor.c", access.BASE_NAMESPACE, "ping").binary == "conductor"
    with pytest.raises(exception.Forbidden):
        rules.check("compute.h", access.BASE_NAMESPACE, "whoami")


def test_operator_listed_controller_identities_get_controller_rights_only():
    rules = compute_authz.METHOD_RULES.with_controllers(["ops-robot"])
    assert rules.check("ops-robot", None, "stop_instance").identity == "ops-robot"
    with pytest.raises(exception.Forbidden):
        compute_authz.METHOD_RULES.check("ops-robot", None, "stop_instance")


@pytest.mark.parametrize(
    ("topic", "server", "identity", "believed"),
    [
        ("compute", "host-b", "compute.host-b", True),
        ("compute", "host-b", "compute.host-a", False),
        ("conductor", None, "conductor.ctl-1", True),
        ("conductor", None, "compute.host-a", False),
        ("conductor", "ctl-1", "conductor.ctl-2", False),
        ("scheduler", None, "conductor.ctl-1", False),
        ("scheduler", None, "scheduler.ctl-9", True),
        ("my-conductor-topic", None, "compute.host-a", False),
        ("my-conductor-topic", None, "conductor.ctl-1", True),
        ("conductor", None, None, False),
    ],
)
def test_only_the_callee_may_answer_a_call(
    topic: str, server: str | None, identity: str | None, believed: bool
):
    assert access.may_answer(topic, server, identity) is believed


def test_identify_answers_the_same_each_time_and_refuses_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Answers are kept (per identity and controller list); refusals are not:
    each one is raised and audited again."""
    host = access.identify("compute.h1")
    assert access.identify("compute.h1") == host
    assert (host.kind, host.host, host.binary) == (access.CallerKind.COMPUTE, "h1", "compute")
    # The operator's controller list is part of the answer.
    listed = access.identify("compute.h1", ["compute.h1"])
    assert listed.kind is access.CallerKind.CONTROLLER and listed.binary is None
    assert access.identify("compute.h1").kind is access.CallerKind.COMPUTE
    with caplog.at_level("WARNING", logger="nubes.audit"):
        for _ in range(2):
            with pytest.raises(exception.Forbidden):
                access.identify("stranger")
    assert sum("stranger" in r.getMessage() for r in caplog.records) == 2
