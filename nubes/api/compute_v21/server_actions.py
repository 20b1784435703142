"""POST /servers/{id}/action: one route for every server action, dispatched by name.

The lifecycle actions (stop, start, reboot, pause, unpause, suspend,
resume, rescue, unrescue, shelve, shelveOffload, unshelve,
trigger_crash_dump, changePassword, restore, forceDelete, lock, unlock,
reset state; os-resetNetwork (410) and injectNetworkInfo (202) as Nova answers them)
live here; the move actions in :mod:`server_moves`, the security-group actions in
:mod:`server_network`. Those modules only import
:mod:`servers` (for the server lookup and views), never each other's route
module, so no import cycle joins them.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import (
    common,
    floating_ips,
    guest_host,
    hosts,
    remote_consoles,
    server_moves,
    server_network,
    server_params,
    servers,
)
from nubes.api.compute_v21 import server_schemas as schemas
from nubes.api.policy import Rule
from nubes.api.servers import ServersAPI


def _api(request: Request) -> ServersAPI:
    api: ServersAPI = common.state(request).servers_api()
    return api


async def _stop(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "servers:stop", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).stop_server(common.ctx(request), row["uuid"])


async def _start(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "servers:start", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).start_server(common.ctx(request), row["uuid"])


async def _reboot(request: Request, row: dict[str, Any], body: Any) -> None:
    v.validate(body, schemas.REBOOT)
    common.authorize(request, "servers:reboot", Rule.PROJECT_MEMBER, row["project_id"])
    kind = body["reboot"]["type"].upper()
    await _api(request).reboot_server(common.ctx(request), row["uuid"], kind)


async def _lock(request: Request, row: dict[str, Any], body: Any) -> None:
    reason = None
    if common.version(request).at_least("2.73"):
        v.validate(body, schemas.LOCK)
        reason = (body["lock"] or {}).get("locked_reason")
    common.authorize(request, "os-lock-server:lock", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).lock_server(common.ctx(request), row["uuid"], reason)


async def _unlock(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-lock-server:unlock", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).unlock_server(
        common.ctx(request), row["uuid"], may_override=common.is_admin(request)
    )


async def _reset_state(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-admin-actions:reset_state", Rule.ADMIN)
    v.validate(body, schemas.RESET_STATE)
    await _api(request).reset_state(
        common.ctx(request), row["uuid"], body["os-resetState"]["state"]
    )


async def _pause(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-pause-server:pause", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).pause_server(common.ctx(request), row["uuid"])


async def _unpause(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-pause-server:unpause", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).unpause_server(common.ctx(request), row["uuid"])


async def _suspend(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-suspend-server:suspend", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).suspend_server(common.ctx(request), row["uuid"])


async def _resume(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-suspend-server:resume", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).resume_server(common.ctx(request), row["uuid"])


async def _rescue(request: Request, row: dict[str, Any], body: Any) -> Response:
    """Nova's rescue: 200 with the rescue boot's password (given or made)."""
    v.validate(body, schemas.RESCUE)
    common.authorize(request, "os-rescue", Rule.PROJECT_MEMBER, row["project_id"])
    rescue = body["rescue"] or {}
    password = server_params.password(rescue)
    await _api(request).rescue_server(
        common.ctx(request), row["uuid"], password, rescue.get("rescue_image_ref")
    )
    return common.json({"adminPass": password})


async def _unrescue(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-unrescue", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).unrescue_server(common.ctx(request), row["uuid"])


async def _trigger_crash_dump(request: Request, row: dict[str, Any], body: Any) -> None:
    if not common.version(request).at_least("2.17"):
        # Nova's answer for an action its microversion does not have yet.
        raise common.not_found("The action trigger_crash_dump needs microversion 2.17 or later")
    v.validate(body, schemas.TRIGGER_CRASH_DUMP)
    common.authorize(request, "servers:trigger_crash_dump", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).trigger_crash_dump(common.ctx(request), row["uuid"])


async def _change_password(request: Request, row: dict[str, Any], body: Any) -> None:
    v.validate(body, schemas.CHANGE_PASSWORD)
    common.authorize(request, "os-admin-password", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).change_password(
        common.ctx(request), row["uuid"], body["changePassword"]["adminPass"]
    )


async def _restore(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-deferred-delete:restore", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).restore_server(common.ctx(request), row["uuid"])


async def _force_delete(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-deferred-delete:force", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).delete_server(common.ctx(request), row["uuid"], force=True)


async def _shelve(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-shelve:shelve", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).shelve_server(common.ctx(request), row["uuid"])


async def _shelve_offload(request: Request, row: dict[str, Any], body: Any) -> None:
    common.authorize(request, "os-shelve:shelve_offload", Rule.ADMIN)
    await _api(request).shelve_offload_server(common.ctx(request), row["uuid"])


async def _unshelve(request: Request, row: dict[str, Any], body: Any) -> None:
    """Unshelve; from 2.77 into a named zone, from 2.91 onto a host (admins)
    or unpinned (a null zone), each only for an offloaded server (409)."""
    version = common.version(request)
    common.authorize(request, "os-shelve:unshelve", Rule.PROJECT_MEMBER, row["project_id"])
    args: dict[str, Any] = {}
    if version.at_least("2.77"):
        v.validate(body, schemas.UNSHELVE_291 if version.at_least("2.91") else schemas.UNSHELVE_277)
        spec = body["unshelve"] or {}
        host = spec.get("host")
        if host is not None:
            common.authorize(request, "os-shelve:unshelve_to_host", Rule.ADMIN)
            await servers.check_destination(request, host, None)
        if "availability_zone" in spec:
            zone = spec["availability_zone"]
            if zone is not None:
                await servers.check_zone(request, zone)
                if host is not None:
                    await _check_host_in_zone(request, host, zone)
            args.update(set_zone=True, zone=zone)
        elif host is not None and row["availability_zone"]:
            # Pinned to a zone: the host must be in it (Nova).
            await _check_host_in_zone(request, host, row["availability_zone"])
        args["host"] = host
    await _api(request).unshelve_server(common.ctx(request), row["uuid"], **args)


async def _check_host_in_zone(request: Request, host: str, zone: str) -> None:
    conf = common.state(request).conf
    async with common.state(request).db.reader() as conn:
        zones = await hosts.host_zones(conn)
    if zones.get(host, str(conf.api.default_availability_zone)) != zone:
        raise common.bad_request(f'Host "{host}" is not in the availability zone "{zone}".')


async def _removed(request: Request, row: dict[str, Any], body: Any) -> None:
    """``os-resetNetwork``: Nova removed it with the XenAPI driver (the only
    one that did it) and answers 410."""
    common.authorize(request, "os-admin-actions", Rule.ADMIN)
    raise exception.Gone(message="This action was removed from the compute API.")


async def _create_image(request: Request, row: dict[str, Any], body: Any) -> Response:
    """``createImage``: a snapshot of the server's disk as a new image."""
    common.authorize(request, "servers:create_image", Rule.PROJECT_MEMBER, row["project_id"])
    v.validate(body, schemas.CREATE_IMAGE)
    asked = body["createImage"]
    image_id = await _api(request).snapshot_server(
        common.ctx(request), row["uuid"], asked["name"], asked.get("metadata")
    )
    return _image_created(request, image_id)


