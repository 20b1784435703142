"""Is an instance in a consistent state? The check every move test (and crash test) ends with.

``docs/moves.md`` rule 4: however a move ends — done, rolled back, given
up, or a conductor killed on the way and another one carrying it on — the
instance is left

* with no active task and no task_state, in a stable vm_state;
* on exactly one host (or none, for a build that never placed it or a
  shelved-offloaded instance, which has no guest anywhere), the guest there
  and nowhere else when the drivers are given;
* holding claims (the ``allocations`` table) equal to its flavor on the node
  it is on, and nothing anywhere else; its migrations hold nothing;
* with every migration in a final status —

except while a resize or cold migration waits for its confirm or revert
(RESIZED): then exactly one migration is ``finished``, the instance is on its
destination holding its new flavor there, and the migration holds the old
flavor on the source, where the source keeps the powered-off guest.

:func:`check_consistent` returns what is wrong (an empty list when all is
well), so a test can print every problem at once::

    assert await check_consistent(cloud.db, uuid, drivers=drivers) == []

:func:`check_node_usage` checks the other side of the claims: every compute
node's ``*_used`` columns are the sum of the allocations on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from nubes import exception
from nubes.db.api import instances as instances_api
from nubes.db.api import tasks as tasks_api
from nubes.db.engine import Database
from nubes.db.models import allocations, compute_nodes, migrations, ports
from nubes.objects.states import MIGRATION_FINAL, MigrationStatus, PowerState, VMState

if TYPE_CHECKING:
    from nubes.compute.virt.fake import FakeDriver

#: vm_states an instance may rest in with no task.
STABLE_VM_STATES = frozenset(
    {
        VMState.ACTIVE,
        VMState.STOPPED,
        VMState.PAUSED,
        VMState.SUSPENDED,
        VMState.RESCUED,
        VMState.SOFT_DELETED,
        VMState.SHELVED,
        VMState.SHELVED_OFFLOADED,
        VMState.ERROR,
        VMState.RESIZED,
    }
)
#: The guest's power each stable vm_state means (ERROR: anything).
_POWER = {
    VMState.ACTIVE: PowerState.RUNNING,
    VMState.PAUSED: PowerState.PAUSED,
    VMState.STOPPED: PowerState.SHUTDOWN,
    VMState.SUSPENDED: PowerState.SUSPENDED,
    VMState.RESCUED: PowerState.RUNNING,
    VMState.SOFT_DELETED: PowerState.SHUTDOWN,
    VMState.SHELVED: PowerState.SHUTDOWN,
    VMState.RESIZED: None,
}

Claim = tuple[str, str, int, int, int]


def claim_of(flavor: Mapping[str, Any] | None) -> tuple[int, int, int]:
    """What a flavor snapshot claims: vCPUs, MiB of RAM, GB of disk (root,
    ephemeral and swap rounded up, as the scheduler counts it)."""
    if not flavor:
        return (0, 0, 0)
    swap = int(flavor.get("swap") or 0)
    disk = int(flavor.get("root_gb") or 0) + int(flavor.get("ephemeral_gb") or 0)
    disk += -(-swap // 1024) if swap else 0
    return (int(flavor["vcpus"]), int(flavor["memory_mb"]), disk)


async def _claims(conn: Any, consumer: str) -> list[Claim]:
    a, cn = allocations.c, compute_nodes.c
    stmt = (
        select(cn.host, cn.hypervisor_hostname, a.vcpus, a.memory_mb, a.disk_gb)
        .select_from(allocations.join(compute_nodes, cn.id == a.compute_node_id))
        .where(a.consumer_uuid == consumer)
        .order_by(a.id)
    )
    return [tuple(r) for r in await conn.execute(stmt)]


def _expect_claim(
    problems: list[str], who: str, held: list[Claim], host: str, node: str, flavor: Any
) -> None:
    want = [(host, node, *claim_of(flavor))]
    if held != want:
        problems.append(f"{who} claims {held or 'nothing'}, expected {want}")


async def check_consistent(
    db: Database,
    instance_uuid: str,
    *,
    drivers: Mapping[str, FakeDriver] | None = None,
) -> list[str]:
    """What is inconsistent about the instance (see the module docstring); [] if nothing.

    ``drivers`` (host -> fake driver) adds the hypervisors' side: where the
    guest is, and that its power matches the vm_state.
    """
    problems: list[str] = []
    async with db.reader() as conn:
        try:
            row = await instances_api.get_by_uuid(conn, instance_uuid, read_deleted="yes")
        except exception.InstanceNotFound:
            return [f"instance {instance_uuid} does not exist"]
        active = await tasks_api.get_active_for_instance(conn, instance_uuid)
        # Deleted ones too: deleting an instance removes its migrations' rows,
        # and must not leave what they held.
        stmt = select(migrations).where(migrations.c.instance_uuid == instance_uuid)
        migs = [dict(m) for m in (await conn.execute(stmt.order_by(migrations.c.id))).mappings()]
        own = await _claims(conn, instance_uuid)
        held = {m["uuid"]: await _claims(conn, m["uuid"]) for m in migs}
        bound = await _bindings(conn, instance_uuid)
    vm, host, node = row["vm_state"], row["host"], row["node"]
    if active is not None:
        problems.append(f"task {active['id']} ({active['kind']}) is still {active['status']}")
    if row["task_state"] is not None:
        problems.append(f"task_state is {row['task_state']}")
    if row["deleted"]:
        if own or any(held.values()):
            problems.append(f"deleted, yet claims remain: {own} {held}")
        return problems
    if vm not in STABLE_VM_STATES:
        problems.append(f"vm_state is {vm}")
    flavor = row["flavor"] or {}
    columns = (row["vcpus"], row["memory_mb"], row["root_gb"], row["ephemeral_gb"])
    wanted = tuple(flavor.get(k) for k in ("vcpus", "memory_mb", "root_gb", "ephemeral_gb"))
    if columns != wanted:
        problems.append(f"flavor columns {columns} are not its flavor's {wanted}")
    unfinished = [m for m in migs if m["status"] not in MIGRATION_FINAL and not m["deleted"]]
    if vm == VMState.RESIZED:
        waiting = [m for m in unfinished if m["status"] == MigrationStatus.FINISHED]
        if len(unfinished) != 1 or len(waiting) != 1:
            statuses = [m["status"] for m in unfinished]
            problems.append(f"RESIZED with migrations {statuses}, expected one finished")
            return problems
        mig = waiting[0]
        if (host, node) != (mig["dest_compute"], mig["dest_node"]):
            problems.append(f"RESIZED on {host}/{node}, not its destination {mig['dest_compute']}")
        if not row["old_flavor"] or not row["new_flavor"]:
            problems.append("RESIZED without old_flavor and new_flavor")
        _expect_claim(problems, "the instance", own, host, node, flavor)
        _expect_claim(
            problems,
            f"migration {mig['id']}",
            held[mig["uuid"]],
            mig["source_compute"],
            mig["source_node"],
            row["old_flavor"],
        )
    else:
        for m in unfinished:
            problems.append(f"migration {m['id']} ({m['migration_type']}) is {m['status']}")
        for m in migs:
            if held[m["uuid"]]:
                problems.append(f"migration {m['id']} ({m['status']}) claims {held[m['uuid']]}")
        if row["old_flavor"] or row["new_flavor"]:
            problems.append("old_flavor/new_flavor left set")
        if host:
            _expect_claim(problems, "the instance", own, host, node, flavor)
        elif own:
            problems.append(f"on no host, yet claims {own}")
    # Ports follow the instance on every move (issue 14): bound where it is.
    astray = sorted({h for h in bound if h != (host or "")})
    if astray:
        problems.append(f"on {host}, yet ports bound to {astray}")
    if drivers is not None:
        _check_guests(problems, row, migs, drivers)
    return problems


async def _bindings(conn: Any, instance_uuid: str) -> list[str]:
    """The ``binding:host_id`` of each of the instance's ports."""
    stmt = select(ports.c.binding_host_id).where(ports.c.device_id == instance_uuid)
    return list((await conn.execute(stmt)).scalars())


