"""When an instance's state change sends ``instance.update``, and with what.

``[notifications] notify_on_state_change`` (Nova's option): ``none``,
``vm_state`` (a change of vm_state), or ``vm_and_task_state`` (a change of
either). Whoever writes the change sends it: a compute host for what it
saves (:class:`nubes.compute.reporting.Reporter`), the conductor for what it
writes in a host's stead (a placed build's move to task_state spawning,
compute RPC 1.11), so a change is notified once whichever side wrote it.
"""

from __future__ import annotations

from nubes.notifications.objects import InstanceUpdatePayload
from nubes.objects.instance import Instance
from nubes.objects.states import TaskState, VMState

#: ``[notifications] notify_on_state_change`` values.
NOTIFY_NONE = "none"
NOTIFY_VM_STATE = "vm_state"
NOTIFY_VM_AND_TASK_STATE = "vm_and_task_state"


def update_payload(
    mode: str,
    instance: Instance,
    old_vm_state: VMState | str | None,
    old_task_state: TaskState | str | None,
) -> InstanceUpdatePayload | None:
    """The ``instance.update`` payload for ``instance``'s change from
    ``(old_vm_state, old_task_state)``, or None when ``mode`` sends none for it."""
    if mode == NOTIFY_NONE:
        return None
    vm_changed = old_vm_state != instance.vm_state
    task_changed = old_task_state != instance.task_state
    if not (vm_changed or (mode == NOTIFY_VM_AND_TASK_STATE and task_changed)):
        return None
    payload = InstanceUpdatePayload.from_instance(instance)
    payload.old_state = old_vm_state
    payload.old_task_state = old_task_state
    return payload
