"""Compute hosts against a real conductor (SQLite + memory://), with a fake driver."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nubes import access
from nubes.compute.host import ComputeHost
from nubes.compute.virt.fake import FakeDriver, FakeFaults
from nubes.context import RequestContext
from nubes.injected_files import InjectedFiles
from nubes.notifications.notifier import Notifier
from nubes.notifications.relay import NotificationBatch
from nubes.objects.instance import Instance
from nubes.objects.serializer import ObjectSerializer
from nubes.rpc.server import RPCServer
from nubes.rpc.transport import IncomingMessage, Transport, get_transport
from nubes.step_end import EventEnd
from nubes.testing.cloud import Cloud, Host
from tests.unit.db import factories


class StepRecorder:
    """Stands in for ConductorAPI.step_finished and remembers every report.

    ``events``: it takes a step's action event with the report, as a
    conductor of RPC 1.5 does (False: as an older one, the host finishes it).
    ``notifications``: it takes the host's queued notifications with the
    report, as a conductor of RPC 1.7 does (kept in the report, not
    published); False, the default: the host flushes them to its relay first.
    ``injected_files``: it takes a guest's personality files with a report,
    as a conductor of RPC 1.8 does.
    """

    def __init__(
        self, *, events: bool = True, notifications: bool = False, injected_files: bool = True
    ) -> None:
        self.reports: list[dict[str, Any]] = []
        self.events = events
        self.notifications = notifications
        self.injected_files = injected_files
        self._changed = asyncio.Condition()

    def reports_injected_files(self) -> bool:
        return self.injected_files

    def reports_events(self) -> bool:
        return self.events

    def reports_notifications(self) -> bool:
        return self.notifications

    async def step_finished(
        self,
        context: RequestContext,
        task_id: int,
        step: str,
        attempt: int,
        ok: bool,
        error: str | None = None,
        details: dict[str, Any] | None = None,
        event: EventEnd | None = None,
        notifications: NotificationBatch | None = None,
        injected_files: InjectedFiles | None = None,
    ) -> None:
        async with self._changed:
            self.reports.append(
                {
                    "task_id": task_id,
                    "step": step,
                    "attempt": attempt,
                    "ok": ok,
                    "error": error,
                    "details": details,
                    "event": event,
                    "notifications": notifications,
                    "injected_files": injected_files,
                }
            )
            self._changed.notify_all()

    async def wait(
        self, task_id: int, count: int = 1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]]:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: len([r for r in self.reports if r["task_id"] == task_id]) >= count
                )
            return [r for r in self.reports if r["task_id"] == task_id]

        return await asyncio.wait_for(enough(), timeout)


class NotificationSink:
    """Reads the notifications topic of a memory:// bus."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.transport: Transport | None = None

    async def start(self, url: str) -> None:
        self.transport = get_transport(url, identity="conductor.sink")
        await self.transport.connect()
        await self.transport.listen("notifications", "sink", self._on)

    async def _on(self, msg: IncomingMessage) -> None:
        self.messages.append(msgspec.json.decode(msg.body))

    def event_types(self, uuid: str | None = None) -> list[str]:
        return [
            m["event_type"]
            for m in self.messages
            if uuid is None or m["payload"]["nubes_object.data"].get("uuid") == uuid
        ]


@dataclasses.dataclass
class ComputeHarness:
    cloud: Cloud
    name: str
    host: Host
    driver: FakeDriver
    faults: FakeFaults
    steps: StepRecorder
    node: ComputeHost
    server: RPCServer

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await self.host.run(fn, *args, **kwargs)

    async def instance(self, **values: Any) -> Instance:
        values.setdefault("host", self.name)
        values.setdefault("node", self.name)
        async with self.cloud.db.writer() as conn:
            row = await factories.make_instance(conn, **values)
        return await Instance.get_by_uuid(RequestContext(), row["uuid"])

    async def reload(self, uuid: str) -> Instance:
        return await Instance.get_by_uuid(RequestContext(), uuid, expected_attrs=["fault"])

    async def restart(self) -> ComputeHarness:
        """The same host (and hypervisor) after its compute service restarted."""
        await self.node.stop()
        await self.server.stop()
        return await start_host(self.cloud, self.name, driver=self.driver, steps=self.steps)


async def start_host(
    cloud: Cloud,
    name: str,
    *,
    driver: FakeDriver | None = None,
    steps: StepRecorder | None = None,
    init: bool = True,
) -> ComputeHarness:
    host = cloud.hosts.get(name) or await cloud.host(name)
    faults = driver.faults if driver is not None else FakeFaults()
    driver = driver or FakeDriver(name, faults=faults)
    steps = steps or StepRecorder()
    notifier = Notifier(host.transport, f"compute:{name}")
    node = ComputeHost(
        name,
        driver,
        steps,
        notifier,
        resource_update_interval=0,
        notify_on_state_change="vm_state",
    )
    server = RPCServer(
        host.transport,
        "compute",
        name,
        node.manager.endpoints(),
        serializer=ObjectSerializer(),
        rules=access.for_endpoints(node.manager.endpoints()),
    )
    await host.run(server.start)
    if init:
        await host.run(node.init_host)
    return ComputeHarness(cloud, name, host, driver, faults, steps, node, server)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    c = await Cloud.start(f"sqlite:///{tmp_path / 'compute.sqlite'}")
    yield c
    await c.stop()


@pytest.fixture
async def sink(cloud: Cloud) -> AsyncIterator[NotificationSink]:
    s = NotificationSink()
    await s.start(cloud.url_for("conductor.sink"))
    yield s
    assert s.transport is not None
    await s.transport.close()


@pytest.fixture
async def compute(cloud: Cloud, sink: NotificationSink) -> ComputeHarness:
    return await start_host(cloud, "cmp1")
