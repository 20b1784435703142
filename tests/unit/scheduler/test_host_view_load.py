"""The scheduler's host view: its first load is shared by the requests waiting for it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nubes.db.api import host_views
from nubes.db.engine import Database
from nubes.scheduler.host_state import HostStateView
from tests.unit.db.factories import make_node


async def test_requests_before_the_first_load_share_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db.writer() as conn:
        for _ in range(3):
            await make_node(conn)
    reads: list[Any] = []
    changed_since = host_views.nodes_changed_since

    async def counted(conn: Any, since: Any) -> Any:
        reads.append(since)
        return await changed_since(conn, since)

    monkeypatch.setattr(host_views, "nodes_changed_since", counted)
    view = HostStateView(db, refresh_interval=3600.0)
    try:
        await asyncio.gather(*(view.ensure_fresh() for _ in range(10)))
        assert len(reads) == 1
        assert len(view) == 3
        await view.ensure_fresh()
        assert len(reads) == 1
    finally:
        await view.close()


async def test_a_failed_first_load_is_tried_again(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db.writer() as conn:
        await make_node(conn)
    changed_since = host_views.nodes_changed_since
    failures = [RuntimeError("database away")]

    async def flaky(conn: Any, since: Any) -> Any:
        if failures:
            raise failures.pop()
        return await changed_since(conn, since)

    monkeypatch.setattr(host_views, "nodes_changed_since", flaky)
    view = HostStateView(db)
    try:
        with pytest.raises(RuntimeError):
            await view.ensure_fresh()
        await view.ensure_fresh()
        assert len(view) == 1
    finally:
        await view.close()
