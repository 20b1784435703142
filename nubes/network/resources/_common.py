"""Rules every network resource shares: field checks, visibility, paging, quotas."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api import policy, quotas
from nubes.context import RequestContext
from nubes.db.api import network as net_db
from nubes.db.engine import Connection, Database

Row = dict[str, Any]


def is_admin(ctxt: RequestContext) -> bool:
    return policy.allowed(ctxt, policy.Rule.ADMIN)


def project_of(ctxt: RequestContext) -> str:
    if ctxt.project_id is None:
        raise exception.PolicyNotAuthorized(action="network:project_scope")
    return ctxt.project_id


def authorize_member(ctxt: RequestContext, action: str, project_id: str | None = None) -> None:
    policy.authorize(ctxt, action, policy.Rule.PROJECT_MEMBER, project_id)


# --- field checks ----------------------------------------------------------------------------


def invalid(field: str, value: Any, why: str = "") -> exception.NetworkInvalid:
    return exception.NetworkInvalid(
        reason=f"Invalid input for {field}. Reason: '{value}' {why or 'is not valid'}."
    )


def check_body(
    body: Any, resource: str, allowed: Sequence[str], required: Sequence[str] = ()
) -> dict[str, Any]:
    """``{resource: {...}}``: an object with known attributes only."""
    if not isinstance(body, dict) or not isinstance(body.get(resource), dict):
        raise exception.NetworkInvalid(reason=f"Resource body required: '{resource}'")
    item: dict[str, Any] = body[resource]
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise exception.NetworkInvalid(
            reason="Unrecognized attribute(s) '" + ", ".join(unknown) + "'"
        )
    for name in required:
        if name not in item:
            raise exception.NetworkInvalid(
                reason=f"Failed to parse request. Required attribute '{name}' not specified"
            )
    return item


def field_str(item: Mapping[str, Any], field: str, default: str = "", maxlen: int = 255) -> str:
    value = item.get(field, default)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise invalid(field, value, "is not a valid string")
    if len(value) > maxlen:
        raise invalid(field, value, f"exceeds maximum length of {maxlen}")
    return value


def field_bool(item: Mapping[str, Any], field: str, default: bool) -> bool:
    value = item.get(field, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise invalid(field, value, "cannot be converted to boolean")


def field_int(item: Mapping[str, Any], field: str, low: int, high: int) -> int | None:
    value = item.get(field)
    if value is None:
        return None
    if isinstance(value, bool):
        raise invalid(field, value, "is not an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(field, value, "is not an integer") from None
    if not low <= number <= high:
        raise invalid(field, value, f"is not in the range {low}..{high}")
    return number


def field_list(item: Mapping[str, Any], field: str) -> list[Any]:
    value = item.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(field, value, "is not a list")
    return value


def valid_uuid(value: Any, field: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise invalid(field, value, "is not a valid UUID") from None


def owner_of(ctxt: RequestContext, item: Mapping[str, Any]) -> str:
    """The project a new row belongs to: the caller's, or (admin only) the one named."""
    named = item.get("project_id") or item.get("tenant_id")
    if named is not None and named != ctxt.project_id:
        if not isinstance(named, str) or not is_admin(ctxt):
            raise exception.PolicyNotAuthorized(action="create with another project_id")
        return named
    return project_of(ctxt)


# --- visibility ------------------------------------------------------------------------------


def can_see(ctxt: RequestContext, row: Mapping[str, Any]) -> bool:
    """May the caller read the row: admin, its project's, or a shared or
    external network (every project reads those, as in Neutron: a floating
    IP pool or a router's gateway is picked by name)."""
    if is_admin(ctxt):
        return True
    if row.get("shared") or row.get("external"):
        return True
    return row["project_id"] == ctxt.project_id


def owned_or_404(ctxt: RequestContext, row: Row, error: exception.NotFound) -> Row:
    """A row the caller may change: their project's (or any, for admin)."""
    if is_admin(ctxt) or row["project_id"] == ctxt.project_id:
        authorize_member(ctxt, "network:write", row["project_id"])
        return row
    raise error


def field_strs(item: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """The free-text attributes of an update body that it names."""
    return {field: field_str(item, field) for field in fields if field in item}


async def visible_row(
    conn: Connection,
    ctxt: RequestContext,
    kind: net_db.Kind,
    row_id: str,
    error: exception.NotFound,
    known: dict[tuple[str, str], Row] | None = None,
) -> Row:
    """A row of ``kind`` the caller may see, else ``error`` (404, never 403).

    ``known``: rows already read in this transaction (a batch reads each once).
    """
    row = known.get((kind, row_id)) if known is not None else None
    if row is None:
        try:
            row = await net_db.get(conn, kind, row_id)
        except exception.NotFound:
            raise error from None
        if known is not None:
            known[(kind, row_id)] = row
    if not can_see(ctxt, row):
        raise error
    return row


@dataclasses.dataclass(frozen=True)
class Page:
    """What a listing asks for: rows matching ``filters`` (column -> any of
    the values), then at most ``limit`` of them after ``marker`` by id."""

    filters: Mapping[str, Sequence[Any]]
    limit: int | None = None
    marker: str | None = None
    descending: bool = False


def listable(ctxt: RequestContext, *, shared: bool = False) -> net_db.Visible | None:
    """Neutron's default listing scope: admin sees all, others their
    project's rows (and, for networks, shared ones)."""
    return None if is_admin(ctxt) else net_db.visible_to(ctxt.project_id, shared=shared)


async def list_page(
    conn: Connection, kind: net_db.Kind, visible: net_db.Visible | None, page: Page
) -> list[Row]:
    """One page of a collection: what every ``list_*`` hands to the database."""
    return await net_db.list_rows(
        conn,
        kind,
        visible=visible,
        filters=page.filters,
        limit=page.limit,
        marker=page.marker,
        descending=page.descending,
    )


class ServiceBase:
    """What every resource's half of the service has: the database, the
    configuration, and the project quota check."""

    def __init__(self, db: Database, conf: cfg.ConfigOpts) -> None:
        self.db = db
        self.conf = conf

    async def _check_quota(
        self, conn: Connection, project_id: str, kind: net_db.Kind, count: int = 1
    ) -> None:
        """``count`` more rows of ``kind`` must fit the project's quota (named in the singular)."""
        await quotas.check_network_resource(
            conn,
            self.conf,
            project_id=project_id,
            resource=kind[:-1],
            used=lambda c: net_db.count_by_project(c, kind, project_id),
            count=count,
        )
