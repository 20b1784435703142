"""``os-server-groups``: list, show, create, delete.

``policies`` (a list of one) before 2.64, ``policy`` and ``rules`` from 2.64.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import quotas
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.policy import Rule
from nubes.api.views import Field, View
from nubes.db.api import groups

VIEW = View(
    Field("id", lambda r, _: r["uuid"]),
    Field("name"),
    Field("policies", lambda r, _: [r["policy"]] if r["policy"] else [], max="2.63"),
    Field("members", lambda r, _: list(r["members"])),
    Field("metadata", lambda r, _: {}, max="2.63"),
    Field("project_id", min="2.13"),
    Field("user_id", min="2.13"),
    Field("policy", min="2.64"),
    Field("rules", lambda r, _: dict(r["rules"] or {}), min="2.64"),
)

_NAME = {**v.NAME_WITH_SPACES, "pattern": r"^(?! )[\S ]*(?<! )$"}
_HARD = ["anti-affinity", "affinity"]
_ALL = [*_HARD, "soft-anti-affinity", "soft-affinity"]


def _policies_schema(choices: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "server_group": {
                "type": "object",
                "properties": {
                    "name": _NAME,
                    "policies": {
                        "type": "array",
                        "items": {"type": "string", "enum": choices},
                        "uniqueItems": True,
                        "minItems": 1,
                        "maxItems": 1,
                    },
                },
                "required": ["name", "policies"],
                "additionalProperties": False,
            }
        },
        "required": ["server_group"],
        "additionalProperties": False,
    }


CREATE: v.Versioned = [
    (("2.1", "2.14"), _policies_schema(_HARD)),
    (("2.15", "2.63"), _policies_schema(_ALL)),
    (
        ("2.64", None),
        {
            "type": "object",
            "properties": {
                "server_group": {
                    "type": "object",
                    "properties": {
                        "name": _NAME,
                        "policy": {"type": "string", "enum": _ALL},
                        "rules": {
                            "type": "object",
                            "properties": {"max_server_per_host": v.POSITIVE_INT},
                            "additionalProperties": False,
                        },
                    },
                    "required": ["name", "policy"],
                    "additionalProperties": False,
                }
            },
            "required": ["server_group"],
            "additionalProperties": False,
        },
    ),
]


async def index(request: Request) -> Response:
    common.authorize(request, "os-server-groups:index", Rule.PROJECT_READER)
    ctxt = common.ctx(request)
    all_projects = v.query_bool(request, "all_projects") or False
    offset = v.query_int(request, "offset") or 0
    limit = common.limit(request)
    async with common.state(request).db.reader(allow_stale=True) as conn:
        if all_projects and common.is_admin(request):
            rows = await groups.group_get_all(conn)
        else:
            rows = await groups.group_get_all(conn, project_id=ctxt.project_id)
    rows = rows[offset : offset + limit]
    version = common.version(request)
    return common.json({"server_groups": [VIEW.render(r, version) for r in rows]})


async def _get(request: Request) -> dict[str, Any]:
    group_id = request.path_params["group_id"]
    async with common.state(request).db.reader() as conn:
        row = await groups.group_get_by_uuid(conn, group_id)
    ctxt = common.ctx(request)
    if not common.is_admin(request) and row["project_id"] != ctxt.project_id:
        raise exception.InstanceGroupNotFound(group_uuid=group_id)
    return row


async def show(request: Request) -> Response:
    common.authorize(request, "os-server-groups:show", Rule.PROJECT_READER)
    row = await _get(request)
    return common.json({"server_group": VIEW.render(row, common.version(request))})


async def create(request: Request) -> Response:
    common.authorize(request, "os-server-groups:create", Rule.PROJECT_MEMBER)
    version = common.version(request)
    body = await v.json_body(request)
    v.validate(body, CREATE, version)
    spec = body["server_group"]
    if version.at_least("2.64"):
        policy_name = spec["policy"]
        rules = {k: v.to_int(k, val, 1) for k, val in (spec.get("rules") or {}).items()}
        if rules and policy_name != "anti-affinity":
            raise common.bad_request("Only anti-affinity policy supports rules.")
    else:
        policy_name, rules = spec["policies"][0], {}
    ctxt = common.ctx(request)
    state = common.state(request)
    async with state.db.writer() as conn:
        # Checked and inserted under the project's quota lock: never overshoots.
        await quotas.check_server_group(
            conn, state.conf, project_id=ctxt.project_id or "", user_id=ctxt.user_id
        )
        row = await groups.group_create(
            conn,
            {
                "name": spec["name"],
                "project_id": ctxt.project_id,
                "user_id": ctxt.user_id,
                "policy": policy_name,
                "rules": rules or None,
            },
        )
    return common.json({"server_group": VIEW.render(row, version)})


async def delete(request: Request) -> Response:
    common.authorize(request, "os-server-groups:delete", Rule.PROJECT_READER)
    row = await _get(request)
    common.authorize(request, "os-server-groups:delete", Rule.PROJECT_MEMBER, row["project_id"])
    async with common.state(request).db.writer() as conn:
        await groups.group_destroy(conn, row["uuid"])
    return common.empty(204)


ROUTES = [
    Route(
        "/os-server-groups",
        common.known_query(index, {"2.75": ("all_projects", "limit", "offset")}),
        methods=["GET"],
    ),
    Route("/os-server-groups", create, methods=["POST"]),
    Route("/os-server-groups/{group_id}", common.no_query(show), methods=["GET"]),
    Route("/os-server-groups/{group_id}", delete, methods=["DELETE"]),
]
