"""A compute host obeys the conductor and nobody else (nubes/compute/authz.py).

Host cmp2's own verified identity sends host cmp1 the commands that, before
the rule table, deleted, stopped and rebooted cmp1's guests. They are sent
as calls so the refusal comes back to the sender (a cast takes the same path
through the server and is dropped with a log line instead).
"""

from __future__ import annotations

from typing import Any

import pytest

from nubes import exception
from nubes.compute.rpcapi import ComputeAPI
from nubes.context import RequestContext
from nubes.objects.states import PowerState, VMState
from nubes.testing.cloud import Cloud
from tests.unit.compute.conftest import ComputeHarness

COMMANDS: dict[str, dict[str, Any]] = {
    "terminate_instance": {"step": "delete"},
    "stop_instance": {"step": "stop"},
    "reboot_instance": {"step": "reboot", "reboot_type": "HARD"},
}


@pytest.mark.parametrize("method", sorted(COMMANDS))
async def test_a_compute_host_cannot_command_another_hosts_guests(
    cloud: Cloud, compute: ComputeHarness, method: str
):
    inst = await compute.instance(vm_state="active", task_state=None, power_state=1)
    compute.driver.add_instance(inst)
    attacker = await cloud.host("cmp2")
    client = ComputeAPI(attacker.transport).client.prepare(server=compute.name, timeout=5)
    args = {"instance": inst, "task_id": 900, "attempt": 1, **COMMANDS[method]}
    with pytest.raises(exception.Forbidden, match=r"compute\.cmp2 may not call compute"):
        await client.call(RequestContext(), method, **args)
    saved = await compute.reload(inst.uuid)
    assert (saved.vm_state, saved.power_state) == (VMState.ACTIVE, PowerState.RUNNING)
    assert saved.fault is None
    assert inst.uuid in compute.driver.instances
    assert compute.steps.reports == []


async def test_the_conductor_still_commands_the_host(cloud: Cloud, compute: ComputeHarness):
    # Positive control: the same call from the conductor's identity runs.
    inst = await compute.instance(vm_state="active", task_state="powering-off", power_state=1)
    compute.driver.add_instance(inst)
    client = ComputeAPI(cloud.conductor.transport).client.prepare(server=compute.name, timeout=5)
    await client.call(
        RequestContext(), "stop_instance", instance=inst, task_id=901, step="stop", attempt=1
    )
    (report,) = await compute.steps.wait(901)
    assert report["ok"]
    # The host did it: the end it reports is the conductor's to write.
    assert report["details"]["end"]["vm_state"] == VMState.STOPPED
    assert compute.driver.instances[inst.uuid].state == PowerState.SHUTDOWN