def _check_guests(
    problems: list[str],
    row: dict[str, Any],
    migs: list[dict[str, Any]],
    drivers: Mapping[str, FakeDriver],
) -> None:
    uuid, vm, host = row["uuid"], row["vm_state"], row["host"]
    running = sorted(h for h, d in drivers.items() if uuid in d.instances)
    if vm == VMState.ERROR:
        # The guest may be anywhere it was left, but never on two hosts.
        if len(running) > 1:
            problems.append(f"guest on {running}")
        return
    if vm == VMState.SHELVED_OFFLOADED:
        # Offloaded: no guest anywhere (and no host, checked above).
        if running:
            problems.append(f"offloaded, yet a guest on {running}")
        return
    if running != [host]:
        problems.append(f"guest on {running or 'no host'}, the instance on {host}")
        return
    want = _POWER.get(VMState(vm))
    got = drivers[host].instances[uuid].state
    if want is not None and got != want:
        problems.append(f"{vm}, yet the guest's power is {got.name}")
    if vm == VMState.RESIZED:
        mig = next(m for m in migs if m["status"] == MigrationStatus.FINISHED)
        source = drivers.get(mig["source_compute"])
        if source is not None and uuid not in source.kept:
            problems.append(f"the source {mig['source_compute']} keeps no guest to revert to")


async def check_node_usage(db: Database) -> list[str]:
    """Compute nodes whose ``*_used`` columns are not the sum of their allocations."""
    a, cn = allocations.c, compute_nodes.c
    sums = (
        select(
            a.compute_node_id,
            func.sum(a.vcpus).label("vcpus"),
            func.sum(a.memory_mb).label("memory_mb"),
            func.sum(a.disk_gb).label("disk_gb"),
        )
        .group_by(a.compute_node_id)
        .subquery()
    )
    stmt = (
        select(
            cn.hypervisor_hostname,
            cn.vcpus_used,
            cn.memory_mb_used,
            cn.local_gb_used,
            func.coalesce(sums.c.vcpus, 0),
            func.coalesce(sums.c.memory_mb, 0),
            func.coalesce(sums.c.disk_gb, 0),
        )
        .select_from(compute_nodes.outerjoin(sums, sums.c.compute_node_id == cn.id))
        .where(cn.deleted == 0)
    )
    problems = []
    async with db.reader() as conn:
        for name, *values in await conn.execute(stmt):
            used, claimed = tuple(values[:3]), tuple(int(v) for v in values[3:])
            if used != claimed:
                problems.append(f"node {name}: used {used}, allocations add up to {claimed}")
    return problems
