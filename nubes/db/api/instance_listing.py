"""Listing instances: the filters, sort keys and paging the servers API offers.

Split from :mod:`nubes.db.api.instances` (which re-exports these names):
a page of instances is a read with its own vocabulary of filters, apart
from the writes and their state checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Text, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api import tags as tags_api
from nubes.db.api._common import (
    LIKE_ESCAPE,
    ReadDeleted,
    Row,
    SortDir,
    check_sort_keys,
    fetch_all,
    fetch_one,
    like_pattern,
    match_clause,
    paginate,
    where_deleted,
)
from nubes.db.models import instances

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
        "locked",
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
#: changes_before (updated_at, falling back to created_at), deleted (bool),
#: flavorid (the flavor id users know, as recorded in the flavor snapshot);
#: tags, tags-any, not-tags, not-tags-any (lists of tags, see
#: :func:`nubes.db.api.tags.filter_clause`).
SPECIAL_FILTERS = frozenset(
    {"name", "changes_since", "changes_before", "deleted", "flavorid", *tags_api.FILTERS}
)


def _filter_clauses(filters: Mapping[str, Any]) -> tuple[list[ColumnElement[bool]], bool | None]:
    clauses: list[ColumnElement[bool]] = []
    deleted: bool | None = None
    for key, value in filters.items():
        if key in EXACT_FILTERS:
            clauses.append(match_clause(instances.c[key], value))
        elif key == "name":
            clauses.append(
                instances.c.display_name.like(like_pattern(str(value)), escape=LIKE_ESCAPE)
            )
        elif key == "changes_since":
            stamp = func.coalesce(instances.c.updated_at, instances.c.created_at)
            clauses.append(stamp >= value)
        elif key == "changes_before":
            stamp = func.coalesce(instances.c.updated_at, instances.c.created_at)
            clauses.append(stamp <= value)
        elif key == "deleted":
            deleted = bool(value)
        elif key == "flavorid":
            # The snapshot is canonical JSON (sorted keys, no spaces): match its text.
            needle = '"flavorid":' + json.dumps(str(value))
            clauses.append(
                type_coerce(instances.c.flavor, Text).like(like_pattern(needle), escape=LIKE_ESCAPE)
            )
        elif key in tags_api.FILTERS:
            clauses.append(tags_api.filter_clause(key, list(value)))
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
            conn,
            where_deleted(
                select(instances).where(instances.c.uuid == marker), instances, read_deleted
            ),
        )
        if marker_row is None:
            raise exception.MarkerNotFound(marker=marker)
    stmt = where_deleted(select(instances).where(*clauses), instances, read_deleted)
    stmt = paginate(stmt, instances, sort_keys, sort_dirs, marker=marker_row, limit=limit)
    return await fetch_all(conn, stmt)


async def placed_on_hosts(conn: AsyncConnection) -> list[Row]:
    """Every live instance with a host (uuid, display_name, host, node, task_state):
    what each hypervisor runs, by the same rule as ``GET /servers?host=``."""
    c = instances.c
    stmt = select(c.uuid, c.display_name, c.host, c.node, c.task_state).where(
        c.deleted == 0, c.host.is_not(None)
    )
    return await fetch_all(conn, stmt.order_by(c.id))
