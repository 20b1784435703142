"""An all-in-one cloud whose image API is served over a real socket, so its
fake hosts upload snapshots (createImage, createBackup, shelve) to it with
the conductor's grants, as real hosts do."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn

from nubes.api.app import build_app
from nubes.api.server import bind_socket
from nubes.api.state import ApiState
from nubes.testing.allinone import AllInOne


@contextlib.asynccontextmanager
async def cloud_with_image_api(
    tmp_path: Path,
    *,
    hosts: int = 1,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[AllInOne]:
    """All services in one process (memory:// + SQLite under ``tmp_path``),
    the image API on a loopback port its hosts upload to; image data under
    ``tmp_path / "images"``."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    merged: dict[str, dict[str, Any]] = {
        "DEFAULT": {"image_grant_secret": "controllers-only", "state_path": str(tmp_path)},
        "compute": {"image_api_endpoint": f"http://127.0.0.1:{port}/image"},
    }
    for group, values in (overrides or {}).items():
        merged.setdefault(group, {}).update(values)
    cloud = await AllInOne.start(
        f"sqlite:///{tmp_path / 'cloud.sqlite'}", hosts=hosts, overrides=merged
    )
    state = ApiState(conf=cloud.conf, db=cloud.db, transport=cloud.api_transport)
    server = uvicorn.Server(uvicorn.Config(build_app(state), log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield cloud
    finally:
        server.should_exit = True
        await serving
        await cloud.stop()
