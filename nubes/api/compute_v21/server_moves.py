"""The server actions that move or rebuild a server: ``migrate``, ``resize``,
``confirmResize``, ``revertResize``, ``os-migrateLive``, ``evacuate``, ``rebuild``.

Dispatched by :func:`nubes.api.compute_v21.server_actions.action`, which has
already found the server (404 if the caller may not see it). Each handler
validates the body against its schema for the request's version
(:mod:`server_schemas`), checks Nova's default policy (admins migrate,
live-migrate and evacuate; a project's members resize, confirm, revert and
rebuild their servers) and calls :class:`nubes.api.moves.MovesAPI`. The
answers are Nova's: 202 with no body, except ``confirmResize`` (204),
``evacuate`` (200, with the admin password before 2.14) and ``rebuild``
(202 with the server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common, server_params, servers
from nubes.api.compute_v21 import server_schemas as schemas
from nubes.api.compute_v21 import server_views as views
from nubes.api.policy import Rule

if TYPE_CHECKING:
    from nubes.api.moves import MovesAPI


def _api(request: Request) -> MovesAPI:
    api: MovesAPI = common.state(request).moves_api()
    return api


def _flavor_id(ref: Any) -> str:
    """A flavor id, also from a flavor's URL (what some clients send as flavorRef)."""
    return str(ref).rstrip("/").rsplit("/", 1)[-1]


async def _migrate(request: Request, row: dict[str, Any], body: Any) -> None:
    version = common.version(request)
    host = None
    if version.at_least("2.56"):
        v.validate(body, schemas.MIGRATE, version)
        host = (body["migrate"] or {}).get("host")
    common.authorize(request, "os-migrate-server:migrate", Rule.ADMIN)
    await _api(request).migrate_server(common.ctx(request), row["uuid"], host)


async def _resize(request: Request, row: dict[str, Any], body: Any) -> None:
    v.validate(body, schemas.RESIZE)
    common.authorize(request, "servers:resize", Rule.PROJECT_MEMBER, row["project_id"])
    resize = body["resize"]
    await _api(request).resize_server(
        common.ctx(request),
        row["uuid"],
        _flavor_id(resize["flavorRef"]),
        disk_config=resize.get("OS-DCF:diskConfig"),
    )


async def _confirm_resize(request: Request, row: dict[str, Any], body: Any) -> Response:
    common.authorize(request, "servers:confirm_resize", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).confirm_resize(common.ctx(request), row["uuid"])
    return common.empty(204)


async def _revert_resize(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "servers:revert_resize", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).revert_resize(common.ctx(request), row["uuid"])


async def _migrate_live(request: Request, row: dict[str, Any], body: Any) -> None:
    version = common.version(request)
    v.validate(body, schemas.MIGRATE_LIVE, version)
    common.authorize(request, "os-migrate-server:migrate_live", Rule.ADMIN)
    live = body["os-migrateLive"]
    raw = live["block_migration"]
    block: bool | str
    if version.at_least("2.25") and raw == "auto":
        block = "auto"
    else:
        block = v.parse_bool("block_migration", raw)
    # Before 2.30 a named host was forced past the scheduler; here the
    # scheduler always checks it (docs/moves.md), so "force" only has to
    # name a host.
    force = version.matches("2.30", "2.67") and v.parse_bool("force", live.get("force", False))
    await _api(request).live_migrate_server(
        common.ctx(request), row["uuid"], live.get("host"), block_migration=block, force=force
    )


async def _evacuate(request: Request, row: dict[str, Any], body: Any) -> Response:
    version = common.version(request)
    v.validate(body, schemas.EVACUATE, version)
    common.authorize(request, "os-evacuate", Rule.ADMIN)
    evacuate = body["evacuate"]
    force = version.matches("2.29", "2.67") and v.parse_bool("force", evacuate.get("force", False))
    password: str | None
    if version.at_least("2.14"):
        password = server_params.password(evacuate)
    else:
        shared = v.parse_bool("onSharedStorage", evacuate["onSharedStorage"])
        if "adminPass" in evacuate and shared:
            raise common.bad_request("admin password can't be changed on existing disk")
        password = None if shared else server_params.password(evacuate)
    await _api(request).evacuate_server(
        common.ctx(request),
        row["uuid"],
        evacuate.get("host"),
        force=force,
        stopped=version.at_least("2.95"),
    )
    if version.at_least("2.14"):
        return common.empty(200)
    return common.json({"adminPass": password})


async def _rebuild(request: Request, row: dict[str, Any], body: Any) -> Response:
    version = common.version(request)
    v.validate(body, schemas.REBUILD, version)
    common.authorize(request, "servers:rebuild", Rule.PROJECT_MEMBER, row["project_id"])
    rebuild = body["rebuild"]
    if v.parse_bool("preserve_ephemeral", rebuild.get("preserve_ephemeral", False)):
        # Nova's libvirt driver fails such a rebuild; no nubes driver keeps an
        # ephemeral disk across a rebuild, so it is refused before anything is lost.
        raise exception.PreserveEphemeralNotSupported()
    server_params.check_trusted_certs(rebuild)
    password = server_params.password(rebuild)
    values: dict[str, Any] = {}
    sysmeta = server_params.sysmeta_from(rebuild)
    if sysmeta:
        values["system_metadata"] = sysmeta
    if "description" in rebuild:
        values["display_description"] = rebuild["description"]
    if "key_name" in rebuild:
        values["key_name"] = await server_params.key_name_of(request, rebuild["key_name"])
    if "user_data" in rebuild:
        values["user_data"] = server_params.user_data(rebuild)
    if "hostname" in rebuild:
        values["hostname"] = rebuild["hostname"]
    injected = await server_params.injected_files(request, rebuild, row["project_id"])
    updated = await _api(request).rebuild_server(
        common.ctx(request),
        row["uuid"],
        rebuild["imageRef"],
        name=rebuild.get("name"),
        metadata=rebuild.get("metadata"),
        values=values,
        injected_files=injected,
    )
    # Nova answers with the body of an update (short before 2.75), plus
    # what the rebuild set that the short body leaves out.
    x = await servers.server_context(request, [updated], servers.body_mode(request), one=True)
    server = views.render(views.SERVER, updated, x)
    server["adminPass"] = password
    if version.at_least("2.54"):
        server["key_name"] = updated["key_name"]
    if version.at_least("2.57"):
        server["user_data"] = updated["user_data"]
        # Nova's rebuild body carries the user data once, at the top (the
        # full 2.75 body leaves the admin's extended-attribute copy out).
        server.pop("OS-EXT-SRV-ATTR:user_data", None)
    response = common.json({"server": server}, 202)
    response.headers["Location"] = common.links(request, "servers", updated["uuid"])[0]["href"]
    return response


ACTIONS: dict[str, common.ActionHandler] = {
    "migrate": _migrate,
    "resize": _resize,
    "confirmResize": _confirm_resize,
    "revertResize": _revert_resize,
    "os-migrateLive": _migrate_live,
    "evacuate": _evacuate,
    "rebuild": _rebuild,
}
