from __future__ import annotations

import pytest

from tests import servers


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


#: Tests that must share one pytest-xdist worker, by path prefix. Real guests
#: run under TCG: two at once on two cores starve each other's boot; the fault
#: suite starts its private RabbitMQ cluster and PostgreSQL pair once per worker.
_GROUPS = {
    "tests/libvirt/": "guests",
    "tests/integration/test_dataplane_netns.py": "guests",
    "tests/integration/faults/": "faults",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        for prefix, group in _GROUPS.items():
            if path.startswith(prefix):
                item.add_marker(pytest.mark.xdist_group(group))
