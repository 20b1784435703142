"""The API side: one transaction per request, state checks before anything is written."""

from __future__ import annotations

import pytest

from nubes import exception
from nubes.context import RequestContext
from nubes.db.api import actions, tasks
from nubes.db.api.tasks import TaskStatus
from nubes.testing.allinone import AllInOne
from tests.unit.conductor.conftest import IMAGE

pytestmark = pytest.mark.timeout(60)


async def test_create_records_instances_actions_and_tasks_together(
    cloud: AllInOne, ctxt: RequestContext
) -> None:
    engine = cloud.engines[0]
    await engine.stop()
    insts = await cloud.api.create_servers(
        ctxt, name="web", flavor="small", image=IMAGE, count=3, metadata={"k": "v"}
    )
    assert [i.display_name for i in insts] == ["web-1", "web-2", "web-3"]
    assert {(i.vm_state, i.task_state) for i in insts} == {("building", "scheduling")}
    assert len({i.reservation_id for i in insts}) == 1
    async with cloud.db.reader() as conn:
        for inst in insts:
            (task,) = await tasks.list_for_instance(conn, inst.uuid)
            assert (task["kind"], task["step"], task["status"]) == ("build", "schedule", "pending")
            assert task["deadline"] is not None and task["context"]["caller"] is None
            assert task["context"]["request_id"] == ctxt.request_id
            (action,) = await actions.actions_get(conn, inst.uuid)
            assert (action["action"], action["request_id"]) == ("create", ctxt.request_id)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"count": 0}, exception.Invalid),
        ({"image": {}}, exception.Invalid),
        ({"name": ""}, exception.Invalid),
        ({"flavor": "nope"}, exception.FlavorNotFound),
    ],
)
async def test_bad_create_requests_write_nothing(
    cloud: AllInOne, ctxt: RequestContext, kwargs: dict, error: type[Exception]
) -> None:
    args = {"name": "x", "flavor": "small", "image": IMAGE, **kwargs}
    with pytest.raises(error):
        await cloud.api.create_servers(ctxt, **args)
    assert await cloud.instances() == []


async def test_operations_follow_the_state_table(cloud: AllInOne, ctxt: RequestContext) -> None:
    (inst,) = await cloud.api.create_servers(ctxt, name="x", flavor="small", image=IMAGE)
    # Busy building: no power action yet.
    with pytest.raises(exception.Conflict):
        await cloud.api.stop_server(ctxt, inst.uuid)
    await cloud.wait_tasks([inst.uuid])
    with pytest.raises(exception.InvalidInstanceTransition):
        await cloud.api.start_server(ctxt, inst.uuid)  # it is running already
    with pytest.raises(exception.Invalid):
        await cloud.api.reboot_server(ctxt, inst.uuid, "GENTLE")
    await cloud.api.stop_server(ctxt, inst.uuid)
    with pytest.raises(exception.Conflict):
        await cloud.api.stop_server(ctxt, inst.uuid)  # one operation at a time
    await cloud.wait_tasks([inst.uuid])
    # Deleting twice is one delete.
    await cloud.api.delete_server(ctxt, inst.uuid)
    await cloud.api.delete_server(ctxt, inst.uuid)
    await cloud.wait_tasks([inst.uuid])
    async with cloud.db.reader() as conn:
        kinds = [(t["kind"], t["status"]) for t in await tasks.list_for_instance(conn, inst.uuid)]
    assert kinds == [
        ("build", TaskStatus.SUCCEEDED),
        ("stop", TaskStatus.SUCCEEDED),
        ("delete", TaskStatus.SUCCEEDED),
    ]
    with pytest.raises(exception.InstanceNotFound):
        await cloud.api.delete_server(ctxt, inst.uuid)
