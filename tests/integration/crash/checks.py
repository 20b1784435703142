"""Asking for builds as the API does, waiting for them to settle, checking the result."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from nubes import config, exception
from nubes.api.servers import ServersAPI
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.db.api.tasks import ACTIVE_STATUSES, TaskStatus
from nubes.db.engine import Database
from nubes.db.models import (
    allocations,
    compute_nodes,
    conductor_tasks,
    instance_faults,
    instances,
    ip_allocations,
    ports,
)
from nubes.db.types import utcnow
from nubes.network import ports as network_ports
from nubes.network.resources import NetworkService
from nubes.objects.states import PowerState
from nubes.rpc.transport import get_transport
from nubes.testing.processes import ProcessCloud

IMAGE = {"id": "img-crash", "properties": {"hw_architecture": "x86_64"}}
FLAVOR_ID = "crash-small"
FLAVOR: dict[str, Any] = {
    "flavorid": FLAVOR_ID, "name": FLAVOR_ID, "vcpus": 1, "memory_mb": 512, "root_gb": 1,
}  # fmt: skip
_ACTIVE = [s.value for s in ACTIVE_STATUSES]


async def create_servers(cloud: ProcessCloud, count: int, name: str = "vm") -> list[str]:
    """``count`` servers through ServersAPI.create_servers, as ``api.<host>``; their uuids."""
    assert cloud.db is not None
    async with cloud.db.writer() as conn:
        try:
            await flavors.get_by_flavor_id(conn, FLAVOR_ID)
        except exception.NotFound:
            await flavors.create(conn, FLAVOR)
    conf = config.new_config()
    conf([])
    conf.set_override("build_deadline", cloud.option("conductor", "build_deadline"), "conductor")
    # Every kill point boots more servers in the one project; quotas are not under test.
    for resource in ("instances", "cores", "ram"):
        conf.set_override(resource, -1, "quota")
    transport = get_transport(cloud.url_for(f"api.{cloud.api_host}"))
    await transport.connect()
    try:
        api = ServersAPI(cloud.db, ConductorAPI(transport), conf=conf)
        ctxt = RequestContext(user_id="crash-user", project_id="crash-project", roles=["member"])
        # Each server gets a port on the project's network: the build makes it
        # before the spawn, so every kill point also cuts a build with ports.
        nics = await network_ports.resolve(NetworkService(cloud.db, conf), ctxt, "auto", None, 1)
        made = await api.create_servers(
            ctxt, name=name, flavor=FLAVOR_ID, image=IMAGE, count=count, network_requests=nics
        )
    finally:
        await transport.close()
    return [i.uuid for i in made]


async def _rows(db: Database, uuids: list[str]) -> dict[str, dict[str, Any]]:
    async with db.reader() as conn:
        result = await conn.execute(select(instances).where(instances.c.uuid.in_(uuids)))
        return {r["uuid"]: dict(r) for r in result.mappings()}


async def _tasks(db: Database) -> list[dict[str, Any]]:
    async with db.reader() as conn:
        result = await conn.execute(select(conductor_tasks).order_by(conductor_tasks.c.id))
        return [dict(r) for r in result.mappings()]


def _instance_of(task: dict[str, Any]) -> str | None:
    """The instance a task works on: a remove_guest task names it in its payload only."""
    payload = task.get("payload")
    if isinstance(payload, str):
        payload = json.loads(payload)
    return task["instance_uuid"] or (payload or {}).get("instance_uuid")


def _settled(row: dict[str, Any], active_tasks: set[str]) -> bool:
    return (
        row["uuid"] not in active_tasks
        and row["vm_state"] in ("active", "error")
        and row["task_state"] is None
    )


async def wait_settled(
    cloud: ProcessCloud, uuids: list[str], timeout: float = 60.0
) -> dict[str, dict[str, Any]]:
    """Until every instance is ACTIVE or ERROR and no task of them is active."""
    assert cloud.db is not None
    deadline = time.monotonic() + timeout
    while True:
        rows = await _rows(cloud.db, uuids)
        active = {_instance_of(t) for t in await _tasks(cloud.db) if t["status"] in _ACTIVE}
        pending = [r for r in rows.values() if not _settled(r, active)]
        if len(rows) == len(uuids) and not pending:
            return rows
        if time.monotonic() > deadline:
            tasks = [t for t in await _tasks(cloud.db) if t["status"] in _ACTIVE]
            raise AssertionError(
                f"{len(pending)} of {len(uuids)} builds stuck after {timeout}s: "
                + "; ".join(
                    f"{r['uuid'][:8]} {r['vm_state']}/{r['task_state']}@{r['host']}"
                    for r in pending
                )
                + "\nactive tasks: "
                + "; ".join(
                    f"{t['id']} {t['step']} owner={t['owner']} lease={t['lease_expires_at']}"
                    for t in tasks
                )
                + "\n"
                + cloud.describe()
            )
        await asyncio.sleep(0.2)


async def unfinished(cloud: ProcessCloud, uuids: list[str]) -> int:
    """How many of these instances' tasks are still active (pending or running)."""
    assert cloud.db is not None
    return sum(
        1
        for t in await _tasks(cloud.db)
        if t["instance_uuid"] in set(uuids) and t["status"] in _ACTIVE
    )


