"""Every nubes option, grouped the way nova.conf groups them.

Options are declared with oslo.config (typed, with defaults and help) and read
from INI files given with ``--config-file`` (repeatable; later files win).
:func:`load` parses the command line and files and then reads every option
once, so a malformed value stops the service at start with a message naming
the option and the file, instead of failing later in the middle of work.

``nubes-manage config sample`` prints a sample file generated from these
definitions (:func:`sample`).

The options themselves are declared by the services that read them:
:mod:`.common` (every service), :mod:`.control` (conductor, scheduler,
quotas), :mod:`.compute` (compute hosts) and :mod:`.api` (the HTTP faces).
"""

from __future__ import annotations

import configparser
import textwrap
from collections.abc import Sequence
from pathlib import Path

from oslo_config import cfg

from nubes import exception
from nubes.config.api import (
    api_opts,
    consoleauth_opts,
    credential_opts,
    dashboard_opts,
    vnc_opts,
)
from nubes.config.common import (
    DEFAULT_DB_CONNECTION,
    DEFAULT_TRANSPORT_URL,
    database_opts,
    default_opts,
    metrics_opts,
    notifications_opts,
    rabbit_opts,
    upgrade_levels_opts,
)
from nubes.config.compute import (
    compute_opts,
    fake_driver_opts,
    libvirt_opts,
    metadata_opts,
    network_opts,
)
from nubes.config.control import (
    conductor_opts,
    filter_scheduler_opts,
    quota_opts,
    scheduler_opts,
)

__all__ = [
    "CONF",
    "DEFAULT_DB_CONNECTION",
    "DEFAULT_TRANSPORT_URL",
    "OPTION_GROUPS",
    "load",
    "new_config",
    "register_opts",
    "sample",
]

#: Group name -> options, in the order the sample file shows them.
OPTION_GROUPS: dict[str, list[cfg.Opt]] = {
    "DEFAULT": default_opts,
    "database": database_opts,
    "oslo_messaging_rabbit": rabbit_opts,
    "conductor": conductor_opts,
    "scheduler": scheduler_opts,
    "filter_scheduler": filter_scheduler_opts,
    "upgrade_levels": upgrade_levels_opts,
    "compute": compute_opts,
    "metadata": metadata_opts,
    "fake_driver": fake_driver_opts,
    "libvirt": libvirt_opts,
    "network": network_opts,
    "notifications": notifications_opts,
    "api": api_opts,
    "credential": credential_opts,
    "quota": quota_opts,
    "dashboard": dashboard_opts,
    "metrics": metrics_opts,
    "vnc": vnc_opts,
    "consoleauth": consoleauth_opts,
}


def image_data_dir(conf: cfg.ConfigOpts) -> Path:
    """Where the image API keeps image data (``[api] image_dir``, else under
    ``state_path``): the controllers that store or delete image data share it."""
    configured = conf.api.image_dir
    return Path(configured) if configured else Path(conf.state_path) / "images"


def register_opts(conf: cfg.ConfigOpts) -> None:
    for group, opts in OPTION_GROUPS.items():
        conf.register_opts(opts, group=None if group == "DEFAULT" else group)


def new_config() -> cfg.ConfigOpts:
    """A fresh ConfigOpts with every nubes option registered (tests make their own)."""
    conf = cfg.ConfigOpts()
    register_opts(conf)
    return conf


CONF = new_config()


def _file_setting(conf: cfg.ConfigOpts, group: str, name: str) -> str:
    """The last config file that sets ``[group] name`` (later files win)."""
    for path in reversed(list(conf.config_file or [])):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read(path)
        except configparser.Error:
            continue
        section = (
            parser.defaults()
            if group == "DEFAULT"
            else (parser[group] if parser.has_section(group) else {})
        )
        if name in section:
            return path
    return "the command line or environment"


def _check_all(conf: cfg.ConfigOpts) -> None:
    """Read every option once so a bad value fails now, naming option and file."""
    for group, opts in OPTION_GROUPS.items():
        node = conf if group == "DEFAULT" else conf[group]
        for opt in opts:
            try:
                node[opt.dest]
            except (cfg.ConfigFileValueError, ValueError) as exc:
                cause = exc.__cause__ or exc.__context__ or exc
                where = _file_setting(conf, group, opt.name)
                raise exception.ConfigError(
                    reason=f"option [{group}] {opt.name} in {where}: {cause}"
                ) from None


def load(
    argv: Sequence[str] | None = None,
    conf: cfg.ConfigOpts | None = None,
    *,
    default_config_files: Sequence[str] | None = None,
) -> cfg.ConfigOpts:
    """Parse ``--config-file`` arguments and validate every option."""
    conf = conf if conf is not None else CONF
    try:
        conf(
            list(argv or []),
            project="nubes",
            default_config_files=list(default_config_files or []),
            validate_default_values=True,
        )
    except (cfg.ConfigFilesNotFoundError, cfg.ConfigFileParseError) as exc:
        raise exception.ConfigError(reason=str(exc)) from exc
    except cfg.Error as exc:
        raise exception.ConfigError(reason=str(exc)) from exc
    _check_all(conf)
    return conf


def _format_default(opt: cfg.Opt) -> str:
    if opt.sample_default is not None:
        return str(opt.sample_default)
    if opt.default is None:
        return "<None>"
    if isinstance(opt.default, bool):
        return "true" if opt.default else "false"
    if isinstance(opt.default, list):
        return ",".join(str(v) for v in opt.default)
    return str(opt.default)


def sample() -> str:
    """The text of a sample configuration file, every option commented out."""
    out: list[str] = []
    for group, opts in OPTION_GROUPS.items():
        out.append(f"[{group}]\n")
        for opt in opts:
            type_name = getattr(opt.type, "type_name", type(opt.type).__name__)
            for line in textwrap.wrap(opt.help or "", 76):
                out.append(f"# {line}")
            bounds = []
            low, high = getattr(opt.type, "min", None), getattr(opt.type, "max", None)
            if low is not None:
                bounds.append(f"minimum {low}")
            if high is not None:
                bounds.append(f"maximum {high}")
            extra = f" ({', '.join(bounds)})" if bounds else ""
            out.append(f"# ({type_name}){extra}")
            out.append(f"#{opt.dest} = {_format_default(opt)}\n")
    return "\n".join(out)
