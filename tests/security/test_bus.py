"""A compromised compute host attacks at the bus, on RabbitMQ set up with least privilege.

Real processes (a conductor, a scheduler, two compute hosts A and B, each its
own broker user made as ``nubes-manage broker`` makes them: see
nubes/rpc/rabbit_access.py) on RabbitMQ and PostgreSQL. The test process
holds host A's broker credentials and tries, with a raw AMQP connection and
with nubes' own transport, everything issue 12 found to work with the
README's old ``'.*' '.*' '.*'`` permissions: reading, binding to, purging and
deleting other queues, forging the sender, commanding host B, using the
scheduler, kicking the conductor's tasks.

Each attack counts as refused when the broker refuses it (ACCESS_REFUSED,
PRECONDITION_FAILED for a forged ``user_id``) or the receiving service
refuses it (a typed Forbidden back, or the refusal in the receiver's log for
a cast). The database (instances, faults, actions, tasks, allocations) must
be the same before and after, the attacker must have received nothing, and
positive controls show A's credentials still do what a host needs and a new
server still goes ACTIVE. It prints ``N attacks tried, N refused``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiormq
import aiormq.exceptions
import pytest
from pamqp import commands as spec
from sqlalchemy import select

from nubes import exception
from nubes.compute.rpcapi import ComputeAPI
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.models import (
    allocations,
    conductor_tasks,
    instance_actions,
    instance_faults,
    instances,
)
from nubes.objects.instance import Instance
from nubes.objects.request_spec import RequestSpec
from nubes.objects.serializer import ObjectSerializer
from nubes.rpc.client import RPCClient
from nubes.rpc.rabbit_session import EXCHANGE
from nubes.rpc.transport import Target, get_transport
from nubes.scheduler.rpcapi import SchedulerAPI
from nubes.testing.processes import ProcessCloud
from tests.integration.crash import checks

#: What the broker says when it refuses an operation.
BROKER_REFUSALS = (
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelPreconditionFailed,
)
Attack = Callable[[], Awaitable[Any]]


async def _snapshot(cloud: ProcessCloud) -> list[Any]:
    """The rows an attack could corrupt (not heartbeats or node metrics, which move)."""
    assert cloud.db is not None
    rows: list[Any] = []
    async with cloud.db.reader() as conn:
        for table in (instances, instance_faults, instance_actions, conductor_tasks, allocations):
            result = await conn.execute(select(table).order_by(*table.primary_key.columns))
            rows.append([tuple(r) for r in result])
    return rows


async def _wait_consumed(conn: aiormq.Connection, queue: str, timeout: float = 30.0) -> None:
    """Until ``queue`` exists again with a consumer (a service healed it)."""
    async with asyncio.timeout(timeout):
        while True:
            channel = await conn.channel()
            try:
                declared = await channel.queue_declare(queue, durable=True, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                pass
            else:
                if declared.consumer_count:
                    await channel.close()
                    return
                await channel.close()
            await asyncio.sleep(0.2)


async def _start(cloud: ProcessCloud) -> None:
    scheduler = await cloud.start_scheduler()
    conductor = await cloud.start_conductor("a")
    await cloud.wait_serving([scheduler, conductor])
    computes = await cloud.start_computes()
    await cloud.wait_serving(list(computes.values()))
    await cloud.wait_hosts_registered()


@pytest.mark.timeout(240)
async def test_a_compromised_host_is_refused_at_the_bus(
    rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    cloud = ProcessCloud(rabbit_url, postgres_url, tmp_path / "cloud", 2, {})
    try:
        await cloud.setup(conductors=("a",))
        await _start(cloud)
        await _attack(cloud)
    finally:
        await cloud.cleanup()


async def _attack(cloud: ProcessCloud) -> None:
    host_a, host_b = cloud.host_names
    settled = await checks.wait_settled(cloud, await checks.create_servers(cloud, 4))
    assert {r["vm_state"] for r in settled.values()} == {"active"}
    b_rows = [r for r in settled.values() if r["host"] == host_b]
    # Four servers on two empty hosts: the weighers spread them.
    assert b_rows, f"no server landed on {host_b}: {settled}"
    victim = b_rows[0]

    url = cloud.url_for(f"compute.{host_a}")
    parsed = url.replace("rabbit://", "amqp://", 1)
    conn = await aiormq.connect(parsed)
    transport = get_transport(url)
    await transport.connect()
    received: list[bytes] = []
    refused: list[str] = []
    let_through: list[str] = []
    before = await _snapshot(cloud)
    ctxt = RequestContext(user_id="attacker", project_id="attacker")

    async def on_message(message: Any) -> None:
        received.append(message.body)

    async def broker(name: str, op: Callable[[aiormq.abc.AbstractChannel], Awaitable[Any]]) -> None:
        channel = await conn.channel(publisher_confirms=True)
        try:
            await op(channel)
        except BROKER_REFUSALS:
            refused.append(name)
        else:
            let_through.append(name)
        finally:
            if not channel.is_closed:
                await channel.close()

    async def own_queue(channel: aiormq.abc.AbstractChannel) -> str:
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
        return str(declared.queue)

    async def bind(channel: aiormq.abc.AbstractChannel, exchange: str, key: str) -> None:
        queue = await own_queue(channel)
        await channel.queue_bind(queue, exchange, routing_key=key)
        await channel.basic_consume(queue, on_message)

    other_queues = {
        "another host's queue": f"compute.{host_b}",
        "the conductor's queue": "conductor",
        "the conductor's server queue": f"conductor.{cloud.conductor_host('a')}",
        "the scheduler's queue": "scheduler",
        "the notifications queue": "notifications",
    }
    broker_attacks: dict[str, Callable[[aiormq.abc.AbstractChannel], Awaitable[Any]]] = {}
    for what, queue in other_queues.items():
        broker_attacks[f"consume {what}"] = lambda ch, q=queue: ch.basic_consume(q, on_message)
        broker_attacks[f"get from {what}"] = lambda ch, q=queue: ch.basic_get(q)
        broker_attacks[f"purge {what}"] = lambda ch, q=queue: ch.queue_purge(q)
        broker_attacks[f"delete {what}"] = lambda ch, q=queue: ch.queue_delete(q)
        broker_attacks[f"re-declare {what}"] = lambda ch, q=queue: ch.queue_declare(q, durable=True)
        broker_attacks[f"bind its queue to the routing key of {what}"] = lambda ch, q=queue: bind(
            ch, EXCHANGE, q
        )
        if queue != "conductor":  # a host's calls and casts go there
            broker_attacks[f"publish with the routing key of {what}"] = lambda ch, q=queue: (
                ch.basic_publish(b"forged", exchange=EXCHANGE, routing_key=q)
            )
        broker_attacks[f"publish into {what} through the default exchange"] = lambda ch, q=queue: (
            ch.basic_publish(b"forged", exchange="", routing_key=q)
        )
    for key in ("#", "compute.*", "*.*", "reply.#"):
        broker_attacks[f"bind its queue with the wildcard key {key!r}"] = lambda ch, k=key: bind(
            ch, EXCHANGE, k
        )
    for topic in ("conductor", "scheduler"):
        broker_attacks[f"bind its queue to the {topic} fanout"] = lambda ch, t=topic: bind(
            ch, f"{t}_fanout", ""
        )
    broker_attacks.update(
        {
            "delete the nubes exchange": lambda ch: ch.exchange_delete(EXCHANGE),
            "delete the compute fanout exchange": lambda ch: ch.exchange_delete("compute_fanout"),
            "re-declare the nubes exchange": lambda ch: ch.exchange_declare(
                EXCHANGE, exchange_type="topic", durable=True
            ),
            "declare the old direct nubes exchange": lambda ch: ch.exchange_declare(
                "nubes", exchange_type="direct", durable=True
            ),
            "declare an exchange of its own": lambda ch: ch.exchange_declare(
                "evil", exchange_type="topic"
            ),
            "bind the nubes exchange into another": lambda ch: ch.exchange_bind(
                "compute_fanout", EXCHANGE, routing_key="conductor"
            ),
            "publish as the conductor": lambda ch: ch.basic_publish(
                b"forged",
                exchange=EXCHANGE,
                routing_key=f"compute.{host_b}",
                properties=spec.Basic.Properties(user_id=f"conductor.{cloud.conductor_host('a')}"),
            ),
            "publish a notification as the conductor": lambda ch: ch.basic_publish(
                b'{"publisher_id": "conductor:ctl"}',
                exchange=EXCHANGE,
                routing_key="notifications",
                properties=spec.Basic.Properties(user_id=f"conductor.{cloud.conductor_host('a')}"),
            ),
        }
    )
    for name, op in broker_attacks.items():
        await broker(name, op)

    # -- through nubes' own transport, as host A (the receivers' rule tables) --
    serializer = ObjectSerializer()
    stolen = Instance(
        uuid=victim["uuid"],
        host=host_b,
        node=victim["node"],
        vm_state="active",
        task_state=None,
        power_state=1,
        project_id=victim["project_id"],
    )
    compute = ComputeAPI(transport).client
    casts: dict[str, tuple[str, RPCClient, str, dict[str, Any]]] = {
        "terminate another host's instance": (
            host_b,
            compute.prepare(server=host_b),
            "terminate_instance",
            {"step": "delete"},
        ),
        "stop another host's instance": (
            host_b,
            compute.prepare(server=host_b),
            "stop_instance",
            {"step": "stop"},
        ),
        "reboot every host's instance on the fanout": (
            host_b,
            compute.prepare(fanout=True),
            "reboot_instance",
            {"step": "reboot", "reboot_type": "HARD"},
        ),
    }
    for name, (host, client, method, extra) in casts.items():
        args = {"instance": stolen, "task_id": 1, "attempt": 1, **extra}
        try:
            await client.cast(ctxt, method, **args)
        except exception.TransportError as exc:
            # The broker's refusal (a host may not publish on the fanout).
            (refused if "ACCESS_REFUSED" in str(exc) else let_through).append(name)
            continue
        proc = next(p for p in cloud.procs if p.name == f"compute-{host}")
        try:
            await proc.wait_log(
                rf"Refused cast compute\.{method} from compute\.{host_a}.*may not call", 20
            )
        except TimeoutError:
            let_through.append(name)
        else:
            refused.append(name)

    # A refused publish closes the sender's channel and its transport starts
    # over; the calls go on a transport of their own, as A's again.
    await transport.close()
    transport = get_transport(url)
    await transport.connect()
    scheduler = SchedulerAPI(transport, timeout=20)
    conductor = ConductorAPI(transport, timeout=20)
    conductor_client = RPCClient(transport, Target("conductor"), timeout=20, serializer=serializer)
    calls: dict[str, Attack] = {
        "ask the scheduler for hints": lambda: scheduler.get_scheduler_hints(ctxt),
        "claim resources through the scheduler": lambda: scheduler.select_destinations(
            ctxt, RequestSpec(project_id="attacker"), [str(uuid.uuid4())]
        ),
        "release another server's claim": lambda: scheduler.release(ctxt, victim["uuid"]),
        "kick the conductor's tasks": lambda: conductor_client.call(ctxt, "kick", task_ids=[1]),
        "abort a live migration": lambda: conductor_client.call(
            ctxt, "live_migration_abort", instance_uuid=victim["uuid"], migration_id=1
        ),
        "read another host's instance": lambda: conductor.object_class_action_versions(
            ctxt, "Instance", "get_by_uuid", {}, (victim["uuid"],), {}
        ),
    }
    for name, attack in calls.items():
        try:
            await attack()
        except exception.Forbidden:
            refused.append(name)
        except exception.TransportError as exc:
            # The broker's refusal: A may not publish with the scheduler's key.
            (refused if "ACCESS_REFUSED" in str(exc) else let_through).append(name)
        except Exception as exc:  # anything else is not a refusal
            let_through.append(f"{name} ({type(exc).__name__}: {exc})")
        else:
            let_through.append(name)

    await asyncio.sleep(0)  # let any delivery to a consumer that got through land
    after = await _snapshot(cloud)
    total = len(refused) + len(let_through)
    print(
        f"\nbus security suite (rabbit://, least privilege): {total} attacks tried, "
        f"{len(refused)} refused"
    )
    assert not let_through, f"attacks that got through: {let_through}"
    assert received == [], "the attacker received messages"
    assert before == after, "the database changed during the attacks"
    assert total >= 40

    # -- positive controls: A's credentials still do a host's work -------------
    channel = await conn.channel()
    await channel.queue_declare(f"compute.{host_a}", durable=True, passive=True)
    await channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True, passive=True)
    await bind(channel, "compute_fanout", "")
    # A may delete its own queue (its user configures exactly that one), and
    # its compute service re-declares, re-binds and consumes it again.
    await channel.queue_delete(f"compute.{host_a}")
    await _wait_consumed(conn, f"compute.{host_a}")
    base = RPCClient(transport, Target("conductor"), namespace="baseapi", timeout=20)
    assert (await base.call(ctxt, "whoami"))["caller"] == f"compute.{host_a}"
    service = await conductor.object_class_action_versions(
        ctxt, "Service", "get_by_host_and_binary", {}, (host_a, "compute"), {}
    )
    assert (service.host, service.binary) == (host_a, "compute")
    await conn.close()
    await transport.close()
    # B is not deaf and the cloud still builds, on both hosts.
    more = await checks.wait_settled(cloud, await checks.create_servers(cloud, 2, "after"))
    assert {r["vm_state"] for r in more.values()} == {"active"}
    # The hosts' notifications still arrive, every one published by a
    # controller (the broker-verified user_id), the hosts' relayed by the
    # conductor under their publisher_id.
    senders, publishers = await _notifications(cloud)
    assert senders and all(s.startswith(("conductor.", "api.")) for s in senders), senders
    assert {f"compute:{host_a}", f"compute:{host_b}"} <= publishers, publishers


async def _notifications(cloud: ProcessCloud) -> tuple[set[str], set[str]]:
    """Who sent (AMQP user_id) and who published (publisher_id) the queued notifications."""
    url = cloud.url_for(f"api.{cloud.api_host}").replace("rabbit://", "amqp://", 1)
    conn = await aiormq.connect(url)
    senders: set[str] = set()
    publishers: set[str] = set()
    try:
        channel = await conn.channel()
        while (message := await channel.basic_get("notifications", no_ack=True)).body:
            senders.add(str(message.header.properties.user_id))
            publishers.add(json.loads(message.body)["publisher_id"])
    finally:
        await conn.close()
    return senders, publishers
