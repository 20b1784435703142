"""A compromised compute host attacks through the conductor, and gets nowhere.

Host A's identity (its own bus identity, verified by the transport) tries
every forbidden thing against host B's data — and against its own data where
only the field or the flag is forbidden — over memory:// and over RabbitMQ.
Every attempt must be refused, and the database must be byte-for-byte what
it was before (SQL dumps compared). The suite prints how many attacks it
tried. Positive controls at the end show the same host can do what it is
allowed to, so the refusals are not an artefact of a broken setup.
"""

from __future__ import annotations

import datetime
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nubes import config, exception
from nubes.context import RequestContext
from nubes.db.api import migrations, tasks
from nubes.injected_files import InjectedFiles
from nubes.network.resources import NetworkService
from nubes.notifications.objects import InstanceActionPayload, ServiceStatusPayload
from nubes.notifications.relay import MAX_BATCH, NotificationBatch, RelayedNotification
from nubes.objects.compute_node import ComputeNode
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.instance_action import InstanceAction, InstanceActionEvent
from nubes.objects.instance_fault import InstanceFault
from nubes.objects.instance_metadata import InstanceMetadata
from nubes.objects.migration import Migration
from nubes.objects.serializer import ObjectSerializer
from nubes.objects.service import Service
from nubes.objects.states import PowerState
from nubes.rpc.client import RPCClient
from nubes.rpc.transport import Target
from nubes.testing.cloud import Cloud, Host
from tests.unit.db import factories

#: Host names (and so broker users ``compute.<host>``) unique to this run: broker
#: users are server-wide, and another run on the same broker deletes its own.
_RUN = uuid.uuid4().hex[:6]
A, B, C = f"host-a-{_RUN}", f"host-b-{_RUN}", f"host-c-{_RUN}"
Attack = Callable[[RequestContext], Awaitable[Any]]


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


async def _seed(cloud: Cloud) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    async with cloud.db.writer() as conn:
        for host in (A, B, C):
            svc = await factories.make_service(conn, host=host, binary="compute")
            node = await factories.make_node(conn, host=host, hypervisor_hostname=f"node-{host}")
            inst = await factories.make_instance(
                conn, host=host, node=f"node-{host}", vm_state="active", power_state=1
            )
            ids[host] = {"service": svc, "node": node, "instance": inst}
        ids["flavor"] = await factories.make_flavor(conn)
        # B's instance is migrating to C: neither concerns A.
        ids["migration"] = await migrations.create(
            conn,
            {
                "instance_uuid": ids[B]["instance"]["uuid"],
                "source_compute": B,
                "dest_compute": C,
                "source_node": f"node-{B}",
                "dest_node": f"node-{C}",
                "migration_type": "migration",
                "status": "migrating",
            },
        )
        # Evacuations: B's (done) is none of A's business; A's own are of a
        # kind, or in a status, it may not complete; one of A's it may.
        evacuated = {}
        for name, source, kind, status in (
            ("b_done", B, "evacuation", "done"),
            ("a_accepted", A, "evacuation", "accepted"),
            ("a_completed", A, "evacuation", "completed"),
            ("a_not_evacuation", A, "migration", "done"),
            ("a_done", A, "evacuation", "done"),
        ):
            moved = await factories.make_instance(conn, host=C, node=f"node-{C}", vm_state="active")
            evacuated[name] = await migrations.create(
                conn,
                {
                    "instance_uuid": moved["uuid"],
                    "source_compute": source,
                    "dest_compute": C,
                    "migration_type": kind,
                    "status": status,
                },
            )
        ids["evacuations"] = evacuated
        # Live migrations: A may report the copy progress of the one it is the
        # source of while it runs, and nothing else (docs/authorization.md).
        live = {}
        for name, source, dest, status in (
            ("a_source", A, C, "running"),
            ("a_dest", C, A, "running"),
            ("a_source_over", A, C, "completed"),
        ):
            moving = await factories.make_instance(
                conn, host=C, node=f"node-{C}", vm_state="active"
            )
            live[name] = await migrations.create(
                conn,
                {
                    "instance_uuid": moving["uuid"],
                    "source_compute": source,
                    "dest_compute": dest,
                    "migration_type": "live-migration",
                    "status": status,
                },
            )
        ids["live"] = live
        # A conductor task moving B's instance to C.
        await tasks.create(
            conn,
            kind="migrate",
            instance_uuid=ids[B]["instance"]["uuid"],
            payload={"dest_host": C, "dest_node": f"node-{C}"},
        )
        # A name A registered first (a node name proves nothing) and B's
        # instance on B's node of that name: still B's, not A's.
        await factories.make_node(conn, host=A, hypervisor_hostname="squatted")
        ids["squatted"] = await factories.make_instance(
            conn, host=B, node="squatted", vm_state="active"
        )
    ids["ports"] = await _seed_ports(cloud, ids)
    return ids


