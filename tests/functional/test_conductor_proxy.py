"""Compute hosts' object calls through a real conductor (memory:// + SQLite)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nubes import exception
from nubes.context import RequestContext
from nubes.db.api import migrations, tasks
from nubes.objects import codec
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState, TaskState, VMState
from nubes.testing.cloud import Cloud
from tests.unit.db import factories


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.start(f"sqlite:///{tmp_path / 'proxy.sqlite'}")
    yield c
    await c.stop()


async def _instance(cloud: Cloud, **values: Any) -> dict[str, Any]:
    async with cloud.db.writer() as conn:
        return await factories.make_instance(conn, **values)


async def test_host_saves_its_instance_and_conflicts_are_typed(cloud: Cloud):
    row = await _instance(cloud, host="h1", node="n1", vm_state="active", task_state="powering-off")
    h1 = await cloud.host("h1")
    ctxt = RequestContext()
    inst = await h1.run(Instance.get_by_uuid, ctxt, row["uuid"])
    inst.power_state = PowerState.SHUTDOWN
    inst.vm_state = VMState.STOPPED
    inst.task_state = None
    await h1.run(inst.save, ctxt, expected_task_state=[TaskState.POWERING_OFF])
    assert inst.obj_what_changed() == set()
    saved = await Instance.get_by_uuid(ctxt, row["uuid"])
    assert saved.vm_state == VMState.STOPPED and saved.power_state == PowerState.SHUTDOWN
    # A second writer expecting the old task state loses, and says so.
    stale = await h1.run(Instance.get_by_uuid, ctxt, row["uuid"])
    stale.progress = 10
    with pytest.raises(exception.InstanceUpdateConflict):
        await h1.run(stale.save, ctxt, expected_task_state=[TaskState.POWERING_OFF])


async def test_refusals_are_audited(cloud: Cloud, caplog):
    row = await _instance(cloud, host="h2", node="n2")
    h1 = await cloud.host("h1")
    with caplog.at_level(logging.WARNING, logger="nubes.audit"):
        with pytest.raises(exception.Forbidden):
            await h1.run(Instance.get_by_uuid, RequestContext(), row["uuid"])
    (line,) = [r.getMessage() for r in caplog.records if r.name == "nubes.audit"]
    assert "caller=compute.h1" in line
    assert "object=Instance method=get_by_uuid" in line


async def test_destination_of_a_migration_sees_the_instance_until_it_ends(cloud: Cloud):
    row = await _instance(cloud, host="src", node="n-src")
    async with cloud.db.writer() as conn:
        mig = await migrations.create(
            conn,
            {
                "instance_uuid": row["uuid"],
                "source_compute": "src",
                "dest_compute": "dst",
                "migration_type": "migration",
                "status": "migrating",
            },
        )
    dst = await cloud.host("dst")
    ctxt = RequestContext()
    assert (await dst.run(Instance.get_by_uuid, ctxt, row["uuid"])).uuid == row["uuid"]
    async with cloud.db.writer() as conn:
        await migrations.update(conn, mig["id"], {"status": "confirmed"})
    with pytest.raises(exception.Forbidden):
        await dst.run(Instance.get_by_uuid, ctxt, row["uuid"])


async def test_host_may_set_host_and_node_only_to_its_tasks_destination(cloud: Cloud):
    row = await _instance(cloud, host="src", node="n-src", vm_state="active")
    async with cloud.db.writer() as conn:
        await migrations.create(
            conn,
            {
                "instance_uuid": row["uuid"],
                "source_compute": "src",
                "dest_compute": "dst",
                "migration_type": "migration",
                "status": "migrating",
            },
        )
        await tasks.create(
            conn,
            kind="migrate",
            instance_uuid=row["uuid"],
            payload={"dest_host": "dst", "dest_node": "n-dst"},
        )
    ctxt = RequestContext()
    src, dst = await cloud.host("src"), await cloud.host("dst")
    # The source may not hand the instance anywhere itself.
    inst = await src.run(Instance.get_by_uuid, ctxt, row["uuid"])
    inst.host = "dst"
    with pytest.raises(exception.Forbidden):
        await src.run(inst.save, ctxt)
    # The destination may take it, but only to the node the task names.
    inst = await dst.run(Instance.get_by_uuid, ctxt, row["uuid"])
    inst.host, inst.node = "dst", "n-other"
    with pytest.raises(exception.Forbidden):
        await dst.run(inst.save, ctxt)
    inst = await dst.run(Instance.get_by_uuid, ctxt, row["uuid"])
    inst.host, inst.node = "dst", "n-dst"
    await dst.run(inst.save, ctxt)
    assert (await Instance.get_by_uuid(ctxt, row["uuid"])).host == "dst"


async def test_backport_through_the_conductor(cloud: Cloud):
    row = await _instance(cloud, host="h1", node="n1")
    h1 = await cloud.host("h1")
    ctxt = RequestContext()
    inst = await h1.run(Instance.get_by_uuid, ctxt, row["uuid"])
    primitive = codec.decode_builtins(codec.encode(inst))
    older = await h1.conductor.object_backport_versions(ctxt, primitive, {"Instance": "1.0"})
    assert older["nubes_object.name"] == "Instance"
    assert older["nubes_object.version"] == "1.0"
    assert older["nubes_object.data"]["uuid"] == row["uuid"]
    with pytest.raises(exception.NubesError):
        await h1.conductor.object_backport_versions(ctxt, {"junk": 1}, {"Instance": "1.0"})
