"""The DB contract suite of tests/unit/db on PostgreSQL and MariaDB.

Each test here runs once per server; it skips when the server is down and
fails under CI (see tests/servers.py).
"""

from __future__ import annotations

import pytest

from tests.unit.db.dbfixtures import (  # noqa: F401  (fixtures)
    database_factory,
    db,
    db_url,
    empty_db_url,
    replica_pair,
    server_url,
)


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
