"""Load, measurements and the verdict of one fault scenario.

:class:`Load` asks for builds through ``ServersAPI`` as the API process does
(its own broker user, a transport kept open across the fault), timing every
request. :func:`verdict` waits for the builds to settle, checks the cloud is
consistent (tests/integration/crash/checks.py), looks for a guest on two
hosts in the fake hosts' state files, and returns the figures the suite prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from nubes import config, exception
from nubes.api.servers import ServersAPI
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.network import ports as network_ports
from nubes.network.resources import NetworkService
from nubes.rpc.transport import Transport, get_transport
from nubes.testing.processes import Proc, ProcessCloud
from tests.integration.crash import checks


@dataclass
class Load:
    cloud: ProcessCloud
    uuids: list[str] = field(default_factory=list)
    #: Seconds each request took (the longest is the "request hang").
    latencies: list[float] = field(default_factory=list)
    #: Requests refused with a retryable error (HTTP 503 at the API).
    refused: int = 0
    _transport: Transport | None = None
    _api: ServersAPI | None = None
    _networks: NetworkService | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def open(self) -> None:
        cloud = self.cloud
        assert cloud.db is not None
        async with cloud.db.writer() as conn:
            try:
                await flavors.get_by_flavor_id(conn, checks.FLAVOR_ID)
            except exception.NotFound:
                await flavors.create(conn, checks.FLAVOR)
        conf = config.new_config()
        conf([])
        conf.set_override(
            "build_deadline", cloud.option("conductor", "build_deadline"), "conductor"
        )
        for resource in ("instances", "cores", "ram"):
            conf.set_override(resource, -1, "quota")
        self._transport = get_transport(cloud.url_for(f"api.{cloud.api_host}"))
        await self._transport.connect()
        self._api = ServersAPI(cloud.db, ConductorAPI(self._transport), conf=conf)
        self._networks = NetworkService(cloud.db, conf)

    async def create(self, count: int = 1) -> None:
        """One request for ``count`` builds; a retryable refusal is counted, not raised."""
        assert self._api is not None and self._networks is not None
        ctxt = RequestContext(user_id="fault-user", project_id="fault-project", roles=["member"])
        began = time.monotonic()
        try:
            # A port on the project's network each, as the crash suite's
            # builds: its consistency check wants one bound port per ACTIVE.
            nics = await network_ports.resolve(self._networks, ctxt, "auto", None, count)
            made = await self._api.create_servers(
                ctxt,
                name="f",
                flavor=checks.FLAVOR_ID,
                image=checks.IMAGE,
                count=count,
                network_requests=nics,
            )
        except exception.DBConnectionError:
            self.refused += 1
        else:
            self.uuids += [i.uuid for i in made]
        finally:
            self.latencies.append(time.monotonic() - began)

    def trickle(self, requests: int, every: float, count: int = 1) -> None:
        """Start ``requests`` requests in the background, one each ``every`` seconds."""

        async def run() -> None:
            for _ in range(requests):
                await self.create(count)
                await asyncio.sleep(every)

        self._tasks.append(asyncio.get_running_loop().create_task(run()))

    async def drain(self) -> None:
        """Until every background request returned."""
        tasks, self._tasks = self._tasks, []
        await asyncio.gather(*tasks)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            await self._transport.close()


@contextlib.asynccontextmanager
async def loaded(cloud: ProcessCloud) -> AsyncIterator[Load]:
    """A scenario's :class:`Load`, open, and closed (its background requests
    cancelled) however the scenario ends."""
    load = Load(cloud)
    await load.open()
    try:
        yield load
    finally:
        await load.close()


def guests_by_host(cloud: ProcessCloud, *, skip: set[str] | None = None) -> dict[str, set[str]]:
    """Each fake host's guests, from the state files the hosts keep."""
    state = Path(cloud.option("fake_driver", "state_path"))
    found: dict[str, set[str]] = {}
    for host in cloud.host_names:
        if skip and host in skip:
            continue
        try:
            data = json.loads((state / f"{host}.json").read_bytes())
        except FileNotFoundError:
            continue
        found[host] = {row["uuid"] for row in data.get("instances", [])}
    return found


def on_two_hosts(cloud: ProcessCloud, *, dead: set[str] | None = None) -> list[str]:
    """Instances with a guest on more than one live host."""
    seen: dict[str, int] = {}
    for guests in guests_by_host(cloud, skip=dead).values():
        for uuid in guests:
            seen[uuid] = seen.get(uuid, 0) + 1
    return sorted(u for u, n in seen.items() if n > 1)


@dataclass
class Verdict:
    active: int
    error: int
    stuck: int
    on_two_hosts: list[str]
    converged_after: float
    longest_request: float
    refused: int

    def __str__(self) -> str:
        return (
            f"{self.active} ACTIVE, {self.error} ERROR with fault, {self.stuck} stuck; "
            f"converged {self.converged_after:.1f} s after the part came back; "
            f"guests on two hosts: {len(self.on_two_hosts)}; "
            f"longest request {self.longest_request:.2f} s ({self.refused} refused with 503)"
        )


async def _settle(cloud: ProcessCloud, uuids: list[str], timeout: float) -> int:
    """Waits for the builds to settle; how many did not (stuck)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await checks.wait_settled(cloud, uuids, timeout=max(deadline - time.monotonic(), 0))
            return 0
        except exception.DBConnectionError:
            # The test's own pool may hold connections the restart cut.
            await asyncio.sleep(0.5)
        except AssertionError:
            return await checks.unfinished(cloud, uuids) or 1


async def verdict(
    load: Load, back_at: float, *, timeout: float = 60.0, dead: set[str] | None = None
) -> Verdict:
    """Wait for ``load``'s builds, check them, and measure from ``back_at``
    (time.monotonic() when the failed part returned)."""
    cloud = load.cloud
    await load.drain()
    stuck = await _settle(cloud, load.uuids, timeout)
    converged = time.monotonic() - back_at
    if stuck:
        raise AssertionError(f"{stuck} builds stuck:\n{cloud.describe()}")
    outcome = await checks.check_consistent(cloud, load.uuids)
    return Verdict(
        active=outcome.active,
        error=outcome.error,
        stuck=stuck,
        on_two_hosts=on_two_hosts(cloud, dead=dead),
        converged_after=max(converged, 0.0),
        longest_request=max(load.latencies, default=0.0),
        refused=load.refused,
    )


async def start_cloud(cloud: ProcessCloud, conductor: str = "a") -> tuple[Proc, dict[str, Proc]]:
    scheduler = await cloud.start_scheduler()
    ctl = await cloud.start_conductor(conductor)
    await cloud.wait_serving([scheduler, ctl])
    computes = await cloud.start_computes()
    await cloud.wait_serving(list(computes.values()))
    await cloud.wait_hosts_registered()
    return ctl, computes


async def wait_spawning(cloud: ProcessCloud, timeout: float = 30.0) -> None:
    """Until some build is spawning on a host (the fault then hits mid-load)."""
    from sqlalchemy import func, select

    from nubes.db.models import instances

    assert cloud.db is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with cloud.db.reader() as conn:
            n = (
                await conn.execute(select(func.count()).where(instances.c.task_state == "spawning"))
            ).scalar_one()
        if n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"nothing spawning after {timeout} s:\n{cloud.describe()}")


def summary(label: str, result: Verdict, extra: str = "") -> str:
    text = f"{result}{'; ' + extra if extra else ''}"
    print(f"\n{label}: {text}")
    return text
