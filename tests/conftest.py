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


#: Tests that must share one pytest-xdist worker, by path prefix; any other
#: test stays with the rest of its file, so module fixtures (an all-in-one cloud
#: for a file of CLI tests) start once. Real guests
#: run under TCG: two at once on two cores starve each other's boot; the fault
#: suite starts its private RabbitMQ cluster and PostgreSQL pair once per worker.
_GROUPS = {
    "tests/libvirt/": "guests",
    "tests/integration/test_dataplane_netns.py": "guests",
    "tests/integration/test_dataplane_floating_netns.py": "guests",
    "tests/integration/faults/": "faults",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        group = next((g for prefix, g in _GROUPS.items() if path.startswith(prefix)), path)
        item.add_marker(pytest.mark.xdist_group(group))


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    with _shared_servers(item.get_closest_marker("exclusive") is not None):
        return (yield)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    summaries.summarise(terminalreporter)
