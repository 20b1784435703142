"""What a live_migrate run knows of its instance and migration.

What a run reads, it keeps (``Run.cache``): the instance row (read with
the claim, or once), the migration row and the build's request, updated
with what the run's own commits write to them, so a step does not read
back what the step before it just wrote. A resumed run starts without them
and reads them again. The ``cancelling`` check a step makes when it starts
is made in the transaction of the commit that starts it (that commit reads
the migration's status — in a grouped commit, a required read that fails on
``cancelling`` and sends the commit the ordinary way, which reads it); the
step then uses what that commit saw. The commit that asks for the memory
copy does not happen at all if the migration is ``cancelling`` by then.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nubes import exception
from nubes.conductor.tasks import moves
from nubes.conductor.tasks.base import (
    CLAIMED_INSTANCE,
    Run,
    Writes,
)
from nubes.conductor.tasks.helpers import chain
from nubes.conductor.tasks.payloads import (
    LiveMigratePayload,
)
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.engine import Connection
from nubes.objects.states import (
    MigrationStatus,
    TaskState,
)

LOG = logging.getLogger(__name__)

_M = MigrationStatus

# Run.cache keys (see the module docstring).
#: The instance row as this run last knew it.
_INSTANCE = "live_migrate.instance"
#: The migration row as this run last knew it.
_MIGRATION = "live_migrate.migration"
#: The instance's build request (image properties, hints, group).
_ORIGINAL = "live_migrate.original"
#: (step, cancelling): the migration's status as the commit that started ``step`` saw it.
_SEEN = "live_migrate.cancelling"


class Cancelled(Exception):
    """The migration is ``cancelling``: the commit that would ask for the copy is not made."""


def live_payload(run: Run) -> LiveMigratePayload:
    return run.typed(LiveMigratePayload)


def tries(run: Run, step: str) -> int:
    return live_payload(run).tried(step)


def known_migration(run: Run) -> dict[str, Any]:
    """The migration row :func:`fetch` read (``migration=True``)."""
    row: dict[str, Any] = run.cache[_MIGRATION]
    return row


def known_original(run: Run) -> dict[str, Any]:
    """The build's request :func:`fetch` read (``original=True``)."""
    original: dict[str, Any] = run.cache[_ORIGINAL]
    return original


def note_instance(run: Run, values: dict[str, Any]) -> None:
    """What a commit of this run wrote to the instance, in the run's copy of it."""
    known = run.cache.get(_INSTANCE)
    if known is not None:
        known.update(values)


async def original_request(conn: Connection, instance_uuid: str) -> dict[str, Any]:
    """What the instance was built with (image properties, hints) and its server group."""
    row = await instances_api.get_by_uuid(conn, instance_uuid)
    return await moves.scheduling_request(conn, instance_uuid, row["image_ref"])


async def build_image(run: Run) -> dict[str, Any]:
    """The image the instance was built from, as its build recorded it."""
    assert run.instance_uuid is not None
    async with run.engine.db.reader() as conn:
        original = await original_request(conn, run.instance_uuid)
    return dict(original.get("image") or {})


async def cancelling(run: Run) -> bool:
    """Whether the migration is ``cancelling`` as the step starts: as the commit
    that started it saw it, if this run made that commit, else read now."""
    seen = run.cache.pop(_SEEN, None)
    if seen is not None and seen[0] == run.step:
        return bool(seen[1])
    row = await moves.load_migration(run)
    run.cache[_MIGRATION] = row
    return bool(row["status"] == _M.CANCELLING)


async def commit_watching(
    run: Run,
    step: str,
    commit: Callable[[Writes], Awaitable[str]],
    writes: Writes | None = None,
    migration_values: dict[str, Any] | None = None,
    *,
    refuse: bool = False,
) -> str:
    """``commit(writes + a look at the migration's status)``, the commit that starts ``step``.

    The step then knows whether the migration was ``cancelling`` at that
    commit (:func:`cancelling`); with ``refuse``, a ``cancelling``
    migration stops the commit instead (Cancelled, nothing written).
    ``migration_values`` are what ``writes`` set on the migration, for
    the run's copy of it.
    """
    ident = moves.migration_id(run)

    async def look(conn: Connection) -> None:
        row = await migrations_api.get_by_id(conn, ident)
        cancelling = row["status"] == _M.CANCELLING
        if cancelling and refuse:
            raise Cancelled()
        run.cache[_MIGRATION] = row
        run.cache[_SEEN] = (step, cancelling)

    run.cache.pop(_SEEN, None)
    not_cancelling = migrations_api.not_in_write(ident, _M.CANCELLING, missed=look)
    committed = await commit(chain(writes, not_cancelling))
    if _SEEN not in run.cache:
        # Committed and look() never ran: the read found it not
        # cancelling (grouped or not), and every write happened as asked.
        run.cache[_SEEN] = (step, False)
        known = run.cache.get(_MIGRATION)
        if known is not None and migration_values:
            known.update(migration_values)
    return committed


async def fetch(
    run: Run, *, migration: bool = False, original: bool = False
) -> dict[str, Any] | None:
    """The instance row as this run knows it (None once deleted).

    Whatever of it, the migration and the build's request the run does
    not have yet is read, in one transaction.
    """
    cache = run.cache
    if _INSTANCE not in cache:
        claimed = cache.pop(CLAIMED_INSTANCE, None)
        if claimed is not None:
            cache[_INSTANCE] = dict(claimed)
    need = [
        key
        for key, wanted in ((_INSTANCE, True), (_MIGRATION, migration), (_ORIGINAL, original))
        if wanted and key not in cache
    ]
    if need:
        assert run.instance_uuid is not None
        async with run.engine.db.reader() as conn:
            if _INSTANCE in need:
                try:
                    cache[_INSTANCE] = await instances_api.get_by_uuid(conn, run.instance_uuid)
                except exception.InstanceNotFound:
                    return None
            if _MIGRATION in need:
                cache[_MIGRATION] = await migrations_api.get_by_id(conn, moves.migration_id(run))
            if _ORIGINAL in need:
                cache[_ORIGINAL] = await original_request(conn, run.instance_uuid)
    row: dict[str, Any] = cache[_INSTANCE]
    return row


async def migration_row(run: Run) -> dict[str, Any]:
    """The migration row as this run knows it."""
    row = run.cache.get(_MIGRATION)
    if row is None:
        row = run.cache[_MIGRATION] = await moves.load_migration(run)
    return dict(row)


def cancel_message(run: Run) -> str:
    dest = live_payload(run).dest
    return f"The live migration to {dest.host if dest else 'another host'} was cancelled"


def instance_write(run: Run, values: dict[str, Any]) -> Writes:
    """Instance fields, only while it is still migrating (for a commit's transaction).

    Someone else moved it on (an operator's reset): the rest of the
    commit still goes through, with a warning. (In a grouped commit the
    update is required, so that case runs this write the ordinary way.)
    """

    async def missed(conn: Connection) -> None:
        LOG.warning("%r: instance no longer migrating; %s not written", run, sorted(values))
        run.cache.pop(_INSTANCE, None)  # read it again if needed

    assert run.instance_uuid is not None
    return instances_api.update_write(
        run.instance_uuid, values, missed=missed, expected_task_state=[TaskState.MIGRATING]
    )
