from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import servers, summaries


@pytest.fixture
def rabbit_url() -> str:
    servers.require("rabbit")
    return servers.RABBIT_URL


@pytest.fixture
def postgres_url() -> str:
    servers.require("postgres")
    return servers.POSTGRES_URL


@pytest.fixture
def mariadb_url() -> str:
    servers.require("mariadb")
    return servers.MARIADB_URL


#: Tests that must share one pytest-xdist worker, by path prefix (the first
#: that matches); any other test stays with the rest of its file, so module
#: fixtures (an all-in-one cloud for a file of CLI tests) start once.
#:
#: Real guests run in two groups, one per worker, so neither is the run's
#: long pole (each is about half of the real-guest time, mostly waits on
#: guests under TCG): "guests" boots them on a root-namespace libvirtd (the
#: session's, or all-in-one's ``--private-libvirtd``, whose network agent runs
#: in the root namespace), "guests-netns" on compute hosts in network
#: namespaces (nubes.testing.realhosts) beside the data-plane tests' namespaced
#: agents. The two do not meet: an agent touches only its own namespace's
#: ``nbr-``/``nvx-`` devices (a bridge only if it carries its mark) and
#: nftables table, the harnesses' bridges and veths are named ``nth-``/``nv``,
#: each group's libvirtd is private (own state, socket, namespace), and the
#: guest image is built once per machine (a second build only renames onto the
#: first). Within a group one guest test at a time, as a group is one worker's.
#: The fault suite starts its private RabbitMQ cluster and PostgreSQL pair
#: once per worker.
_GROUPS = {
    "tests/libvirt/test_guest_floating_ip.py": "guests-netns",
    "tests/libvirt/test_guest_metadata.py": "guests-netns",
    "tests/libvirt/test_guest_network.py": "guests-netns",
    "tests/libvirt/test_guest_ssh.py": "guests-netns",
    "tests/libvirt/test_moves.py": "guests-netns",
    # Namespaced hosts too (and, for its kill points, a private libvirtd of
    # its own): here for the balance of the two groups' minutes.
    "tests/libvirt/test_moves_local_disks.py": "guests-netns",
    "tests/libvirt/test_resize_same_host.py": "guests-netns",
    "tests/integration/test_dataplane_netns.py": "guests-netns",
    "tests/integration/test_dataplane_floating_netns.py": "guests-netns",
    "tests/libvirt/": "guests",
    "tests/integration/faults/": "faults",
}
#: The longest groups and files start first, so none is left running alone at
#: the end of the run (by path prefix; the rest keep their collection order).
_FIRST = (
    "tests/libvirt/",
    "tests/integration/test_dataplane_netns.py",
    "tests/integration/test_dataplane_floating_netns.py",
    "tests/integration/faults/",
    "tests/integration/crash/",
    "tests/conformance/",
)


def _scope(path: str) -> str:
    """The unit of work one worker runs whole: a group, or else a test file."""
    return next((g for prefix, g in _GROUPS.items() if path.startswith(prefix)), path)


def _rank(path: str, last: set[str]) -> int:
    if path in last:
        return len(_FIRST) + 1
    return next((i for i, prefix in enumerate(_FIRST) if path.startswith(prefix)), len(_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Files holding an ``exclusive`` test run last: such a test waits for every
    # test in flight on the other workers, and they wait for it (the
    # turnstile below), so met mid-run beside a real-guest test or Tempest it
    # can idle every other worker for minutes; at the end only the queue's
    # short tail is in flight.
    last = {item.nodeid.split("::", 1)[0] for item in items if _exclusive(item)}
    # Every worker collects, and must collect the same order: a stable sort.
    items.sort(key=lambda item: _rank(item.nodeid.split("::", 1)[0], last))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Whole groups and files to a worker, through xdist's public scheduler hook:
    its ``loadgroup`` mode stopped grouping under pytest 9.2 (it renames items
    through a private attribute pytest no longer reads), which put two
    real-guest tests on the two workers at once."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid.split("::", 1)[0])

    return ByGroup(config, log)


#: Machine-wide, so pytest-xdist workers and other test runs on the same
#: servers all take part: a test marked ``exclusive`` (it restarts the shared
#: RabbitMQ) runs while no other test does. New tests wait at the turnstile
#: while an exclusive one waits for the running ones to finish, so it cannot
#: be starved.
_TURNSTILE = Path(tempfile.gettempdir()) / "nubes-tests.turnstile"
_SERVERS = Path(tempfile.gettempdir()) / "nubes-tests.servers"


@contextmanager
def _shared_servers(exclusive: bool) -> Iterator[None]:
    with open(_TURNSTILE, "a") as turnstile, open(_SERVERS, "a") as servers:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(servers, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            if not exclusive:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(servers, fcntl.LOCK_UN)
            if exclusive:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


def _exclusive(item: pytest.Item) -> bool:
    return item.get_closest_marker("exclusive") is not None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    with _shared_servers(_exclusive(item)):
        return (yield)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    summaries.summarise(terminalreporter)
