"""A cloud of real processes whose compute hosts are hosts with real guests.

The controllers (conductor, scheduler, API with the image API) run as
processes of a :class:`~nubes.testing.processes.ProcessCloud` in the root
namespace, on RabbitMQ and PostgreSQL; each compute host is ``nubes
compute`` with the libvirt driver on its own libvirtd, in its own network
namespace (:class:`~nubes.testing.netns.HostNetwork`), reaching the broker
and the image API through forwarders on the gateway, never the database.
The test guest (nubes.testing.guestimage) is registered through the image
API's own logic, and hosts fetch it over HTTP with the conductor's grants::

    real = await RealHostsCloud.start(rabbit_url, postgres_url, tmp_path)
    uuid = await real.create_server("vm")
    row = await real.wait(uuid, lambda r: r["vm_state"] == "active")
    await real.moves(lambda api, ctxt: api.live_migrate_server(ctxt, uuid))
    real.console(uuid)                       # read on the host the guest is on
    await real.stop()                        # everything, even after a failure
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from nubes import config
from nubes.api import images
from nubes.api.allinone import register_guest_images
from nubes.api.moves import MovesAPI
from nubes.api.servers import ServersAPI
from nubes.compute.virt.libvirt.guest import InstanceFiles
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.db.api import flavors
from nubes.db.api import instances as instances_api
from nubes.db.api import migrations as migrations_api
from nubes.db.api import services as services_api
from nubes.db.api import tasks as tasks_api
from nubes.injected_files import InjectedFiles
from nubes.rpc.transport import get_transport
from nubes.testing.infra import free_port
from nubes.testing.moves import check_consistent
from nubes.testing.netns import HostNetwork, NetnsHost
from nubes.testing.processes import Proc, ProcessCloud

#: A flavor tiny enough for TCG guests on a busy 2-core machine.
FLAVOR: dict[str, Any] = {
    "flavorid": "real-tiny", "name": "real-tiny", "vcpus": 1, "memory_mb": 96, "root_gb": 1,
}  # fmt: skip
#: What a resize goes to: more memory and a bigger root disk.
BIGGER: dict[str, Any] = {
    "flavorid": "real-bigger", "name": "real-bigger", "vcpus": 1, "memory_mb": 128, "root_gb": 2,
}  # fmt: skip
#: With an ephemeral disk (GiB) and swap (MiB), and what a resize of it goes to.
EPHEMERAL: dict[str, Any] = {**FLAVOR, "flavorid": "real-eph", "name": "real-eph",
    "ephemeral_gb": 1, "swap": 32}  # fmt: skip
EPHEMERAL_BIGGER: dict[str, Any] = {**BIGGER, "flavorid": "real-eph-bigger",
    "name": "real-eph-bigger", "ephemeral_gb": 2, "swap": 64}  # fmt: skip
#: Real guests are slow to boot and to move under TCG: generous step timeouts.
OPTIONS: dict[str, dict[str, Any]] = {
    # A host loaded by TCG guests (and a busy machine) may miss heartbeats for
    # a while: it is down only when forced (an evacuation's test forces it).
    "DEFAULT": {"service_down_time": 120},
    "conductor": {"compute_step_timeout": 60, "build_deadline": 180},
    "quota": {"instances": -1, "cores": -1, "ram": -1},
}

#: The hosts' network agents' files (world-readable paths for dnsmasq), per namespace.
NETWORK_STATE = Path("/run/nubes-realhosts")

Row = dict[str, Any]
MovesCall = Callable[[MovesAPI, RequestContext], Awaitable[Any]]


def context() -> RequestContext:
    return RequestContext(user_id="real-user", project_id="real-project", roles=["admin", "member"])


class RealHostsCloud:
    """Controllers as processes, ``hosts`` libvirt hosts in namespaces, one guest image."""

    def __init__(self, cloud: ProcessCloud, net: HostNetwork, image_dir: Path) -> None:
        self.cloud = cloud
        self.net = net
        self.image_dir = image_dir
        self.image: Row = {}
        self.computes: dict[str, Proc] = {}
        self.conductor: Proc | None = None
        #: Where the hosts reach the broker (a forwarder on the gateway).
        self.broker: tuple[str, int] | None = None
        #: How each compute host was started (for a restart): options, broker.
        self._compute_args: dict[str, dict[str, Any]] = {}

    @classmethod
    async def start(
        cls,
        rabbit_url: str,
        postgres_url: str,
        workdir: Path,
        *,
        hosts: int = 2,
        libvirt: Mapping[str, Any] | None = None,
        network: Mapping[str, Any] | None = None,
        controller: Mapping[str, Any] | None = None,
    ) -> RealHostsCloud:
        """Everything up: hosts registered, the guest image active. ``libvirt`` adds
        ``[libvirt]`` options of every host (``live_migration_bandwidth``, say),
        ``network`` ``[network]`` ones (``physical_interface_mappings``),
        ``controller`` ``[DEFAULT]`` ones of the controllers
        (``allow_resize_to_same_host``)."""
        defaults = {"image_grant_secret": secrets.token_hex(16), **(controller or {})}
        cloud = ProcessCloud(
            rabbit_url, postgres_url, workdir / "cloud", hosts, OPTIONS,
            controller_options={"DEFAULT": defaults},
        )  # fmt: skip
        net = HostNetwork(workdir / "hosts", hosts)
        real = cls(cloud, net, workdir / "images")
        try:
            await real._start(rabbit_url, dict(libvirt or {}), dict(network or {}))
        except BaseException:
            await real.stop()
            raise
        return real

    async def _start(
        self, rabbit_url: str, libvirt: dict[str, Any], network: dict[str, Any]
    ) -> None:
        cloud, net = self.cloud, self.net
        await asyncio.to_thread(net.create)
        await cloud.setup(conductors=("a",))
        api_port = free_port()
        api = await cloud.start_api(api_port, self.image_dir)
        await cloud.start_scheduler()
        self.conductor = await cloud.start_conductor("a")
        broker_port = int(rabbit_url.rsplit(":", 1)[1].split("/", 1)[0])
        broker = self.broker = await asyncio.to_thread(net.forward, broker_port)
        gateway, port = await asyncio.to_thread(
            net.forward, net.free_port(), ("127.0.0.1", api_port)
        )
        endpoint = f"http://{gateway}:{port}/image"
        for name, host in zip(cloud.host_names, net.hosts, strict=True):
            await asyncio.to_thread(host.start_libvirtd)
            options = host.compute_options(endpoint)
            options["libvirt"].update(
                {"live_migration_inbound_addr": host.address, "soft_reboot_wait": 30, **libvirt}
            )
            # Tenant networks' VXLAN tunnels run between the hosts' addresses.
            # Its DHCP files where dnsmasq, once it dropped root, can read them again.
            options["network"] = {
                "local_ip": host.address,
                "sync_interval": 1.0,
                "state_dir": str(NETWORK_STATE / host.netns),
                **network,
            }
            self._compute_args[name] = {"options": options, "broker": broker, "wrap": host.wrap(())}
            self.computes[name] = await cloud.start_compute(name, **self._compute_args[name])
        await api.wait_log(r"API listening on", 60)
        await self._add_records()
        await cloud.wait_hosts_registered(timeout=120)

    async def _add_records(self) -> None:
        db = self.cloud.db
        assert db is not None
        async with db.writer() as conn:
            for flavor in (FLAVOR, BIGGER, EPHEMERAL, EPHEMERAL_BIGGER):
                await flavors.create(conn, dict(flavor))
        ctxt = context()
        image_id = await register_guest_images(db, self._conf(), ctxt, self.image_dir, 1 << 30)
        self.image = await images.get_active_image(db, ctxt, image_id)

    async def kill_compute(self, name: str) -> None:
        """SIGKILL host ``name``'s agent, as a crash (its guests run on)."""
        await self.computes[name].kill()

    async def start_compute(self, name: str) -> Proc:
        """Host ``name``'s agent again, as it was started."""
        self.computes[name] = await self.cloud.start_compute(name, **self._compute_args[name])
        return self.computes[name]

    async def force_down(self, name: str, down: bool = True) -> None:
        """What ``openstack compute service set --down`` writes for host ``name``."""
        assert self.cloud.db is not None
        async with self.cloud.db.writer() as conn:
            row = await services_api.get_by_host_and_binary(conn, name, "compute")
            await services_api.update(conn, row["id"], {"forced_down": down})

    async def restart_conductor(self) -> None:
        """SIGKILL the conductor, as a crash, and start another one."""
        assert self.conductor is not None
        await self.conductor.kill()
        self.conductor = await self.cloud.start_conductor("a")

    def guests(self) -> dict[str, dict[str, bool]]:
        """Per host, the nubes domains its libvirtd has, and whether each runs."""
        import libvirt

        found: dict[str, dict[str, bool]] = {}
        for name, host in zip(self.cloud.host_names, self.net.hosts, strict=True):
            assert host.libvirtd is not None
            conn = libvirt.open(host.libvirtd.uri)
            try:
                found[name] = {
                    d.UUIDString(): bool(d.isActive())
                    for d in conn.listAllDomains()
                    if d.name().startswith("nubes-")
                }
            finally:
                conn.close()
        return found

    async def check_consistent(self, uuid: str) -> list[str]:
        """The crash suite's check (nubes.testing.moves) of the database, and the
        hypervisors' side: an ACTIVE guest runs on its host and on no other."""
        assert self.cloud.db is not None
        problems = await check_consistent(self.cloud.db, uuid)
        row = await self.row(uuid)
        guests = await asyncio.to_thread(self.guests)
        running = sorted(h for h, g in guests.items() if g.get(uuid))
        if row["vm_state"] == "active" and running != [row["host"]]:
            problems.append(f"{uuid} is active on {row['host']} but runs on {running}")
        return problems

    # -- asking ------------------------------------------------------------------------

    def _conf(self) -> Any:
        conf = config.new_config()
        conf([])
        for section, values in OPTIONS.items():
            for name, value in values.items():
                conf.set_override(name, value, None if section == "DEFAULT" else section)
        return conf

    async def create_server(
        self,
        name: str,
        image: Row | None = None,
        *,
        network_requests: list[Row] | None = None,
        scheduler_hints: Mapping[str, Any] | None = None,
        key_name: str | None = None,
        user_data: str | None = None,
        config_drive: bool = False,
        flavor: str = FLAVOR["flavorid"],
        injected_files: InjectedFiles | None = None,
    ) -> str:
        """A new server of the guest image (or ``image``) and ``flavor`` (an id);
        its uuid (not yet ACTIVE).
        ``network_requests``: its NICs as ``nubes.network.ports.resolve`` makes them;
        ``key_name``, ``user_data`` (base64), ``config_drive`` and personality
        files (``injected_files``) as the API takes them."""
        assert self.cloud.db is not None
        transport = get_transport(self.cloud.url_for(f"api.{self.cloud.api_host}"))
        await transport.connect()
        try:
            api = ServersAPI(self.cloud.db, ConductorAPI(transport), conf=self._conf())
            [made] = await api.create_servers(
                context(),
                name=name,
                flavor=flavor,
                image=image or self.image,
                network_requests=network_requests or (),
                scheduler_hints=scheduler_hints,
                key_name=key_name,
                user_data=user_data,
                config_drive=config_drive,
                injected_files=injected_files,
            )
        finally:
            await transport.close()
        return str(made.uuid)

    async def moves(self, call: MovesCall) -> Any:
        """``call(api, ctxt)`` on a MovesAPI connected as the cloud's API."""
        assert self.cloud.db is not None
        transport = get_transport(self.cloud.url_for(f"api.{self.cloud.api_host}"))
        await transport.connect()
        try:
            return await call(
                MovesAPI(self.cloud.db, ConductorAPI(transport), conf=self._conf()), context()
            )
        finally:
            await transport.close()

    # -- looking -------------------------------------------------------------------------

    async def row(self, uuid: str) -> Row:
        assert self.cloud.db is not None
        async with self.cloud.db.reader() as conn:
            return dict(await instances_api.get_by_uuid(conn, uuid))

    async def migrations(self, uuid: str) -> list[Row]:
        assert self.cloud.db is not None
        async with self.cloud.db.reader() as conn:
            return [dict(m) for m in await migrations_api.list_by_instance(conn, uuid)]

    async def wait(
        self,
        uuid: str,
        predicate: Callable[[Row], bool],
        timeout: float = 120.0,
        poll: float = 0.2,
    ) -> Row:
        """The instance row once ``predicate`` holds and no task of it is active."""
        assert self.cloud.db is not None
        deadline = time.monotonic() + timeout
        while True:
            async with self.cloud.db.reader() as conn:
                row = dict(await instances_api.get_by_uuid(conn, uuid))
                active = await tasks_api.get_active_for_instance(conn, uuid)
            if active is None and predicate(row):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{uuid}: {row['vm_state']}/{row['task_state']} on {row['host']}, task "
                    f"{active and (active['kind'], active['step'])} after {timeout}s\n"
                    + self.cloud.describe()
                )
            await asyncio.sleep(poll)

    def host(self, name: str) -> NetnsHost:
        return self.net.hosts[self.cloud.host_names.index(name)]

    def files(self, host: str, uuid: str) -> InstanceFiles:
        return InstanceFiles.of(self.host(host).workdir / "instances", uuid)

    def console(self, host: str, uuid: str) -> str:
        """The guest's console history as ``host`` keeps it (before it came there, then there)."""
        files = self.files(host, uuid)
        text = ""
        for path in (files.console_before, files.console_log):
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    async def wait_console(
        self, host: str, uuid: str, marker: str, count: int = 1, timeout: float = 90.0
    ) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.console(host, uuid)
            if text.count(marker) >= count:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{marker!r} x{count} not on {host}'s console:\n{text[-600:]}")
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        """Every process by PID, the hosts' namespaces, the broker and database objects."""
        try:
            for proc in self.computes.values():
                await proc.kill()
            namespaces = [host.netns for host in self.net.hosts]
            await asyncio.to_thread(self.net.teardown)
            for netns in namespaces:
                shutil.rmtree(NETWORK_STATE / netns, ignore_errors=True)
        finally:
            await self.cloud.cleanup()
