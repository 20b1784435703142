"""The API's part of ``nubes all-in-one``: options, first contents, clouds.yaml, usage."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

from oslo_config import cfg

from nubes.api import bootstrap
from nubes.api.server import api_service
from nubes.api.state import ApiState
from nubes.db import engine


def write_api_options(path: Path, bind: str | None, port: int | None) -> None:
    """Record ``--bind``/``--port`` in the state dir's config, so it says what runs."""
    if bind is None and port is None:
        return
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    if not parser.has_section("api"):
        parser.add_section("api")
    if bind is not None:
        parser.set("api", "bind_host", bind)
    if port is not None:
        parser.set("api", "bind_port", str(port))
    with open(path, "w") as handle:
        parser.write(handle)


def auth_url(conf: cfg.ConfigOpts) -> str:
    state = ApiState(conf=conf, db=None)  # type: ignore[arg-type]
    return state.public_endpoint + "/identity"


async def prepare(conf: cfg.ConfigOpts, state_dir: Path) -> None:
    await bootstrap.first_run(engine.get_database(), conf, Path(state_dir), auth_url(conf))


def service(conf: cfg.ConfigOpts, host: str) -> Any:
    return api_service(conf, host)


def print_usage(conf: cfg.ConfigOpts, state_dir: Path) -> None:
    clouds = Path(state_dir) / "clouds.yaml"
    print(
        f"  API at {auth_url(conf).rsplit('/identity', 1)[0]} (/identity, /compute/v2.1, /image)",
        flush=True,
    )
    print(f"  export OS_CLIENT_CONFIG_FILE={clouds}", flush=True)
    print(
        "  openstack --os-cloud nubes-admin flavor list     (or --os-cloud nubes-demo)", flush=True
    )
    print(
        f"  nubes-manage --config-file {Path(state_dir) / 'nubes.conf'} user create ...", flush=True
    )
