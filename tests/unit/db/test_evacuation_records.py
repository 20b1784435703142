"""The migration records a returning source host reads and completes after an
evacuation (``Migration.get_evacuations_from_host``, ``complete_evacuation``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from nubes import exception
from nubes.context import RequestContext
from nubes.db import object_backend
from nubes.db.api import migrations
from nubes.db.engine import Database
from nubes.objects import backend
from nubes.objects.migration import Migration
from tests.unit.db import factories


@pytest.fixture
async def objdb(db: Database) -> AsyncIterator[Database]:
    object_backend.install(db)
    try:
        yield db
    finally:
        backend.uninstall()


async def _migration(db: Database, source: str, kind: str, status: str) -> dict[str, Any]:
    async with db.writer() as conn:
        inst = await factories.make_instance(conn, host="elsewhere")
        return await migrations.create(
            conn,
            {
                "instance_uuid": inst["uuid"],
                "source_compute": source,
                "dest_compute": "elsewhere" if source != "elsewhere" else "h1",
                "migration_type": kind,
                "status": status,
            },
        )


async def test_the_open_evacuations_from_a_host(objdb: Database) -> None:
    wanted = [
        await _migration(objdb, "h1", "evacuation", status)
        for status in ("accepted", "pre-migrating", "done")
    ]
    for status in ("completed", "failed", "error"):
        await _migration(objdb, "h1", "evacuation", status)
    await _migration(objdb, "elsewhere", "evacuation", "done")  # to h1, not from it
    await _migration(objdb, "h1", "migration", "pre-migrating")
    found = await Migration.get_evacuations_from_host(RequestContext(), "h1")
    assert [m.id for m in found] == [m["id"] for m in wanted]
    assert all(m.source_compute == "h1" and m.migration_type == "evacuation" for m in found)


async def test_complete_evacuation_moves_done_to_completed_only(objdb: Database) -> None:
    ctxt = RequestContext()
    done = await _migration(objdb, "h1", "evacuation", "done")
    mig = Migration._from_db(done)
    await mig.complete_evacuation(ctxt)
    assert mig.status == "completed" and not mig.obj_what_changed()
    await mig.complete_evacuation(ctxt)  # a repeat
    async with objdb.reader() as conn:
        assert (await migrations.get_by_id(conn, done["id"]))["status"] == "completed"

    for source, kind, status in (
        ("h1", "evacuation", "pre-migrating"),
        ("h1", "evacuation", "failed"),
        ("h1", "migration", "done"),
    ):
        other = await _migration(objdb, source, kind, status)
        with pytest.raises(exception.InvalidMigrationTransition):
            await Migration._from_db(other).complete_evacuation(ctxt)
        async with objdb.reader() as conn:
            assert (await migrations.get_by_id(conn, other["id"]))["status"] == status
    with pytest.raises(exception.MigrationNotFound):
        await Migration(id=424242).complete_evacuation(ctxt)
