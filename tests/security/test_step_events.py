"""A compromised host and the action events its step reports end (conductor RPC 1.5).

A host sends the end of its step's event (``compute_<op>``) with the step's
report, and the conductor writes it with the report (nubes/step_end.py).
The report names only the event: the instance and the action are the
task's, and the write ends only an open event of that name the awaited host
started. Whatever a host puts in the report, it ends nothing else: no other
instance's event, no other host's, no conductor's, none already ended.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nubes import exception
from nubes.conductor.tasks import payloads
from nubes.context import RequestContext
from nubes.db.api import actions, tasks
from nubes.rpc.client import RPCClient
from nubes.rpc.transport import Target
from nubes.step_end import EventEnd
from nubes.testing.cloud import Cloud, Host
from tests.unit.db import factories

_RUN = uuid.uuid4().hex[:6]
A, B, C = f"ev-a-{_RUN}", f"ev-b-{_RUN}", f"ev-c-{_RUN}"
_requests = itertools.count(1)

#: The events each scene's instance has under the task's action: name -> (started by, ended).
_SEEDED = {
    "compute_pause_instance": (A, False),
    "compute_live_migration": (C, False),
    "compute_reboot_instance": (A, True),
    "conductor_schedule_and_build": (None, False),
}


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.start(f"sqlite:///{tmp_path / 'events.sqlite'}")
    yield c
    await c.stop()


async def _scene(cloud: Cloud, *, awaits: str = A) -> dict[str, Any]:
    """An instance on A with a pause task awaiting ``awaits``'s report, its
    action's events (:data:`_SEEDED`), and another instance with an open
    event of the same name, under the same request, started by A."""
    request_id = f"req-{_RUN}-{next(_requests)}"
    async with cloud.db.writer() as conn:
        inst = await factories.make_instance(conn, host=A, vm_state="active", task_state="pausing")
        other = await factories.make_instance(conn, host=A, vm_state="active")
        for uuid_ in (inst["uuid"], other["uuid"]):
            await actions.action_start(
                conn, instance_uuid=uuid_, action="pause", request_id=request_id
            )
        for name, (host, ended) in _SEEDED.items():
            if host is None:
                await actions.event_record(
                    conn, instance_uuid=inst["uuid"], request_id=request_id, event=name
                )
                continue
            await actions.event_start(
                conn, instance_uuid=inst["uuid"], request_id=request_id, event=name, host=host
            )
            if ended:
                await actions.event_finish(
                    conn,
                    instance_uuid=inst["uuid"],
                    request_id=request_id,
                    event=name,
                    result=actions.RESULT_SUCCESS,
                )
        await actions.event_start(
            conn,
            instance_uuid=other["uuid"],
            request_id=request_id,
            event="compute_pause_instance",
            host=A,
        )
        task = await tasks.create(
            conn,
            kind="pause",
            instance_uuid=inst["uuid"],
            step="power",
            payload=payloads.expect_report({}, step="power", attempt=1, host=awaits, timeout=600),
            context=RequestContext(request_id=request_id, project_id="p1").to_record(),
        )
    return {"task": task, "instance": inst, "other": other, "request_id": request_id}


async def _events(cloud: Cloud, instance_uuid: str, request_id: str) -> dict[str, Any]:
    async with cloud.db.reader() as conn:
        action = await actions.action_get_by_request_id(conn, instance_uuid, request_id)
        return {
            e["event"]: (e["host"], e["result"], e["traceback"])
            for e in await actions.events_get(conn, action["id"])
        }


async def _report(attacker: Host, task_id: int, event: EventEnd, ok: bool = False) -> None:
    client = RPCClient(
        attacker.transport,
        Target("conductor"),
        version="1.5",
        expected_errors=[exception.Forbidden, exception.TooLarge],
    )
    await attacker.run(
        client.call,
        RequestContext(),
        "step_finished",
        task_id=task_id,
        step="power",
        attempt=1,
        ok=ok,
        error=None if ok else "failed",
        details={},
        event=event,
    )


async def _recorded(cloud: Cloud, task_id: int) -> bool:
    async with cloud.db.reader() as conn:
        return payloads.reported((await tasks.get(conn, task_id))["payload"]) is not None


async def test_a_host_ends_only_the_open_event_it_started_on_the_tasks_instance(
    cloud: Cloud,
) -> None:
    attacker = await cloud.host(A)
    refused = {
        "a conductor's event": EventEnd(event="conductor_schedule_and_build", result="Error"),
        "a result Nova has not": EventEnd(event="compute_pause_instance", result="Fine"),
        "not a compute event name": EventEnd(event="compute_x; DROP", result="Success"),
        "a 1 MB traceback": EventEnd(
            event="compute_pause_instance", result="Error", traceback="x" * (1 << 20)
        ),
    }
    scene = await _scene(cloud)
    before = await _events(cloud, scene["instance"]["uuid"], scene["request_id"])
    for name, event in refused.items():
        with pytest.raises((exception.Forbidden, exception.TooLarge)):
            await _report(attacker, scene["task"]["id"], event)
        assert not await _recorded(cloud, scene["task"]["id"]), name
    assert await _events(cloud, scene["instance"]["uuid"], scene["request_id"]) == before

    # Reports the task takes (the report is the host's to make), naming
    # events the write must not end: another host's, one already ended.
    for name in ("compute_live_migration", "compute_reboot_instance"):
        scene = await _scene(cloud)
        before = await _events(cloud, scene["instance"]["uuid"], scene["request_id"])
        await _report(attacker, scene["task"]["id"], EventEnd(event=name, result="Error"))
        assert await _recorded(cloud, scene["task"]["id"]), name
        assert await _events(cloud, scene["instance"]["uuid"], scene["request_id"]) == before

    # Its own open event ends, on the task's instance only: the other
    # instance's event of that name, same request, same host, stays open.
    scene = await _scene(cloud)
    ended = EventEnd(
        event="compute_pause_instance", result="Error", traceback="tb", details="failed"
    )
    await _report(attacker, scene["task"]["id"], ended)
    after = await _events(cloud, scene["instance"]["uuid"], scene["request_id"])
    assert after["compute_pause_instance"] == (A, "Error", "tb")
    assert after["compute_live_migration"] == (C, None, None)
    other = await _events(cloud, scene["other"]["uuid"], scene["request_id"])
    assert other["compute_pause_instance"] == (A, None, None)


async def test_a_host_ends_no_event_of_a_task_that_awaits_another_host(cloud: Cloud) -> None:
    attacker = await cloud.host(A)
    scene = await _scene(cloud, awaits=B)
    before = await _events(cloud, scene["instance"]["uuid"], scene["request_id"])
    with pytest.raises(exception.Forbidden):
        await _report(
            attacker,
            scene["task"]["id"],
            EventEnd(event="compute_pause_instance", result="Success"),
            ok=True,
        )
    assert not await _recorded(cloud, scene["task"]["id"])
    assert await _events(cloud, scene["instance"]["uuid"], scene["request_id"]) == before


async def test_a_report_whose_event_was_never_started_is_recorded(cloud: Cloud) -> None:
    """No action under the task's request (an internal operation): the
    report is recorded all the same, and no event appears."""
    attacker = await cloud.host(A)
    async with cloud.db.writer() as conn:
        inst = await factories.make_instance(conn, host=A, vm_state="active", task_state="pausing")
        task = await tasks.create(
            conn,
            kind="pause",
            instance_uuid=inst["uuid"],
            step="power",
            payload=payloads.expect_report({}, step="power", attempt=1, host=A, timeout=600),
            context=RequestContext(project_id="p1").to_record(),
        )
    await _report(
        attacker, task["id"], EventEnd(event="compute_pause_instance", result="Success"), ok=True
    )
    assert await _recorded(cloud, task["id"])
    async with cloud.db.reader() as conn:
        assert await actions.actions_get(conn, inst["uuid"]) == []
