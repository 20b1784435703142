"""Migration records: ``os-migrations`` and a server's live migrations in progress.

``GET /os-migrations`` (admin) lists every move, filtered by ``host``,
``status``, ``instance_uuid``, ``source_compute`` and ``migration_type``;
2.23 adds ``migration_type`` and, for live migrations in progress,
``links`` to the body; 2.59 adds ``uuid``, newest-first paging (``limit``,
``marker`` = a migration uuid) and ``changes-since``, and refuses unknown
parameters.

``/servers/{id}/migrations`` (admin, from 2.23) shows a server's live
migrations in progress with their memory and disk counters; ``DELETE`` of
one aborts it (2.24) and the ``force_complete`` action (2.22) asks it to
finish now. Both are answered 202 and done by
:class:`nubes.api.moves.MovesAPI`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.compute_v21 import server_schemas as schemas
from nubes.api.compute_v21.server_views import OMIT
from nubes.api.compute_v21.servers import get_server
from nubes.api.microversion import APIVersion
from nubes.api.policy import Rule
from nubes.api.views import Field, View, nova_time
from nubes.db.api import migrations as migrations_db
from nubes.objects.states import MigrationType

if TYPE_CHECKING:
    from nubes.api.moves import MovesAPI

#: Nova's "in progress" statuses of a live migration: the ones ``show``
#: answers for and ``os-migrations`` links to.
LIVE_IN_PROGRESS = ("queued", "preparing", "running", "post-migrating")
#: What a server's migration list leaves out (Nova's
#: migration_get_in_progress_by_instance): finished ones, and accepted
#: ones that have not started.
NOT_IN_PROGRESS = (*migrations_db.FINISHED_STATUSES, "accepted")

#: os-migrations filters (Nova's list_query_schema_v20), and from 2.59 paging.
FILTERS = ("hidden", "host", "instance_uuid", "source_compute", "status", "migration_type")
PAGING = ("limit", "marker", "changes-since")
#: Query parameters later versions add (2.66: changes-before).
LATER = {"2.66": ("changes-before",), "2.80": ("user_id", "project_id")}


def _time(name: str) -> Any:
    return lambda r, _: nova_time(r[name])


def _links(r: dict[str, Any], request: Request) -> Any:
    if r["migration_type"] != MigrationType.LIVE_MIGRATION or r["status"] not in LIVE_IN_PROGRESS:
        return OMIT
    return common.links(request, f"servers/{r['instance_uuid']}/migrations", r["id"])


MIGRATION = View(
    Field("id"),
    Field("uuid", min="2.59"),
    Field("status"),
    Field("instance_uuid"),
    Field("source_compute"),
    Field("source_node"),
    Field("dest_compute"),
    Field("dest_node"),
    Field("dest_host"),
    Field("old_instance_type_id"),
    Field("new_instance_type_id"),
    Field("migration_type", min="2.23"),
    Field("created_at", _time("created_at")),
    Field("updated_at", _time("updated_at")),
    Field("links", _links, min="2.23"),
    # Who asked for the move.
    Field("user_id", min="2.80"),
    Field("project_id", min="2.80"),
)

SERVER_MIGRATION = View(
    Field("id"),
    Field("uuid", min="2.59"),
    Field("status"),
    Field("server_uuid", lambda r, _: r["instance_uuid"]),
    Field("source_compute"),
    Field("source_node"),
    Field("dest_compute"),
    Field("dest_node"),
    Field("dest_host"),
    Field("memory_total_bytes", lambda r, _: r["memory_total"]),
    Field("memory_processed_bytes", lambda r, _: r["memory_processed"]),
    Field("memory_remaining_bytes", lambda r, _: r["memory_remaining"]),
    Field("disk_total_bytes", lambda r, _: r["disk_total"]),
    Field("disk_processed_bytes", lambda r, _: r["disk_processed"]),
    Field("disk_remaining_bytes", lambda r, _: r["disk_remaining"]),
    Field("created_at", _time("created_at")),
    Field("updated_at", _time("updated_at")),
    Field("user_id", min="2.80"),
    Field("project_id", min="2.80"),
)


def _render(view: View, row: dict[str, Any], version: APIVersion, request: Request) -> Any:
    body = view.render(row, version, request)
    return {k: value for k, value in body.items() if value is not OMIT}


def _moves(request: Request) -> MovesAPI:
    api: MovesAPI = common.state(request).moves_api()
    return api


# --- os-migrations -------------------------------------------------------------------------


def _query_error(name: str, value: str, reason: str) -> exception.Invalid:
    return common.bad_request(
        f"Invalid input for query parameters {name}. Value: {value}. {reason}"
    )


async def index(request: Request) -> Response:
    common.authorize(request, "os-migrations:index", Rule.ADMIN)
    version = common.version(request)
    params = request.query_params
    paged = version.at_least("2.59")
    known = set(FILTERS) | set(PAGING)
    for since, names in LATER.items():
        if version.at_least(since):
            known |= set(names)
    if paged:
        v.refuse_unknown_query(request, known)
    filters: dict[str, Any] = {
        name: params.getlist(name)[-1]
        for name in ("host", "status", "instance_uuid", "source_compute", "migration_type")
        if name in params
    }
    for name in LATER["2.80"]:
        if name in params and name in known:
            filters[name] = params.getlist(name)[-1]
    limit: int | None = None
    marker_row: dict[str, Any] | None = None
    async with common.state(request).db.reader(allow_stale=True) as conn:
        if paged:
            for name in ("changes-since", "changes-before"):
                raw = params.get(name)
                if raw is None or name not in known:
                    continue
                try:
                    filters[name.replace("-", "_")] = common.parse_time(name, raw)
                except exception.Invalid:
                    raise _query_error(name, raw, f"'{raw}' is not a 'date-time'") from None
            common.check_changes_window(filters.get("changes_since"), filters.get("changes_before"))
            limit = common.limit(request)
            marker = params.get("marker")
            if marker is not None:
                try:
                    marker_row = await migrations_db.get_by_uuid(conn, marker)
                except exception.MigrationNotFound:
                    raise exception.MarkerNotFound(marker=marker) from None
        rows = await migrations_db.list_filtered(
            conn, filters=filters, newest_first=paged, limit=limit, marker=marker_row
        )
    body: dict[str, Any] = {"migrations": [_render(MIGRATION, r, version, request) for r in rows]}
    if paged and rows and len(rows) == limit:
        body["migrations_links"] = common.next_link(request, "os-migrations", rows[-1]["uuid"])
    return common.json(body)


# --- a server's live migrations ------------------------------------------------------------


def _require(request: Request, minimum: str) -> None:
    if not common.version(request).at_least(minimum):
        raise exception.NotFound(message="The resource could not be found.")


def _migration_id(request: Request) -> int:
    """The path's migration id; MigrationNotFoundForInstance for anything but a number."""
    raw = request.path_params["migration_id"]
    try:
        number = int(raw)
    except ValueError:
        number = -1
    if not 0 <= number <= v.MAX_INT:
        raise exception.MigrationNotFoundForInstance(
            migration_id=raw, instance_id=request.path_params["server_id"]
        )
    return number


