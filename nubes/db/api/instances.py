"""Instances and instance faults (listing them: :mod:`.instance_listing`, re-exported here).

:func:`update` is the conductor's hot path (``Instance.save()``): one
``UPDATE ... WHERE uuid = ? AND deleted = 0 [AND vm_state IN (...)]
[AND task_state IN (...)] RETURNING *``. The expected-state conditions make
it a compare-and-set: if another writer moved the instance on first, no
row matches and the caller gets :class:`~nubes.exception.InstanceUpdateConflict`
naming what it expected and what it found (read only on that failure path).
:func:`try_update` is the same without reading anything back, for callers
that only need to know whether they won.

Both take ``placed_on_host``: the update then also requires the instance to
be placed on that host *in the database* (see :func:`placed_on_host_clause`),
which is how the conductor authorises a compute host's save in the same
statement that makes it; a refusal raises
:class:`~nubes.exception.InstanceNotOnHost`. :func:`get_placed_on_host` is
the read twin.

:func:`save` is the same compare-and-set for the conductor's
``Instance.save()`` of a few fields, outside any transaction of the caller:
concurrent saves are grouped into one transaction by
:mod:`nubes.db.group_commit`, run through the driver with prebuilt SQL, and
nothing is read back (``updated_at`` is set from Python and returned).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db import group_commit
from nubes.db.api import tags as tags_api
from nubes.db.api._common import (
    UNSET,
    ReadDeleted,
    Row,
    StatementCache,
    Unset,
    check_columns,
    fetch_all,
    fetch_one,
    insert_row,
    insert_rows,
    live,
    match_clause,
    new_uuid,
    now_or,
    soft_delete_where,
    to_row,
    where_deleted,
)
from nubes.db.api.compute_nodes import owning_service_id
from nubes.db.api.instance_listing import DEFAULT_SORT_DIRS as DEFAULT_SORT_DIRS
from nubes.db.api.instance_listing import DEFAULT_SORT_KEYS as DEFAULT_SORT_KEYS
from nubes.db.api.instance_listing import EXACT_FILTERS as EXACT_FILTERS
from nubes.db.api.instance_listing import SORT_KEYS as SORT_KEYS
from nubes.db.api.instance_listing import SPECIAL_FILTERS as SPECIAL_FILTERS
from nubes.db.api.instance_listing import get_all as get_all
from nubes.db.api.migrations import FINISHED_STATUSES
from nubes.db.engine import Database
from nubes.db.models import (
    NOT_DELETED,
    compute_nodes,
    instance_faults,
    instance_group_members,
    instances,
    migrations,
)
from nubes.db.types import UTC, utcnow

#: vm_state of a freshly created instance (Nova's BUILDING).
DEFAULT_VM_STATE = "building"
#: vm_state set by :func:`destroy` (Nova's DELETED).
DELETED_VM_STATE = "deleted"
#: power_state set by :func:`destroy` (Nova's NOSTATE): no guest is left.
DELETED_POWER_STATE = 0


def _by_uuid(uuid: str) -> ColumnElement[bool]:
    return instances.c.uuid == uuid


async def create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    """Insert an instance; ``uuid`` and ``vm_state`` get defaults when missing."""
    data = dict(values)
    check_columns(instances, data)
    data.setdefault("uuid", new_uuid())
    data.setdefault("vm_state", DEFAULT_VM_STATE)
    return await insert_row(conn, instances, data)


async def create_many(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> list[Row]:
    """:func:`create` for several instances at once (same keys each); the rows, in order."""
    data = []
    # The rows of one request (a min_count batch) name the same columns:
    # each set of names is checked once, not once per server.
    checked: set[frozenset[str]] = set()
    for values in rows:
        item = dict(values)
        names = frozenset(item)
        if names not in checked:
            check_columns(instances, item)
            checked.add(names)
        item.setdefault("uuid", new_uuid())
        item.setdefault("vm_state", DEFAULT_VM_STATE)
        data.append(item)
    stored = {row["uuid"]: row for row in await insert_rows(conn, instances, data)}
    return [stored[item["uuid"]] for item in data]


async def get_by_uuid(conn: AsyncConnection, uuid: str, *, read_deleted: ReadDeleted = "no") -> Row:
    if read_deleted == "no":
        # The common case, on a prebuilt statement (the task engine's reads).
        found = (await conn.execute(_get_statement(), {"_uuid": uuid})).mappings().first()
        row = to_row(found) if found is not None else None
    else:
        stmt = where_deleted(select(instances).where(_by_uuid(uuid)), instances, read_deleted)
        row = await fetch_one(conn, stmt)
    if row is None:
        raise exception.InstanceNotFound(instance_id=uuid)
    return row


def _get_read_statement() -> Any:
    # Every parameter bound by name (a prepared statement's rule): "live" as a literal.
    return select(instances).where(
        instances.c.uuid == bindparam("_uuid"), instances.c.deleted == _ZERO
    )


def get_read(uuid: str) -> group_commit.Read:
    """:func:`get_by_uuid` (live rows) as a description, for a commit's
    transaction (:func:`nubes.db.group_commit.commit`; None if none)."""
    return group_commit.Read((__name__, "get"), _get_read_statement, {"_uuid": uuid})


async def get_many_by_uuids(conn: AsyncConnection, uuids: Sequence[str]) -> dict[str, Row]:
    """The live instances among ``uuids``, by uuid (missing ones left out)."""
    if not uuids:
        return {}

    def build() -> Any:
        return select(instances).where(
            instances.c.uuid.in_(bindparam("_uuids", expanding=True)), live(instances)
        )

    stmt = _STATEMENTS.get(("get_many",), build)
    rows = (await conn.execute(stmt, {"_uuids": list(uuids)})).mappings().all()
    return {row["uuid"]: to_row(row) for row in rows}


async def get_by_id(conn: AsyncConnection, instance_id: int) -> Row:
    row = await fetch_one(
        conn, select(instances).where(instances.c.id == instance_id, live(instances))
    )
    if row is None:
        raise exception.InstanceNotFound(instance_id=instance_id)
    return row


async def get_all_by_host(
    conn: AsyncConnection, host: str, *, node: str | None = None
) -> list[Row]:
    stmt = select(instances).where(instances.c.host == host, live(instances))
    if node is not None:
        stmt = stmt.where(instances.c.node == node)
    return await fetch_all(conn, stmt.order_by(instances.c.id))


async def uuids_idle_since(
    conn: AsyncConnection, vm_state: str, before: dt.datetime, limit: int
) -> list[str]:
    """Instances in ``vm_state`` with no task since before ``before`` (their
    last change), oldest first, at most ``limit``: the soft-deleted servers
    ``[DEFAULT] reclaim_instance_interval`` deletes for good, the shelved ones
    ``shelved_offload_time`` offloads."""
    stmt = (
        select(instances.c.uuid)
        .where(
            instances.c.vm_state == vm_state,
            instances.c.task_state.is_(None),
            instances.c.updated_at < before,
            live(instances),
        )
        .order_by(instances.c.updated_at)
        .limit(limit)
    )
    return [str(r[0]) for r in await conn.execute(stmt)]


async def count_on_host(conn: AsyncConnection, host: str) -> int:
    """How many live instances are placed on ``host``."""
    stmt = (
        select(func.count()).select_from(instances).where(instances.c.host == host, live(instances))
    )
    return int(await conn.scalar(stmt) or 0)


ExpectedState = str | None | Sequence[str | None] | Unset

# The hot path (Instance.save(): one conditional UPDATE per call, hundreds
# per second) runs prebuilt statements with bound parameters: building and
# cache-keying a 36-column UPDATE ... RETURNING each time costs more than
# executing it. Statements are keyed by the columns set and the *shape* of
# each expected state, never by values.
_STATEMENTS = StatementCache()

#: Bind parameter carrying the host of a placement-scoped statement.
PLACED_HOST_PARAM = "_placed_on_host"

# Constants go into the SQL as literals, so that a statement prepared for
# group commit has no bind parameter but the caller's.
_ZERO: ColumnElement[Any] = literal_column(str(NOT_DELETED))
_ONE: ColumnElement[Any] = literal_column("1")
_FINISHED: list[ColumnElement[Any]] = [
    literal_column(f"'{status}'") for status in FINISHED_STATUSES
]


def placed_on_host_clause(host: Any = None) -> ColumnElement[bool]:
    """The instance row is placed on ``host`` (a value or a bind parameter).

    Its ``host`` is that host, or it has no host and its ``node`` is the live
    compute node (host, hypervisor_hostname) of that host bound to the host's
    own live compute service, or a live migration of it that is in progress (status not in
    :data:`~nubes.db.api.migrations.FINISHED_STATUSES`; NULL counts as
    finished) has the host as its source or destination compute. Correlated
    to ``instances``, for an UPDATE or a SELECT of that table. Without
    ``host``, the :data:`PLACED_HOST_PARAM` bind parameter.
    """
    if host is None:
        host = bindparam(PLACED_HOST_PARAM, type_=instances.c.host.type)
    cn, m = compute_nodes, migrations
    # By node only while the instance has no host yet, and never by its
    # name alone (any host could have registered one like it): the node is
    # the one row of the unique (host, hypervisor_hostname) pair, and that
    # row belongs to the host's own live compute service. An instance with
    # a host is placed by that host (or a migration).
    on_node = exists().where(
        instances.c.host.is_(None),
        cn.c.host == host,
        cn.c.hypervisor_hostname == instances.c.node,
        cn.c.deleted == _ZERO,
        cn.c.service_id == owning_service_id(host),
    )
    migrating = exists().where(
        m.c.instance_uuid == instances.c.uuid,
        m.c.deleted == _ZERO,
        m.c.status.not_in(_FINISHED),
        or_(m.c.source_compute == host, m.c.dest_compute == host),
    )
    return or_(instances.c.host == host, on_node, migrating)


def _shape(expected: Any) -> str:
    if expected is UNSET:
        return "any"
    if isinstance(expected, (list, tuple, set, frozenset)):
        has_null = any(v is None for v in expected)
        if len(expected) == int(has_null):
            return "null" if has_null else "nothing"
        return "in_or_null" if has_null else "in"
    return "null" if expected is None else "eq"


def _get_statement() -> Any:
    return _STATEMENTS.get(
        ("get",),
        lambda: select(instances).where(instances.c.uuid == bindparam("_uuid"), live(instances)),
    )


async def _run_update(
    conn: AsyncConnection,
    uuid: str,
    values: Mapping[str, Any],
    expected_vm_state: Any,
    expected_task_state: Any,
    returning: bool,
    placed_on_host: str | None = None,
) -> tuple[bool, Row | None]:
    check_columns(instances, values, extra_protected=("uuid",))
    keys = tuple(sorted(values))
    params: dict[str, Any] = {"_uuid": uuid}
    params.update({f"_value_{key}": values[key] for key in keys})
    _state_params(expected_vm_state, "vm_state", params)
    _state_params(expected_task_state, "task_state", params)
    placed = placed_on_host is not None
    if placed:
        params[PLACED_HOST_PARAM] = placed_on_host
    use_returning = bool(returning and conn.dialect.update_returning)

    def build() -> Any:
        stmt = _update_statement(keys, expected_vm_state, expected_task_state, placed)
        return stmt.returning(*instances.c) if use_returning else stmt

    shape = (
        "update",
        keys,
        _state_key(expected_vm_state),
        _state_key(expected_task_state),
        placed,
        use_returning,
    )
    stmt = _STATEMENTS.get(shape, build)
    result = await conn.execute(stmt, params)
    if use_returning:
        row = result.mappings().first()
        return row is not None, to_row(row) if row is not None else None
    matched = bool(result.rowcount)
    if matched and returning:
        # No UPDATE ... RETURNING here (MariaDB): read back in the same transaction.
        row = (await conn.execute(_get_statement(), {"_uuid": uuid})).mappings().first()
        return True, to_row(row) if row is not None else None
    return matched, None


def _expected(expected_vm_state: Any, expected_task_state: Any) -> dict[str, Any]:
    expected: dict[str, Any] = {}
    if expected_vm_state is not UNSET:
        expected["vm_state"] = expected_vm_state
    if expected_task_state is not UNSET:
        expected["task_state"] = expected_task_state
    return expected


def _expected_conditions(
    expected_vm_state: Any, expected_task_state: Any
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if expected_vm_state is not UNSET:
        conditions.append(match_clause(instances.c.vm_state, expected_vm_state))
    if expected_task_state is not UNSET:
        conditions.append(match_clause(instances.c.task_state, expected_task_state))
    return conditions


def _diagnosis_statement(placed: bool) -> Any:
    """vm_state, task_state and whether placed (1/0) of a live instance."""

    def build() -> Any:
        placed_col = case((placed_on_host_clause(), _ONE), else_=_ZERO) if placed else _ONE
        return select(instances.c.vm_state, instances.c.task_state, placed_col).where(
            instances.c.uuid == bindparam("_uuid"), instances.c.deleted == _ZERO
        )

    return _STATEMENTS.get(("diagnose", placed), build)


def _failure(
    uuid: str,
    expected: Mapping[str, Any],
    placed_on_host: str | None,
    current: Sequence[Any] | None,
) -> Exception:
    """The error for a conditional update that matched nothing, from its diagnosis row."""
    if current is None:
        return exception.InstanceNotFound(instance_id=uuid)
    vm_state, task_state, placed = current
    if placed_on_host is not None and not placed:
        # Before the state check: a host must not learn the state of an
        # instance it may not see.
        return exception.InstanceNotOnHost(instance_uuid=uuid, host=placed_on_host)
    states = {"vm_state": vm_state, "task_state": task_state}
    actual = {key: states[key] for key in expected}
    return exception.InstanceUpdateConflict(
        instance_uuid=uuid, expected=dict(expected), actual=actual
    )


async def _diagnose(
    conn: AsyncConnection,
    uuid: str,
    expected: Mapping[str, Any],
    placed_on_host: str | None = None,
) -> Exception:
    """Why a conditional update matched nothing: gone, not placed, or changed by someone else."""
    params: dict[str, Any] = {"_uuid": uuid}
    if placed_on_host is not None:
        params[PLACED_HOST_PARAM] = placed_on_host
    stmt = _diagnosis_statement(placed_on_host is not None)
    current = (await conn.execute(stmt, params)).first()
    return _failure(uuid, expected, placed_on_host, current)


async def _conflict(conn: AsyncConnection, uuid: str, expected: Mapping[str, Any]) -> Exception:
    """Why a conditional update matched nothing: gone, or changed by someone else."""
    return await _diagnose(conn, uuid, expected)


async def update(
    conn: AsyncConnection,
    uuid: str,
    values: Mapping[str, Any],
    *,
    expected_vm_state: ExpectedState = UNSET,
    expected_task_state: ExpectedState = UNSET,
    placed_on_host: str | None = None,
) -> Row:
    """Set ``values`` on a live instance if the expected states still hold; the new row.

    An expected state is a value, a list of values, or None (must be NULL);
    UNSET skips the check. Values are plain Python values (no SQL
    expressions). With ``placed_on_host``, the instance must also be placed
    on that host in the database (:func:`placed_on_host_clause`). Raises
    InstanceNotFound, InstanceNotOnHost or InstanceUpdateConflict (checked in
    that order).
    """
    matched, row = await _run_update(
        conn,
        uuid,
        values,
        expected_vm_state,
        expected_task_state,
        returning=True,
        placed_on_host=placed_on_host,
    )
    if not matched or row is None:
        raise await _diagnose(
            conn, uuid, _expected(expected_vm_state, expected_task_state), placed_on_host
        )
    return row


async def try_update(
    conn: AsyncConnection,
    uuid: str,
    values: Mapping[str, Any],
    *,
    expected_vm_state: ExpectedState = UNSET,
    expected_task_state: ExpectedState = UNSET,
    placed_on_host: str | None = None,
) -> bool:
    """Compare-and-set in one statement: True if the row matched and was updated.

    False means the instance is gone or its states differ; nothing is read
    back either way. With ``placed_on_host`` a refusal is not a plain False:
    if nothing matched, one read tells a live instance that is not placed on
    the host (InstanceNotOnHost is raised) from the other cases.
    """
    matched, _ = await _run_update(
        conn,
        uuid,
        values,
        expected_vm_state,
        expected_task_state,
        returning=False,
        placed_on_host=placed_on_host,
    )
    if not matched and placed_on_host is not None:
        error = await _diagnose(
            conn, uuid, _expected(expected_vm_state, expected_task_state), placed_on_host
        )
        if isinstance(error, exception.InstanceNotOnHost):
            raise error
    return matched


async def get_placed_on_host(conn: AsyncConnection, uuid: str, host: str) -> Row:
    """The live instance, if it is placed on ``host`` in the database (one statement).

    Raises InstanceNotFound, or InstanceNotOnHost when it lives elsewhere.
    """

    def build() -> Any:
        placed = case((placed_on_host_clause(), _ONE), else_=_ZERO).label("_placed")
        return select(instances, placed).where(
            instances.c.uuid == bindparam("_uuid"), live(instances)
        )

    stmt = _STATEMENTS.get(("get_placed",), build)
    result = await conn.execute(stmt, {"_uuid": uuid, PLACED_HOST_PARAM: host})
    found = result.mappings().first()
    if found is None:
        raise exception.InstanceNotFound(instance_id=uuid)
    row = to_row(found)
    if not row.pop("_placed"):
        raise exception.InstanceNotOnHost(instance_uuid=uuid, host=host)
    return row


async def check_placed_on_host(conn: AsyncConnection, uuid: str, host: str) -> None:
    """:func:`get_placed_on_host` without the row: the same errors, one small SELECT."""

    def build() -> Any:
        placed = case((placed_on_host_clause(), _ONE), else_=_ZERO).label("_placed")
        return select(placed).where(instances.c.uuid == bindparam("_uuid"), live(instances))

    stmt = _STATEMENTS.get(("check_placed",), build)
    found = (await conn.execute(stmt, {"_uuid": uuid, PLACED_HOST_PARAM: host})).first()
    if found is None:
        raise exception.InstanceNotFound(instance_id=uuid)
    if not found[0]:
        raise exception.InstanceNotOnHost(instance_uuid=uuid, host=host)


async def placed_on_hosts(
    conn: AsyncConnection, asks: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], bool]:
    """For each ``(uuid, host)``: whether that live instance is placed on that host.

    :func:`check_placed_on_host` for many at once, in one statement (one
    round trip): a UNION ALL of one indexed lookup per ask, each returning
    its position when the instance is there and placed on its host. An
    instance that does not exist is, like one elsewhere, not placed.
    """
    asks = list(dict.fromkeys(asks))
    if not asks:
        return {}

    def build() -> Any:
        arms: list[Any] = [
            select(literal_column(str(n)).label("n")).where(
                instances.c.uuid == bindparam(f"_uuid_{n}"),
                live(instances),
                placed_on_host_clause(bindparam(f"_host_{n}", type_=instances.c.host.type)),
            )
            for n in range(len(asks))
        ]
        return arms[0] if len(arms) == 1 else union_all(*arms)

    stmt = _STATEMENTS.get(("placed_on_hosts", len(asks)), build)
    params: dict[str, Any] = {}
    for n, (uuid, host) in enumerate(asks):
        params[f"_uuid_{n}"], params[f"_host_{n}"] = uuid, host
    placed = {int(row[0]) for row in await conn.execute(stmt, params)}
    return {ask: n in placed for n, ask in enumerate(asks)}


# --- grouped saves -------------------------------------------------------------


def _state_condition(column: ColumnElement[Any], expected: Any) -> ColumnElement[bool] | None:
    """:func:`match_clause` with one named bind parameter per value (no expanding IN)."""
    shape = _shape(expected)
    if shape in ("in", "in_or_null"):
        count = sum(1 for v in expected if v is not None)
        names = [f"_expected_{column.key}_{n}" for n in range(count)]
        clause: ColumnElement[bool] = column.in_([bindparam(n) for n in names])
        return or_(clause, column.is_(None)) if shape == "in_or_null" else clause
    if shape == "eq":
        return column == bindparam(f"_expected_{column.key}")
    if shape == "null":
        return column.is_(None)
    if shape == "nothing":
        return false()
    return None


def _state_key(expected: Any) -> tuple[str, int]:
    shape = _shape(expected)
    if shape in ("in", "in_or_null"):
        return shape, sum(1 for v in expected if v is not None)
    return shape, 0


def _state_params(expected: Any, column: str, params: dict[str, Any]) -> None:
    shape = _shape(expected)
    if shape == "eq":
        params[f"_expected_{column}"] = expected
    elif shape in ("in", "in_or_null"):
        for n, value in enumerate(v for v in expected if v is not None):
            params[f"_expected_{column}_{n}"] = value


def _update_statement(
    keys: tuple[str, ...], expected_vm_state: Any, expected_task_state: Any, placed: bool
) -> Any:
    """The compare-and-set UPDATE, every value a named bind parameter."""
    conditions = [instances.c.uuid == bindparam("_uuid"), instances.c.deleted == _ZERO]
    for column, expected in (
        (instances.c.vm_state, expected_vm_state),
        (instances.c.task_state, expected_task_state),
    ):
        clause = _state_condition(column, expected)
        if clause is not None:
            conditions.append(clause)
    if placed:
        conditions.append(placed_on_host_clause())
    return (
        instances.update()
        .where(*conditions)
        .values({key: bindparam(f"_value_{key}") for key in keys})
    )


def update_write(
    uuid: str,
    values: Mapping[str, Any],
    *,
    missed: group_commit.Missed | None = None,
    expected_vm_state: ExpectedState = UNSET,
    expected_task_state: ExpectedState = UNSET,
    placed_on_host: str | None = None,
) -> group_commit.Write:
    """:func:`try_update` described for a commit (:func:`nubes.db.group_commit.commit`).

    The same compare-and-set (``updated_at`` set from Python unless
    ``values`` sets it); with ``placed_on_host`` the instance must also be
    placed on that host. ``missed`` says what it means when it matches
    nothing (raise, or go on without it); by default the error
    :func:`update` raises (InstanceNotFound, InstanceNotOnHost,
    InstanceUpdateConflict), read in the same transaction.
    """
    check_columns(instances, values, extra_protected=("uuid",))
    data = dict(values)
    if "updated_at" not in data:
        data["updated_at"] = utcnow()
    keys = tuple(sorted(data))
    params: dict[str, Any] = {"_uuid": uuid}
    for key in keys:
        params[f"_value_{key}"] = data[key]
    _state_params(expected_vm_state, "vm_state", params)
    _state_params(expected_task_state, "task_state", params)
    placed = placed_on_host is not None
    if placed:
        params[PLACED_HOST_PARAM] = placed_on_host
    if missed is None:
        expected = _expected(expected_vm_state, expected_task_state)

        async def diagnosed(conn: AsyncConnection) -> None:
            raise await _diagnose(conn, uuid, expected, placed_on_host)

        missed = diagnosed
    shape = (
        __name__,
        keys,
        _state_key(expected_vm_state),
        _state_key(expected_task_state),
        placed,
    )
    return group_commit.Write(
        shape,
        lambda: _update_statement(keys, expected_vm_state, expected_task_state, placed),
        params,
        missed,
    )


def _as_utc(stamp: Any) -> Any:
    if isinstance(stamp, dt.datetime):
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    return stamp


async def save(
    db: Database,
    uuid: str,
    values: Mapping[str, Any],
    *,
    expected_vm_state: ExpectedState = UNSET,
    expected_task_state: ExpectedState = UNSET,
    placed_on_host: str | None = None,
) -> dt.datetime | None:
    """:func:`update` for ``Instance.save()``: its own transaction, grouped; the new updated_at.

    :func:`update_write` through :func:`nubes.db.group_commit.commit`: the
    same conditions and errors (InstanceNotFound, InstanceNotOnHost,
    InstanceUpdateConflict) as running :func:`update` in ``db.writer()``,
    but concurrent saves share one transaction and nothing is read back:
    ``updated_at`` is set from Python (unless ``values`` sets it) and
    returned. Inside an open block of ``db`` in the current task the save
    joins that block's transaction instead.
    """
    write = update_write(
        uuid,
        values,
        expected_vm_state=expected_vm_state,
        expected_task_state=expected_task_state,
        placed_on_host=placed_on_host,
    )
    await group_commit.commit(db, uuid, [write])
    return _as_utc(write.params["_value_updated_at"])


async def destroy(
    conn: AsyncConnection,
    uuid: str,
    *,
    expected_task_state: ExpectedState = UNSET,
    now: dt.datetime | None = None,
) -> Row:
    """Soft-delete an instance with its migrations and group memberships; the row.

    The instance's end (DELETED, no task_state, no power state, terminated)
    is written here, by the delete task's closing commit, not by the host
    that removed its guest before (``nubes/step_end.py``). Faults, actions
    and tasks stay (they are history) and are archived together with the
    instance; its tags go (as in Nova).
    """
    now = now_or(now)
    values = {
        "deleted": instances.c.id,
        "deleted_at": now,
        "vm_state": DELETED_VM_STATE,
        "task_state": None,
        "power_state": DELETED_POWER_STATE,
        "terminated_at": func.coalesce(instances.c.terminated_at, now),
        "updated_at": instances.c.updated_at,
    }
    conditions = _expected_conditions(UNSET, expected_task_state)
    expected = _expected(UNSET, expected_task_state)
    stmt = instances.update().where(_by_uuid(uuid), live(instances), *conditions).values(values)
    result = await conn.execute(stmt)
    if result.rowcount == 0:
        raise await _conflict(conn, uuid, expected)
    await soft_delete_where(conn, migrations, migrations.c.instance_uuid == uuid, now)
    await soft_delete_where(
        conn, instance_group_members, instance_group_members.c.instance_uuid == uuid, now
    )
    await tags_api.remove_all(conn, uuid)
    return await get_by_uuid(conn, uuid, read_deleted="yes")


# --- faults ------------------------------------------------------------------


async def fault_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    check_columns(instance_faults, values)
    return await insert_row(conn, instance_faults, values)


async def faults_get_by_instance_uuids(
    conn: AsyncConnection, instance_uuids: Sequence[str], *, latest: bool = False
) -> dict[str, list[Row]]:
    """Faults per instance, newest first; ``latest`` keeps only the newest one each."""
    result: dict[str, list[Row]] = {uuid: [] for uuid in instance_uuids}
    if not instance_uuids:
        return result
    faults = instance_faults
    stmt = select(faults).where(
        faults.c.instance_uuid.in_(list(instance_uuids)), faults.c.deleted == NOT_DELETED
    )
    if latest:
        newest = (
            select(faults.c.instance_uuid, func.max(faults.c.id).label("max_id"))
            .where(faults.c.instance_uuid.in_(list(instance_uuids)), live(faults))
            .group_by(faults.c.instance_uuid)
            .subquery()
        )
        stmt = stmt.join(
            newest,
            and_(newest.c.instance_uuid == faults.c.instance_uuid, newest.c.max_id == faults.c.id),
        )
    stmt = stmt.order_by(faults.c.created_at.desc(), faults.c.id.desc())
    for row in await fetch_all(conn, stmt):
        result[row["instance_uuid"]].append(row)
    return result


async def get_active_by_window(
    conn: AsyncConnection,
    begin: dt.datetime,
    end: dt.datetime | None = None,
    *,
    project_id: str | None = None,
    host: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> list[Row]:
    """Instances alive at some point in [begin, end], deleted ones included
    (usage audits), by id; a page after the instance ``marker`` (a uuid,
    MarkerNotFound when unknown) of at most ``limit``."""
    stmt = select(instances).where(
        or_(instances.c.terminated_at.is_(None), instances.c.terminated_at > begin)
    )
    if end is not None:
        stmt = stmt.where(instances.c.launched_at < end)
    if project_id is not None:
        stmt = stmt.where(instances.c.project_id == project_id)
    if host is not None:
        stmt = stmt.where(instances.c.host == host)
    if marker is not None:
        found = await fetch_one(conn, select(instances.c.id).where(instances.c.uuid == marker))
        if found is None:
            raise exception.MarkerNotFound(marker=marker)
        stmt = stmt.where(instances.c.id > found["id"])
    stmt = stmt.order_by(instances.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return await fetch_all(conn, stmt)