@dataclass
class Outcome:
    active: int
    error: int
    #: Builds that moved to an alternate host.
    rescheduled: int

    def __str__(self) -> str:
        return f"{self.active} ACTIVE, {self.error} ERROR, {self.rescheduled} rescheduled"


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


async def check_consistent(cloud: ProcessCloud, uuids: list[str]) -> Outcome:
    """Every build ended ACTIVE on a real host with matching claims, or ERROR with a
    fault past its deadline; no task is left active. Raises AssertionError listing
    every problem found."""
    db = cloud.db
    assert db is not None
    hosts = set(cloud.host_names)
    rows = await _rows(db, uuids)
    all_tasks = await _tasks(db)
    builds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in all_tasks:
        builds[t["instance_uuid"]].append(t)
    async with db.reader() as conn:
        faults = {
            r.instance_uuid
            for r in await conn.execute(
                select(instance_faults.c.instance_uuid).where(
                    instance_faults.c.instance_uuid.in_(uuids)
                )
            )
        }
        allocs = [dict(r) for r in (await conn.execute(select(allocations))).mappings()]
        held = [dict(r) for r in (await conn.execute(select(ports))).mappings()]
        addresses = [r.ip_address for r in await conn.execute(select(ip_allocations))]
        nodes = {r["id"]: dict(r) for r in (await conn.execute(select(compute_nodes))).mappings()}
    problems: list[str] = []
    # Ports: one per ACTIVE server, bound to its host; none left by an ERROR one.
    ports_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for port in held:
        ports_of[port["device_id"]].append(port)
    if len(addresses) != len(set(addresses)):
        problems.append(f"an address is held twice: {sorted(addresses)}")
    for t in all_tasks:
        if t["status"] in _ACTIVE:
            problems.append(
                f"task {t['id']} ({t['kind']}) left {t['status']} at {t['step']}, "
                f"owner {t['owner']}, lease {t['lease_expires_at']}"
            )
    now = utcnow()
    expected_use: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    node_of_host = {n["host"]: n["id"] for n in nodes.values() if not n["deleted"]}
    by_consumer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in allocs:
        by_consumer[a["consumer_uuid"]].append(a)
    active = error = rescheduled = 0
    for uuid in uuids:
        row = rows.get(uuid)
        if row is None:
            problems.append(f"{uuid}: no instance row")
            continue
        tasks = builds.get(uuid, [])
        last = tasks[-1] if tasks else None
        if last is None or last["kind"] != "build":
            problems.append(f"{uuid}: no build task")
            continue
        rescheduled += (last["payload"] or {}).get("try", 1) > 1
        state = (row["vm_state"], row["task_state"])
        if state == ("active", None):
            active += 1
            if last["status"] != TaskStatus.SUCCEEDED:
                problems.append(f"{uuid}: ACTIVE but its build is {last['status']}")
            if row["host"] not in hosts or row["node"] != row["host"]:
                problems.append(f"{uuid}: ACTIVE on {row['host']}/{row['node']}, not a fake host")
            if row["power_state"] != PowerState.RUNNING or row["launched_at"] is None:
                problems.append(f"{uuid}: ACTIVE, power {row['power_state']}, not launched")
            claims = by_consumer.pop(uuid, [])
            node_id = node_of_host.get(row["host"])
            if [
                (a["compute_node_id"], a["vcpus"], a["memory_mb"], a["disk_gb"]) for a in claims
            ] != [(node_id, row["vcpus"], row["memory_mb"], row["root_gb"])]:
                problems.append(
                    f"{uuid}: ACTIVE on {row['host']} (node {node_id}), claims {claims}"
                )
            bound = [(p["binding_host_id"], p["status"]) for p in ports_of.pop(uuid, [])]
            if bound != [(row["host"], "ACTIVE")]:
                problems.append(f"{uuid}: ACTIVE on {row['host']} with ports {bound}")
            if node_id is not None:
                expected_use[node_id][0] += row["vcpus"]
                expected_use[node_id][1] += row["memory_mb"]
        elif state == ("error", None):
            error += 1
            task_deadline = _aware(last["deadline"])
            if uuid not in faults:
                problems.append(f"{uuid}: ERROR without a fault")
            if last["status"] != TaskStatus.FAILED:
                problems.append(f"{uuid}: ERROR but its build is {last['status']}")
            if task_deadline is None or task_deadline > now:
                problems.append(
                    f"{uuid}: ERROR before its deadline ({task_deadline}): {last['last_error']}"
                )
            if row["host"] is not None:
                problems.append(f"{uuid}: ERROR still placed on {row['host']}")
            if ports_of.pop(uuid, []):
                problems.append(f"{uuid}: ERROR with its ports left behind")
        else:
            problems.append(f"{uuid}: stuck in {state} on {row['host']}")
    for device, left in ports_of.items():
        if device in uuids:
            problems.append(f"ports of {device} that no ACTIVE instance explains: {left}")
    for consumer, claims in by_consumer.items():
        problems.append(f"claims of {consumer} that no ACTIVE instance explains: {claims}")
    for node_id, node in nodes.items():
        want = expected_use.get(node_id, [0, 0])
        if [node["vcpus_used"], node["memory_mb_used"]] != want:
            problems.append(
                f"node {node['hypervisor_hostname']}: used "
                f"{node['vcpus_used']} vCPUs / {node['memory_mb_used']} MiB, claims say {want}"
            )
    assert not problems, "inconsistent after the crash:\n" + "\n".join(problems)
    return Outcome(active, error, rescheduled)
