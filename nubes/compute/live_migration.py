"""Compute's steps of live migration: checks, pre, memory copy with progress, post,
rollback; abort and force complete of a running one.

An RPC endpoint of its own beside :class:`~nubes.compute.manager.ComputeManager`
(``ComputeManager.endpoints()``), holding its own state and sharing only the
manager's :class:`~nubes.compute.steps.StepRunner`; every method is a
conductor task step run through ``run_step`` (once per task id,
step and try; the outcome reported back). Move steps do driver work only:
the conductor writes the instance's and the migration's state
(``docs/moves.md``).

Who runs what (``ComputeAPI`` 1.1), and what the report's ``details`` carry
for the conductor's next step:

==========================================  ===========  ======================
step                                        host         details
==========================================  ===========  ======================
``check_can_live_migrate_destination``      destination  ``dest_check_data``
``check_can_live_migrate_source``           source       ``migrate_data``
``pre_live_migration``                      destination  ``migrate_data``
``live_migration``                          source       ``aborted`` on an abort;
                                                         ``migrate_data`` additions
``post_live_migration_at_destination``      destination  –
``post_live_migration``                     source       –
``rollback_live_migration_at_destination``  destination  –
==========================================  ===========  ======================

The source's check also reports the personality files on its guest's
config drive (the report's ``injected_files``, conductor 1.8), and the
conductor gives them to the destination's ``pre_live_migration`` (compute
1.12) for the drive it writes: they live on the guest's drive and nowhere
else, and Nova copies ``disk.config`` to the destination.

The one write a step makes beyond its report: while ``live_migration``
copies memory, the source saves the instance's ``progress`` and the
migration's ``memory_*`` counters (both through the conductor, which
allows them to the migration's source only), at most every
:data:`PROGRESS_SAVE_INTERVAL` seconds so a fast migration does not flood
the conductor. The first save comes that long after the copy began: a copy
over sooner saves nothing (its end records 100 % anyway, in the conductor's
commit of the move).

``live_migration_abort`` and ``live_migration_force_complete`` are not
steps: they act on the ``live_migration`` step running here for that
migration, and do nothing for a migration this host is not running (the
conductor's task sees a ``cancelling`` migration at its next step). An
abort makes the step report failure with ``details["aborted"]``, which the
conductor turns into a ``cancelled`` migration; a forced completion makes
it succeed now.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nubes import exception
from nubes.compute.reporting import ActionRecord, Reporter
from nubes.compute.steps import ComputeEndpoint, Outcome, StepRunner, step_handler
from nubes.context import RequestContext
from nubes.injected_files import InjectedFiles
from nubes.objects.instance import Instance
from nubes.objects.migration import Migration
from nubes.objects.states import MigrationStatus, TaskState
from nubes.step_key import StepKey

LOG = logging.getLogger(__name__)

#: Fewest seconds between two progress saves of one live migration.
PROGRESS_SAVE_INTERVAL = 0.5
_MIB = 1024 * 1024

Work = Callable[[RequestContext], Awaitable[Outcome]]


class Request(enum.StrEnum):
    """What a user may ask of a running live migration."""

    ABORT = "abort"
    FORCE_COMPLETE = "force_complete"


@dataclasses.dataclass(slots=True)
class LiveJob:
    """The ``live_migration`` step of one migration running on this host."""

    migration_id: int
    #: The latest request for it (abort, force complete), if any.
    requested: Request | None = None
    #: Whether the driver was told about ``requested`` (and had the migration).
    delivered: bool = False
    #: Whether the driver's ``live_migration`` has been called.
    in_driver: bool = False
    #: When progress was last saved (at first: when the copy began).
    saved_at: float = 0.0
    saved_percent: int = -1


class _Event(ActionRecord):
    """An action event whose notifications are limited to ``phases``.

    Nova sends no notification for some live-migration steps (the checks,
    the memory copy itself); their events are still recorded.
    """

    def __init__(
        self,
        reporter: Reporter,
        ctxt: RequestContext,
        instance: Instance,
        event: str,
        notify_action: str = "",
        phases: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(reporter, ctxt, instance, event, notify_action)
        self.phases = phases

    async def _notify(self, phase: str, exc: BaseException | None = None) -> None:
        if phase in self.phases:
            await super()._notify(phase, exc)


_ALL_PHASES = frozenset({"start", "end", "error"})


def _failure(exc: Exception) -> Outcome:
    return Outcome(False, str(exc) or type(exc).__name__, {"exception": type(exc).__name__})


class LiveMigrationSteps(ComputeEndpoint):
    """The live_migration steps of a compute host."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner
        #: The live migrations this host is the source of now, by instance uuid.
        self.live_jobs: dict[str, LiveJob] = {}

    def _event(
        self,
        ctxt: RequestContext,
        instance: Instance,
        event: str,
        notify_action: str = "",
        phases: frozenset[str] = _ALL_PHASES,
    ) -> _Event:
        return _Event(
            self.runner.reporter,
            ctxt,
            instance,
            event,
            notify_action,
            phases if notify_action else frozenset(),
        )

    async def _driver_step(
        self, record: _Event, call: Callable[[], Awaitable[Any]], detail: str | None = None
    ) -> Outcome:
        """Run one driver call between the event's start and its end (or failure)."""
        await record.start()
        try:
            result = await call()
        except Exception as exc:
            await record.fail(exc)
            return _failure(exc)
        await record.succeed()
        return Outcome(True, details={detail: result} if detail else None)

    # -- checks ------------------------------------------------------------------------

    @step_handler
    async def check_can_live_migrate_destination(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        block_migration: bool,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            record = self._event(ctxt, instance, "compute_check_can_live_migrate_destination")
            return await self._driver_step(
                record,
                lambda: self.runner.driver.check_can_live_migrate_destination(
                    ctxt, instance, block_migration
                ),
                "dest_check_data",
            )

        await self.runner.run_step(context, key, work)

    @step_handler
    async def check_can_live_migrate_source(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        dest_check_data: dict[str, Any],
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            record = self._event(ctxt, instance, "compute_check_can_live_migrate_source")
            outcome = await self._driver_step(
                record,
                lambda: self.runner.driver.check_can_live_migrate_source(
                    ctxt, instance, dest_check_data
                ),
                "migrate_data",
            )
            if not outcome.ok or not self.runner.conductor.reports_injected_files():
                # A conductor capped below 1.8 cannot carry them: the
                # destination's drive is built without them, as before.
                return outcome
            # The personality files on the guest's drive go to the
            # destination's through the conductor, as Nova copies disk.config.
            # A drive that cannot be read fails the check rather than lose them.
            try:
                files = await self.runner.guest_files(instance)
            except Exception as exc:
                return _failure(exc)
            return dataclasses.replace(outcome, injected_files=files)

        await self.runner.run_step(context, key, work)

    # -- destination before and after ---------------------------------------------------

    @step_handler
    async def pre_live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        migrate_data: dict[str, Any],
        injected_files: InjectedFiles | None = None,
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            record = self._event(ctxt, instance, "compute_pre_live_migration", "live_migration_pre")

            async def prepare() -> dict[str, Any]:
                # A guest with a config drive has it here too (as the instance
                # records it), built from the conductor's answer to this host,
                # with the personality files the source's drive has (1.12):
                # files make a drive even where none was asked for, as at build.
                drive = await self.runner.config_drive(ctxt, instance, injected=injected_files)
                return await self.runner.driver.pre_live_migration(
                    ctxt, instance, migrate_data, config_drive=drive
                )

            return await self._driver_step(record, prepare, "migrate_data")

        await self.runner.run_step(context, key, work)

    @step_handler
    async def post_live_migration_at_destination(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        migrate_data: dict[str, Any],
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            record = self._event(
                ctxt,
                instance,
                "compute_post_live_migration_at_destination",
                "live_migration_post_dest",
            )
            return await self._driver_step(
                record,
                lambda: self.runner.driver.post_live_migration_at_destination(
                    ctxt, instance, migrate_data
                ),
            )

        await self.runner.run_step(context, key, work)

    @step_handler
    async def rollback_live_migration_at_destination(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        migrate_data: dict[str, Any],
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            record = self._event(
                ctxt,
                instance,
                "compute_rollback_live_migration_at_destination",
                "live_migration_rollback_dest",
            )
            return await self._driver_step(
                record,
                lambda: self.runner.driver.rollback_live_migration_at_destination(
                    ctxt, instance, migrate_data
                ),
            )

        await self.runner.run_step(context, key, work)

    # -- source ------------------------------------------------------------------------

    @step_handler
    async def post_live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        migrate_data: dict[str, Any],
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            record = self._event(
                ctxt, instance, "compute_post_live_migration", "live_migration_post"
            )
            return await self._driver_step(
                record, lambda: self.runner.driver.post_live_migration(ctxt, instance, migrate_data)
            )

        await self.runner.run_step(context, key, work)

    @step_handler
    async def live_migration(
        self,
        context: RequestContext,
        instance: Instance,
        key: StepKey,
        migration: Migration,
        dest_host: str,
        migrate_data: dict[str, Any],
    ) -> None:
        async def work(ctxt: RequestContext) -> Outcome:
            return await self._live_migrate(ctxt, instance, migration, dest_host, migrate_data)

        await self.runner.run_step(context, key, work)

    async def _live_migrate(
        self,
        ctxt: RequestContext,
        instance: Instance,
        migration: Migration,
        dest_host: str,
        migrate_data: dict[str, Any],
    ) -> Outcome:
        jobs = self.live_jobs
        running = jobs.get(instance.uuid)
        if running is not None:
            return Outcome(
                False,
                f"instance {instance.uuid} is already migrating (migration {running.migration_id})",
            )
        # Registered before anything else so that an abort arriving from now
        # on is kept; one arriving earlier left the migration 'cancelling',
        # which the read below sees.
        job = jobs[instance.uuid] = LiveJob(migration.id)
        record = self._event(ctxt, instance, "compute_live_migration")
        await record.start()
        try:
            current = await Migration.get_by_id(ctxt, migration.id)
            if current.status == MigrationStatus.CANCELLING or job.requested is Request.ABORT:
                raise exception.LiveMigrationAborted(
                    instance_uuid=instance.uuid, host=self.runner.host
                )
            progress = self._progress(ctxt, instance, current, job)
            # No await between the check above and the driver call: a request
            # comes either before (seen above) or after (delivered to the driver).
            # A force-complete asked already reaches the driver at its first tick.
            job.in_driver = True
            job.saved_at = time.monotonic()
            moved = await self.runner.driver.live_migration(
                ctxt, instance, dest_host, migrate_data, progress
            )
        except exception.LiveMigrationAborted as exc:
            await record.fail(exc)
            return Outcome(False, str(exc), {"aborted": True, "exception": type(exc).__name__})
        except Exception as exc:
            await record.fail(exc)
            return _failure(exc)
        finally:
            if jobs.get(instance.uuid) is job:
                del jobs[instance.uuid]
        await record.succeed()
        return Outcome(True, details={"migrate_data": moved} if moved else None)

    def _progress(
        self, ctxt: RequestContext, instance: Instance, migration: Migration, job: LiveJob
    ) -> Callable[[int], Awaitable[None]]:
        """The driver's progress callback: deliver a pending request, save progress."""

        async def progress(percent: int) -> None:
            if job.requested is not None and not job.delivered:
                # Asked before the driver could take it (it had not begun).
                try:
                    await self._deliver(instance, job)
                except Exception as exc:
                    # The copy goes on; the request is given up, not retried each tick.
                    job.delivered = True
                    LOG.warning("Could not hand %s to the driver: %s", job.requested, exc)
            now = time.monotonic()
            if percent == job.saved_percent or now - job.saved_at < PROGRESS_SAVE_INTERVAL:
                return
            job.saved_at, job.saved_percent = now, percent
            await self._save_progress(ctxt, instance, migration, percent)

        return progress

    async def _save_progress(
        self, ctxt: RequestContext, instance: Instance, migration: Migration, percent: int
    ) -> None:
        """The instance's progress and the migration's memory counters (never fails the step).

        A driver reports a percentage; the counters are that share of the
        guest's memory.
        """
        total = (instance.memory_mb or 0) * _MIB
        processed = total * percent // 100
        instance.progress = percent
        migration.memory_total = total
        migration.memory_processed = processed
        migration.memory_remaining = total - processed
        saves = await asyncio.gather(
            # Only while the instance is still migrating: after the conductor
            # ended the move, a late save must not touch it.
            instance.save(ctxt, expected_task_state=TaskState.MIGRATING),
            migration.save(ctxt),
            return_exceptions=True,
        )
        for result in saves:
            if isinstance(result, Exception):
                LOG.debug("Progress of live migration %s not saved: %s", migration.id, result)
            elif isinstance(result, BaseException):
                raise result

    # -- requests on a running migration -------------------------------------------------

    async def live_migration_abort(
        self, context: RequestContext, instance: Instance, migration_id: int
    ) -> None:
        await self._request(context, instance, migration_id, Request.ABORT)

    async def live_migration_force_complete(
        self, context: RequestContext, instance: Instance, migration_id: int
    ) -> None:
        await self._request(context, instance, migration_id, Request.FORCE_COMPLETE)

    async def _request(
        self, context: RequestContext, instance: Instance, migration_id: int, request: Request
    ) -> None:
        await self.runner.ready.wait()
        ctxt = dataclasses.replace(context, caller=None)
        job = self.live_jobs.get(instance.uuid)
        if job is None or job.migration_id != migration_id:
            LOG.info(
                "No live migration %s of %s runs on %s: nothing to %s",
                migration_id,
                instance.uuid,
                self.runner.host,
                request,
            )
            return
        job.requested, job.delivered = request, False
        if not job.in_driver:
            return  # the step sees it before it calls the driver
        # Nova's events and notifications: the abort's end is the rollback
        # the conductor finishes, so only its start is sent from here.
        if request is Request.ABORT:
            record = self._event(
                ctxt,
                instance,
                "compute_live_migration_abort",
                "live_migration_abort",
                frozenset({"start", "error"}),
            )
        else:
            record = self._event(
                ctxt,
                instance,
                "compute_live_migration_force_complete",
                "live_migration_force_complete",
            )
        await record.start()
        try:
            await self._deliver(instance, job)
        except Exception as exc:
            await record.fail(exc)
            return
        await record.succeed()

    async def _deliver(self, instance: Instance, job: LiveJob) -> None:
        """Hand the job's request to the driver (kept pending if the driver has not begun)."""
        request = job.requested
        if request is None:
            return
        if request is Request.ABORT:
            found = await self.runner.driver.live_migration_abort(instance)
        else:
            found = await self.runner.driver.live_migration_force_complete(instance)
        # Still pending if the driver had not registered the migration yet:
        # the progress callback hands it over at the first tick.
        if job.requested is request:
            job.delivered = found
        if not found:
            LOG.debug("Live migration of %s not in the driver yet: %s kept", instance.uuid, request)
