"""``nubes``: run the services.

``nubes conductor|scheduler|compute --config-file nubes.conf`` runs one
service; ``nubes all-in-one`` runs them all in one process on SQLite and
``memory://``, for a laptop or a test.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from oslo_config import cfg

from nubes import access, config, exception, metrics
from nubes.cmd import common, workers
from nubes.compute.launcher import compute_service, fake_fleet
from nubes.conductor.authz import NodeLimits
from nubes.conductor.manager import ConductorManager
from nubes.context import RequestContext
from nubes.rpc.client import RPCClient
from nubes.rpc.transport import Target, get_transport
from nubes.service import TOPICS, Service, ServiceHook, open_transport, run_until_signalled

#: Fake compute hosts ``all-in-one`` starts unless told otherwise.
DEFAULT_FAKE_HOSTS = 2
DEFAULT_STATE_DIR = "./nubes-state"
#: Seconds all-in-one waits for each of its services to answer a ping. Generous:
#: on a machine loaded by other work (a test run on two workers, say) a host
#: still starting can take several seconds to answer, and giving up kills the
#: whole cloud.
READY_TIMEOUT = 30.0
#: Seconds all-in-one waits for its compute hosts to finish starting.
HOST_START_TIMEOUT = 60.0


async def _open_database(conf: cfg.ConfigOpts, *, sync: bool = False) -> None:
    """Connect this process to the database and let objects use it."""
    from nubes.db import engine, migration
    from nubes.db.object_backend import DBObjectBackend
    from nubes.objects import backend

    if sync:
        await migration.db_sync(conf.database.connection)
    backend.install(DBObjectBackend(engine.configure(conf)))


def _controller(
    conf: cfg.ConfigOpts,
    binary: str,
    host: str,
    step_boundary: Callable[[str], None] | None = None,
) -> Service:
    from nubes.db import engine

    endpoints: list[object] = []
    transport = open_transport(conf, binary, host)
    hooks: list[ServiceHook] = []
    if binary == "conductor":
        from nubes.conductor.tasks.engine import TaskEngine

        # The task engine drives builds, deletes and power actions over the
        # conductor's own bus identity; it starts once the conductor listens.
        task_engine = TaskEngine(
            engine.get_database(), transport, host=host, conf=conf, boundary=step_boundary
        )
        hooks.append(task_engine)
        endpoints.append(
            ConductorManager(
                engine.get_database(),
                conf.conductor.controller_identities,
                engine=task_engine,
                node_limits=NodeLimits.from_conf(conf),
            )
        )
    elif binary == "scheduler":
        from nubes.scheduler.manager import SchedulerManager

        endpoints.append(SchedulerManager(engine.get_database(), conf))
    if metrics.port_for(conf):
        from nubes.rpc.queue_sampler import QueueSampler

        hooks.append(
            QueueSampler(transport, list(TOPICS.values()), conf.metrics.queue_sample_interval)
        )
    return Service(
        binary,
        host,
        transport,
        endpoints,
        report_interval=conf.report_interval,
        hooks=hooks,
        rules=access.for_endpoints(endpoints).with_controllers(
            conf.conductor.controller_identities
        ),
        drain_timeout=conf.conductor.drain_timeout if binary == "conductor" else 0.0,
    )


def _compute(conf: cfg.ConfigOpts, host: str) -> Service:
    return compute_service(conf, host)


async def _run_service(
    binary: str,
    conf: cfg.ConfigOpts,
    fake_hosts: int = 0,
    host_prefix: str = "fake-",
    step_boundary: Callable[[str], None] | None = None,
) -> int:
    if binary == "compute":
        from nubes.db import engine

        # Compute hosts have no database: any use of the DB layer from here
        # on is a bug and must say so, not quietly work.
        engine.disable_db_access("compute")
        if fake_hosts:
            services = fake_fleet(conf, fake_hosts, host_prefix)
        else:
            services = [_compute(conf, conf.host)]
    else:
        await _open_database(conf)
        services = [_controller(conf, binary, conf.host, step_boundary)]
    metrics.serve(conf, binary)
    await run_until_signalled(services)
    return 0


async def _run_console_proxy(conf: cfg.ConfigOpts) -> int:
    """``nubes console-proxy``: the noVNC websocket proxy (no bus; the database
    only to look console tokens up)."""
    from nubes.console.proxy import ConsoleProxyServer
    from nubes.db import engine

    await _open_database(conf)
    server = ConsoleProxyServer(conf, engine.get_database())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0


async def _run_api(conf: cfg.ConfigOpts) -> int:
    from nubes.api.server import api_service

    await _open_database(conf)
    metrics.serve(conf, "api")
    await run_until_signalled([api_service(conf, conf.host)])
    return 0


def _write_config(state_dir: Path) -> Path:
    path = state_dir / "nubes.conf"
    if not path.exists():
        path.write_text(
            "[DEFAULT]\n"
            "transport_url = memory://\n"
            f"state_path = {state_dir}\n"
            "\n[database]\n"
            f"connection = sqlite:///{state_dir / 'nubes.sqlite'}\n"
        )
    return path


async def _all_in_one(args: argparse.Namespace, conf: cfg.ConfigOpts) -> int:
    await _open_database(conf, sync=True)
    host = conf.host
    from nubes.api import allinone as api_aio

    # The API and the first contents of a new cloud (admin, demo, flavors, an image).
    await api_aio.prepare(conf, args.state_dir)
    services = [_controller(conf, "conductor", host), _controller(conf, "scheduler", host)]
    api_svc = api_aio.service(conf, host)
    if conf.vnc.enabled:
        from nubes.console.proxy import ConsoleProxyServer
        from nubes.db import engine

        if args.console_port is not None:
            conf.set_override("novncproxy_port", args.console_port, group="vnc")
        # The console proxy rides on the API service here (one process, one DB).
        api_svc.hooks.append(ConsoleProxyServer(conf, engine.get_database(), follow_port=True))
    services.append(api_svc)
    # The fake hosts keep their guests beside the database, so a restart
    # finds the servers it left running (a config file may say otherwise).
    conf.set_default("state_path", str(args.state_dir / "fake-driver"), group="fake_driver")
    # Every host uploads its snapshots to this API with the conductor's
    # per-image grants; the controllers here share a key made for this run
    # unless one is configured.
    conf.set_default("image_api_endpoint", api_aio.image_endpoint(conf), group="compute")
    if not conf.image_grant_secret:
        conf.set_override("image_grant_secret", secrets.token_urlsafe(32))
    services += fake_fleet(conf, args.fake_hosts, "fake-")
    private: list[Any] = []
    if args.virt == "libvirt":
        private = await _libvirt_hosts(args, conf, host, services)
    port = metrics.serve(conf, "all-in-one")
    if port:
        print(
            f"nubes all-in-one: metrics of every service at "
            f"http://{conf.metrics.bind}:{port}/metrics",
            flush=True,
        )
    try:
        return await _serve(args, conf, services)
    finally:
        for daemon in private:
            await asyncio.to_thread(daemon.cleanup)


#: Loopback addresses the libvirt hosts of one all-in-one migrate between
#: (host i takes .i+1): each host's libvirtd, QEMU and disk server listen on
#: its own, so two hosts on one machine move guests as two machines would.
MIGRATION_NET = "127.0.13."


async def _libvirt_hosts(
    args: argparse.Namespace, conf: cfg.ConfigOpts, host: str, services: list[Service]
) -> list[Any]:
    """Add ``--libvirt-hosts`` compute hosts running real guests through libvirt
    (with ``--private-libvirtd``, each on a libvirtd of its own, started here);
    returns the private daemons."""
    from nubes.api import allinone as api_aio
    from nubes.compute.launcher import libvirt_options
    from nubes.compute.virt import load_driver
    from nubes.compute.virt.libvirt.driver import usable_virt_type
    from nubes.testing import guestimage

    count = args.libvirt_hosts
    conf.set_default("virt_type", usable_virt_type(), group="libvirt")
    # The host fetches images from this API with the conductor's grants; the
    # controllers here share a key made for this run unless one is configured.
    conf.set_default("image_api_endpoint", api_aio.image_endpoint(conf), group="libvirt")
    if not conf.image_grant_secret:
        conf.set_override("image_grant_secret", secrets.token_urlsafe(32))
    image = await api_aio.add_guest_image(conf)
    if args.ssh_guest:
        ssh_image = await api_aio.add_guest_image(conf, ssh=True)
        print(
            f"nubes all-in-one: image {api_aio.SSH_GUEST_IMAGE_NAME} ({ssh_image}) lets "
            f"{guestimage.SSH_USER} in by ssh with the server's key pair",
            flush=True,
        )
    private: list[Any] = []
    for i in range(count):
        name = host if count == 1 else f"{host}-lv{i}"
        options = libvirt_options(conf)
        if count > 1:
            address = f"{MIGRATION_NET}{i + 1}"
            options["instances_path"] = Path(options["instances_path"]) / name
            options["migration_address"] = address
        if args.private_libvirtd:
            from nubes.testing.libvirtd import PrivateLibvirtd

            daemon = PrivateLibvirtd(listen_address=options.get("migration_address"))
            private.append(daemon)
            await asyncio.to_thread(daemon.start)
            options["connection_uri"] = daemon.uri
        driver = load_driver("libvirt", name, **options)
        services.append(compute_service(conf, name, driver=driver))
        print(
            f"nubes all-in-one: real guests on {name} through {options['connection_uri']} "
            f"({conf.libvirt.virt_type}); boot one with image {api_aio.GUEST_IMAGE_NAME} ({image})",
            flush=True,
        )
    return private


async def _serve(args: argparse.Namespace, conf: cfg.ConfigOpts, services: list[Service]) -> int:
    from nubes.api import allinone as api_aio

    ready = asyncio.Event()
    task = asyncio.create_task(run_until_signalled(services, ready))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiting.cancel()
        task.result()
        return 1
    probe = get_transport("memory://", identity="manage.all-in-one")
    await probe.connect()
    print(f"nubes all-in-one: state in {args.state_dir}, bus memory://", flush=True)
    ctxt = RequestContext()
    for svc in services:
        target = Target(svc.topic, server=svc.host)
        client = RPCClient(probe, target, namespace="baseapi", timeout=READY_TIMEOUT)
        who = await client.call(ctxt, "whoami")
        print(f"  {svc.binary:<10} on {svc.host:<12} answers as {who['identity']}", flush=True)
    await probe.close()
    await _hosts_started(conf, services)
    api_aio.print_usage(conf, args.state_dir)
    print("Ready. Stop with Ctrl-C.", flush=True)
    await task
    return 0


async def _hosts_started(conf: cfg.ConfigOpts, services: list[Service]) -> None:
    """Wait until each compute host has started (its node recorded, its guests
    repaired) and the scheduler could see it, so "Ready" means a server can
    be created. A libvirt host's first start probes QEMU for seconds."""
    from nubes.compute.host import ComputeHost

    hosts = [h for svc in services for h in svc.hooks if isinstance(h, ComputeHost)]
    late = [h for h in hosts if not h.manager.runner.ready.is_set()]
    for host in late:
        try:
            await asyncio.wait_for(host.manager.runner.ready.wait(), HOST_START_TIMEOUT)
        except TimeoutError:
            print(f"  compute on {host.host} is still starting", flush=True)
    if late:
        # Hosts started just now: let the scheduler's view take them in.
        await asyncio.sleep(2 * conf.scheduler.host_state_refresh_interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nubes", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config-file",
        action="append",
        default=[],
        help="nova.conf-style INI file; repeat to layer several (later ones win)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="run the API service (identity, compute, image over HTTP)")
    for binary in TOPICS:
        service_parser = sub.add_parser(binary, help=f"run the {binary} service")
        if binary == "compute":
            service_parser.add_argument(
                "--fake-hosts",
                type=int,
                default=0,
                help="run this many fake compute hosts in this process (scale tests)",
            )
            service_parser.add_argument(
                "--host-prefix", default="fake-", help="name prefix of the fake hosts"
            )
    sub.add_parser(
        "console-proxy",
        help="run the console proxy (noVNC websockets to guests' consoles, [vnc] novncproxy_*)",
    )
    aio = sub.add_parser("all-in-one", help="run every service in one process (SQLite, memory://)")
    aio.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="where the cloud's state lives")
    aio.add_argument("--bind", help="address the API listens on (default 127.0.0.1)")
    aio.add_argument("--port", type=int, help="port of the API, all three services (default 8774)")
    aio.add_argument(
        "--console-port",
        type=int,
        help="port of the console proxy (default [vnc] novncproxy_port, 6080; 0: any free)",
    )
    aio.add_argument(
        "--fake-hosts",
        type=int,
        help=f"fake compute hosts to run (default {DEFAULT_FAKE_HOSTS}; 0 with --virt libvirt)",
    )
    aio.add_argument(
        "--virt",
        choices=["fake", "libvirt"],
        default="fake",
        help="libvirt: also run a compute host with real guests through libvirtd "
        "([libvirt] connection_uri) and register the bootable image nubes-guest",
    )
    aio.add_argument(
        "--libvirt-hosts",
        type=int,
        default=1,
        help="with --virt libvirt --private-libvirtd: run this many libvirt hosts, each "
        "on a libvirtd of its own listening on 127.0.13.<n>, so guests can migrate",
    )
    aio.add_argument(
        "--ssh-guest",
        action="store_true",
        help="with --virt libvirt: also register nubes-guest-ssh, the test guest with an "
        "ssh server (Debian's dropbear-bin) that Tempest's guest validation logs into",
    )
    aio.add_argument(
        "--private-libvirtd",
        action="store_true",
        help="with --virt libvirt: start a libvirtd of its own (root; its guests end "
        "with all-in-one) instead of using [libvirt] connection_uri",
    )
    return parser


