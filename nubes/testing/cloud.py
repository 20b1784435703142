"""A conductor and compute-host identities in one process, on a real DB and bus.

Each host gets its own transport (so its own verified identity) and a
context in which its objects' remotable calls go to the conductor, exactly
as in a separate ``nubes compute`` process::

    cloud = await Cloud.start("sqlite:///tmp/x.sqlite")
    host_a = await cloud.host("host-a")
    inst = await host_a.run(Instance.get_by_uuid, ctxt, uuid)
    await cloud.stop()
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from nubes.conductor.authz import NodeLimits
from nubes.conductor.manager import ConductorManager
from nubes.conductor.rpcapi import ConductorAPI
from nubes.db.engine import Database
from nubes.db.object_backend import DBObjectBackend
from nubes.notifications.notifier import Notifier
from nubes.objects import backend
from nubes.objects.base import use_indirection_api
from nubes.rpc.transport import Transport, get_transport
from nubes.service import Service, service_identity
from nubes.testing import schema

P = ParamSpec("P")
T = TypeVar("T")

#: Gives the transport URL a service identity connects with (rabbit:// needs
#: a broker user per identity); the default is one memory:// bus.
UrlFor = Callable[[str], str]


@dataclass
class Host:
    """A compute host's identity on the bus, without its manager."""

    name: str
    transport: Transport
    conductor: ConductorAPI
    context: contextvars.Context

    async def run(
        self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn`` as this host: its remotable calls go to the conductor."""
        return await asyncio.create_task(fn(*args, **kwargs), context=self.context.copy())


async def connect_host(
    name: str, url: str, identity: str | None = None, timeout: float = 30.0
) -> Host:
    """A compute host's identity on the bus at ``url``, talking to the conductor."""
    transport = get_transport(url, identity=identity)
    await transport.connect()
    api = ConductorAPI(transport, timeout=timeout)
    ctx = contextvars.copy_context()
    ctx.run(use_indirection_api, api)
    return Host(name, transport, api, ctx)


@dataclass
class Cloud:
    db: Database
    conductor: Service
    url_for: UrlFor
    hosts: dict[str, Host] = field(default_factory=dict)

    @classmethod
    async def start(
        cls,
        db_url: str,
        *,
        url_for: UrlFor | None = None,
        conductor_host: str = "ctl",
        sync: bool = True,
        node_limits: NodeLimits | None = None,
    ) -> Cloud:
        if url_for is None:
            bus = f"memory:///cloud-{uuid.uuid4().hex[:8]}"

            def url_for(identity: str) -> str:
                return bus

        if sync:
            await schema.migrated(db_url)
        db = Database(db_url)
        backend.install(DBObjectBackend(db))
        identity = service_identity("conductor", conductor_host)
        transport = get_transport(url_for(identity), identity=_memory_identity(url_for, identity))
        conductor = Service(
            "conductor",
            conductor_host,
            transport,
            [
                ConductorManager(
                    db,
                    node_limits=node_limits,
                    notifier=Notifier(transport, f"conductor:{conductor_host}"),
                )
            ],
            report_interval=None,
        )
        await conductor.start()
        return cls(db, conductor, url_for)

    async def host(self, name: str, *, timeout: float = 30.0) -> Host:
        identity = service_identity("compute", name)
        url = self.url_for(identity)
        host = await connect_host(name, url, _memory_identity(self.url_for, identity), timeout)
        self.hosts[name] = host
        return host

    async def stop(self) -> None:
        for host in self.hosts.values():
            await host.transport.close()
        await self.conductor.stop()
        backend.uninstall()
        await self.db.dispose()


def _memory_identity(url_for: UrlFor, identity: str) -> str | None:
    # rabbit:// takes its identity from the broker user in the URL.
    return identity if url_for(identity).startswith("memory:") else None
