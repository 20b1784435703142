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

from nubes import config, exception
from nubes.cmd import common
from nubes.context import RequestContext
from nubes.rpc.client import RPCClient
from nubes.rpc.transport import Target, get_transport
from nubes.service import TOPICS, Service, open_transport, run_until_signalled

#: Fake compute hosts ``all-in-one`` starts unless told otherwise.
DEFAULT_FAKE_HOSTS = 2
DEFAULT_STATE_DIR = "./nubes-state"
#: Seconds all-in-one waits for each of its services to answer a ping.
READY_TIMEOUT = 5.0


def _endpoints(binary: str) -> list[object]:
    """The manager endpoints a service serves beyond the base API (ping, whoami).

    The managers arrive with their issues (conductor: the object proxy,
    scheduler: select_destinations, compute: the host agent).
    """
    return []


async def _run_service(binary: str, conf: config.cfg.ConfigOpts) -> int:
    transport = open_transport(conf, binary, conf.host)
    svc = Service(binary, conf.host, transport, _endpoints(binary))
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


async def _all_in_one(args: argparse.Namespace, conf: config.cfg.ConfigOpts) -> int:
    host = conf.host
    plan = [("conductor", host), ("scheduler", host)]
    plan += [("compute", f"fake-{i}") for i in range(args.fake_hosts)]
    services = [
        Service(binary, name, open_transport(conf, binary, name), _endpoints(binary))
        for binary, name in plan
    ]
    probe = get_transport("memory://", identity="all-in-one")

    async def check_ready() -> None:
        ctxt = RequestContext()
        for svc in services:
            target = Target(svc.topic, server=svc.host)
            client = RPCClient(probe, target, namespace="baseapi", timeout=READY_TIMEOUT)
            who = await client.call(ctxt, "whoami")
            print(f"  {svc.binary:<10} on {svc.host:<12} answers as {who['identity']}", flush=True)

    async def runner() -> None:
        await run_until_signalled(services, ready_message="")

    task = asyncio.create_task(runner())
    await asyncio.sleep(0)
    while not all(s._started for s in services):
        if task.done():
            return task.result() or 1
        await asyncio.sleep(0.01)
    await probe.connect()
    print(f"nubes all-in-one: state in {args.state_dir}, bus memory://", flush=True)
    await check_ready()
    print("Ready. Stop with Ctrl-C.", flush=True)
    await probe.close()
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
