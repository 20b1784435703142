"""Reports that reach the conductor while its database is away are applied
once it is back: none is dropped, none is applied twice."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from nubes.context import RequestContext
from nubes.db import engine as db_engine
from nubes.db.api import flavors, tasks
from nubes.db.api.tasks import TaskStatus
from nubes.testing.allinone import AllInOne
from tests.unit.db.dbfixtures import DatabaseFactory

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

IMAGE = {"id": "img-1", "properties": {}}
BUILDS = 6


async def _refuse_connections(server_url: str, name: str, refuse: bool) -> None:
    """Make only database ``name`` refuse (and drop) connections, or take them again."""
    statements = [f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if refuse else "true"}']
    if refuse:
        statements.append(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
    admin = create_async_engine(db_engine.normalize_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await admin.dispose()


async def test_reports_sent_while_the_database_is_down_are_each_applied_once(
    postgres_url: str, database_factory: DatabaseFactory
) -> None:
    url = database_factory.new_database("postgres", postgres_url)
    name = make_url(url).database
    assert name
    cloud = await AllInOne.start(
        url,
        hosts=2,
        overrides={
            # Were a report lost, its build would wait this long: the test's
            # timeout is shorter, so a lost report fails it.
            "conductor": {"compute_step_timeout": 600.0, "task_lease_seconds": 600.0},
        },
    )
    try:
        async with cloud.db.writer() as conn:
            await flavors.create(
                conn,
                {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 512, "root_gb": 1},
            )
        cloud.faults.spawn_delay = 1.0
        ctxt = RequestContext(user_id="u1", project_id="p1")
        made = await cloud.api.create_servers(
            ctxt, name="t", flavor="small", image=IMAGE, count=BUILDS
        )
        uuids = [i.uuid for i in made]
        await cloud.wait_for(uuids, lambda r: r["task_state"] == "spawning", timeout=30)
        # Every host's report now lands while the database refuses everyone.
        await _refuse_connections(postgres_url, name, True)
        try:
            await asyncio.sleep(3.0)
        finally:
            await _refuse_connections(postgres_url, name, False)
        # A lost report would leave its build waiting for compute_step_timeout
        # (600 s), far past this wait.
        await cloud.wait_tasks(uuids, timeout=60)
        rows = await cloud.instances(uuids)
        assert all(r["vm_state"] == "active" and r["host"] for r in rows), rows
        async with cloud.db.reader() as conn:
            for uuid in uuids:
                (task,) = await tasks.list_for_instance(conn, uuid)
                assert task["status"] == TaskStatus.SUCCEEDED
                # A host whose own saves met the outage failed its try and
                # said so (that try is rescheduled); none went unheard.
                failures = task["payload"].get("failures") or []
                assert not [f for f in failures if "did not report" in f["error"]], failures
    finally:
        await cloud.stop()
