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
