"""A host's save of an instance can be written in place (a HOT update on PostgreSQL).

Every ``Instance.save()`` sets ``updated_at``. While an index covered it,
PostgreSQL had to write each save of a power state or progress as a new row
version with a new entry in every index of ``instances`` (migration 0017):
on the conductor-routed saves of bench/scale.py that was most of the
database's CPU per save. The saves go through the same conditional UPDATE
as :func:`nubes.db.api.instances.update`, whose outcome the server counts
per transaction (``pg_stat_xact_user_tables``).
"""

from __future__ import annotations

from sqlalchemy import text

from nubes.db import models
from nubes.db.api import instances
from nubes.db.engine import Database
from nubes.objects.states import PowerState
from tests.unit.db.factories import make_instance

#: Columns an ordinary save of a host's field writes whatever the field.
ALWAYS_WRITTEN = {"updated_at"}

UPDATES = text(
    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'instances'"
)


def test_no_index_of_instances_covers_a_column_every_save_writes() -> None:
    table = models.metadata.tables["instances"]
    covered = {(index.name, c.name) for index in table.indexes for c in index.columns}
    assert not {(name, c) for name, c in covered if c in ALWAYS_WRITTEN}


async def test_a_power_state_and_a_progress_save_are_written_in_place(db: Database) -> None:
    async with db.writer() as conn:
        uuid = (await make_instance(conn, host="h1", node="h1", vm_state="active"))["uuid"]
    async with db.writer() as conn:
        await instances.update(conn, uuid, {"power_state": PowerState.PAUSED})
        await instances.update(conn, uuid, {"progress": 40}, placed_on_host="h1")
        if conn.dialect.name == "postgresql":
            updated, in_place = (await conn.execute(UPDATES)).one()
            assert (updated, in_place) == (2, 2)
        row = await instances.get_by_uuid(conn, uuid)
    assert (row["power_state"], row["progress"]) == (PowerState.PAUSED, 40)
