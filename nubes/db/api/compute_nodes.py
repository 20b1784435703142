"""Compute nodes, and atomic resource claims on them.

A claim is a single conditional UPDATE of the node row::

    UPDATE compute_nodes
       SET vcpus_used = vcpus_used + :v, memory_mb_used = ..., local_gb_used = ...,
           generation = generation + 1
     WHERE id = :node AND deleted = 0
       AND vcpus_used + :v <= (vcpus - :reserved_v) * cpu_allocation_ratio
       AND memory_mb_used + :m <= (memory_mb - :reserved_m) * ram_allocation_ratio
       AND local_gb_used + :d <= (local_gb - :reserved_d) * disk_allocation_ratio
       [AND generation = :expected]

(capacity as Nova's placement computes it: (total - reserved) x ratio; the
reserved amounts are the operator's, :class:`Reserved`, never the host's.)

followed by an INSERT of the allocation row in the same transaction. The
database evaluates the capacity check and applies the increment atomically
under the row's write lock, so concurrent claims can never push a node past
capacity × ratio, without SELECT ... FOR UPDATE (which Galera turns into
certification deadlocks). ``expected_generation`` adds optimistic
concurrency for a scheduler that decided on a snapshot of the node: if the
node changed since, the claim reports GENERATION_CONFLICT and the scheduler
re-reads. The reason a claim failed is read only on the failure path.

Claims are idempotent per (consumer, node): a retried step of a durable task
that already claimed gets ALREADY_CLAIMED instead of double-counting.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db import group_commit
from nubes.db.api._common import (
    ReadDeleted,
    Row,
    StatementCache,
    check_columns,
    fetch_all,
    fetch_one,
    insert_row,
    live,
    new_uuid,
    soft_delete_where,
    update_row,
    where_deleted,
)
from nubes.db.models import NOT_DELETED, allocations, compute_nodes, services
from nubes.db.types import UTCDateTime, utcnow

#: Usage columns and the allocation amount each claim adds to them.
_USAGE = (
    ("vcpus_used", "vcpus", "cpu_allocation_ratio", "vcpus"),
    ("memory_mb_used", "memory_mb", "ram_allocation_ratio", "memory_mb"),
    ("local_gb_used", "local_gb", "disk_allocation_ratio", "disk_gb"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Reserved:
    """What the operator keeps back on every node for the host itself.

    Nova's ``reserved_host_cpus``, ``reserved_host_memory_mb`` and
    ``reserved_host_disk_mb`` (as whole GB, rounded up as Nova reports it to
    placement), read by the controllers from their own configuration, never
    reported by a host.
    """

    vcpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0

    @classmethod
    def from_conf(cls, conf: Any) -> Reserved:
        return cls(
            vcpus=conf.reserved_host_cpus,
            memory_mb=conf.reserved_host_memory_mb,
            disk_gb=-(-conf.reserved_host_disk_mb // 1024),
        )

    def params(self) -> dict[str, int]:
        """As the claim statements' bind parameters."""
        return {
            "_reserved_vcpus": self.vcpus,
            "_reserved_memory_mb": self.memory_mb,
            "_reserved_disk_gb": self.disk_gb,
        }


NO_RESERVED = Reserved()


def _capacity(total: Any, ratio: Any, amount: str) -> ColumnElement[Any]:
    """A node's capacity for ``amount`` in SQL: (total - reserved) x ratio."""
    return (total - bindparam(f"_reserved_{amount}", type_=Integer)) * ratio


class ClaimOutcome(enum.StrEnum):
    CLAIMED = "claimed"
    #: This consumer already holds an allocation on this node (retry of a step).
    ALREADY_CLAIMED = "already_claimed"
    NO_CAPACITY = "no_capacity"
    #: ``expected_generation`` no longer matches: re-read the node and decide again.
    GENERATION_CONFLICT = "generation_conflict"
    NOT_FOUND = "not_found"
    #: The consumer's server group does not allow this host (affinity, anti-affinity).
    GROUP_POLICY = "group_policy"
    #: The node's compute service is down (``nubes.liveness``): nothing is placed there.
    HOST_DOWN = "host_down"


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimResult:
    outcome: ClaimOutcome
    #: The node's generation after the claim (None when the node is gone).
    generation: int | None

    @property
    def ok(self) -> bool:
        return self.outcome in (ClaimOutcome.CLAIMED, ClaimOutcome.ALREADY_CLAIMED)


