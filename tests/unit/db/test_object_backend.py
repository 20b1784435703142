"""Remotable methods of the objects against a real database, through DBObjectBackend.

Each test runs twice: ``local`` calls the methods in this process (no
indirection API), ``loopback`` sends every call across msgpack through
LoopbackIndirectionAPI, runs it on the decoded copy against the database
and applies what comes back, as a compute host calling the conductor would.
tests/integration/db re-collects this module for PostgreSQL and MariaDB.
"""

from __future__ import annotations

import datetime as dt
import uuid as uuid_lib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.context import RequestContext
from nubes.db import object_backend
from nubes.db.api import actions, compute_nodes, flavors, instances, migrations, services
from nubes.db.engine import Database
from nubes.objects import backend, base, indirection
from nubes.objects.compute_node import ComputeNode
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.instance_action import InstanceAction, InstanceActionEvent
from nubes.objects.instance_fault import InstanceFault
from nubes.objects.migration import Migration
from nubes.objects.service import Service
from nubes.objects.states import PowerState, TaskState, VMState
from tests.unit.db import factories


@pytest.fixture(params=["local", "loopback"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "loopback":
        api = indirection.LoopbackIndirectionAPI()
        monkeypatch.setattr(base.VersionedObject, "indirection_api", api)
    yield str(request.param)


@pytest.fixture
async def objdb(db: Database, mode: str) -> AsyncIterator[Database]:
    """The test database, installed as this process's object backend."""
    object_backend.install(db)
    try:
        yield db
    finally:
        backend.uninstall()


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1")


def _calls() -> list[tuple[str, str, str]]:
    api = base.VersionedObject.indirection_api
    return list(api.calls) if isinstance(api, indirection.LoopbackIndirectionAPI) else []


async def _flavor(
    conn: AsyncConnection, *, extra_specs: dict[str, str], **values: Any
) -> dict[str, Any]:
    data = {"flavorid": f"f-{uuid_lib.uuid4().hex[:8]}", "memory_mb": 512, "vcpus": 1}
    data["name"] = f"flavor-{data['flavorid']}"
    data.update(values)
    return await flavors.create(conn, data, extra_specs=extra_specs)


async def _instance(db: Database, **values: Any) -> dict[str, Any]:
    async with db.writer() as conn:
        flavor = await _flavor(conn, extra_specs={"hw:cpu": "2"})
        snapshot = {k: flavor[k] for k in ("id", "flavorid", "name", "memory_mb", "vcpus")}
        snapshot["root_gb"] = flavor["root_gb"]
        snapshot["extra_specs"] = flavor["extra_specs"]
        return await factories.make_instance(conn, flavor=snapshot, **values)


# --- Instance ------------------------------------------------------------------


async def test_instance_get_by_uuid(objdb: Database, mode: str, ctx: RequestContext) -> None:
    row = await _instance(objdb, host="h1", metadata={"k": "v"})
    inst = await Instance.get_by_uuid(ctx, row["uuid"])
    assert isinstance(inst, Instance)
    assert inst.uuid == row["uuid"] and inst.id == row["id"]
    assert inst.host == "h1" and inst.vm_state == VMState.BUILDING
    assert inst.metadata == {"k": "v"}
    assert inst.flavor.extra_specs == {"hw:cpu": "2"} and inst.flavor.vcpus == 1
    assert inst.old_flavor is None and inst.deleted is False
    assert inst.created_at is not None and inst.created_at.tzinfo is dt.UTC
    assert not inst.obj_attr_is_set("fault")
    assert inst.obj_what_changed() == set()
    if mode == "loopback":
        assert _calls() == [("object_class_action_versions", "Instance", "get_by_uuid")]
    with pytest.raises(exception.InstanceNotFound):
        await Instance.get_by_uuid(ctx, "00000000-0000-0000-0000-000000000000")


async def test_instance_get_by_uuid_with_fault(
    objdb: Database, mode: str, ctx: RequestContext
) -> None:
    row = await _instance(objdb)
    inst = await Instance.get_by_uuid(ctx, row["uuid"], expected_attrs=["fault"])
    assert inst.fault is None
    await InstanceFault(instance_uuid=row["uuid"], code=500, message="first").create(ctx)
    await InstanceFault(instance_uuid=row["uuid"], code=409, message="second").create(ctx)
    inst = await Instance.get_by_uuid(ctx, row["uuid"], expected_attrs=["fault"])
    assert inst.fault is not None and inst.fault.message == "second" and inst.fault.code == 409
    assert inst.obj_what_changed() == set()
    with pytest.raises(exception.ValidationError):
        await Instance.get_by_uuid(ctx, row["uuid"], expected_attrs=["nope"])


async def test_instance_get_by_host(objdb: Database, mode: str, ctx: RequestContext) -> None:
    a = await _instance(objdb, host="h1")
    b = await _instance(objdb, host="h1")
    await _instance(objdb, host="h2")
    found = await Instance.get_by_host(ctx, "h1")
    assert [i.uuid for i in found] == [a["uuid"], b["uuid"]]
    assert all(isinstance(i, Instance) and not i.obj_what_changed() for i in found)
    assert await Instance.get_by_host(ctx, "nowhere", allow_stale=True) == []


async def test_instance_save_writes_changes_and_takes_the_row_back(
    objdb: Database, mode: str, ctx: RequestContext
) -> None:
    row = await _instance(objdb, task_state="spawning")
    inst = await Instance.get_by_uuid(ctx, row["uuid"])
    assert inst.updated_at is None
    inst.vm_state = VMState.ACTIVE
    inst.task_state = None
    inst.power_state = PowerState.RUNNING
    inst.launched_at = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    inst.metadata["added"] = "yes"
    await inst.save(ctx, expected_task_state=TaskState.SPAWNING)
    assert inst.obj_what_changed() == set()
    assert inst.updated_at is not None, "updated_at comes back from the database"
    async with objdb.reader() as conn:
        stored = await instances.get_by_uuid(conn, row["uuid"])
    assert stored["vm_state"] == "active" and stored["task_state"] is None
    assert stored["power_state"] == 1 and stored["metadata"] == {"added": "yes"}
    assert stored["launched_at"] == inst.launched_at
    assert stored["updated_at"] == inst.updated_at
    assert stored["display_name"] == row["display_name"]
    if mode == "loopback":
        assert _calls()[-1] == ("object_action", "Instance", "save")


async def test_instance_save_with_nothing_changed_writes_nothing(
    objdb: Database, mode: str, ctx: RequestContext
) -> None:
    row = await _instance(objdb)
    inst = await Instance.get_by_uuid(ctx, row["uuid"])
    await inst.save(ctx)
    async with objdb.reader() as conn:
        assert (await instances.get_by_uuid(conn, row["uuid"]))["updated_at"] is None


async def test_instance_save_checks_expected_states_without_changes(
    objdb: Database, mode: str, ctx: RequestContext
) -> None:
    row = await _instance(objdb)
    inst = await Instance.get_by_uuid(ctx, row["uuid"])
    await inst.save(ctx, expected_vm_state="building", expected_task_state=[None])
    with pytest.raises(exception.InstanceUpdateConflict):
        await inst.save(ctx, expected_vm_state=["active", "stopped"])


async def test_instance_save_conflict_never_overwrites(
    objdb: Database, mode: str, ctx: RequestContext
) -> None:
    row = await _instance(objdb, task_state="spawning")
    inst = await Instance.get_by_uuid(ctx, row["uuid"])
    # Someone else moves the instance on first.
    async with objdb.writer() as conn:
        await instances.update(conn, row["uuid"], {"task_state": "deleting"})
    inst.task_state = None
    inst.vm_state = VMState.ACTIVE
    with pytest.raises(exception.InstanceUpdateConflict) as err:
        await inst.save(ctx, expected_task_state=[TaskState.SPAWNING])
    assert err.value.kwargs["expected"] == {"task_state": ["spawning"]}
    assert err.value.kwargs["actual"] == {"task_state": "deleting"}
    async with objdb.reader() as conn:
        stored = await instances.get_by_uuid(conn, row["uuid"])
    assert stored["task_state"] == "deleting" and stored["vm_state"] == "building"
    # The local changes are kept, to retry or give up on.
    assert inst.obj_what_changed() == {"task_state", "vm_state"}
    # Expecting no task at all fails the same way.
    with pytest.raises(exception.InstanceUpdateConflict):
        await inst.save(ctx, expected_task_state=[None])
    # A list with the current state wins.
    await inst.save(ctx, expected_task_state=[None, "deleting"])
    assert inst.task_state is None and inst.obj_what_changed() == set()


async def test_instance_save_of_a_deleted_instance(
    objdb: Database, mode: str, ctx: RequestContext
) -> None:
    row = await _instance(objdb)
    inst = await Instance.get_by_uuid(ctx, row["uuid"])
    async with objdb.writer() as conn:
        await instances.destroy(conn, row["uuid"])
    inst.progress = 50
    with pytest.raises(exception.InstanceNotFound):
        await inst.save(ctx)


async def test_instance_save_flavors_as_snapshots(
    objdb: Database, mode: str, ctx: RequestContext
) -> None:
    row = await _instance(objdb)
    inst = await Instance.get_by_uuid(ctx, row["uuid"])
    new = inst.flavor.obj_clone()
    new.name = "bigger"
    new.vcpus = 4
    inst.new_flavor = new
    inst.old_flavor = inst.flavor.obj_clone()
    inst.flavor.extra_specs["hw:mem"] = "1"
    await inst.save(ctx)
    assert inst.obj_what_changed() == set() and inst.flavor.obj_what_changed() == set()
    async with objdb.reader() as conn:
        stored = await instances.get_by_uuid(conn, row["uuid"])
    assert stored["new_flavor"]["name"] == "bigger" and stored["new_flavor"]["vcpus"] == 4
    assert stored["old_flavor"]["extra_specs"] == {"hw:cpu": "2"}
    assert stored["flavor"]["extra_specs"] == {"hw:cpu": "2", "hw:mem": "1"}
    again = await Instance.get_by_uuid(ctx, row["uuid"])
    assert again.new_flavor is not None and again.new_flavor.vcpus == 4
    assert again.flavor.extra_specs == {"hw:cpu": "2", "hw:mem": "1"}
    inst.new_flavor = None
    await inst.save(ctx)
    async with objdb.reader() as conn:
        assert (await instances.get_by_uuid(conn, row["uuid"]))["new_flavor"] is None


async def test_instance_refresh(objdb: Database, mode: str, ctx: RequestContext) -> None:
    row = await _instance(objdb)
    inst = await Instance.get_by_uuid(ctx, row["uuid"])
    async with objdb.writer() as conn:
        await instances.update(conn, row["uuid"], {"host": "h9", "progress": 30})
    inst.display_name = "local edit"
    await inst.refresh(ctx)
    assert inst.host == "h9" and inst.progress == 30
    assert inst.display_name == row["display_name"]
    assert inst.obj_what_changed() == set()


# --- Flavor --------------------------------------------------------------------


async def test_flavor_getters(objdb: Database, mode: str, ctx: RequestContext) -> None:
    async with objdb.writer() as conn:
        row = await _flavor(conn, extra_specs={"a": "1"}, root_gb=5)
    by_id = await Flavor.get_by_id(ctx, row["id"])
    by_flavorid = await Flavor.get_by_flavor_id(ctx, row["flavorid"])
    for flavor in (by_id, by_flavorid):
        assert isinstance(flavor, Flavor)
        assert flavor.flavorid == row["flavorid"] and flavor.root_gb == 5
        assert flavor.extra_specs == {"a": "1"} and flavor.obj_what_changed() == set()
    with pytest.raises(exception.FlavorNotFound):
        await Flavor.get_by_flavor_id(ctx, "missing")


# --- InstanceFault -------------------------------------------------------------


async def test_instance_fault_create(objdb: Database, mode: str, ctx: RequestContext) -> None:
    row = await _instance(objdb)
    fault = InstanceFault(
        instance_uuid=row["uuid"], code=500, message="x" * 300, details="tb", host="h1"
    )
    await fault.create(ctx)
    assert fault.id > 0 and fault.created_at is not None and fault.obj_what_changed() == set()
    assert fault.message == "x" * 255
    async with objdb.reader() as conn:
        stored = await instances.faults_get_by_instance_uuids(conn, [row["uuid"]])
    assert [(f["id"], f["code"], f["details"]) for f in stored[row["uuid"]]] == [
        (fault.id, 500, "tb")
    ]
    with pytest.raises(exception.ObjectActionError):
        await fault.create(ctx)


# --- ComputeNode ---------------------------------------------------------------


def _node(**values: Any) -> ComputeNode:
    data: dict[str, Any] = {
        "host": "h1",
        "hypervisor_hostname": "n1",
        "hypervisor_type": "fake",
        "vcpus": 8,
        "memory_mb": 4096,
        "local_gb": 100,
        "cpu_info": '{"arch": "x86_64", "topology": {"cores": 4}}',
    }
    data.update(values)
    return ComputeNode(**data)


async def test_compute_node_create_and_get(objdb: Database, mode: str, ctx: RequestContext) -> None:
    node = _node()
    await node.create(ctx)
    assert node.id > 0 and node.uuid and node.generation == 0
    assert node.cpu_allocation_ratio == 16.0, "the database's default ratio comes back"
    assert node.obj_what_changed() == set()
    async with objdb.reader() as conn:
        stored = await compute_nodes.get_by_id(conn, node.id)
    assert stored["cpu_info"] == {"arch": "x86_64", "topology": {"cores": 4}}
    got = await ComputeNode.get_by_host_and_nodename(ctx, "h1", "n1")
    assert got.id == node.id and got.uuid == node.uuid and got.vcpus == 8
    assert got.cpu_info is not None and '"cores": 4' in got.cpu_info
    assert (await ComputeNode.get_by_uuid(ctx, node.uuid)).id == node.id
    with pytest.raises(exception.ComputeHostNotFound):
        await ComputeNode.get_by_host_and_nodename(ctx, "h1", "other")
    with pytest.raises(exception.ObjectActionError):
        await node.create(ctx)


async def test_compute_node_save_writes_only_changes(
    objdb: Database, mode: str, ctx: RequestContext
) -> None:
    node = _node()
    await node.create(ctx)
    # A scheduler claim meanwhile changes usage behind the object's back.
    async with objdb.writer() as conn:
        claim = await compute_nodes.claim(conn, node.id, "c1", vcpus=2, memory_mb=512)
    assert claim.ok
    node.metrics = {"cpu.percent": 12.5}
    node.running_vms = 1
    await node.save(ctx)
    assert node.generation == 2 and node.obj_what_changed() == set()
    assert node.vcpus_used == 2, "the claimed usage came back, not overwritten"
    async with objdb.reader() as conn:
        stored = await compute_nodes.get_by_id(conn, node.id)
    assert stored["metrics"] == {"cpu.percent": 12.5} and stored["running_vms"] == 1
    assert stored["vcpus_used"] == 2 and stored["memory_mb_used"] == 512


# --- Service -------------------------------------------------------------------


async def test_service_create_get_save(objdb: Database, mode: str, ctx: RequestContext) -> None:
    service = Service(host="h1", binary="nubes-compute", topic="compute", version=3)
    await service.create(ctx)
    assert service.id > 0 and service.uuid and service.obj_what_changed() == set()
    assert service.last_seen_up is None and service.report_count == 0
    got = await Service.get_by_host_and_binary(ctx, "h1", "nubes-compute")
    assert got.id == service.id and got.version == 3 and got.last_seen_up is None
    got.version = 4
    got.disabled = True
    got.disabled_reason = "maintenance"
    await got.save(ctx)
    assert got.updated_at is not None and got.obj_what_changed() == set()
    async with objdb.reader() as conn:
        stored = await services.get_by_id(conn, service.id)
    assert stored["version"] == 4 and stored["disabled"] is True
    assert stored["disabled_reason"] == "maintenance"
    with pytest.raises(exception.ServiceNotFound):
        await Service.get_by_host_and_binary(ctx, "h1", "nubes-other")


async def test_service_heartbeat(objdb: Database, mode: str, ctx: RequestContext) -> None:
    service = Service(host="h1", binary="nubes-compute")
    await service.create(ctx)
    await service.heartbeat(ctx)
    first = service.last_seen_up
    assert first is not None and service.obj_what_changed() == set()
    await service.heartbeat(ctx)
    assert service.last_seen_up is not None and service.last_seen_up >= first
    got = await Service.get_by_host_and_binary(ctx, "h1", "nubes-compute")
    assert got.last_seen_up == service.last_seen_up and got.report_count == 2
    assert got.updated_at is None, "a heartbeat never rewrites the service row"
    assert got.is_up(60)


async def test_service_get_all(objdb: Database, mode: str, ctx: RequestContext) -> None:
    a = Service(host="h1", binary="nubes-compute")
    b = Service(host="c1", binary="nubes-conductor")
    await a.create(ctx)
    await b.create(ctx)
    await a.heartbeat(ctx)
    everything = await Service.get_all(ctx)
    assert [(s.host, s.binary) for s in everything] == [
        ("h1", "nubes-compute"),
        ("c1", "nubes-conductor"),
    ]
    assert everything[0].last_seen_up is not None and everything[0].report_count == 1
    assert everything[1].last_seen_up is None and everything[1].report_count == 0
    computes = await Service.get_all(ctx, binary="nubes-compute")
    assert [s.id for s in computes] == [a.id]


# --- Migration -----------------------------------------------------------------


async def test_migration_create_get_save(objdb: Database, mode: str, ctx: RequestContext) -> None:
    row = await _instance(objdb, host="src")
    migration = Migration(
        instance_uuid=row["uuid"],
        source_compute="src",
        dest_compute="dst",
        source_node="n-src",
        dest_node="n-dst",
        migration_type="resize",
        status="pre-migrating",
    )
    await migration.create(ctx)
    assert migration.id > 0 and migration.uuid and migration.obj_what_changed() == set()
    got = await Migration.get_by_id(ctx, migration.id)
    assert got.uuid == migration.uuid and got.status == "pre-migrating" and got.hidden is False
    got.status = "migrating"
    got.memory_total = 1 << 33
    await got.save(ctx)
    assert got.obj_what_changed() == set() and got.updated_at is not None
    async with objdb.reader() as conn:
        stored = await migrations.get_by_id(conn, migration.id)
    assert stored["status"] == "migrating" and stored["memory_total"] == 1 << 33
    with pytest.raises(exception.MigrationNotFound):
        await Migration.get_by_id(ctx, 999999)


# --- InstanceAction and InstanceActionEvent -------------------------------------


async def test_instance_actions_and_events(objdb: Database, mode: str, ctx: RequestContext) -> None:
    row = await _instance(objdb)
    uuid = row["uuid"]
    action = await InstanceAction.action_start(ctx, uuid, "reboot")
    assert action.request_id == ctx.request_id and action.user_id == "u1"
    assert action.start_time is not None and action.finish_time is None
    event = await InstanceActionEvent.event_start(ctx, uuid, "compute_reboot", host="h1")
    assert event.action_id == action.id and event.host == "h1" and event.result is None
    done = await InstanceActionEvent.event_finish(
        ctx, uuid, "compute_reboot", "Error", traceback="Traceback ..."
    )
    assert done.id == event.id and done.result == "Error" and done.finish_time is not None
    found = await InstanceAction.get_by_request_id(ctx, uuid, ctx.request_id)
    assert found.id == action.id and found.message == "Error"
    finished = await InstanceAction.action_finish(ctx, uuid)
    assert finished.finish_time is not None
    other = RequestContext(user_id="u2", project_id="p1")
    await InstanceAction.action_start(other, uuid, "stop")
    listed = await InstanceAction.get_by_instance_uuid(ctx, uuid)
    assert [a.action for a in listed] == ["stop", "reboot"]
    events = await InstanceActionEvent.get_by_action(ctx, action.id)
    assert [(e.event, e.traceback) for e in events] == [("compute_reboot", "Traceback ...")]
    async with objdb.reader() as conn:
        stored = await actions.events_get(conn, action.id)
    assert stored[0]["result"] == "Error"
    with pytest.raises(exception.InstanceActionNotFound):
        await InstanceActionEvent.event_start(ctx, uuid, "x", request_id="req-none")


# --- without a backend ---------------------------------------------------------


async def test_without_a_backend_remotable_methods_refuse(
    db: Database, ctx: RequestContext
) -> None:
    assert base.VersionedObject.indirection_api is None
    with pytest.raises(exception.DatabaseAccessForbidden) as err:
        await Instance.get_by_uuid(ctx, "00000000-0000-0000-0000-000000000000")
    assert "no database access" in str(err.value)
    assert "conductor" in str(err.value)
