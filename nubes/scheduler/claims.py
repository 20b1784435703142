"""Claims: taking a host's resources for an instance, atomically, in the database.

The scheduler decides on its in-memory view, which may be stale; the claim
never trusts it. It is the conditional UPDATE of
:func:`nubes.db.api.compute_nodes.claim_for_consumer` (capacity × ratio checked and
usage incremented in one statement under the row's write lock, plus the
allocation row, in one transaction), so concurrent schedulers in any
number of processes cannot over-commit a host on SQLite, PostgreSQL or
MariaDB, and nothing takes ``SELECT ... FOR UPDATE`` (Galera turns it into
certification deadlocks; a deadlock reported at commit is retried by
``Database.run_in_writer``).

A claim is idempotent per instance: if the instance already holds resources
(a retried scheduling step), that claim is reported instead of a second one.

A member of a server group with a hard policy (affinity, anti-affinity) is
claimed by :func:`nubes.db.api.group_claims.check_and_claim`: the policy is
checked in the claim's own transaction, under the group's lock, so builds of
one group racing in several schedulers cannot both take a host the policy
gives only one of them.
"""

from __future__ import annotations

import dataclasses

from nubes import exception, group_policy, liveness
from nubes.db import group_commit
from nubes.db.api import compute_nodes, group_claims, host_views
from nubes.db.api.compute_nodes import NO_RESERVED, ClaimOutcome, ClaimResult, Reserved
from nubes.db.engine import Connection, Database


@dataclasses.dataclass(frozen=True, slots=True)
class Amounts:
    vcpus: int
    memory_mb: int
    disk_gb: int


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    result: ClaimResult
    #: The node the instance holds resources on (another one than asked for
    #: when an earlier attempt of the same request already claimed).
    node_id: int


async def _claim_in_group(
    conn: Connection,
    node_id: int,
    consumer_uuid: str,
    amounts: Amounts,
    group_uuid: str,
    reserved: Reserved,
) -> Claim:
    result, held_on = await group_claims.check_and_claim(
        conn,
        node_id,
        consumer_uuid,
        group_uuid=group_uuid,
        vcpus=amounts.vcpus,
        memory_mb=amounts.memory_mb,
        disk_gb=amounts.disk_gb,
        reserved=reserved,
    )
    return Claim(result, held_on)


async def claim(
    db: Database,
    node_id: int,
    consumer_uuid: str,
    amounts: Amounts,
    *,
    group_uuid: str | None = None,
    reserved: Reserved = NO_RESERVED,
) -> Claim:
    """Claim ``amounts`` on the node for the consumer (or report what it already holds).

    With ``group_uuid`` (a server group with a hard policy) the policy is
    checked in the claim's transaction: GROUP_POLICY when it refuses the host.

    Otherwise the claim is :func:`~nubes.db.api.compute_nodes.claim_writes`
    committed through :func:`nubes.db.group_commit.commit`, which groups it
    with concurrent claims where the database runs units.
    """
    if group_uuid is not None:
        return await db.run_in_writer(
            _claim_in_group, node_id, consumer_uuid, amounts, group_uuid, reserved
        )
    writes = compute_nodes.claim_writes(
        node_id,
        consumer_uuid,
        vcpus=amounts.vcpus,
        memory_mb=amounts.memory_mb,
        disk_gb=amounts.disk_gb,
        reserved=reserved,
    )
    try:
        (found,) = await group_commit.commit(db, writes.key, writes.parts())
    except exception.ClaimNotMade as refused:
        result, held_on = compute_nodes.refusal(refused)
        return Claim(result, held_on)
    assert found is not None
    return Claim(ClaimResult(ClaimOutcome.CLAIMED, int(found["generation"])), node_id)


async def _move(
    conn: Connection,
    node_uuid: str,
    consumer_uuid: str,
    amounts: Amounts,
    reserved: Reserved,
    down_time: float,
) -> tuple[ClaimResult, int]:
    node = await compute_nodes.get_by_uuid(conn, node_uuid)
    group = await group_claims.lock_group(conn, None, consumer_uuid)
    for held in await host_views.consumer_nodes(conn, consumer_uuid):
        if held != node["id"]:
            await compute_nodes.release(conn, consumer_uuid, node_id=held)
    if not await host_views.compute_host_is_up(conn, node["host"], liveness.window(down_time)):
        # Chosen as an alternate when the build was scheduled, maybe long
        # ago: the host may have died since.
        return ClaimResult(ClaimOutcome.HOST_DOWN, None), int(node["id"])
    if group is not None and group["policy"] in group_policy.HARD_POLICIES:
        # Checked once the failed host is given back: an affinity group's
        # first member may go anywhere again.
        refused = await group_claims.refusal(conn, group, int(node["id"]), consumer_uuid)
        if refused is not None:
            return refused, int(node["id"])
    result = await compute_nodes.claim(
        conn,
        node["id"],
        consumer_uuid,
        vcpus=amounts.vcpus,
        memory_mb=amounts.memory_mb,
        disk_gb=amounts.disk_gb,
        reserved=reserved,
    )
    return result, int(node["id"])


async def claim_alternate(
    db: Database,
    node_uuid: str,
    consumer_uuid: str,
    amounts: Amounts,
    reserved: Reserved = NO_RESERVED,
    *,
    down_time: float,
) -> tuple[ClaimResult, int]:
    """Move the consumer's claim to an alternate node (a reschedule).

    What the consumer holds on other nodes (the host that failed the build)
    is released in the same transaction, whether or not the alternate has
    room: capacity is re-checked by the same conditional UPDATE as any claim,
    and the policy of the consumer's server group as in :func:`claim`. An
    alternate whose service is down now (``down_time``: ``service_down_time``)
    is refused (HOST_DOWN), whatever the scheduler's view said when it was chosen.
    """
    try:
        return await db.run_in_writer(_move, node_uuid, consumer_uuid, amounts, reserved, down_time)
    except exception.ComputeHostNotFound:
        return ClaimResult(ClaimOutcome.NOT_FOUND, None), -1


async def release(db: Database, consumer_uuid: str) -> list[int]:
    """Give back everything the consumer holds; the ids of the nodes it held on."""

    async def _release(conn: Connection) -> list[int]:
        held = await host_views.consumer_nodes(conn, consumer_uuid)
        if held:
            await compute_nodes.release(conn, consumer_uuid)
        return held

    return await db.run_in_writer(_release)