async def _seed_ports(cloud: Cloud, ids: dict[str, Any]) -> dict[str, Any]:
    """Addresses on one network: A's instance's (bound to A), B's instance's
    (bound to B), B's instance's port bound to A (a stale or forged binding:
    the instance is still not A's) and a port of no instance."""
    admin = RequestContext(user_id="admin", project_id="p1", roles=["admin", "member"])
    service = NetworkService(cloud.db, config.new_config())
    net = await service.create_network(admin, {"name": "net"})
    await service.create_subnet(admin, {"network_id": net["id"], "cidr": "10.5.0.0/24"})
    found: dict[str, Any] = {"network": net["id"]}
    for name, device, host, address in (
        ("a", ids[A]["instance"]["uuid"], A, "10.5.0.10"),
        ("b", ids[B]["instance"]["uuid"], B, "10.5.0.11"),
        ("b_bound_to_a", ids[B]["instance"]["uuid"], A, "10.5.0.12"),
        ("loose", "", A, "10.5.0.13"),
    ):
        await service.create_port(
            admin,
            {
                "network_id": net["id"],
                "device_id": device,
                "device_owner": "compute:nova" if device else "",
                "binding:host_id": host,
                "fixed_ips": [{"ip_address": address}],
            },
        )
        found[name] = address
    return found


