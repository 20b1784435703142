"""Conductor task tests: a whole cloud in one process (memory:// + SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.testing.allinone import AllInOne

IMAGE = {"id": "img-1", "properties": {}}


@pytest.fixture
def ctxt() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1")


async def start_cloud(tmp_path: Path, hosts: int = 2, **overrides: Any) -> AllInOne:
    cloud = await AllInOne.start(
        f"sqlite:///{tmp_path / 'tasks.sqlite'}", hosts=hosts, overrides=overrides
    )
    async with cloud.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "small", "name": "small", "vcpus": 1, "memory_mb": 512, "root_gb": 1}
        )
    return cloud


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[AllInOne]:
    c = await start_cloud(tmp_path)
    yield c
    await c.stop()
