"""``nubes``: run the services.

``nubes conductor|scheduler|compute --config-file nubes.conf`` runs one
service; ``nubes all-in-one`` runs them all in one process on SQLite and
``memory://``, for a laptop or a test.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from oslo_config import cfg

from nubes import config, exception
from nubes.cmd import common
from nubes.conductor.manager import ConductorManager
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.rpc.client import RPCClient
from nubes.rpc.transport import Target, get_transport
from nubes.service import TOPICS, Service, open_transport, run_until_signalled

#: Fake compute hosts ``all-in-one`` starts unless told otherwise.
DEFAULT_FAKE_HOSTS = 2
DEFAULT_STATE_DIR = "./nubes-state"
#: Seconds all-in-one waits for each of its services to answer a ping.
READY_TIMEOUT = 5.0


async def _open_database(conf: cfg.ConfigOpts, *, sync: bool = False) -> None:
    """Connect this process to the database and let objects use it."""
    from nubes.db import engine, migration
    from nubes.db.object_backend import DBObjectBackend
    from nubes.objects import backend

    if sync:
        await migration.db_sync(conf.database.connection)
    backend.install(DBObjectBackend(engine.configure(conf)))


def _controller(conf: cfg.ConfigOpts, binary: str, host: str) -> Service:
    from nubes.db import engine

    endpoints: list[object] = []
    if binary == "conductor":
        endpoints.append(
            ConductorManager(engine.get_database(), conf.conductor.controller_identities)
        )
    elif binary == "scheduler":
        from nubes.scheduler.manager import SchedulerManager

        endpoints.append(SchedulerManager(engine.get_database(), conf))
    return Service(
        binary,
        host,
        open_transport(conf, binary, host),
        endpoints,
        report_interval=conf.report_interval,
    )


def _compute(conf: cfg.ConfigOpts, host: str) -> Service:
    transport = open_transport(conf, "compute", host)
    conductor = ConductorAPI(transport, timeout=conf.rpc_response_timeout)
    return Service(
        "compute",
        host,
        transport,
        indirection_api=conductor,
        report_interval=conf.report_interval,
    )


async def _run_service(binary: str, conf: cfg.ConfigOpts) -> int:
    if binary == "compute":
        from nubes.db import engine

        # Compute hosts have no database: any use of the DB layer from here
        # on is a bug and must say so, not quietly work.
        engine.disable_db_access("compute")
        svc = _compute(conf, conf.host)
    else:
        await _open_database(conf)
        svc = _controller(conf, binary, conf.host)
    await run_until_signalled([svc])
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
    services = [_controller(conf, "conductor", host), _controller(conf, "scheduler", host)]
    services += [_compute(conf, f"fake-{i}") for i in range(args.fake_hosts)]
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
    print("Ready. Stop with Ctrl-C.", flush=True)
    await task
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nubes", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config-file",
        action="append",
        default=[],
        help="nova.conf-style INI file; repeat to layer several (later ones win)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for binary in TOPICS:
        sub.add_parser(binary, help=f"run the {binary} service")
    aio = sub.add_parser("all-in-one", help="run every service in one process (SQLite, memory://)")
    aio.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="where the cloud's state lives")
    aio.add_argument(
        "--fake-hosts", type=int, default=DEFAULT_FAKE_HOSTS, help="fake compute hosts to run"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_files = list(args.config_file)
    if args.command == "all-in-one":
        if args.fake_hosts < 0:
            print("nubes: --fake-hosts must be 0 or more", file=sys.stderr)
            return common.EXIT_CONFIG_ERROR
        state_dir = Path(args.state_dir).resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        args.state_dir = state_dir
        config_files = [str(_write_config(state_dir)), *config_files]
    oslo_args = [a for f in config_files for a in ("--config-file", f)]
    try:
        conf = config.load(oslo_args)
    except exception.ConfigError as exc:
        return common.fail_config(exc)
    common.setup_logging(conf.debug)
    if args.command == "all-in-one":
        return common.run(_all_in_one(args, conf))
    return common.run(_run_service(args.command, conf))


if __name__ == "__main__":
    sys.exit(main())