async def server_index(request: Request) -> Response:
    _require(request, "2.23")
    row = await get_server(request, request.path_params["server_id"])
    common.authorize(request, "servers:migrations:index", Rule.ADMIN)
    async with common.state(request).db.reader() as conn:
        rows = await migrations_db.list_by_instance(
            conn, row["uuid"], exclude_statuses=NOT_IN_PROGRESS
        )
    version = common.version(request)
    live = [r for r in rows if r["migration_type"] == MigrationType.LIVE_MIGRATION]
    return common.json(
        {"migrations": [_render(SERVER_MIGRATION, r, version, request) for r in live]}
    )


async def server_show(request: Request) -> Response:
    _require(request, "2.23")
    row = await get_server(request, request.path_params["server_id"])
    common.authorize(request, "servers:migrations:show", Rule.ADMIN)
    raw = request.path_params["migration_id"]
    uuid = row["uuid"]
    found: dict[str, Any] | None = None
    # isascii: str.isdigit() is also true of digits int() refuses ("²").
    if raw.isascii() and raw.isdigit() and int(raw) <= v.MAX_INT:
        async with common.state(request).db.reader() as conn:
            try:
                found = await migrations_db.get_by_id(conn, int(raw))
            except exception.MigrationNotFound:
                found = None
    if found is None or found["instance_uuid"] != uuid:
        raise common.not_found(f"In-progress live migration {raw} is not found for server {uuid}.")
    if found["migration_type"] != MigrationType.LIVE_MIGRATION:
        raise common.not_found(f"Migration {raw} for server {uuid} is not live-migration.")
    if found["status"] not in LIVE_IN_PROGRESS:
        raise common.not_found(f"Live migration {raw} for server {uuid} is not in progress.")
    version = common.version(request)
    return common.json({"migration": _render(SERVER_MIGRATION, found, version, request)})


async def server_delete(request: Request) -> Response:
    """Abort a live migration (Nova: 404 for an unknown one, 400 for a wrong status)."""
    _require(request, "2.24")
    row = await get_server(request, request.path_params["server_id"])
    common.authorize(request, "servers:migrations:delete", Rule.ADMIN)
    await _moves(request).abort_live_migration(
        common.ctx(request),
        row["uuid"],
        _migration_id(request),
        before_start=common.version(request).at_least("2.65"),
    )
    return common.empty(202)


async def server_action(request: Request) -> Response:
    """``{"force_complete": null}``: finish a running live migration now."""
    _require(request, "2.22")
    body = await v.json_body(request)
    v.validate(body, schemas.FORCE_COMPLETE)
    row = await get_server(request, request.path_params["server_id"])
    common.authorize(request, "servers:migrations:force_complete", Rule.ADMIN)
    try:
        await _moves(request).force_complete_live_migration(
            common.ctx(request), row["uuid"], _migration_id(request)
        )
    except exception.MigrationNotFoundForInstance as exc:
        # Nova's force_complete answers an unknown migration with 400.
        raise common.bad_request(exc.message) from None
    return common.empty(202)


ROUTES = [
    Route("/os-migrations", index, methods=["GET"]),
    Route("/servers/{server_id}/migrations", common.no_query(server_index), methods=["GET"]),
    Route(
        "/servers/{server_id}/migrations/{migration_id}",
        common.no_query(server_show),
        methods=["GET"],
    ),
    Route("/servers/{server_id}/migrations/{migration_id}", server_delete, methods=["DELETE"]),
    Route("/servers/{server_id}/migrations/{migration_id}/action", server_action, methods=["POST"]),
]