def main(
    argv: Sequence[str] | None = None, *, step_boundary: Callable[[str], None] | None = None
) -> int:
    """Run what ``argv`` says; ``step_boundary`` goes to a conductor's task engine
    (a test double's hook, see :class:`~nubes.conductor.tasks.engine.TaskEngine`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    config_files = list(args.config_file)
    if args.command == "all-in-one" and args.fake_hosts is None:
        args.fake_hosts = 0 if args.virt == "libvirt" else DEFAULT_FAKE_HOSTS
    if args.command in ("all-in-one", "compute") and args.fake_hosts < 0:
        print("nubes: --fake-hosts must be 0 or more", file=sys.stderr)
        return common.EXIT_CONFIG_ERROR
    if args.command == "all-in-one" and (
        args.libvirt_hosts < 1
        or (args.libvirt_hosts > 1 and not (args.virt == "libvirt" and args.private_libvirtd))
    ):
        print(
            "nubes: --libvirt-hosts must be 1 or more; more than 1 needs --virt libvirt "
            "--private-libvirtd (one libvirtd per host)",
            file=sys.stderr,
        )
        return common.EXIT_CONFIG_ERROR
    if args.command == "all-in-one" and args.ssh_guest and args.virt != "libvirt":
        print("nubes: --ssh-guest needs --virt libvirt (real guests)", file=sys.stderr)
        return common.EXIT_CONFIG_ERROR
    if args.command == "all-in-one":
        state_dir = Path(args.state_dir).resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        args.state_dir = state_dir
        config_files = [str(_write_config(state_dir)), *config_files]
        from nubes.api import allinone as api_aio

        api_aio.write_api_options(state_dir / "nubes.conf", args.bind, args.port)
    oslo_args = [a for f in config_files for a in ("--config-file", f)]
    try:
        conf = config.load(oslo_args)
    except exception.ConfigError as exc:
        return common.fail_config(exc)
    common.setup_logging(conf.debug)
    if args.command == "all-in-one":
        return common.run(_all_in_one(args, conf))
    if args.command == "compute":
        return common.run(_run_service("compute", conf, args.fake_hosts, args.host_prefix))
    if args.command == "api":
        return common.run(_run_api(conf))
    if args.command == "console-proxy":
        return common.run(_run_console_proxy(conf))
    count = conf[args.command].workers
    if count > 1 and not workers.is_worker():
        if conf.transport_url.startswith("memory://"):
            return common.fail_config(
                exception.ConfigError(
                    reason=f"[{args.command}] workers = {count} needs a bus the processes "
                    "share (rabbit://); memory:// lives inside one process"
                )
            )
        drain = conf.conductor.drain_timeout if args.command == "conductor" else 0.0
        return workers.supervise(argv, count, stop_timeout=workers.STOP_TIMEOUT + drain)
    return common.run(_run_service(args.command, conf, step_boundary=step_boundary))


if __name__ == "__main__":
    sys.exit(main())
