"""``nubes-manage``: operator tasks (configuration, database, ...)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from oslo_config import cfg

from nubes import config, exception
from nubes.cmd import common
from nubes.cmd.broker import add_broker_commands
from nubes.cmd.status import add_status_command
from nubes.db.manage import add_db_commands

Handler = Callable[[cfg.ConfigOpts, argparse.Namespace], int]


def _config_sample(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    sys.stdout.write(config.sample())
    return 0


def _config_check(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    # load() already read every option; reaching here means they are valid.
    print("configuration is valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nubes-manage", description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", action="append", default=[])
    sub = parser.add_subparsers(dest="category", required=True)
    cfg_p = sub.add_parser("config", help="configuration files")
    cfg_sub = cfg_p.add_subparsers(dest="action", required=True)
    cfg_sub.add_parser("sample", help="print a sample file with every option").set_defaults(
        handler=_config_sample, needs_config=False
    )
    cfg_sub.add_parser("check", help="validate the configuration files").set_defaults(
        handler=_config_check, needs_config=True
    )
    add_db_commands(sub)
    add_broker_commands(sub)
    add_status_command(sub)
    from nubes.api.identity.manage import add_identity_commands

    add_identity_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    conf = config.CONF
    if getattr(args, "needs_config", True):
        try:
            conf = config.load([a for f in args.config_file for a in ("--config-file", f)])
        except exception.ConfigError as exc:
            return common.fail_config(exc)
    return handler(conf, args)


if __name__ == "__main__":
    sys.exit(main())
