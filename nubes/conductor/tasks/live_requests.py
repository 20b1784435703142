"""Aborts and force-completes of live migrations, relayed to their source host.

The API marks a migration ``cancelling`` (abort) and casts
``ConductorAPI.live_migration_abort`` / ``live_migration_force_complete``;
the conductor receiving it passes it on here. Compute hosts never hear from
the API: only a conductor, and only while the migration's memory copy runs
(the task at ``live_migrate``), sends the request to the source. Before
that, the task itself sees ``cancelling`` at its next step
(:mod:`.live_migrate`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from nubes import exception
from nubes.conductor.tasks import payloads
from nubes.conductor.tasks.helpers import instance_object
from nubes.conductor.tasks.payloads import MovePayload
from nubes.conductor.tasks.states import Step, TaskKind
from nubes.context import RequestContext
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.api import tasks as tasks_api
from nubes.db.engine import Database
from nubes.objects.states import MigrationStatus, MigrationType

LOG = logging.getLogger(__name__)

#: ConductorAPI requests relayed to the source of a running migration.
ABORT = "live_migration_abort"
FORCE_COMPLETE = "live_migration_force_complete"


async def relay_request(
    db: Database,
    compute: Any,
    context: RequestContext,
    method: str,
    instance_uuid: str,
    migration_id: int,
) -> bool:
    """Relay an abort or force-complete to the source of a migration whose memory copy began.

    ``method`` is :data:`ABORT` or :data:`FORCE_COMPLETE`. Returns whether it
    was sent. Before the copy (the task at an earlier step) nothing is sent:
    an abort is seen by the task at its next step (the API set the migration
    ``cancelling``), and there is nothing to force yet.
    """
    if method not in (ABORT, FORCE_COMPLETE):
        raise exception.Invalid(reason=f"{method} is not a live migration request")
    try:
        async with db.reader() as conn:
            migration = await migrations_api.get_by_id(conn, migration_id)
            row = await instances_api.get_by_uuid(conn, instance_uuid)
            task = await tasks_api.get_active_for_instance(conn, instance_uuid)
    except exception.NotFound as exc:
        LOG.info("%s of migration %s: %s", method, migration_id, exc)
        return False
    if (
        migration["instance_uuid"] != instance_uuid
        or migration["migration_type"] != MigrationType.LIVE_MIGRATION
    ):
        LOG.warning(
            "%s: migration %s is not a live migration of %s", method, migration_id, instance_uuid
        )
        return False
    if (
        task is None
        or task["kind"] != TaskKind.LIVE_MIGRATE
        or payloads.decode(task["payload"], MovePayload).migration_id != migration_id
        or task["step"] != Step.LIVE_MIGRATE
    ):
        LOG.info("%s of migration %s: its memory copy is not under way", method, migration_id)
        return False
    if method == FORCE_COMPLETE and migration["status"] != MigrationStatus.RUNNING:
        LOG.info("%s of migration %s: it is %s", method, migration_id, migration["status"])
        return False
    # Sent as this conductor: the API's identity stays with the API's message.
    ctxt = dataclasses.replace(context, caller=None)
    await getattr(compute, method)(
        ctxt, migration["source_compute"], instance_object(row), migration_id
    )
    return True
