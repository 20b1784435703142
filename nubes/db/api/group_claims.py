"""Claims of server group members: the group's hard policy checked inside the claim.

A scheduler decides on a view read before the claim, so two builds of one
anti-affinity group racing in two schedulers would both see an empty host
and both claim it; the capacity check of the claim cannot see that. So a
member's claim runs, in one transaction:

1. a lock on the group row (an UPDATE of its ``updated_at``): claims of the
   same group's members wait for each other, other claims do not. No
   ``SELECT ... FOR UPDATE`` (Galera turns it into certification deadlocks;
   a conflict reported as a deadlock is retried by ``run_in_writer``).
2. where the group's members are *now* (read after the lock, so it sees
   every claim of the group committed before: PostgreSQL and MariaDB run
   READ COMMITTED, SQLite has one writer);
3. the policy's verdict on the node's host (:func:`host_allowed`, the one
   home of the rule; the scheduler's filters ask it too), and only then
4. the ordinary atomic claim (:func:`compute_nodes.claim_for_consumer`).

A member "is on" every host where it holds resources, directly or through
one of its migrations (the source of a move in progress). For
anti-affinity the instance being placed does not count against itself; for
affinity its own host counts, as in Nova (a lone member of an affinity
group has nowhere else to go).

The group is found by the uuid the request names, else by the consumer's
membership (a reschedule's alternate). Soft policies are weighers only and
take no lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.api import compute_nodes as nodes_api
from nubes.db.api._common import fetch_one, live
from nubes.db.api.compute_nodes import ClaimOutcome, ClaimResult
from nubes.db.models import (
    allocations,
    compute_nodes,
    instance_group_members,
    instance_groups,
    migrations,
)
from nubes.db.types import utcnow
from nubes.group_policy import (
    AFFINITY,
    ANTI_AFFINITY,
    DEFAULT_MAX_SERVER_PER_HOST,
    HARD_POLICIES,
)

_g = instance_groups
_gm = instance_group_members


@dataclasses.dataclass(frozen=True, slots=True)
class GroupPolicy:
    uuid: str
    policy: str | None
    max_server_per_host: int


def policy_of(row: Mapping[str, Any]) -> GroupPolicy:
    """A group row's policy and its 2.64 rule."""
    rules = row.get("rules") or {}
    limit = int(rules.get("max_server_per_host", DEFAULT_MAX_SERVER_PER_HOST))
    return GroupPolicy(str(row["uuid"]), row.get("policy"), limit)


def host_allowed(
    policy: str | None, max_server_per_host: int, members: Mapping[str, int], host: str
) -> bool:
    """Whether a hard policy lets one more member onto ``host``.

    ``members`` maps host -> members there (for anti-affinity without the
    instance being placed). Affinity: a host with members, any host for the
    first. Anti-affinity: fewer than ``max_server_per_host`` members there.
    """
    if policy == ANTI_AFFINITY:
        return members.get(host, 0) < max_server_per_host
    if policy == AFFINITY:
        return not members or host in members
    return True


async def member_hosts(
    conn: AsyncConnection, group_id: int, *, exclude: Collection[str] = ()
) -> dict[str, int]:
    """Host -> how many of the group's members hold resources there (directly
    or through their migrations), not counting the instances in ``exclude``."""
    m, a, cn, mig = _gm.c, allocations.c, compute_nodes.c, migrations.c
    direct = (
        select(m.instance_uuid.label("member"), cn.host.label("host"))
        .select_from(
            _gm.join(allocations, a.consumer_uuid == m.instance_uuid).join(
                compute_nodes, cn.id == a.compute_node_id
            )
        )
        .where(m.group_id == group_id, live(_gm))
    )
    moving = (
        select(m.instance_uuid.label("member"), cn.host.label("host"))
        .select_from(
            _gm.join(migrations, mig.instance_uuid == m.instance_uuid)
            .join(allocations, a.consumer_uuid == mig.uuid)
            .join(compute_nodes, cn.id == a.compute_node_id)
        )
        .where(m.group_id == group_id, live(_gm))
    )
    seen: dict[str, set[str]] = {}
    for member, host in (await conn.execute(union_all(direct, moving))).all():
        if member not in exclude:
            seen.setdefault(host, set()).add(member)
    return {host: len(found) for host, found in seen.items()}


async def lock_group(
    conn: AsyncConnection, group_uuid: str | None, consumer_uuid: str
) -> dict[str, Any] | None:
    """Take the group's row lock and return the row (None: no such live group).

    ``group_uuid`` None: the group ``consumer_uuid`` is a member of.
    """
    if group_uuid is not None:
        where = _g.c.uuid == group_uuid
    else:
        member_of = select(_gm.c.group_id).where(_gm.c.instance_uuid == consumer_uuid, live(_gm))
        where = _g.c.id.in_(member_of.scalar_subquery())
    locked = await conn.execute(update(_g).where(where, live(_g)).values(updated_at=utcnow()))
    if not locked.rowcount:
        return None
    return await fetch_one(conn, select(_g).where(where, live(_g)))


async def check_and_claim(
    conn: AsyncConnection,
    node_id: int,
    consumer_uuid: str,
    *,
    group_uuid: str | None,
    vcpus: int = 0,
    memory_mb: int = 0,
    disk_gb: int = 0,
    reserved: nodes_api.Reserved = nodes_api.NO_RESERVED,
) -> tuple[ClaimResult, int]:
    """:func:`compute_nodes.claim_for_consumer`, refused with GROUP_POLICY when the
    consumer's hard-policy group does not allow the node's host (see module docstring).

    A consumer already holding resources (a retried step) gets what it holds,
    whatever the policy says now.
    """
    amounts = {"vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb}
    group = await lock_group(conn, group_uuid, consumer_uuid)
    if group is not None and group["policy"] in HARD_POLICIES:
        held = select(allocations.c.id).where(allocations.c.consumer_uuid == consumer_uuid)
        if (await conn.execute(held.limit(1))).first() is None:
            verdict = await refusal(conn, group, node_id, consumer_uuid)
            if verdict is not None:
                return verdict, node_id
    return await nodes_api.claim_for_consumer(
        conn, node_id, consumer_uuid, **amounts, reserved=reserved
    )


async def refusal(
    conn: AsyncConnection, group: Mapping[str, Any], node_id: int, consumer_uuid: str
) -> ClaimResult | None:
    """GROUP_POLICY (or NOT_FOUND) when the claim may not go ahead, else None."""
    node = await fetch_one(
        conn,
        select(compute_nodes.c.host, compute_nodes.c.generation).where(
            compute_nodes.c.id == node_id, live(compute_nodes)
        ),
    )
    if node is None:
        return ClaimResult(ClaimOutcome.NOT_FOUND, None)
    policy = policy_of(group)
    exclude = (consumer_uuid,) if policy.policy == ANTI_AFFINITY else ()
    members = await member_hosts(conn, int(group["id"]), exclude=exclude)
    if host_allowed(policy.policy, policy.max_server_per_host, members, node["host"]):
        return None
    return ClaimResult(ClaimOutcome.GROUP_POLICY, int(node["generation"]))


async def group_placement(
    conn: AsyncConnection, group_uuid: str, *, exclude: Collection[str] = ()
) -> tuple[GroupPolicy, dict[str, int]] | None:
    """A live group's policy and where its members are (None: no such group)."""
    row = await fetch_one(conn, select(_g).where(_g.c.uuid == group_uuid, live(_g)))
    if row is None:
        return None
    policy = policy_of(row)
    skip = exclude if policy.policy != AFFINITY else ()
    return policy, await member_hosts(conn, int(row["id"]), exclude=skip)
