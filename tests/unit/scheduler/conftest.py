"""Scheduler tests on SQLite; fleets are written with nubes.testing.fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from oslo_config import cfg

from nubes import config
from nubes.db.engine import Database
from nubes.scheduler.manager import SchedulerManager
from tests.unit.db.dbfixtures import (  # noqa: F401  (fixtures)
    database_factory,
    db,
    db_url,
    server_url,
)


@pytest.fixture(scope="session")
def backend() -> str:
    return "sqlite"


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    c = config.new_config()
    c([])
    return c


@pytest.fixture
async def manager(
    db: Database,  # noqa: F811  (the fixture imported above)
    conf: cfg.ConfigOpts,
) -> AsyncIterator[SchedulerManager]:
    m = SchedulerManager(db, conf)
    yield m
    await m.close()
