"""The API's part of ``nubes all-in-one``: options, first contents, clouds.yaml, usage."""

from __future__ import annotations

import asyncio
import configparser
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from oslo_config import cfg

from nubes.api import bootstrap, images
from nubes.api.server import api_service
from nubes.api.state import ApiState
from nubes.context import RequestContext
from nubes.db import engine
from nubes.db.api import identity
from nubes.db.engine import Database


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


def image_endpoint(conf: cfg.ConfigOpts) -> str:
    """The image API's URL (what the catalog lists for ``image``)."""
    state = ApiState(conf=conf, db=None)  # type: ignore[arg-type]
    return state.public_endpoint + "/image"


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
    if conf.dashboard.enabled:
        base = auth_url(conf).rsplit("/identity", 1)[0]
        print(
            f"  Dashboard at {base}/dashboard/ : log in as user demo (project demo) or admin "
            f"(project admin) with the password under auth: in {clouds}",
            flush=True,
        )


#: The image ``all-in-one --virt libvirt`` registers: a real guest that boots.
GUEST_IMAGE_NAME = "nubes-guest"
#: Its variant with an ssh server (``--ssh-guest``), which Tempest's validation logs into.
SSH_GUEST_IMAGE_NAME = "nubes-guest-ssh"


async def _upload_file(path: Path) -> AsyncIterator[bytes]:
    yield await asyncio.to_thread(path.read_bytes)


async def add_guest_image(conf: cfg.ConfigOpts, *, ssh: bool = False) -> str:
    """Register the test guest (busybox on the machine's cloud kernel, see
    :mod:`nubes.testing.guestimage`) as public images, once: its kernel, its
    initramfs, and ``nubes-guest`` booting them. Returns ``nubes-guest``'s id.
    ``ssh``: its ssh variant instead, ``nubes-guest-ssh``."""
    db = engine.get_database()
    async with db.reader() as conn:
        admin = await identity.project_get(conn, "admin")
    ctxt = RequestContext(project_id=admin["id"], roles=["admin"])
    name = SSH_GUEST_IMAGE_NAME if ssh else GUEST_IMAGE_NAME
    found = await images.list_images(db, ctxt, filters={"name": name})
    if found:
        return str(found[0]["id"])
    image_dir = Path(conf.api.image_dir or Path(conf.state_path) / "images")
    return await register_guest_images(db, conf, ctxt, image_dir, conf.api.image_size_cap, ssh=ssh)


async def register_guest_images(
    db: Database,
    conf: cfg.ConfigOpts,
    ctxt: RequestContext,
    image_dir: Path,
    size_cap: int,
    *,
    ssh: bool = False,
) -> str:
    """Build (or take from the cache) the test guest and upload it as public
    images through the image API's logic: kernel, initramfs, and
    ``nubes-guest`` booting them by ``kernel_id``/``ramdisk_id``; its id.
    ``ssh``: the ssh variant, ``nubes-guest-ssh``, booting with
    ``nubes.ssh=1`` on its kernel command line (``os_command_line``)."""
    from nubes.testing import guestimage

    guest = await asyncio.to_thread(guestimage.build, ssh=ssh)

    async def add(name: str, disk_format: str, path: Path, **properties: str) -> str:
        image = await images.create_image(
            db,
            conf,
            ctxt,
            {
                "name": name,
                "disk_format": disk_format,
                "container_format": disk_format if disk_format in ("aki", "ari") else "bare",
                "visibility": "public",
                **properties,
            },
        )
        await images.upload(
            db,
            ctxt,
            image["id"],
            _upload_file(path),
            conf=conf,
            image_dir=image_dir,
            size_cap=size_cap,
        )
        return str(image["id"])

    name = SSH_GUEST_IMAGE_NAME if ssh else GUEST_IMAGE_NAME
    boot = {"os_command_line": guestimage.SSH_CMDLINE} if ssh else {}
    kernel = await add(f"{name}-kernel", "aki", guest.kernel)
    ramdisk = await add(f"{name}-initramfs", "ari", guest.initramfs)
    return await add(name, "raw", guest.disk, kernel_id=kernel, ramdisk_id=ramdisk, **boot)
