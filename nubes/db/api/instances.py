"""Instances and instance faults.

:func:`update` is the conductor's hot path (``Instance.save()``): one
``UPDATE ... WHERE uuid = ? AND deleted = 0 [AND vm_state IN (...)]
[AND task_state IN (...)] RETURNING *``. The expected-state conditions make
it a compare-and-set: if another writer moved the instance on first, no
row matches and the caller gets :class:`~nubes.exception.InstanceUpdateConflict`
naming what it expected and what it found (read only on that failure path).
:func:`try_update` is the same without reading anything back, for callers
that only need to know whether they won.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import (
    UNSET,
    ReadDeleted,
    Row,
    SortDir,
    StatementCache,
    Unset,
    check_columns,
    check_sort_keys,
    fetch_all,
    fetch_one,
    insert_row,
    live,
    match_clause,
    new_uuid,
    now_or,
    paginate,
    soft_delete_where,
    to_row,
    where_deleted,
)
from nubes.db.models import (
    NOT_DELETED,
    instance_faults,
    instance_group_members,
    instances,
    migrations,
)

#: vm_state of a freshly created instance (Nova's BUILDING).
DEFAULT_VM_STATE = "building"
#: vm_state set by :func:`destroy` (Nova's DELETED).
DELETED_VM_STATE = "deleted"

DEFAULT_SORT_KEYS: tuple[str, ...] = ("created_at",)
DEFAULT_SORT_DIRS: tuple[SortDir, ...] = ("desc",)
SORT_KEYS = frozenset(
    {
        "id",
        "uuid",
        "created_at",
        "updated_at",
        "launched_at",
        "terminated_at",
        "display_name",
        "hostname",
        "host",
        "node",
        "vm_state",
        "task_state",
        "power_state",
        "project_id",
        "user_id",
        "availability_zone",
        "vcpus",
        "memory_mb",
        "root_gb",
        "image_ref",
        "key_name",
    }
)
#: Filters matched for equality (a list value means "any of", None means NULL).
EXACT_FILTERS = frozenset(
    {
        "uuid",
        "project_id",
        "user_id",
        "host",
        "node",
        "vm_state",
        "task_state",
        "power_state",
        "availability_zone",
        "image_ref",
        "key_name",
        "reservation_id",
        "locked",
        "hostname",
    }
)
#: Special filters: name (substring of display_name), changes_since /
#: changes_before (updated_at, falling back to created_at), deleted (bool).
SPECIAL_FILTERS = frozenset({"name", "changes_since", "changes_before", "deleted"})

_LIKE_ESCAPE = "\\"


def _like_pattern(text: str) -> str:
    escaped = text.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2).replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _by_uuid(uuid: str) -> ColumnElement[bool]:
    return instances.c.uuid == uuid


async def create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    """Insert an instance; ``uuid`` and ``vm_state`` get defaults when missing."""
    data = dict(values)
    check_columns(instances, data)
    data.setdefault("uuid", new_uuid())
    data.setdefault("vm_state", DEFAULT_VM_STATE)
    return await insert_row(conn, instances, data)


async def get_by_uuid(conn: AsyncConnection, uuid: str, *, read_deleted: ReadDeleted = "no") -> Row:
    stmt = where_deleted(select(instances).where(_by_uuid(uuid)), instances, read_deleted)
    row = await fetch_one(conn, stmt)
    if row is None:
        raise exception.InstanceNotFound(instance_id=uuid)
    return row


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


def _filter_clauses(filters: Mapping[str, Any]) -> tuple[list[ColumnElement[bool]], bool | None]:
    clauses: list[ColumnElement[bool]] = []
    deleted: bool | None = None
    for key, value in filters.items():
        if key in EXACT_FILTERS:
            clauses.append(match_clause(instances.c[key], value))
        elif key == "name":
            clauses.append(instances.c.display_name.like(_like_pattern(str(value)), escape="\\"))
        elif key == "changes_since":
            stamp = func.coalesce(instances.c.updated_at, instances.c.created_at)
            clauses.append(stamp >= value)
        elif key == "changes_before":
            stamp = func.coalesce(instances.c.updated_at, instances.c.created_at)
            clauses.append(stamp <= value)
        elif key == "deleted":
            deleted = bool(value)
        else:
            raise exception.ValidationError(field=key, reason="not a known instance filter")
    return clauses, deleted


async def get_all(
    conn: AsyncConnection,
    *,
    filters: Mapping[str, Any] | None = None,
    sort_keys: Sequence[str] = DEFAULT_SORT_KEYS,
    sort_dirs: Sequence[SortDir] = DEFAULT_SORT_DIRS,
    limit: int | None = None,
    marker: str | None = None,
    read_deleted: ReadDeleted = "no",
) -> list[Row]:
    """A page of instances matching ``filters`` (see EXACT_FILTERS and SPECIAL_FILTERS).

    ``marker`` is the uuid of the last instance of the previous page; a
    ``deleted`` filter overrides ``read_deleted`` (as ``changes_since`` lists
    deleted instances in Nova, pass ``read_deleted="yes"`` with it).
    """
    check_sort_keys(sort_keys, SORT_KEYS)
    clauses, deleted = _filter_clauses(filters or {})
    if deleted is not None:
        read_deleted = "only" if deleted else "no"
    marker_row: Row | None = None
    if marker is not None:
        marker_row = await fetch_one(
            conn, where_deleted(select(instances).where(_by_uuid(marker)), instances, read_deleted)
        )
        if marker_row is None:
            raise exception.MarkerNotFound(marker=marker)
    stmt = where_deleted(select(instances).where(*clauses), instances, read_deleted)
    stmt = paginate(stmt, instances, sort_keys, sort_dirs, marker=marker_row, limit=limit)
    return await fetch_all(conn, stmt)


ExpectedState = str | None | Sequence[str | None] | Unset

# The hot path (Instance.save(): one conditional UPDATE per call, hundreds
# per second) runs prebuilt statements with bound parameters: building and
# cache-keying a 36-column UPDATE ... RETURNING each time costs more than
# executing it. Statements are keyed by the columns set and the *shape* of
# each expected state, never by values.
_STATEMENTS = StatementCache()


def _shape(expected: Any) -> str:
    if expected is UNSET:
        return "any"
    if isinstance(expected, (list, tuple, set, frozenset)):
        has_null = any(v is None for v in expected)
        if len(expected) == int(has_null):
            return "null" if has_null else "nothing"
        return "in_or_null" if has_null else "in"
    return "null" if expected is None else "eq"


def _state_condition(column: ColumnElement[Any], shape: str) -> ColumnElement[bool] | None:
    param = f"_expected_{column.key}"
    if shape == "eq":
        return column == bindparam(param)
    if shape == "in":
        return column.in_(bindparam(param, expanding=True))
    if shape == "in_or_null":
        return or_(column.in_(bindparam(param, expanding=True)), column.is_(None))
    if shape == "null":
        return column.is_(None)
    if shape == "nothing":
        return false()
    return None


def _state_params(column: str, expected: Any, shape: str) -> dict[str, Any]:
    if shape == "eq":
        return {f"_expected_{column}": expected}
    if shape in ("in", "in_or_null"):
        return {f"_expected_{column}": [v for v in expected if v is not None]}
    return {}


def _update_statement(
    keys: tuple[str, ...], vm_shape: str, task_shape: str, returning: bool
) -> Any:
    def build() -> Any:
        conditions = [
            c
            for c in (
                _state_condition(instances.c.vm_state, vm_shape),
                _state_condition(instances.c.task_state, task_shape),
            )
            if c is not None
        ]
        stmt = (
            instances.update()
            .where(instances.c.uuid == bindparam("_uuid"), live(instances), *conditions)
            .values({key: bindparam(f"_value_{key}") for key in keys})
        )
        return stmt.returning(*instances.c) if returning else stmt

    return _STATEMENTS.get(("update", keys, vm_shape, task_shape, returning), build)


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
) -> tuple[bool, Row | None]:
    check_columns(instances, values, extra_protected=("uuid",))
    vm_shape, task_shape = _shape(expected_vm_state), _shape(expected_task_state)
    keys = tuple(sorted(values))
    params: dict[str, Any] = {"_uuid": uuid}
    params.update({f"_value_{key}": values[key] for key in keys})
    params.update(_state_params("vm_state", expected_vm_state, vm_shape))
    params.update(_state_params("task_state", expected_task_state, task_shape))
    use_returning = returning and conn.dialect.update_returning
    stmt = _update_statement(keys, vm_shape, task_shape, use_returning)
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


async def _conflict(conn: AsyncConnection, uuid: str, expected: Mapping[str, Any]) -> Exception:
    """Why a conditional update matched nothing: gone, or changed by someone else."""
    current = await fetch_one(
        conn,
        select(instances.c.vm_state, instances.c.task_state).where(_by_uuid(uuid), live(instances)),
    )
    if current is None:
        return exception.InstanceNotFound(instance_id=uuid)
    actual = {key: current[key] for key in expected}
    return exception.InstanceUpdateConflict(
        instance_uuid=uuid, expected=dict(expected), actual=actual
    )


async def update(
    conn: AsyncConnection,
    uuid: str,
    values: Mapping[str, Any],
    *,
    expected_vm_state: ExpectedState = UNSET,
    expected_task_state: ExpectedState = UNSET,
) -> Row:
    """Set ``values`` on a live instance if the expected states still hold; the new row.

    An expected state is a value, a list of values, or None (must be NULL);
    UNSET skips the check. Values are plain Python values (no SQL
    expressions). Raises InstanceUpdateConflict or InstanceNotFound.
    """
    matched, row = await _run_update(
        conn, uuid, values, expected_vm_state, expected_task_state, returning=True
    )
    if not matched or row is None:
        raise await _conflict(conn, uuid, _expected(expected_vm_state, expected_task_state))
    return row


async def try_update(
    conn: AsyncConnection,
    uuid: str,
    values: Mapping[str, Any],
    *,
    expected_vm_state: ExpectedState = UNSET,
    expected_task_state: ExpectedState = UNSET,
) -> bool:
    """Compare-and-set in one statement: True if the row matched and was updated.

    False means the instance is gone or its states differ; nothing is read
    back either way.
    """
    matched, _ = await _run_update(
        conn, uuid, values, expected_vm_state, expected_task_state, returning=False
    )
    return matched


async def destroy(
    conn: AsyncConnection,
    uuid: str,
    *,
    expected_task_state: ExpectedState = UNSET,
    now: dt.datetime | None = None,
) -> Row:
    """Soft-delete an instance with its migrations and group memberships; the row.

    Faults, actions and tasks stay (they are history) and are archived
    together with the instance.
    """
    now = now_or(now)
    values = {
        "deleted": instances.c.id,
        "deleted_at": now,
        "vm_state": DELETED_VM_STATE,
        "task_state": None,
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
    return await get_by_uuid(conn, uuid, read_deleted="yes")


async def count_by_project(conn: AsyncConnection, project_id: str) -> dict[str, int]:
    """Live instances, vCPUs and RAM of a project (for quota checks)."""
    stmt = select(
        func.count(instances.c.id),
        func.coalesce(func.sum(instances.c.vcpus), 0),
        func.coalesce(func.sum(instances.c.memory_mb), 0),
    ).where(instances.c.project_id == project_id, live(instances))
    count, vcpus, ram = (await conn.execute(stmt)).one()
    return {"instances": int(count), "cores": int(vcpus), "ram": int(ram)}


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
) -> list[Row]:
    """Instances alive at some point in [begin, end] (usage audits)."""
    stmt = select(instances).where(
        or_(instances.c.terminated_at.is_(None), instances.c.terminated_at > begin)
    )
    if end is not None:
        stmt = stmt.where(instances.c.launched_at < end)
    if project_id is not None:
        stmt = stmt.where(instances.c.project_id == project_id)
    if host is not None:
        stmt = stmt.where(instances.c.host == host)
    return await fetch_all(conn, stmt.order_by(instances.c.id))
