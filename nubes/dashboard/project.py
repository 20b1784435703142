"""A project member's pages: overview, servers, key pairs, images."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from nubes.dashboard import auth, charts, features, web
from nubes.dashboard.client import ApiError

#: Statuses that end on their own: the list keeps refreshing while any server has another.
STEADY = {"ACTIVE", "SHUTOFF", "ERROR", "PAUSED", "SUSPENDED", "SHELVED_OFFLOADED", "VERIFY_RESIZE"}


async def overview(request: Request, page: web.Page) -> Response:
    limits, keypairs, projects, networks, net_quota = await asyncio.gather(
        page.api.get("compute", "/limits"),
        page.api.get("compute", "/os-keypairs"),
        auth.projects(page),
        page.api.optional("network", "/networks", project_id=page.session.project_id),
        page.api.optional("network", f"/quotas/{page.session.project_id}"),
    )
    absolute = limits["limits"]["absolute"]
    usages = [
        charts.Usage("Instances", absolute["totalInstancesUsed"], absolute["maxTotalInstances"]),
        charts.Usage("vCPUs", absolute["totalCoresUsed"], absolute["maxTotalCores"]),
        charts.Usage("RAM", absolute["totalRAMUsed"], absolute["maxTotalRAMSize"], " MiB"),
        charts.Usage("Key pairs", len(keypairs["keypairs"]), absolute["maxTotalKeypairs"]),
    ]
    if networks is not None:
        limit = (net_quota or {}).get("quota", {}).get("network", -1)
        usages.append(charts.Usage("Networks", len(networks["networks"]), limit))
    return page.render(
        "overview.html",
        usages=[(u, charts.donut(u)) for u in usages],
        projects=projects,
    )


def _server_view(server: dict[str, Any]) -> dict[str, Any]:
    addresses = [
        f"{net}: {a['addr']}" for net, items in server.get("addresses", {}).items() for a in items
    ]
    return {
        "id": server["id"],
        "name": server["name"],
        "status": server["status"],
        "task": server.get("OS-EXT-STS:task_state") or "",
        "power": server.get("OS-EXT-STS:power_state"),
        "flavor": (server.get("flavor") or {}).get("original_name", ""),
        "addresses": addresses,
        "host": server.get("OS-EXT-SRV-ATTR:host") or "",
        "created": server.get("created", ""),
        "key_name": server.get("key_name") or "",
        "image": (server.get("image") or {}).get("id", "") if server.get("image") else "",
        "progress": server.get("progress"),
        "fault": (server.get("fault") or {}).get("message", ""),
        "locked": server.get("locked", False),
    }


async def _servers(page: web.Page) -> list[dict[str, Any]]:
    query = {k: v for k, v in page.request.query_params.items() if k in ("name", "status") and v}
    body = await page.api.get("compute", "/servers/detail", **query)
    return [_server_view(s) for s in body["servers"]]


async def servers(request: Request, page: web.Page) -> Response:
    rows = await _servers(page)
    return page.render(
        "servers.html",
        servers=rows,
        name=request.query_params.get("name", ""),
        status_filter=request.query_params.get("status", ""),
    )


async def server_rows(request: Request, page: web.Page) -> Response:
    """The list's rows alone, for the page's live update."""
    rows = await _servers(page)
    return page.render("_server_rows.html", servers=rows)


async def _launch_choices(page: web.Page) -> dict[str, Any]:
    flavors, images, keypairs, networks, groups = await asyncio.gather(
        page.api.get("compute", "/flavors/detail"),
        page.api.get("image", "/images", status="active"),
        page.api.get("compute", "/os-keypairs"),
        page.api.optional("network", "/networks"),
        page.api.optional("network", "/security-groups", project_id=page.session.project_id),
    )
    return {
        "flavors": flavors["flavors"],
        "images": [i for i in images["images"] if i.get("disk_format") not in ("aki", "ari")],
        "keypairs": [k["keypair"] for k in keypairs["keypairs"]],
        "networks": None if networks is None else networks["networks"],
        "groups": None if groups is None else groups["security_groups"],
    }


async def launch_form(request: Request, page: web.Page) -> Response:
    return page.render("launch.html", **await _launch_choices(page))


async def launch(request: Request, page: web.Page) -> Response:
    fields = await page.form()
    try:
        count = int(fields.get("count") or 1)
    except ValueError:
        count = 0
    if not 1 <= count <= 100:
        return web.redirect(request, "/servers/launch", error="Count must be 1 to 100.")
    server: dict[str, Any] = {
        "name": fields.get("name", ""),
        "flavorRef": fields.get("flavor", ""),
        "imageRef": fields.get("image", ""),
        "min_count": count,
        "max_count": count,
    }
    network = fields.get("network") or "none"
    server["networks"] = network if network in ("none", "auto") else [{"uuid": network}]
    if fields.get("key_name"):
        server["key_name"] = fields["key_name"]
    groups = [g for g in fields.get("security_groups", "").split("\n") if g]
    if groups:
        server["security_groups"] = [{"name": g} for g in groups]
    if fields.get("user_data"):
        server["user_data"] = base64.b64encode(fields["user_data"].encode()).decode()
    try:
        await page.api.post("compute", "/servers", {"server": server})
    except ApiError as exc:
        if exc.status == 401:
            raise
        return web.redirect(request, "/servers/launch", error=exc.message)
    return web.redirect(request, "/servers", message=f"Launching {count} server(s).")


async def _server(page: web.Page, server_id: str) -> dict[str, Any]:
    return _server_view((await page.api.get("compute", f"/servers/{server_id}"))["server"])


async def server_detail(request: Request, page: web.Page) -> Response:
    server_id = request.path_params["server_id"]
    server, actions, flavors, images, available = await asyncio.gather(
        _server(page, server_id),
        page.api.get("compute", f"/servers/{server_id}/os-instance-actions"),
        page.api.get("compute", "/flavors"),
        page.api.get("image", "/images", status="active"),
        features.server_actions(page),
    )
    return page.render(
        "server.html",
        server=server,
        actions=actions["instanceActions"],
        flavors=flavors["flavors"],
        images=[i for i in images["images"] if i.get("disk_format") not in ("aki", "ari")],
        optional=available,
    )


async def server_status(request: Request, page: web.Page) -> Response:
    server = await _server(page, request.path_params["server_id"])
    return page.render("_server_status.html", server=server)


async def console_log(request: Request, page: web.Page) -> Response:
    server_id = request.path_params["server_id"]
    server = await _server(page, server_id)
    try:
        body = await page.api.post(
            "compute", f"/servers/{server_id}/action", {"os-getConsoleOutput": {"length": 200}}
        )
        output, problem = body["output"], ""
    except ApiError as exc:
        if exc.status == 401:
            raise
        output, problem = "", exc.message
    return page.render("console.html", server=server, output=output, problem=problem)


def _action_body(name: str, fields: dict[str, str]) -> dict[str, Any] | None:
    """The compute API body of a detail page's button (None: no such button)."""
    simple = {
        "start": "os-start",
        "stop": "os-stop",
        "confirm": "confirmResize",
        "revert": "revertResize",
        **{n: n for n in features.OPTIONAL_ACTIONS if n != "createImage"},
    }
    if name in simple:
        return {simple[name]: None}
    if name == "reboot":
        return {"reboot": {"type": "HARD" if fields.get("hard") else "SOFT"}}
    if name == "resize":
        return {"resize": {"flavorRef": fields.get("flavor", "")}}
    if name == "rebuild":
        return {"rebuild": {"imageRef": fields.get("image", "")}}
    if name == "snapshot":
        return {"createImage": {"name": fields.get("snapshot_name", "")}}
    return None


