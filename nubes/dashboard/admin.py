"""The administrator's pages: hosts and capacity, services, migrations, the cloud's inventory."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from nubes.dashboard import charts, web
from nubes.dashboard.client import ApiError

#: Migration statuses after which nothing more happens (Nova's, lower case).
FINISHED = {"completed", "confirmed", "reverted", "error", "failed", "cancelled", "done"}

#: The nubes extension that reports task backlog, service versions and (once
#: it can) queue depth; a cloud without it shows "not available".
HEALTH_PATH = "/os-nubes-status"
#: Task statuses that are still work to do (the backlog's bars).
ACTIVE_TASK_STATUSES = ("pending", "running")


def _hypervisor_view(h: dict[str, Any]) -> dict[str, Any]:
    usages = [
        charts.Usage("vCPU", h["vcpus_used"], h["vcpus"]),
        charts.Usage("RAM", h["memory_mb_used"], h["memory_mb"], " MiB"),
        charts.Usage("Disk", h["local_gb_used"], h["local_gb"], " GiB"),
    ]
    return {
        "name": h["hypervisor_hostname"],
        "state": h["state"],
        "status": h["status"],
        "running_vms": h["running_vms"],
        "reason": (h.get("service") or {}).get("disabled_reason") or "",
        "bars": [(u.label, charts.bar(u)) for u in usages],
    }


async def _hypervisors(page: web.Page) -> list[dict[str, Any]]:
    body = await page.api.get("compute", "/os-hypervisors/detail")
    rows = sorted(body["hypervisors"], key=lambda h: h["hypervisor_hostname"])
    return [_hypervisor_view(h) for h in rows]


async def hypervisors(request: Request, page: web.Page) -> Response:
    return page.render("admin/hypervisors.html", hypervisors=await _hypervisors(page))


async def hypervisor_rows(request: Request, page: web.Page) -> Response:
    return page.render("admin/_hypervisor_rows.html", hypervisors=await _hypervisors(page))


async def _services(page: web.Page) -> list[dict[str, Any]]:
    body = await page.api.get("compute", "/os-services")
    return sorted(body["services"], key=lambda s: (s["binary"], s["host"]))


async def services(request: Request, page: web.Page) -> Response:
    return page.render("admin/services.html", services=await _services(page))


async def service_rows(request: Request, page: web.Page) -> Response:
    return page.render("admin/_service_rows.html", services=await _services(page))


async def service_update(request: Request, page: web.Page) -> Response:
    fields = await page.form()
    service_id, what = fields.get("id", ""), fields.get("action", "")
    body: dict[str, Any]
    if what == "disable":
        body = {"status": "disabled"}
        if fields.get("reason", "").strip():
            body["disabled_reason"] = fields["reason"].strip()
    elif what == "enable":
        body = {"status": "enabled"}
    elif what in ("force-down", "unforce-down"):
        body = {"forced_down": what == "force-down"}
    else:
        return web.redirect(request, "/admin/services", error="There is no such action.")
    return await web.attempt(
        page,
        page.api.put("compute", f"/os-services/{service_id}", body),
        "/admin/services",
        f"Service {what} done.",
    )


async def _migrations(page: web.Page) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    body = await page.api.get("compute", "/os-migrations")
    rows = sorted(body["migrations"], key=lambda m: m["id"], reverse=True)
    active = [m for m in rows if m["status"].lower() not in FINISHED]
    progress = await asyncio.gather(*(_progress(page, m) for m in active))
    for migration, value in zip(active, progress, strict=True):
        migration["bar"] = charts.bar(charts.Usage("Progress", value, 100, " %"), width=160)
    return active, rows[:20]


async def _progress(page: web.Page, migration: dict[str, Any]) -> int:
    """The server's progress, which the migration's source host reports as it copies."""
    try:
        body = await page.api.get("compute", f"/servers/{migration['instance_uuid']}")
    except ApiError as exc:
        if exc.status == 401:
            raise
        return 0
    return int(body["server"].get("progress") or 0)


async def migrations(request: Request, page: web.Page) -> Response:
    active, recent = await _migrations(page)
    return page.render("admin/migrations.html", active=active, recent=recent)


async def migration_rows(request: Request, page: web.Page) -> Response:
    active, recent = await _migrations(page)
    return page.render("admin/_migration_rows.html", active=active, recent=recent)


async def inventory(request: Request, page: web.Page) -> Response:
    """Flavors, aggregates, availability zones, projects and users on one page."""
    flavors, aggregates, zones, projects, users = await asyncio.gather(
        page.api.get("compute", "/flavors/detail", is_public="None"),
        page.api.get("compute", "/os-aggregates"),
        page.api.get("compute", "/os-availability-zone/detail"),
        page.api.get("identity", "/projects"),
        page.api.get("identity", "/users"),
    )
    return page.render(
        "admin/inventory.html",
        flavors=flavors["flavors"],
        aggregates=aggregates["aggregates"],
        zones=zones["availabilityZoneInfo"],
        projects=projects["projects"],
        users=users["users"],
    )


async def _health(page: web.Page) -> dict[str, Any]:
    services, extension = await asyncio.gather(
        _services(page), page.api.optional("compute", HEALTH_PATH)
    )
    up = sum(1 for s in services if s["state"] == "up")
    status = (extension or {}).get("status")
    backlog = []
    if status is not None:
        tasks = status.get("tasks") or {}
        most = max([1, *(sum(c.values()) for c in tasks.values())])
        for kind, counts in sorted(tasks.items()):
            waiting = sum(counts.get(s, 0) for s in ACTIVE_TASK_STATUSES)
            backlog.append(
                {
                    "kind": kind,
                    "counts": counts,
                    "bar": charts.bar(charts.Usage(f"{kind} active", waiting, most), width=160),
                }
            )
    return {
        "services": services,
        "up": charts.bar(charts.Usage("Services up", up, len(services), full_is_good=True)),
        "status": status,
        "backlog": backlog,
    }


async def health(request: Request, page: web.Page) -> Response:
    return page.render("admin/health.html", **await _health(page))


async def health_rows(request: Request, page: web.Page) -> Response:
    return page.render("admin/_health_body.html", **await _health(page))