async def _create_backup(request: Request, row: dict[str, Any], body: Any) -> Response:
    """``createBackup``: a snapshot kept among the newest ``rotation`` of its type."""
    common.authorize(request, "os-create-backup", Rule.PROJECT_MEMBER, row["project_id"])
    v.validate(body, schemas.CREATE_BACKUP)
    asked = body["createBackup"]
    image_id = await _api(request).snapshot_server(
        common.ctx(request),
        row["uuid"],
        asked["name"],
        asked.get("metadata"),
        backup_type=asked["backup_type"],
        rotation=int(asked["rotation"]),
    )
    return _image_created(request, image_id)


def _image_created(request: Request, image_id: str) -> Response:
    """202 with the image's id in the body from 2.45, in a ``Location``
    header (the image API's URL of it) before, as Nova answers."""
    if common.version(request).at_least("2.45"):
        return common.json({"image_id": image_id}, 202)
    response = common.empty(202)
    location = f"{common.state(request).public_endpoint}/image/v2/images/{image_id}"
    response.headers["Location"] = location
    return response


async def _inject_network_info(request: Request, row: dict[str, Any], body: Any) -> None:
    """``injectNetworkInfo``: Nova still serves it (202, admins only) though
    only its removed XenAPI driver wrote anything into the guest; its libvirt
    driver, like nubes' drivers, has nothing to inject (a guest learns its
    network from DHCP and the metadata service, both current), so the answer
    is the acceptance alone."""
    common.authorize(request, "os-admin-actions:inject_network_info", Rule.ADMIN, row["project_id"])
    # Its value is not read (Tempest sends {}, others null), as in Nova.