def _attacks(ids: dict[str, Any]) -> dict[str, Attack]:
    """Every forbidden call, by name. Each builds its own objects."""
    a, b = ids[A], ids[B]
    b_uuid = b["instance"]["uuid"]
    addresses = ids["ports"]
    net_id = addresses["network"]
    a_uuid = a["instance"]["uuid"]

    def own_instance(**changes: Any) -> Instance:
        inst = Instance(uuid=a_uuid)
        inst.obj_reset_changes()
        for key, value in changes.items():
            setattr(inst, key, value)
        return inst

    def other_instance(**changes: Any) -> Instance:
        inst = Instance(uuid=b_uuid)
        inst.obj_reset_changes()
        for key, value in changes.items():
            setattr(inst, key, value)
        return inst

    def node(row: dict[str, Any], **changes: Any) -> ComputeNode:
        cn = ComputeNode(id=row["id"], uuid=row["uuid"], host=row["host"])
        cn.obj_reset_changes()
        for key, value in changes.items():
            setattr(cn, key, value)
        return cn

    def service(row: dict[str, Any], **changes: Any) -> Service:
        svc = Service(id=row["id"], host=row["host"], binary="compute")
        svc.obj_reset_changes()
        for key, value in changes.items():
            setattr(svc, key, value)
        return svc

    mig = ids["migration"]

    def migration(**changes: Any) -> Migration:
        m = Migration(id=mig["id"])
        m.obj_reset_changes()
        for key, value in changes.items():
            setattr(m, key, value)
        return m

    evacuations = ids["evacuations"]
    live = ids["live"]

    def live_migration(name: str, **changes: Any) -> Migration:
        m = Migration(id=live[name]["id"])
        m.obj_reset_changes()
        for key, value in changes.items():
            setattr(m, key, value)
        return m

    def evacuation(name: str, **changes: Any) -> Migration:
        m = Migration(id=evacuations[name]["id"])
        m.obj_reset_changes()
        for key, value in changes.items():
            setattr(m, key, value)
        return m

    def new_node(c: RequestContext, **values: Any) -> Any:
        values = {"hypervisor_hostname": "a-second-node", "vcpus": 1, **values}
        values = {"memory_mb": 1, "local_gb": 1, **values}
        return ComputeNode(host=A, **values).create(c)

    now = datetime.datetime.now(datetime.UTC)
    attacks: dict[str, Attack] = {
        # Reading what is not its own.
        "read another host's instance": lambda c: Instance.get_by_uuid(c, b_uuid),
        # The metadata service (issue 14): only its own guests', by their ports.
        "read another host's instance's metadata": lambda c: InstanceMetadata.get_by_instance_uuid(
            c, b_uuid
        ),
        "read metadata by another host's port address": lambda c: InstanceMetadata.get_by_address(
            c, net_id, addresses["b"]
        ),
        "read metadata by a port bound here of another host's instance": lambda c: (
            InstanceMetadata.get_by_address(c, net_id, addresses["b_bound_to_a"])
        ),
        "read metadata by an address of no instance": lambda c: InstanceMetadata.get_by_address(
            c, net_id, addresses["loose"]
        ),
        "read metadata by an address on no port": lambda c: InstanceMetadata.get_by_address(
            c, net_id, "10.5.0.99"
        ),
        "read metadata by its own address on another network": lambda c: (
            InstanceMetadata.get_by_address(c, str(uuid.uuid4()), addresses["a"])
        ),
        # A guest's password POST (os-server-password): only for its own guests.
        "set the password of another host's guest": lambda c: InstanceMetadata.set_password(
            c, net_id, addresses["b"], "stolen"
        ),
        "set the password by a port bound here of another host's instance": lambda c: (
            InstanceMetadata.set_password(c, net_id, addresses["b_bound_to_a"], "stolen")
        ),
        "list another host's instances": lambda c: Instance.get_by_host(c, B),
        "refresh another host's instance": lambda c: other_instance().refresh(c),
        "read another host's compute node": lambda c: ComputeNode.get_by_host_and_nodename(
            c, B, f"node-{B}"
        ),
        "read another host's node by uuid": lambda c: ComputeNode.get_by_uuid(c, b["node"]["uuid"]),
        "read another host's service": lambda c: Service.get_by_host_and_binary(c, B, "compute"),
        "read a controller's service": lambda c: Service.get_by_host_and_binary(c, A, "conductor"),
        "list every service": lambda c: Service.get_all(c),
        "read a migration it is not part of": lambda c: Migration.get_by_id(c, mig["id"]),
        "read a nonexistent instance": lambda c: Instance.get_by_uuid(c, str(uuid.uuid4())),
        # Writing another host's rows.
        "power off another host's instance": lambda c: other_instance(
            power_state=PowerState.SHUTDOWN
        ).save(c),
        "steal another host's instance": lambda c: other_instance(host=A, node=f"node-{A}").save(c),
        "take over a migrating instance as destination": lambda c: other_instance(host=A).save(c),
        "report usage for another host's node": lambda c: node(b["node"], vcpus_used=64).save(c),
        "create a compute node for another host": lambda c: ComputeNode(
            host=B, hypervisor_hostname="evil", vcpus=1, memory_mb=1, local_gb=1
        ).create(c),
        "create a service for another host": lambda c: Service(
            host=B, binary="compute", topic="compute"
        ).create(c),
        "create a conductor service": lambda c: Service(
            host=A, binary="conductor", topic="conductor"
        ).create(c),
        "heartbeat for another host": lambda c: service(b["service"]).heartbeat(c),
        "save another host's service": lambda c: service(b["service"], version=99).save(c),
        "save a migration it is not part of": lambda c: migration(status="error").save(c),
        "fault on another host's instance": lambda c: InstanceFault(
            instance_uuid=b_uuid, code=500, message="pwned"
        ).create(c),
        "event on another host's instance": lambda c: InstanceActionEvent.event_start(
            c, b_uuid, "compute_evil"
        ),
        "finish an event on another host's instance": lambda c: InstanceActionEvent.event_finish(
            c, b_uuid, "compute_evil"
        ),
        # The evacuation clean-up: only done -> completed, of its own evacuations.
        "list another host's evacuations": lambda c: Migration.get_evacuations_from_host(c, B),
        "complete another host's evacuation": lambda c: evacuation("b_done").complete_evacuation(c),
        "complete its evacuation still in progress": lambda c: evacuation(
            "a_accepted"
        ).complete_evacuation(c),
        "complete an evacuation twice": lambda c: evacuation("a_completed").complete_evacuation(c),
        "complete a migration that is no evacuation": lambda c: evacuation(
            "a_not_evacuation"
        ).complete_evacuation(c),
        "complete an evacuation while changing it": lambda c: evacuation(
            "a_done", dest_compute=A
        ).complete_evacuation(c),
        "complete a migration that does not exist": lambda c: Migration(
            id=999999
        ).complete_evacuation(c),
        # Live migration progress: the source's counters, nothing more.
        "set the status of a migration it is the source of": lambda c: live_migration(
            "a_source", status="completed"
        ).save(c),
        "report progress while setting the status": lambda c: live_migration(
            "a_source", memory_processed=1, status="cancelled"
        ).save(c),
        "move the destination of a migration it is the source of": lambda c: live_migration(
            "a_source", dest_compute=A
        ).save(c),
        "report progress of a migration it is the destination of": lambda c: live_migration(
            "a_dest", memory_processed=1
        ).save(c),
        "report progress of a migration that is over": lambda c: live_migration(
            "a_source_over", memory_processed=1
        ).save(c),
        "report progress of a migration it is not part of": lambda c: migration(
            memory_processed=1
        ).save(c),
        # Controller-only calls.
        "start an instance action": lambda c: InstanceAction.action_start(c, a_uuid, "reboot"),
        "create a migration": lambda c: Migration(
            instance_uuid=a_uuid, source_compute=A, dest_compute=B, status="pre-migrating"
        ).create(c),
        # Its own rows, forbidden fields and flags.
        "move its own instance without a task": lambda c: own_instance(host=B).save(c),
        "change its own instance's node without a task": lambda c: own_instance(
            node=f"node-{B}"
        ).save(c),
        "un-force-down itself": lambda c: service(a["service"], forced_down=False).save(c),
        "enable itself": lambda c: service(a["service"], disabled=False).save(c),
        "set its disabled reason": lambda c: service(a["service"], disabled_reason="x").save(c),
        "create itself disabled": lambda c: Service(
            host=A, binary="compute", topic="compute", disabled=True
        ).create(c),
        "rename its own service's host": lambda c: service(a["service"], host=B).save(c),
        "move its own node to another host": lambda c: node(a["node"], host=B).save(c),
        "rewrite its own node's claimed usage": lambda c: node(a["node"], vcpus_used=0).save(c),
        "raise its own allocation ratio": lambda c: node(a["node"], cpu_allocation_ratio=64.0).save(
            c
        ),
        # Compute nodes bound to their host (issue 12).
        "take over another host's node name": lambda c: new_node(
            c, hypervisor_hostname=f"node-{B}"
        ),
        "reuse another host's node uuid": lambda c: new_node(c, uuid=b["node"]["uuid"]),
        "create a node with its own allocation ratio": lambda c: new_node(
            c, cpu_allocation_ratio=1000.0
        ),
        "create a node with negative usage": lambda c: new_node(c, vcpus_used=-1000),
        "create a phantom giant node": lambda c: new_node(c, vcpus=100000),
        "create a node with negative memory": lambda c: new_node(c, memory_mb=-1),
        "link a new node to another host's service": lambda c: new_node(
            c, service_id=b["service"]["id"]
        ),
        "report giant capacity for its own node": lambda c: node(a["node"], vcpus=100000).save(c),
        "report negative disk for its own node": lambda c: node(a["node"], local_gb=-5).save(c),
        "read another host's instance on a node name it squatted": lambda c: Instance.get_by_uuid(
            c, ids["squatted"]["uuid"]
        ),
        "fault on an instance on a node name it squatted": lambda c: InstanceFault(
            instance_uuid=ids["squatted"]["uuid"], code=500, message="pwned"
        ).create(c),
        # Unbounded or forged within the rules.
        "fault in another host's name": lambda c: InstanceFault(
            instance_uuid=a_uuid, code=500, message="x", host=B
        ).create(c),
        "4 MB fault message": lambda c: InstanceFault(
            instance_uuid=a_uuid, code=500, message="x" * (4 << 20)
        ).create(c),
        "1 MB fault details": lambda c: InstanceFault(
            instance_uuid=a_uuid, code=500, message="x", details="x" * (1 << 20)
        ).create(c),
        "1 MB metrics dict": lambda c: node(a["node"], metrics={"k": "x" * (1 << 20)}).save(c),
        "100k-key stats dict": lambda c: node(
            a["node"], stats={str(i): i for i in range(100000)}
        ).save(c),
        "1 MB hypervisor type": lambda c: node(a["node"], hypervisor_type="x" * (1 << 20)).save(c),
        "1 MB event traceback": lambda c: InstanceActionEvent.event_finish(
            c, a_uuid, "compute_x", traceback="x" * (1 << 20)
        ),
    }
    for field_name, value in {
        "project_id": "other-project",
        "user_id": "other-user",
        "display_name": "renamed",
        "image_ref": "evil-image",
        "locked": True,
        "metadata": {"evil": "yes"},
        "memory_mb": 1,
        "vcpus": 64,
        "availability_zone": "elsewhere",
        "created_at": now,
        "key_name": "attacker-key",
    }.items():
        attacks[f"change its own instance's {field_name}"] = lambda c, f=field_name, v=value: (
            own_instance(**{f: v}).save(c)
        )
    return attacks