#: The services binary a node belongs to.
COMPUTE_BINARY = "compute"


def owning_service_id(host: Any) -> Any:
    """The id of ``host``'s live compute service (a scalar subquery; NULL if none).

    Constants are literal SQL, so ``host`` (a value or a bind parameter) is
    its only parameter: grouped statements take their parameters by name.
    """
    return (
        select(services.c.id)
        .where(
            services.c.host == host,
            services.c.binary == literal_column(f"'{COMPUTE_BINARY}'"),
            services.c.deleted == literal_column(str(NOT_DELETED)),
        )
        .scalar_subquery()
    )


async def create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    """Add a node; DBDuplicateEntry if host+hypervisor_hostname has a live one.

    Without a ``service_id``, the node is bound to its host's live compute
    service (or to the one it registers later: :func:`bind_to_service`);
    placement by node goes through that binding, never by name alone.
    """
    data = dict(values)
    check_columns(compute_nodes, data)
    data.setdefault("uuid", new_uuid())
    if data.get("service_id") is None and data.get("host") is not None:
        data["service_id"] = (await conn.execute(select(owning_service_id(data["host"])))).scalar()
    return await insert_row(conn, compute_nodes, data)


async def bind_to_service(conn: AsyncConnection, host: str, service_id: int) -> None:
    """Bind ``host``'s live nodes that have no live service to its new compute service."""
    live_services = select(services.c.id).where(live(services))
    await conn.execute(
        sql_update(compute_nodes)
        .where(
            compute_nodes.c.host == host,
            live(compute_nodes),
            or_(
                compute_nodes.c.service_id.is_(None),
                compute_nodes.c.service_id.not_in(live_services),
            ),
        )
        .values(service_id=service_id)
    )


async def _get(conn: AsyncConnection, where: ColumnElement[bool], name: Any) -> Row:
    row = await fetch_one(conn, select(compute_nodes).where(where, live(compute_nodes)))
    if row is None:
        raise exception.ComputeHostNotFound(node=name)
    return row


async def get_by_id(conn: AsyncConnection, node_id: int) -> Row:
    return await _get(conn, compute_nodes.c.id == node_id, node_id)


async def get_by_uuid(conn: AsyncConnection, uuid: str) -> Row:
    return await _get(conn, compute_nodes.c.uuid == uuid, uuid)


async def get_by_host_and_nodename(conn: AsyncConnection, host: str, nodename: str) -> Row:
    where = (compute_nodes.c.host == host) & (compute_nodes.c.hypervisor_hostname == nodename)
    return await _get(conn, where, f"{nodename} on {host}")


async def get_all(
    conn: AsyncConnection, *, host: str | None = None, read_deleted: ReadDeleted = "no"
) -> list[Row]:
    stmt = where_deleted(select(compute_nodes), compute_nodes, read_deleted)
    if host is not None:
        stmt = stmt.where(compute_nodes.c.host == host)
    return await fetch_all(conn, stmt.order_by(compute_nodes.c.id))


async def update(
    conn: AsyncConnection,
    node_id: int,
    values: Mapping[str, Any],
    *,
    expected_generation: int | None = None,
) -> Row:
    """Change a node (inventory, ratios, metrics ...) and bump its generation.

    With ``expected_generation``, raises ComputeNodeGenerationConflict if
    the node changed since the caller read it.
    """
    check_columns(compute_nodes, values, extra_protected=("uuid", "generation"))
    data = {**values, "generation": compute_nodes.c.generation + 1}
    conditions = []
    if expected_generation is not None:
        conditions.append(compute_nodes.c.generation == expected_generation)
    row = await update_row(
        conn, compute_nodes, compute_nodes.c.id == node_id, data, conditions=conditions
    )
    if row is None:
        current = await get_by_id(conn, node_id)
        raise exception.ComputeNodeGenerationConflict(
            node=node_id, expected=expected_generation, actual=current["generation"]
        )
    return row


async def destroy(conn: AsyncConnection, node_id: int, *, now: dt.datetime | None = None) -> None:
    if not await soft_delete_where(conn, compute_nodes, compute_nodes.c.id == node_id, now):
        raise exception.ComputeHostNotFound(node=node_id)


# --- claims ------------------------------------------------------------------


