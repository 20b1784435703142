"""Outage tests: an all-in-one cloud on the real PostgreSQL whose database
stops answering for a while (only this test's database: the shared server
keeps running for everyone else). Skips without the server; fails under CI."""

from __future__ import annotations

from tests.unit.db.dbfixtures import database_factory  # noqa: F401  (fixture)