async def _run_suite(cloud: Cloud, db_path: Path, kind: str) -> None:
    ids = await _seed(cloud)
    attacker: Host = await cloud.host(A)
    before = _dump(db_path)
    ctxt = RequestContext(project_id="p1", user_id="u1")
    refused: list[str] = []
    let_through: list[str] = []
    for name, attack in _attacks(ids).items():
        try:
            await attacker.run(attack, ctxt)
        except (exception.Forbidden, exception.TooLarge):
            refused.append(name)
        else:
            let_through.append(name)
    # A forged claim of being the conductor is refused before anything runs.
    try:
        await attacker.run(
            Instance.get_by_uuid,
            RequestContext(caller="conductor.ctl"),
            ids[B]["instance"]["uuid"],
        )
    except exception.IdentityMismatch:
        refused.append("claim to be the conductor")
    else:
        let_through.append("claim to be the conductor")
    # A step report is bounded like any write of a host (it is stored in the task).
    try:
        await RPCClient(
            attacker.transport, Target("conductor"), expected_errors=[exception.TooLarge]
        ).call(
            ctxt, "step_finished", task_id=1, step="x", attempt=1, ok=False, error="x" * (1 << 20)
        )
    except exception.TooLarge:
        refused.append("1 MB step report")
    else:
        let_through.append("1 MB step report")
    # Personality files (conductor 1.8) have a bound of their own.
    try:
        await RPCClient(
            attacker.transport,
            Target("conductor"),
            version="1.8",
            expected_errors=[exception.TooLarge],
        ).call(
            ctxt,
            "step_finished",
            task_id=1,
            step="x",
            attempt=1,
            ok=True,
            injected_files=InjectedFiles.of([("/f", b"x" * (1 << 20))]),
        )
    except exception.TooLarge:
        refused.append("1 MB of personality files in a step report")
    else:
        let_through.append("1 MB of personality files in a step report")
    # Notifications: a host's broker user may not publish them; the
    # conductor publishes those about the host's own instances and service.
    relay = RPCClient(
        attacker.transport,
        Target("conductor"),
        version="1.2",
        serializer=ObjectSerializer(),
        expected_errors=[exception.Forbidden, exception.TooLarge],
    )
    b_instance = Instance(uuid=ids[B]["instance"]["uuid"], host=B, vm_state="active")
    a_instance = Instance(uuid=ids[A]["instance"]["uuid"], host=A, vm_state="active")
    huge = Instance(uuid=ids[A]["instance"]["uuid"], host=A, vm_state="active")
    huge.display_name = "x" * (1 << 20)
    notifications: dict[str, tuple[str, str, Any]] = {
        "notify about another host's instance": (
            "instance.power_off.end",
            "INFO",
            InstanceActionPayload.from_instance_and_fault(b_instance),
        ),
        "notify about an instance on a node name it squatted": (
            "instance.update",
            "INFO",
            InstanceActionPayload.from_instance_and_fault(
                Instance(uuid=ids["squatted"]["uuid"], host=B)
            ),
        ),
        "notify for another host's service": (
            "service.update",
            "INFO",
            ServiceStatusPayload(host=B, binary="compute"),
        ),
        "notify for the conductor's service": (
            "service.update",
            "INFO",
            ServiceStatusPayload(host=A, binary="conductor"),
        ),
        "notify a service event with an instance payload": (
            "service.update",
            "INFO",
            InstanceActionPayload.from_instance_and_fault(a_instance),
        ),
        "notify an instance event with a service payload": (
            "instance.delete.end",
            "INFO",
            ServiceStatusPayload(host=A, binary="compute"),
        ),
        "notify with a made-up priority": (
            "instance.update",
            "CRITICAL; DROP",
            InstanceActionPayload.from_instance_and_fault(a_instance),
        ),
        "notify with a 1 MB event type": (
            "instance." + "x" * (1 << 20),
            "INFO",
            InstanceActionPayload.from_instance_and_fault(a_instance),
        ),
        "notify with a 1 MB payload": (
            "instance.update",
            "INFO",
            InstanceActionPayload.from_instance_and_fault(huge),
        ),
        "notify with a payload that is not a notification": (
            "instance.update",
            "INFO",
            a_instance,
        ),
    }
    for name, (event_type, priority, payload) in notifications.items():
        try:
            await relay.call(
                ctxt,
                "relay_notification",
                event_type=event_type,
                priority=priority,
                payload=payload,
            )
        except (exception.Forbidden, exception.TooLarge):
            refused.append(name)
        else:
            let_through.append(name)
    # The same attacks in one batch (conductor 1.6): each is judged on its
    # own and refused; nothing of the batch is published.
    batches = RPCClient(
        attacker.transport,
        Target("conductor"),
        version="1.6",
        serializer=ObjectSerializer(),
        expected_errors=[exception.Forbidden, exception.TooLarge],
    )
    batch = NotificationBatch(
        notifications=[
            RelayedNotification(
                event_type=event_type, priority=priority, request_id="req-x", payload=payload
            )
            for event_type, priority, payload in notifications.values()
        ]
    )
    answer = await batches.call(ctxt, "relay_notifications", batch=batch)
    if len(answer) == len(batch.notifications):
        refused.append("notify every attack above in one batch")
    else:
        let_through.append(f"notify in one batch: only {len(answer)} refused: {answer}")
    own = RelayedNotification(
        event_type="instance.power_off.end",
        priority="INFO",
        request_id="req-" + "x" * (1 << 20),
        payload=InstanceActionPayload.from_instance_and_fault(a_instance),
    )
    answer = await batches.call(
        ctxt, "relay_notifications", batch=NotificationBatch(notifications=[own])
    )
    if len(answer) == 1:
        refused.append("notify with a 1 MB request id in a batch")
    else:
        let_through.append("notify with a 1 MB request id in a batch")
    too_many = NotificationBatch(
        notifications=[msgspec.structs.replace(own, request_id="req-x")] * (MAX_BATCH + 1)
    )
    try:
        await batches.call(ctxt, "relay_notifications", batch=too_many)
    except exception.Forbidden:
        refused.append("notify a batch over the limit")
    else:
        let_through.append("notify a batch over the limit")
    # The positive control: its own instance's notification is accepted.
    await relay.call(
        ctxt,
        "relay_notification",
        event_type="instance.power_off.end",
        priority="INFO",
        payload=InstanceActionPayload.from_instance_and_fault(a_instance),
    )
    after = _dump(db_path)
    total = len(refused) + len(let_through)
    print(f"\nsecurity suite ({kind}): {total} attacks tried, {len(refused)} refused")
    assert not let_through, f"attacks that got through: {let_through}"
    assert before == after, "the database changed during the attacks"
    assert total >= 56

    # Positive controls: the same identity does its own, allowed, work.
    own = await attacker.run(Instance.get_by_uuid, ctxt, ids[A]["instance"]["uuid"])
    own.power_state = PowerState.SHUTDOWN
    own.progress = 50
    await attacker.run(own.save, ctxt)
    assert [i.uuid for i in await attacker.run(Instance.get_by_host, ctxt, A)] == [own.uuid]
    svc = await attacker.run(Service.get_by_host_and_binary, ctxt, A, "compute")
    await attacker.run(svc.heartbeat, ctxt)
    node = await attacker.run(ComputeNode.get_by_host_and_nodename, ctxt, A, f"node-{A}")
    node.running_vms = 1
    await attacker.run(node.save, ctxt)
    await attacker.run(Flavor.get_by_id, ctxt, ids["flavor"]["id"])
    ports = ids["ports"]
    told = await attacker.run(InstanceMetadata.get_by_address, ctxt, ports["network"], ports["a"])
    assert told.uuid == own.uuid
    # Its own guest's password: taken once, then refused (False), as Nova's 409.
    setp = InstanceMetadata.set_password
    assert await attacker.run(setp, ctxt, ports["network"], ports["a"], "enc") is True
    assert await attacker.run(setp, ctxt, ports["network"], ports["a"], "again") is False
    told = await attacker.run(InstanceMetadata.get_by_address, ctxt, ports["network"], ports["a"])
    assert told.password == "enc"
    assert (
        await attacker.run(InstanceMetadata.get_by_instance_uuid, ctxt, own.uuid)
    ).uuid == own.uuid
    await attacker.run(InstanceFault(instance_uuid=own.uuid, code=500, message="ok").create, ctxt)
    progress = await attacker.run(Migration.get_by_id, ctxt, ids["live"]["a_source"]["id"])
    progress.memory_total, progress.memory_processed, progress.memory_remaining = 100, 40, 60
    await attacker.run(progress.save, ctxt)
    async with cloud.db.reader() as conn:
        saved = await migrations.get_by_id(conn, progress.id)
    assert (saved["memory_processed"], saved["status"]) == (40, "running")
    evacuations = await attacker.run(Migration.get_evacuations_from_host, ctxt, A)
    assert {m.status for m in evacuations} == {"accepted", "done"}
    (done,) = [m for m in evacuations if m.status == "done"]
    assert done.id == ids["evacuations"]["a_done"]["id"]
    await attacker.run(done.complete_evacuation, ctxt)
    assert done.status == "completed"
    assert _dump(db_path) != after


