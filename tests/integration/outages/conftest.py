"""Outage tests: an all-in-one cloud on the real PostgreSQL whose database
stops answering for a while (only this test's database: the shared server
keeps running for everyone else). Skips without the server; fails under CI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nubes.compute.virt.fake import FAULTS, FakeFaults
from tests.unit.db.dbfixtures import database_factory  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def faults() -> Iterator[FakeFaults]:
    FAULTS.reset()
    yield FAULTS
    FAULTS.reset()
