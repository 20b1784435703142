"""Where the dashboard is served: /dashboard on the API port, / on a port of its own, or not."""

from __future__ import annotations

from typing import Any

import httpx

from nubes import config
from nubes.api.app import build_app, build_dashboard_app
from nubes.api.state import ApiState
from nubes.db.engine import Database


def _state(**dashboard: object) -> ApiState:
    conf = config.new_config()
    conf([])
    for name, value in dashboard.items():
        conf.set_override(name, value, group="dashboard")
    # The login page, redirects and static files touch no database.
    return ApiState(conf=conf, db=Database("sqlite://"))


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_on_the_api_port_under_its_prefix() -> None:
    async with _client(build_app(_state())) as c:
        login = await c.get("/dashboard/login")
        assert login.status_code == 200 and 'action="/dashboard/login"' in login.text
        assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
        assert "httponly" in login.headers["set-cookie"].lower()
        home = await c.get("/dashboard/")
        assert home.status_code == 303 and home.headers["location"] == "/dashboard/overview"
        css = await c.get("/dashboard/static/dash.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        page = await c.get("/dashboard/overview")
        assert page.status_code == 303 and page.headers["location"] == "/dashboard/login"


async def test_on_a_port_of_its_own_at_the_root() -> None:
    async with _client(build_dashboard_app(_state(port=9999))) as c:
        login = await c.get("/login")
        assert login.status_code == 200 and 'action="/login"' in login.text
        assert (await c.get("/dashboard")).headers["location"] == "/"
        assert (await c.get("/overview")).headers["location"] == "/login"


async def test_switched_off() -> None:
    async with _client(build_app(_state(enabled=False))) as c:
        assert (await c.get("/dashboard/login")).status_code == 404
