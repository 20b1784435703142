"""The DB contract suite on SQLite (tests/integration/db runs it on the servers)."""

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


@pytest.fixture(scope="session", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
