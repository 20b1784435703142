"""What one ``POST /servers`` costs the database: its SQL statements, counted.

The API's CPU per boot goes mostly to running statements (issue #16), so a
statement added to the create path should be a decision, not an accident:
this budget says how many there are and fails when one more comes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_servers import URL, body, cloud, login  # noqa: F401

#: A boot on SQLite with the default quotas (limited, so usage is counted),
#: its flavor kept by the API process (nubes/api/flavor_cache.py): the
#: token (1); the flavors' generation (1); the image (1); the quota lock
#: (1), the class's, project's and user's limits (1), the usage (3); the
#: instance, its action and its build task (3).
BUDGET = 11


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements any engine runs meanwhile (not BEGIN, COMMIT or ROLLBACK)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.split(None, 1)[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def test_a_post_servers_runs_its_budget_of_statements(cloud: ApiHarness) -> None:  # noqa: F811
    c = await login(cloud, "demo", "2.61")
    first = await c.post(URL, json=body(cloud, networks="none"))
    assert first.status_code == 202, first.text
    with statements() as seen:
        r = await c.post(URL, json=body(cloud, networks="none"))
    assert r.status_code == 202, r.text
    assert len(seen) <= BUDGET, "\n".join(seen)
    # The three levels of limits in one read (nubes.db.api.quotas.limit_levels).
    limit_reads = [s for s in seen if "quota_classes" in s or "FROM quotas" in s]
    assert len(limit_reads) == 1, limit_reads
    # The flavor the first POST read is kept while no flavor changes.
    assert not [s for s in seen if "FROM flavors" in s or "flavor_extra_specs" in s], seen
