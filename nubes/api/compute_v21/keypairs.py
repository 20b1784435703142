"""``os-keypairs``: create (generated or imported), list, show, delete, per user.

Microversions as Nova's: 2.2 adds ``type`` (ssh or x509) and makes create
201 and delete 204; 2.10 lets an admin act for another user (``user_id`` in
the body or the query); 2.35 pages the list (``limit``, ``marker``); 2.92
takes only imported keys (``public_key`` required) and allows '@' in names.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import keypairs
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.policy import Rule
from nubes.api.views import nova_time
from nubes.db.api import keypairs as keypairs_db

#: Nova's key pair names before 2.92: letters, digits, '.', '_', '-' and inner spaces.
NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": r"^(?! )[a-zA-Z0-9. _-]+(?<! )$",
}


#: 2.92: '@' allowed too.
NAME_292 = {**NAME, "pattern": r"^(?! )[a-zA-Z0-9.@ _-]+(?<! )$"}


def _schema(with_type: bool, with_user: bool, import_only: bool = False) -> dict[str, Any]:
    name = NAME_292 if import_only else NAME
    properties: dict[str, Any] = {"name": name, "public_key": {"type": "string"}}
    if with_type:
        properties["type"] = {"type": "string", "enum": list(keypairs.TYPES)}
    if with_user:
        properties["user_id"] = {"type": "string", "minLength": 1, "maxLength": 255}
    return {
        "type": "object",
        "properties": {
            "keypair": {
                "type": "object",
                "properties": properties,
                # 2.92: key pairs are imported, never generated.
                "required": ["name", "public_key"] if import_only else ["name"],
                "additionalProperties": False,
            }
        },
        "required": ["keypair"],
        "additionalProperties": False,
    }


CREATE: v.Versioned = [
    (("2.1", "2.1"), _schema(False, False)),
    (("2.2", "2.9"), _schema(True, False)),
    (("2.10", "2.91"), _schema(True, True)),
    (("2.92", None), _schema(True, True, import_only=True)),
]


def _view(row: dict[str, Any], request: Request, *, full: bool) -> dict[str, Any]:
    version = common.version(request)
    body: dict[str, Any] = {
        "name": row["name"],
        "public_key": row["public_key"],
        "fingerprint": row["fingerprint"],
    }
    if version.at_least("2.2"):
        body["type"] = row["type"]
    if full:
        body["user_id"] = row["user_id"]
    return body


def _user(request: Request, wanted: str | None) -> str:
    """Whose key pairs: the caller's, or (admin, from 2.10) the one named."""
    ctxt = common.ctx(request)
    if wanted is None or wanted == ctxt.user_id:
        return ctxt.user_id or ""
    if not common.version(request).at_least("2.10") or not common.is_admin(request):
        raise exception.Forbidden(
            reason="Policy doesn't allow os_compute_api:os-keypairs to act for another user."
        )
    return wanted


async def create(request: Request) -> Response:
    common.authorize(request, "os-keypairs:create", Rule.PROJECT_MEMBER)
    version = common.version(request)
    body = await v.json_body(request)
    v.validate(body, CREATE, version)
    spec = body["keypair"]
    state = common.state(request)
    ctxt = common.ctx(request)
    row = await keypairs.create(
        state.db,
        state.conf,
        project_id=ctxt.project_id or "",
        user_id=_user(request, spec.get("user_id")),
        name=spec["name"],
        key_type=spec.get("type", "ssh"),
        public_key=spec.get("public_key"),
    )
    shown = _view(row, request, full=True)
    if "private_key" in row:
        shown["private_key"] = row["private_key"]
    return common.json({"keypair": shown}, 201 if version.at_least("2.2") else 200)


def _query_user(request: Request) -> str:
    wanted = request.query_params.get("user_id")
    if wanted is not None and not common.version(request).at_least("2.10"):
        wanted = None  # Nova ignores it before 2.10
    return _user(request, wanted)


async def index(request: Request) -> Response:
    common.authorize(request, "os-keypairs:index", Rule.PROJECT_READER)
    version = common.version(request)
    paged = version.at_least("2.35")
    limit = common.limit(request) if paged else None
    marker = request.query_params.get("marker") if paged else None
    async with common.state(request).db.reader(allow_stale=True) as conn:
        rows = await keypairs_db.get_all(conn, _query_user(request), limit=limit, marker=marker)
    body: dict[str, Any] = {"keypairs": [{"keypair": _view(r, request, full=False)} for r in rows]}
    if paged and limit is not None and rows and len(rows) == limit:
        body["keypairs_links"] = common.next_link(request, "os-keypairs", rows[-1]["name"])
    return common.json(body)


async def show(request: Request) -> Response:
    common.authorize(request, "os-keypairs:show", Rule.PROJECT_READER)
    async with common.state(request).db.reader() as conn:
        row = await keypairs_db.get(conn, _query_user(request), request.path_params["name"])
    shown = _view(row, request, full=True)
    shown.update(
        {
            "id": row["id"],
            "created_at": nova_time(row["created_at"]),
            "updated_at": nova_time(row["updated_at"]),
            "deleted": False,
            "deleted_at": None,
        }
    )
    return common.json({"keypair": shown})


async def delete(request: Request) -> Response:
    common.authorize(request, "os-keypairs:delete", Rule.PROJECT_MEMBER)
    async with common.state(request).db.writer() as conn:
        await keypairs_db.destroy(conn, _query_user(request), request.path_params["name"])
    return common.empty(204 if common.version(request).at_least("2.2") else 202)


ROUTES = [
    Route(
        "/os-keypairs",
        common.known_query(index, {"2.75": ("user_id", "limit", "marker")}),
        methods=["GET"],
    ),
    Route("/os-keypairs", create, methods=["POST"]),
    Route("/os-keypairs/{name}", common.known_query(show, {"2.75": ("user_id",)}), methods=["GET"]),
    Route(
        "/os-keypairs/{name}",
        common.known_query(delete, {"2.75": ("user_id",)}),
        methods=["DELETE"],
    ),
]
