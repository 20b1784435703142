"""An API app on a migrated SQLite database, driven in-process through httpx.

``api`` gives a :class:`ApiHarness`: ``await api.login("admin")`` returns a
client bound to a project-scoped token of that user; users ``admin`` (admin
on project admin), ``demo`` (member of demo), ``viewer`` (reader on demo) and
``other`` (member of project other) exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import pytest

from nubes import config
from nubes.api import bootstrap
from nubes.api.app import build_app
from nubes.api.state import ApiState
from nubes.db import migration
from nubes.db.engine import Database

PASSWORD = "secret-pw"
USERS = {
    "admin": ("admin", ["admin"]),
    "demo": ("demo", ["member"]),
    "viewer": ("demo", ["reader"]),
    "other": ("other", ["member"]),
}


@dataclasses.dataclass
class ApiHarness:
    state: ApiState
    app: Any
    projects: dict[str, str]

    def client(self, token: str | None = None, version: str | None = None) -> httpx.AsyncClient:
        headers = {}
        if token:
            headers["X-Auth-Token"] = token
        if version:
            headers["OpenStack-API-Version"] = f"compute {version}"
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://nubes.test",
            headers=headers,
        )

    async def token(self, user: str) -> str:
        project = USERS[user][0]
        async with self.client() as c:
            r = await c.post("/identity/v3/auth/tokens", json=auth_body(user, PASSWORD, project))
        assert r.status_code == 201, r.text
        return r.headers["X-Subject-Token"]

    async def login(self, user: str, version: str | None = None) -> httpx.AsyncClient:
        return self.client(await self.token(user), version)


def auth_body(user: str, password: str, project: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": "Default"}, "password": password}
                },
            }
        }
    }
    if project is not None:
        body["auth"]["scope"] = {"project": {"name": project, "domain": {"name": "Default"}}}
    return body


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio
    import concurrent.futures

    path = tmp_path_factory.mktemp("api-template") / "api.sqlite"

    async def build() -> None:
        await migration.db_sync(f"sqlite:///{path}")
        db = Database(f"sqlite:///{path}")
        try:
            for name, (project, roles) in USERS.items():
                await bootstrap.ensure_user(db, name, PASSWORD, project, roles)
        finally:
            await db.dispose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, build()).result()
    return path


@pytest.fixture
async def api(tmp_path: Path, _template: Path) -> AsyncIterator[ApiHarness]:
    import shutil

    path = tmp_path / "api.sqlite"
    shutil.copy(_template, path)
    conf = config.new_config()
    conf([])
    conf.set_override("state_path", str(tmp_path))
    conf.set_override("public_endpoint", "http://nubes.test", group="api")
    db = Database(f"sqlite:///{path}")
    state = ApiState(conf=conf, db=db)
    from nubes.db.api import identity

    async with db.reader() as conn:
        projects = {p["name"]: p["id"] for p in await identity.project_get_all(conn)}
    try:
        yield ApiHarness(state, build_app(state), projects)
    finally:
        await db.dispose()


#: What the web server of :func:`web_server` serves at ``/image.raw``.
WEB_PAYLOAD = b"web-bytes" * 50


class _Bytes(BaseHTTPRequestHandler):
    """Serves WEB_PAYLOAD at /image.raw (a web-download source), 404 elsewhere."""

    payload = WEB_PAYLOAD

    def do_GET(self) -> None:
        if self.path != "/image.raw":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[str]:
    """The base URL of a local HTTP server of image bytes."""
    server = HTTPServer(("127.0.0.1", 0), _Bytes)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