#: Control characters a console log may hold that JSON clients choke on;
#: Nova keeps tab, line feed and carriage return and removes the rest.
_CONSOLE_JUNK = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


async def _console_output(request: Request, row: dict[str, Any], body: Any) -> Response:
    """``os-getConsoleOutput``: the end of the guest's console log, asked of
    its host (compute RPC ``get_console_output``), as ``{"output": ...}``."""
    common.authorize(request, "os-console-output", Rule.PROJECT_MEMBER, row["project_id"])
    v.validate(body, schemas.GET_CONSOLE_OUTPUT)
    raw = (body["os-getConsoleOutput"] or {}).get("length")
    length = None if raw is None or int(raw) == -1 else int(raw)
    uuid = row["uuid"]
    ctxt = common.ctx(request)
    output = await guest_host.ask(
        request,
        row,
        "console log",
        lambda compute, host: compute.get_console_output(ctxt, host, uuid, length),
    )
    return common.json({"output": _CONSOLE_JUNK.sub("", output)})


ACTIONS: dict[str, common.ActionHandler] = {
    "os-stop": _stop,
    "os-start": _start,
    "reboot": _reboot,
    "lock": _lock,
    "unlock": _unlock,
    "os-resetState": _reset_state,
    "os-getConsoleOutput": _console_output,
    "pause": _pause,
    "unpause": _unpause,
    "suspend": _suspend,
    "resume": _resume,
    "rescue": _rescue,
    "unrescue": _unrescue,
    "trigger_crash_dump": _trigger_crash_dump,
    "changePassword": _change_password,
    "shelve": _shelve,
    "shelveOffload": _shelve_offload,
    "unshelve": _unshelve,
    "restore": _restore,
    "forceDelete": _force_delete,
    "os-resetNetwork": _removed,
    "injectNetworkInfo": _inject_network_info,
    "createImage": _create_image,
    "createBackup": _create_backup,
}


async def action(request: Request) -> Response:
    body = await v.json_body(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise exception.MalformedBody(reason="the body must hold exactly one action")
    (name,) = body
    handler = _handler(name)
    if handler is None:
        raise common.bad_request(f"There is no such action: {name}")
    row = await servers.get_server(request, request.path_params["server_id"])
    response = await handler(request, row, body)
    return response if response is not None else common.empty(202)


def _handler(name: str) -> common.ActionHandler | None:
    return (
        ACTIONS.get(name)
        or server_moves.ACTIONS.get(name)
        or server_network.ACTIONS.get(name)
        or floating_ips.ACTIONS.get(name)
        or remote_consoles.ACTIONS.get(name)
    )


ROUTES = [
    Route("/servers/{server_id}/action", action, methods=["POST"]),
]