async def claim(
    conn: AsyncConnection,
    node_id: int,
    consumer_uuid: str,
    *,
    vcpus: int = 0,
    memory_mb: int = 0,
    disk_gb: int = 0,
    expected_generation: int | None = None,
    reserved: Reserved = NO_RESERVED,
) -> ClaimResult:
    """Atomically take resources on a node for a consumer (see module docstring)."""
    amounts = {"vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb}
    if any(v < 0 for v in amounts.values()):
        raise exception.Invalid(reason=f"claim amounts must not be negative: {amounts}")
    held = await conn.execute(
        _STATEMENTS.get(("held",), _held_statement),
        {"_consumer": consumer_uuid, "_node": node_id},
    )
    if held.first() is not None:
        return ClaimResult(ClaimOutcome.ALREADY_CLAIMED, await _generation(conn, node_id))
    return await _take(conn, node_id, consumer_uuid, amounts, expected_generation, reserved)


async def _take(
    conn: AsyncConnection,
    node_id: int,
    consumer_uuid: str,
    amounts: Mapping[str, int],
    expected_generation: int | None,
    reserved: Reserved,
) -> ClaimResult:
    """The conditional UPDATE and the allocation row (the consumer holds nothing here)."""
    shape = (tuple(bool(amounts[a]) for _, _, _, a in _USAGE), expected_generation is not None)
    returning = bool(conn.dialect.update_returning)
    stmt = _STATEMENTS.get(("claim", shape, returning), lambda: _claim_statement(*shape, returning))
    params: dict[str, Any] = {"_node": node_id, "_expected": expected_generation}
    params.update({f"_{amount}": amounts[amount] for _, _, _, amount in _USAGE})
    params.update(reserved.params())
    generation: int | None
    if returning:
        generation = (await conn.execute(stmt, params)).scalar()
        claimed = generation is not None
    else:
        claimed = bool((await conn.execute(stmt, params)).rowcount)
        generation = None if expected_generation is None else expected_generation + 1
    if not claimed:
        return await _why_not(conn, node_id, amounts, expected_generation)
    # No RETURNING: nothing of the allocation row is needed, and it saves a fetch.
    await conn.execute(
        _STATEMENTS.get(("allocate",), allocations.insert),
        {"consumer_uuid": consumer_uuid, "compute_node_id": node_id, **amounts},
    )
    if generation is None:
        generation = await _generation(conn, node_id)
    return ClaimResult(ClaimOutcome.CLAIMED, generation)


async def claim_for_consumer(
    conn: AsyncConnection,
    node_id: int,
    consumer_uuid: str,
    *,
    vcpus: int = 0,
    memory_mb: int = 0,
    disk_gb: int = 0,
    reserved: Reserved = NO_RESERVED,
) -> tuple[ClaimResult, int]:
    """Claim on a node unless the consumer already holds resources on *any* node.

    The scheduler's claim: a retried scheduling step gets ALREADY_CLAIMED
    and the node it holds instead of a second claim elsewhere. Returns the
    result and the node the consumer holds on (``node_id`` unless already
    claimed). :func:`claim_writes` run in the caller's transaction.
    """
    parts = claim_writes(
        node_id, consumer_uuid, vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb, reserved=reserved
    )
    try:
        await parts.update.run(conn)
    except exception.ClaimNotMade as refused:
        return refusal(refused)
    await parts.allocation.run(conn)
    found = await parts.generation.run(conn)
    assert found is not None
    return ClaimResult(ClaimOutcome.CLAIMED, int(found["generation"])), node_id


def refusal(refused: exception.ClaimNotMade) -> tuple[ClaimResult, int]:
    """What :class:`~nubes.exception.ClaimNotMade` from :func:`claim_writes` says."""
    args = refused.kwargs
    return ClaimResult(ClaimOutcome(args["outcome"]), args["generation"]), int(args["node"])


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimWrites:
    """The scheduler's claim, described once (see :func:`claim_writes`)."""

    update: group_commit.Write
    allocation: group_commit.Write
    generation: group_commit.Read
    #: The row the claim locks first and most contended: a grouped batch
    #: orders its units by this key, so two batches claiming on the same
    #: nodes (a scheduler's two writers, two schedulers) lock them in one
    #: order. Keyed by consumer, a batch claiming node 5 then 3 and one
    #: claiming 3 then 5 deadlocked, and PostgreSQL only breaks that after
    #: its deadlock_timeout (1 s), stalling every claim behind them.
    key: str

    def parts(self) -> list[group_commit.CommitPart]:
        return [self.update, self.allocation, self.generation]


def claim_writes(
    node_id: int,
    consumer_uuid: str,
    *,
    vcpus: int = 0,
    memory_mb: int = 0,
    disk_gb: int = 0,
    reserved: Reserved = NO_RESERVED,
) -> ClaimWrites:
    """:func:`claim_for_consumer` as descriptions, for :func:`nubes.db.group_commit.commit`.

    The conditional UPDATE of the node (room for the amounts, the consumer
    holding nothing anywhere), the allocation row, and a read of the node's
    new generation: committed together, grouped with other claims where the
    database runs units. When the UPDATE matches nothing, nothing is
    written and :class:`~nubes.exception.ClaimNotMade` says why (read in
    the same transaction; :func:`refusal` turns it into the result).
    """
    amounts = {"vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb}
    if any(v < 0 for v in amounts.values()):
        raise exception.Invalid(reason=f"claim amounts must not be negative: {amounts}")
    checked = tuple(bool(amounts[a]) for _, _, _, a in _USAGE)
    params: dict[str, Any] = {"_node": node_id, "_consumer": consumer_uuid, "_now": utcnow()}
    params.update({f"_{amount}": amounts[amount] for _, _, _, amount in _USAGE})
    params.update(reserved.params())

    async def missed(conn: AsyncConnection) -> None:
        held_stmt = _STATEMENTS.get(("held_any",), _held_any_statement)
        held_node = (await conn.execute(held_stmt, {"_consumer": consumer_uuid})).scalar()
        if held_node is not None:
            outcome = ClaimResult(ClaimOutcome.ALREADY_CLAIMED, await _generation(conn, held_node))
            node = int(held_node)
        else:
            outcome, node = await _why_not(conn, node_id, amounts, None), node_id
        raise exception.ClaimNotMade(
            outcome=outcome.outcome.value, node=node, generation=outcome.generation
        )

    return ClaimWrites(
        group_commit.Write(
            (__name__, "claim", checked), lambda: _claim_update_statement(checked), params, missed
        ),
        group_commit.Write((__name__, "allocate"), _allocation_statement, params),
        group_commit.Read((__name__, "generation"), _generation_statement, {"_node": node_id}),
        key=f"compute_node-{node_id}",
    )


def _claim_update_statement(checked: tuple[bool, ...]) -> Any:
    """The claim's conditional UPDATE of the node; it also requires that the
    consumer hold nothing anywhere. A zero amount is not checked: a node
    already over a lowered ratio can still take a claim that adds nothing there."""
    node = compute_nodes.c
    values: dict[str, Any] = {
        "generation": node.generation + literal_column("1"),
        "updated_at": bindparam("_now", type_=UTCDateTime()),
    }
    held = exists().where(allocations.c.consumer_uuid == bindparam("_consumer"))
    conditions: list[ColumnElement[bool]] = [
        node.id == bindparam("_node", type_=Integer),
        node.deleted == literal_column("0"),
        ~held,
    ]
    for (used, total, ratio, amount), check in zip(_USAGE, checked, strict=True):
        values[used] = node[used] + bindparam(f"_{amount}", type_=Integer)
        if check:
            wanted = node[used] + bindparam(f"_{amount}", type_=Integer)
            conditions.append(wanted <= _capacity(node[total], node[ratio], amount))
    return compute_nodes.update().where(*conditions).values(values)


def _allocation_statement() -> Any:
    return allocations.insert().values(
        consumer_uuid=bindparam("_consumer"),
        compute_node_id=bindparam("_node", type_=Integer),
        vcpus=bindparam("_vcpus", type_=Integer),
        memory_mb=bindparam("_memory_mb", type_=Integer),
        disk_gb=bindparam("_disk_gb", type_=Integer),
        created_at=bindparam("_now", type_=UTCDateTime()),
    )


def _generation_statement() -> Any:
    return select(compute_nodes.c.generation).where(
        compute_nodes.c.id == bindparam("_node", type_=Integer)
    )


def _held_statement() -> Any:
    return select(allocations.c.id).where(
        allocations.c.consumer_uuid == bindparam("_consumer"),
        allocations.c.compute_node_id == bindparam("_node"),
    )


# The claim is the scheduler's hot path: prebuilt statements with bound
# parameters skip rebuilding and cache-keying them on every call.
_STATEMENTS = StatementCache()


def _held_any_statement() -> Any:
    return (
        select(allocations.c.compute_node_id)
        .where(allocations.c.consumer_uuid == bindparam("_consumer"))
        .limit(1)
    )


def _claim_statement(checked: tuple[bool, ...], with_generation: bool, returning: bool) -> Any:
    node = compute_nodes.c
    values: dict[str, Any] = {"generation": node.generation + 1}
    conditions: list[ColumnElement[bool]] = [node.id == bindparam("_node"), live(compute_nodes)]
    for (used, total, ratio, amount), check in zip(_USAGE, checked, strict=True):
        values[used] = node[used] + bindparam(f"_{amount}", type_=Integer)
        if check:
            wanted = node[used] + bindparam(f"_{amount}", type_=Integer)
            conditions.append(wanted <= _capacity(node[total], node[ratio], amount))
    if with_generation:
        conditions.append(node.generation == bindparam("_expected", type_=Integer))
    stmt = compute_nodes.update().where(*conditions).values(values)
    return stmt.returning(node.generation) if returning else stmt


async def _generation(conn: AsyncConnection, node_id: int) -> int | None:
    stmt = _STATEMENTS.get(("generation",), _generation_statement)
    return (await conn.execute(stmt, {"_node": node_id})).scalar()


async def _why_not(
    conn: AsyncConnection, node_id: int, amounts: Mapping[str, int], expected: int | None
) -> ClaimResult:
    row = await fetch_one(
        conn, select(compute_nodes).where(compute_nodes.c.id == node_id, live(compute_nodes))
    )
    if row is None:
        return ClaimResult(ClaimOutcome.NOT_FOUND, None)
    if expected is not None and row["generation"] != expected:
        return ClaimResult(ClaimOutcome.GENERATION_CONFLICT, row["generation"])
    return ClaimResult(ClaimOutcome.NO_CAPACITY, row["generation"])


def _decrement(column: ColumnElement[int], amount: ColumnElement[int]) -> ColumnElement[int]:
    # Never below zero: a release after an operator reset must not go negative.
    # Zero as a literal: a prepared statement binds only named parameters.
    zero: ColumnElement[int] = literal_column("0")
    return case((column - amount < zero, zero), else_=column - amount)


def _released(node_id: bool) -> ColumnElement[bool]:
    held = allocations.c.consumer_uuid == bindparam("_consumer")
    return held & (allocations.c.compute_node_id == bindparam("_node")) if node_id else held


def _release_usage_statement(node_id: bool) -> Any:
    # Each node's usage goes down by the sum of what the consumer holds on
    # it, read in the statement: one UPDATE however many allocations there
    # are, and a statement a grouped unit can carry.
    node = compute_nodes.c
    a = allocations.c
    values: dict[str, Any] = {
        "generation": node.generation + literal_column("1"),
        "updated_at": bindparam("_now", type_=UTCDateTime()),
    }
    for used, _total, _ratio, amount in _USAGE:
        held = (
            select(func.coalesce(func.sum(a[amount]), literal_column("0")))
            .where(_released(node_id), a.compute_node_id == node.id)
            .scalar_subquery()
        )
        values[used] = _decrement(node[used], held)
    on = select(a.compute_node_id).where(_released(node_id))
    return sql_update(compute_nodes).where(node.id.in_(on)).values(values)


def _release_statement(node_id: bool) -> Any:
    return delete(allocations).where(_released(node_id))


def release_writes(
    consumer_uuid: str, *, node_id: int | None = None
) -> tuple[group_commit.Write, group_commit.Write]:
    """:func:`release` as descriptions, for :func:`nubes.db.group_commit.commit`
    (grouped with the rest of a task's commit where the database runs units):
    the usage of the nodes it held on given back, then its allocations
    deleted; both match nothing when it holds nothing (a repeat)."""
    shape = node_id is not None
    params: dict[str, Any] = {"_consumer": consumer_uuid, "_now": utcnow()}
    if shape:
        params["_node"] = node_id
    return (
        group_commit.Write(
            (__name__, "release_usage", shape), lambda: _release_usage_statement(shape), params
        ),
        group_commit.Write((__name__, "release", shape), lambda: _release_statement(shape), params),
    )


async def release(conn: AsyncConnection, consumer_uuid: str, *, node_id: int | None = None) -> int:
    """Give back what ``consumer_uuid`` holds (on one node, or all); allocations released."""
    usage, allocated = release_writes(consumer_uuid, node_id=node_id)
    await usage.run(conn)
    return await allocated.count(conn)


async def allocations_get_by_consumer(conn: AsyncConnection, consumer_uuid: str) -> list[Row]:
    stmt = select(allocations).where(allocations.c.consumer_uuid == consumer_uuid)
    return await fetch_all(conn, stmt.order_by(allocations.c.id))


async def allocations_get_by_node(conn: AsyncConnection, node_id: int) -> list[Row]:
    stmt = select(allocations).where(allocations.c.compute_node_id == node_id)
    return await fetch_all(conn, stmt.order_by(allocations.c.id))


async def allocations_move(conn: AsyncConnection, from_consumer: str, to_consumer: str) -> int:
    """Hand a consumer's allocations to another (an instance's to its migration)."""
    result = await conn.execute(
        allocations.update()
        .where(allocations.c.consumer_uuid == from_consumer)
        .values(consumer_uuid=to_consumer)
    )
    return int(result.rowcount)


def _hand_over_statement() -> Any:
    a = allocations.c
    # What the receiver holds, through a DISTINCT derived table: MySQL refuses
    # an UPDATE whose condition reads the table it updates unless that read
    # is materialised first, which DISTINCT forces (MariaDB, SQLite and
    # PostgreSQL take either form).
    held = (
        select(a.consumer_uuid)
        .where(a.consumer_uuid == bindparam("_to"))
        .distinct()
        .subquery("held")
    )
    receiver_holds = exists(select(held.c.consumer_uuid))
    return (
        allocations.update()
        .where(a.consumer_uuid == bindparam("_from"), ~receiver_holds)
        .values(consumer_uuid=bindparam("_to"))
    )


def hand_over_write(from_consumer: str, to_consumer: str) -> group_commit.Write:
    """``from_consumer``'s allocations become ``to_consumer``'s, unless
    ``to_consumer`` holds some already (a repeat: nothing changes), as a
    description for :func:`nubes.db.group_commit.commit` (optional: handing
    over nothing is no error)."""
    params = {"_from": from_consumer, "_to": to_consumer}
    return group_commit.Write((__name__, "hand_over"), _hand_over_statement, params)


async def holds_allocations(conn: AsyncConnection, consumer_uuid: str) -> bool:
    """Whether ``consumer_uuid`` holds any allocation."""
    stmt = select(allocations.c.id).where(allocations.c.consumer_uuid == consumer_uuid).limit(1)
    return (await conn.execute(stmt)).first() is not None


async def usage_from_allocations(conn: AsyncConnection, node_id: int) -> dict[str, int]:
    """Sum of the allocations on a node, to check or heal its ``*_used`` counters."""
    total = {"vcpus": 0, "memory_mb": 0, "disk_gb": 0}
    for alloc in await allocations_get_by_node(conn, node_id):
        for key in total:
            total[key] += alloc[key]
    return total


async def get_usage(conn: AsyncConnection, node_id: int) -> Row | None:
    """The node's id, generation and usage columns only (the scheduler's cheap refresh)."""
    node = compute_nodes.c
    cols = [node.id, node.generation, node.vcpus, node.memory_mb, node.local_gb]
    cols += [node[u] for u, _, _, _ in _USAGE]
    cols += [node[r] for _, _, r, _ in _USAGE]
    return await fetch_one(conn, select(*cols).where(node.id == node_id, live(compute_nodes)))


async def hosts_of_node_name(conn: AsyncConnection, hypervisor_hostname: Any) -> list[str]:
    """The hosts that have a live node named ``hypervisor_hostname``."""
    if not isinstance(hypervisor_hostname, str):
        return []
    stmt = select(compute_nodes.c.host).where(
        compute_nodes.c.hypervisor_hostname == hypervisor_hostname, live(compute_nodes)
    )
    return [row[0] for row in (await conn.execute(stmt)).all()]


async def uuid_exists(conn: AsyncConnection, uuid: Any) -> bool:
    """Whether any node, live or deleted, has ever had ``uuid``."""
    stmt = select(compute_nodes.c.id).where(compute_nodes.c.uuid == uuid).limit(1)
    return (await conn.execute(stmt)).first() is not None
