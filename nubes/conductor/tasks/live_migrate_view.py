"""What a live_migrate step reads of its instance and migration.

Each step reads what it needs when it starts, in one grouped read
(:func:`fetch`): the instance row (the first step of a claim takes the one
read with the claim), and as asked the migration row, whose ``cancelling``
status the step checks first, and the build's request. Nothing is kept
from one step to the next, so no step works from a copy that the steps
before it had to keep in step with what they wrote. The commit that asks
for the memory copy does not happen at all if the migration is
``cancelling`` by then (:func:`commit_unless_cancelling`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nubes.conductor.tasks import moves
from nubes.conductor.tasks.base import Run, Writes
from nubes.conductor.tasks.helpers import chain
from nubes.conductor.tasks.payloads import LiveMigratePayload
from nubes.db import group_commit
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.engine import Connection
from nubes.objects.states import MigrationStatus, TaskState

LOG = logging.getLogger(__name__)


class Cancelled(Exception):
    """The migration is ``cancelling``: the commit that would ask for the copy is not made."""


@dataclasses.dataclass(slots=True)
class Known:
    """What :func:`fetch` read, together."""

    #: None once the instance is deleted.
    instance: dict[str, Any] | None
    migration: dict[str, Any] | None = None
    #: The instance's build request (image properties, hints, group).
    original: dict[str, Any] | None = None

    @property
    def cancelling(self) -> bool:
        """Whether the migration (read along) is ``cancelling``."""
        return self.migration is not None and self.migration["status"] == MigrationStatus.CANCELLING


def live_payload(run: Run) -> LiveMigratePayload:
    return run.typed(LiveMigratePayload)


def tries(run: Run, step: str) -> int:
    return live_payload(run).tried(step)


async def fetch(run: Run, *, migration: bool = False, original: bool = False) -> Known:
    """The instance row (None once deleted), and the migration and the
    build's request if asked, read together: one grouped read where the
    backend groups them (sharing the next batch's transaction instead of
    opening a read transaction of its own), else one read transaction. The
    row read with the claim stands for the instance on the claim's first step.
    """
    uuid = run.instance_uuid
    assert uuid is not None
    claimed, run.fresh_instance = run.fresh_instance, None
    if claimed is not None and not (migration or original):
        return Known(dict(claimed))
    reads = [] if claimed is not None else [instances_api.get_read(uuid)]
    if migration:
        reads.append(migrations_api.get_read(moves.migration_id(run)))
    if original:
        reads.extend(moves.scheduling_reads(uuid))
    rows = await group_commit.fetch_together(run.engine.db, uuid, reads)
    known = Known(dict(claimed) if claimed is not None else rows.pop(0))
    if migration:
        known.migration = migrations_api.found(rows.pop(0), moves.migration_id(run))
    if original and known.instance is not None:
        known.original = moves.scheduling_request_of(rows, known.instance["image_ref"])
    return known


async def commit_unless_cancelling(
    run: Run, commit: Callable[[Writes], Awaitable[str]], writes: Writes | None = None
) -> str:
    """``commit(writes)`` only if the migration is not ``cancelling`` in its
    transaction; Cancelled (nothing written) if it is.

    The status is read in the commit's own transaction: in a grouped commit
    as a required read that fails on ``cancelling`` and sends the commit the
    ordinary way, which reads it here.
    """
    ident = moves.migration_id(run)

    async def look(conn: Connection) -> None:
        row = await migrations_api.get_by_id(conn, ident)
        if row["status"] == MigrationStatus.CANCELLING:
            raise Cancelled()

    not_cancelling = migrations_api.not_in_write(ident, MigrationStatus.CANCELLING, missed=look)
    return await commit(chain(writes, not_cancelling))


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

    assert run.instance_uuid is not None
    return instances_api.update_write(
        run.instance_uuid, values, missed=missed, expected_task_state=[TaskState.MIGRATING]
    )
