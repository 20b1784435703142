"""Pause, unpause, suspend, resume, rescue, unrescue, trigger_crash_dump,
changePassword, soft delete and restore: one step on the instance's host
each, as stop and start.

They share :class:`~nubes.conductor.tasks.power.PowerTask`'s one step
(``power``: commit the try, send the host's method with the step's key, wait
for its report). The host reports the instance's new state (PAUSED,
SUSPENDED, RESCUED, ACTIVE ...) with the step and the commit that closes the
task writes it (:mod:`nubes.step_end`); a failure, a host that does not
report in time or the deadline drops the transitional task_state the API
set in that commit, with a fault and an ``instance.<action>.error``
notification. A failed rescue leaves the instance in ERROR, as Nova's does.
"""

from __future__ import annotations

from typing import Any

from nubes import grants
from nubes.conductor.tasks.base import Run, task_kind
from nubes.conductor.tasks.payloads import ActionPayload, TaskPayload
from nubes.conductor.tasks.power import PowerTask
from nubes.conductor.tasks.states import TaskKind
from nubes.objects.states import TaskState, VMState


@task_kind
class PauseTask(PowerTask):
    kind = TaskKind.PAUSE
    method = "pause_instance"
    task_states = (TaskState.PAUSING,)
    error_event = "instance.pause.error"


@task_kind
class UnpauseTask(PowerTask):
    kind = TaskKind.UNPAUSE
    method = "unpause_instance"
    task_states = (TaskState.UNPAUSING,)
    error_event = "instance.unpause.error"


@task_kind
class SuspendTask(PowerTask):
    kind = TaskKind.SUSPEND
    method = "suspend_instance"
    task_states = (TaskState.SUSPENDING,)
    error_event = "instance.suspend.error"


@task_kind
class ResumeTask(PowerTask):
    kind = TaskKind.RESUME
    method = "resume_instance"
    task_states = (TaskState.RESUMING,)
    error_event = "instance.resume.error"


class _WithPassword(PowerTask):
    """A kind whose payload carries a password: dropped when the task ends."""

    def final_payload(self, run: Run) -> TaskPayload | None:
        payload = run.typed(ActionPayload)
        if payload.admin_password is None:
            return None
        payload.admin_password = None
        return payload


@task_kind
class RescueTask(_WithPassword):
    kind = TaskKind.RESCUE
    method = "rescue_instance"
    task_states = (TaskState.RESCUING,)
    error_event = "instance.rescue.error"
    error_vm_state = VMState.ERROR

    def extra_args(self, run: Run) -> dict[str, Any]:
        payload = run.typed(ActionPayload)
        conf = self.engine.conf
        # Grants for the host asked to fetch the rescue image (and its
        # kernel and ramdisk) from the image API, as a build's.
        image = grants.attach(
            payload.rescue_image,
            run.awaited().host,
            conf.image_grant_secret,
            conf.image_grant_ttl,
        )
        return {"rescue_image": image, "admin_password": payload.admin_password}


@task_kind
class UnrescueTask(PowerTask):
    kind = TaskKind.UNRESCUE
    method = "unrescue_instance"
    task_states = (TaskState.UNRESCUING,)
    error_event = "instance.unrescue.error"


@task_kind
class TriggerCrashDumpTask(PowerTask):
    kind = TaskKind.TRIGGER_CRASH_DUMP
    method = "trigger_crash_dump"
    #: Nova sets no task_state for it: the guest only gets an NMI.
    task_states = ()
    error_event = "instance.trigger_crash_dump.error"


@task_kind
class SetPasswordTask(_WithPassword):
    kind = TaskKind.SET_PASSWORD
    method = "set_admin_password"
    task_states = (TaskState.UPDATING_PASSWORD,)
    error_event = "instance.set_admin_password.error"

    def extra_args(self, run: Run) -> dict[str, Any]:
        return {"new_pass": run.typed(ActionPayload).admin_password or ""}


@task_kind
class SoftDeleteTask(PowerTask):
    kind = TaskKind.SOFT_DELETE
    method = "soft_delete_instance"
    task_states = (TaskState.SOFT_DELETING,)
    error_event = "instance.soft_delete.error"


@task_kind
class RestoreTask(PowerTask):
    kind = TaskKind.RESTORE
    method = "restore_instance"
    task_states = (TaskState.RESTORING,)
    error_event = "instance.restore.error"
