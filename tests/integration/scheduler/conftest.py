"""The scheduler race test's databases: SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest

from tests.unit.db.dbfixtures import (  # noqa: F401  (fixtures)
    database_factory,
    db_url,
    server_url,
)


@pytest.fixture(
    scope="session",
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