@pytest.fixture
async def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "security.sqlite"


def _refusals() -> dict[str, float]:
    """``nubes_authz_refusals_total`` by rule (this process's registry)."""
    from prometheus_client import REGISTRY

    return {
        s.labels["rule"]: s.value
        for family in REGISTRY.collect()
        if family.name == "nubes_authz_refusals"
        for s in family.samples
        if s.name.endswith("_total")
    }


async def test_compromised_host_over_memory(sqlite_path: Path) -> None:
    before = _refusals()
    cloud = await Cloud.start(f"sqlite:///{sqlite_path}")
    try:
        await _run_suite(cloud, sqlite_path, "memory://")
    finally:
        await cloud.stop()
    # The conductor's refusals are on /metrics, by the rule that refused.
    grown = {r for r, n in _refusals().items() if n > before.get(r, 0)}
    assert "Instance.save" in grown and "unlisted" in grown, grown


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=False, capture_output=True, timeout=60)


@pytest.fixture
def broker_users(rabbit_url: str) -> AsyncIterator[Callable[[str], str]] | Any:
    """One broker user per identity, named as the identity (compute.<host>)."""
    password = uuid.uuid4().hex
    made: list[str] = []

    def url_for(identity: str) -> str:
        if identity not in made:
            _rabbitmqctl("add_user", identity, password)
            _rabbitmqctl("set_permissions", "-p", "/", identity, ".*", ".*", ".*")
            made.append(identity)
        return f"rabbit://{identity}:{password}@127.0.0.1:5672/"

    yield url_for
    for user in made:
        _rabbitmqctl("delete_user", user)


@pytest.mark.timeout(180)
async def test_compromised_host_over_rabbit(sqlite_path: Path, broker_users) -> None:
    import shutil

    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to create one broker user per identity")
    topic_suffix = uuid.uuid4().hex[:6]
    cloud = await Cloud.start(
        f"sqlite:///{sqlite_path}", url_for=broker_users, conductor_host=f"ctl-{topic_suffix}"
    )
    try:
        await _run_suite(cloud, sqlite_path, "rabbit://")
    finally:
        await cloud.stop()
