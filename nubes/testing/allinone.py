"""Every service in one process on one bus: API side, conductors with task engines,
a scheduler and fake compute hosts — the functional tests' and bench/boot.py's cloud.

The wiring is the deployed one (each service on its own transport with its
own verified identity, compute hosts without database access through the
conductor); only the process boundary is gone::

    cloud = await AllInOne.start("sqlite:///tmp/x.sqlite", hosts=10)
    servers = await cloud.api.create_servers(ctxt, name="vm", flavor=f, image=img, count=5)
    await cloud.wait_for(lambda rows: all(r["vm_state"] == "active" for r in rows))
    await cloud.stop()
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oslo_config import cfg
from sqlalchemy import func, select

from nubes import config
from nubes.api.servers import ServersAPI
from nubes.compute.virt.driver import ComputeDriver
from nubes.compute.virt.fake import FakeFaults
from nubes.conductor.manager import ConductorManager
from nubes.conductor.rpcapi import ConductorAPI
from nubes.conductor.tasks.engine import TaskEngine
from nubes.db.api import instances as instances_api
from nubes.db.api import tasks
from nubes.db.engine import Database
from nubes.db.models import compute_nodes, conductor_tasks
from nubes.db.object_backend import DBObjectBackend
from nubes.objects import backend
from nubes.rpc.transport import Transport, get_transport
from nubes.scheduler.manager import SchedulerManager
from nubes.service import Service, service_identity, tune_gc
from nubes.testing import schema

#: Options the harness sets unless told otherwise: quick to react, quiet.
DEFAULTS: dict[str, dict[str, Any]] = {
    "scheduler": {"host_state_refresh_interval": 0.2},
    "conductor": {"task_poll_interval": 0.5},
    "compute": {"resource_update_interval": 0.0},
    "notifications": {"driver": "noop"},
    # Tests and benchmarks boot up to thousands of servers in one project;
    # quotas have tests of their own (tests/unit/api/test_quotas.py).
    "quota": {"instances": -1, "cores": -1, "ram": -1},
}


def make_conf(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> cfg.ConfigOpts:
    """A parsed config with DEFAULTS and ``overrides`` (group -> option -> value)."""
    conf = config.new_config()
    conf([])
    for source in (DEFAULTS, overrides or {}):
        for group, values in source.items():
            for name, value in values.items():
                conf.set_override(name, value, group=None if group == "DEFAULT" else group)
    return conf


@dataclass
class AllInOne:
    conf: cfg.ConfigOpts
    db: Database
    bus: str
    api: ServersAPI
    api_transport: Transport
    conductors: list[Service]
    engines: list[TaskEngine]
    scheduler: Service
    scheduler_manager: SchedulerManager
    computes: dict[str, Service] = field(default_factory=dict)
    #: What this cloud's fake drivers get wrong (its own, so no test leaks into another);
    #: starts with ``[fake_driver]``'s delays and failures.
    faults: FakeFaults = field(default_factory=FakeFaults)

    @classmethod
    async def start(
        cls,
        db_url: str,
        *,
        hosts: int = 2,
        host_prefix: str = "fake-",
        conductors: int = 1,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        sync: bool = True,
        ready_timeout: float = 30.0,
    ) -> AllInOne:
        tune_gc()  # as every service process does (nubes.cmd)
        conf = make_conf(overrides)
        bus = f"memory:///aio-{uuid.uuid4().hex[:8]}"
        conf.set_override("transport_url", bus)
        if sync:
            await schema.migrated(db_url)
        db = Database(db_url)
        backend.install(DBObjectBackend(db))
        engines: list[TaskEngine] = []
        conductor_services: list[Service] = []
        for n in range(conductors):
            name = f"ctl-{n}"
            transport = get_transport(bus, identity=service_identity("conductor", name))
            engine = TaskEngine(db, transport, host=name, conf=conf)
            engines.append(engine)
            conductor_services.append(
                Service(
                    "conductor",
                    name,
                    transport,
                    [ConductorManager(db, engine=engine)],
                    report_interval=None,
                    hooks=[engine],
                )
            )
        scheduler_manager = SchedulerManager(db, conf)
        scheduler = Service(
            "scheduler",
            "ctl-0",
            get_transport(bus, identity=service_identity("scheduler", "ctl-0")),
            [scheduler_manager],
            report_interval=None,
        )
        api_transport = get_transport(bus, identity=service_identity("api", "ctl-0"))
        await api_transport.connect()
        api = ServersAPI(db, ConductorAPI(api_transport), conf=conf)
        cloud = cls(
            conf,
            db,
            bus,
            api,
            api_transport,
            conductor_services,
            engines,
            scheduler,
            scheduler_manager,
            faults=FakeFaults.from_options(conf.fake_driver),
        )
        for svc in (*conductor_services, scheduler):
            await svc.start()
        await cloud.add_hosts([f"{host_prefix}{i}" for i in range(hosts)], ready_timeout)
        return cloud

    async def add_hosts(
        self,
        names: list[str],
        ready_timeout: float = 30.0,
        *,
        capacity: Mapping[str, int] | None = None,
        driver_factory: Callable[[str], ComputeDriver] | None = None,
    ) -> None:
        """Start compute hosts and wait until each registered its node.

        They are fake unless ``driver_factory`` makes each one's driver from
        its name (a libvirt driver: real guests). ``capacity`` (``vcpus``,
        ``memory_mb``, ``local_gb``) overrides what ``[fake_driver]`` gives
        fake hosts.
        """
        from nubes.compute.launcher import compute_service
        from nubes.compute.virt.fake import FakeDriver

        opts = self.conf.fake_driver
        sizes = {"vcpus": opts.vcpus, "memory_mb": opts.memory_mb, "local_gb": opts.local_gb}
        sizes.update(capacity or {})
        for name in names:
            transport = get_transport(self.bus, identity=service_identity("compute", name))
            driver = (
                driver_factory(name)
                if driver_factory
                else FakeDriver(name, faults=self.faults, **sizes)
            )
            svc = compute_service(self.conf, name, transport=transport, driver=driver)
            self.computes[name] = svc
            await svc.start()
        deadline = time.monotonic() + ready_timeout
        while True:
            async with self.db.reader() as conn:
                count = (
                    await conn.execute(
                        select(func.count()).where(
                            compute_nodes.c.host.in_(names), compute_nodes.c.deleted == 0
                        )
                    )
                ).scalar_one()
            if count >= len(names):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {count} of {len(names)} fake hosts registered")
            await asyncio.sleep(0.05)
        # Let the scheduler's view see them.
        await asyncio.sleep(self.conf.scheduler.host_state_refresh_interval * 2)

    async def stop_host(self, name: str) -> None:
        svc = self.computes.pop(name)
        await svc.stop()

    async def instances(
        self, uuids: list[str] | None = None, **filters: Any
    ) -> list[dict[str, Any]]:
        if uuids is not None:
            filters["uuid"] = uuids
        async with self.db.reader() as conn:
            return await instances_api.get_all(conn, filters=filters, read_deleted="yes")

    async def wait_for(
        self,
        uuids: list[str],
        done: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 60.0,
        interval: float = 0.05,
    ) -> list[dict[str, Any]]:
        """Poll the instances until ``done`` holds for each; their rows."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.instances(uuids)
            if len(rows) == len(uuids) and all(done(r) for r in rows):
                return rows
            if time.monotonic() > deadline:
                pending = [r for r in rows if not done(r)]
                raise TimeoutError(
                    f"{len(pending)} of {len(uuids)} instances not done: "
                    + ", ".join(
                        f"{r['uuid']} {r['vm_state']}/{r['task_state']}@{r['host']}"
                        for r in pending[:5]
                    )
                )
            await asyncio.sleep(interval)

    async def wait_tasks(self, uuids: list[str], *, timeout: float = 60.0) -> None:
        """Until no task of these instances is pending or running."""
        t = conductor_tasks
        active_statuses = [s.value for s in tasks.ACTIVE_STATUSES]
        deadline = time.monotonic() + timeout
        while True:
            async with self.db.reader() as conn:
                active = 0
                for start in range(0, len(uuids), 500):
                    chunk = uuids[start : start + 500]
                    active += (
                        await conn.execute(
                            select(func.count()).where(
                                t.c.instance_uuid.in_(chunk), t.c.status.in_(active_statuses)
                            )
                        )
                    ).scalar_one()
            if not active:
                return
            if time.monotonic() > deadline:
                async with self.db.reader() as conn:
                    stuck = (
                        (
                            await conn.execute(
                                select(t).where(
                                    t.c.instance_uuid.in_(uuids[:500]),
                                    t.c.status.in_(active_statuses),
                                )
                            )
                        )
                        .mappings()
                        .all()
                    )
                raise TimeoutError(
                    f"{active} tasks of {len(uuids)} instances still active: "
                    + "; ".join(str(dict(r)) for r in stuck[:5])
                )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for svc in list(self.computes.values()):
            await svc.stop()
        self.computes.clear()
        await self.scheduler.stop()
        for svc in self.conductors:
            await svc.stop()
        await self.api_transport.close()
        await self.scheduler_manager.close()
        backend.uninstall()
        await self.db.dispose()
