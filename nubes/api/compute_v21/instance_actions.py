"""``os-instance-actions``: what was done to a server, and (show) the events of one action.

Deleted servers are readable from 2.21. Events: admins always (with the
traceback); owners from 2.51, without the traceback. 2.58 adds
``updated_at``, paging (``limit``, ``marker`` = a request id) and
``changes-since``. 2.62 adds each event's ``host`` (admins, as the
traceback) and ``hostId`` (its hash with the project, as a server's);
2.66 adds ``changes-before``; 2.84 adds ``details`` (the fault message of a
failed event, for everyone).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api.compute_v21 import common
from nubes.api.compute_v21.server_views import host_id
from nubes.api.compute_v21.servers import get_server
from nubes.api.policy import Rule
from nubes.api.views import Field, View, nova_time
from nubes.db.api import actions as actions_db

ACTION = View(
    Field("action"),
    Field("instance_uuid"),
    Field("request_id"),
    Field("user_id"),
    Field("project_id"),
    Field("start_time", lambda r, _: nova_time(r["start_time"])),
    Field("message"),
    Field("updated_at", lambda r, _: nova_time(r.get("updated_at") or r["created_at"]), min="2.58"),
)


def _admin(x: dict[str, Any]) -> bool:
    return bool(x["admin"])


EVENT = View(
    Field("event"),
    Field("start_time", lambda r, _: nova_time(r["start_time"])),
    Field("finish_time", lambda r, _: nova_time(r["finish_time"])),
    Field("result"),
    Field("traceback", when=_admin),
    Field("host", min="2.62", when=_admin),
    # Hashed with the server's project, so it matches the server's hostId.
    Field(
        "hostId",
        lambda r, x: host_id({"host": r["host"], "project_id": x["project_id"]}),
        min="2.62",
    ),
    Field("details", min="2.84"),
)


async def _server(request: Request) -> dict[str, Any]:
    server_id = request.path_params["server_id"]
    if common.version(request).at_least("2.21"):
        return await get_server(request, server_id, read_deleted="yes")
    return await get_server(request, server_id)


async def index(request: Request) -> Response:
    row = await _server(request)
    common.authorize(request, "os-instance-actions:list", Rule.PROJECT_READER, row["project_id"])
    version = common.version(request)
    async with common.state(request).db.reader() as conn:
        rows = await actions_db.actions_get(conn, row["uuid"])
    body: dict[str, Any] = {}
    if version.at_least("2.58"):
        params = request.query_params
        since = params.get("changes-since")
        stamp = None if since is None else common.parse_time("changes-since", since)
        if stamp is not None:
            rows = [r for r in rows if (r.get("updated_at") or r["created_at"]) >= stamp]
        before = params.get("changes-before") if version.at_least("2.66") else None
        if before is not None:
            end = common.parse_time("changes-before", before)
            common.check_changes_window(stamp, end)
            rows = [r for r in rows if (r.get("updated_at") or r["created_at"]) <= end]
        marker = params.get("marker")
        if marker is not None:
            ids = [r["request_id"] for r in rows]
            if marker not in ids:
                raise exception.MarkerNotFound(marker=marker)
            rows = rows[ids.index(marker) + 1 :]
        limit = common.limit(request)
        rows = rows[:limit]
        if rows and len(rows) == limit:
            collection = f"servers/{row['uuid']}/os-instance-actions"
            body["links"] = common.next_link(request, collection, rows[-1]["request_id"])
    body = {"instanceActions": [ACTION.render(r, version) for r in rows], **body}
    return common.json(body)


async def show(request: Request) -> Response:
    row = await _server(request)
    common.authorize(request, "os-instance-actions:show", Rule.PROJECT_READER, row["project_id"])
    version = common.version(request)
    request_id = request.path_params["request_id"]
    admin = common.is_admin(request)
    async with common.state(request).db.reader() as conn:
        try:
            found = await actions_db.action_get_by_request_id(conn, row["uuid"], request_id)
        except exception.InstanceActionNotFound:
            raise common.not_found(f"Action {request_id} not found") from None
        events = await actions_db.events_get(conn, found["id"])
    action = ACTION.render(found, version)
    if admin or version.at_least("2.51"):
        # Newest first, as Nova lists them.
        x = {"admin": admin, "project_id": row["project_id"]}
        action["events"] = [EVENT.render(e, version, x) for e in reversed(events)]
    return common.json({"instanceAction": action})


#: Nova's list query: paging and changes-since from 2.58 (nothing else), changes-before from 2.66.
ACTIONS_QUERY = {
    "2.58": ("limit", "marker", "changes-since"),
    "2.66": ("limit", "marker", "changes-since", "changes-before"),
}


ROUTES = [
    Route(
        "/servers/{server_id}/os-instance-actions",
        common.known_query(index, ACTIONS_QUERY),
        methods=["GET"],
    ),
    Route(
        "/servers/{server_id}/os-instance-actions/{request_id}",
        common.no_query(show),
        methods=["GET"],
    ),
]