async def server_action(request: Request, page: web.Page) -> Response:
    server_id = request.path_params["server_id"]
    fields = await page.form()
    name = fields.get("action", "")
    back = f"/servers/{server_id}"
    if name == "delete":
        return await web.attempt(
            page, page.api.delete("compute", back), "/servers", "Deleting the server."
        )
    body = _action_body(name, fields)
    if body is None:
        return web.redirect(request, back, error="There is no such action.")
    return await web.attempt(
        page, page.api.post("compute", f"{back}/action", body), back, f"Asked to {name}."
    )


async def keypairs(request: Request, page: web.Page) -> Response:
    body = await page.api.get("compute", "/os-keypairs")
    return page.render("keypairs.html", keypairs=[k["keypair"] for k in body["keypairs"]])


#: A key pair name the download's file name may carry as it is.
_SAFE_FILE = re.compile(r"[^A-Za-z0-9._-]")


async def keypair_create(request: Request, page: web.Page) -> Response:
    """Create (private key sent once, as a download, never kept) or import a key pair."""
    fields = await page.form()
    keypair: dict[str, Any] = {"name": fields.get("name", "")}
    if fields.get("public_key", "").strip():
        keypair["public_key"] = fields["public_key"].strip()
    try:
        body = await page.api.post("compute", "/os-keypairs", {"keypair": keypair})
    except ApiError as exc:
        if exc.status == 401:
            raise
        return web.redirect(request, "/keypairs", error=exc.message)
    private = body["keypair"].get("private_key")
    if not private:
        return web.redirect(request, "/keypairs", message=f"Imported {keypair['name']}.")
    filename = _SAFE_FILE.sub("_", keypair["name"]) + ".pem"
    return Response(
        private,
        media_type="application/x-pem-file",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


async def keypair_delete(request: Request, page: web.Page) -> Response:
    fields = await page.form()
    name = fields.get("name", "")
    return await web.attempt(
        page,
        page.api.delete("compute", f"/os-keypairs/{_path(name)}"),
        "/keypairs",
        f"Deleted key pair {name}.",
    )


def _path(segment: str) -> str:
    return quote(segment, safe="")


async def images(request: Request, page: web.Page) -> Response:
    body = await page.api.get("image", "/images")
    return page.render("images.html", images=body["images"])


async def image_delete(request: Request, page: web.Page) -> Response:
    fields = await page.form()
    return await web.attempt(
        page,
        page.api.delete("image", f"/images/{_path(fields.get('id', ''))}"),
        "/images",
        "Deleted the image.",
    )


async def image_upload(request: Request, page: web.Page) -> Response:
    """Create an image and send its bytes: the page's script posts the file as the body."""
    page.check_csrf_header()
    params = request.query_params
    created = await page.api.post(
        "image",
        "/images",
        {
            "name": params.get("name", ""),
            "disk_format": params.get("disk_format", "raw"),
            "container_format": "bare",
        },
    )
    try:
        # Streamed through, never held whole in memory.
        await page.api.request(
            "PUT",
            "image",
            f"/images/{created['id']}/file",
            content=request.stream(),
            headers={"Content-Type": "application/octet-stream"},
        )
    except ApiError:
        # No image without its data left behind by a failed upload.
        await page.api.delete("image", f"/images/{created['id']}")
        raise
    return Response(status_code=204)
