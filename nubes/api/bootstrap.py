"""A new cloud's first contents, and the files that tell clients how to reach it.

On a state directory seen for the first time, ``nubes all-in-one`` creates
the four roles, an ``admin`` project and user (random password), a ``demo``
project with a ``demo`` member user, the default flavors and one active
image; it writes ``clouds.yaml`` with clouds ``nubes-admin`` and
``nubes-demo``. A later start finds the users and changes nothing but the
URL in ``clouds.yaml`` (the port may have changed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from oslo_config import cfg

from nubes import exception
from nubes.api import images
from nubes.api.identity import passwords
from nubes.context import RequestContext
from nubes.db.api import flavors, identity
from nubes.db.api import roles as roles_db
from nubes.db.engine import Database

#: (flavorid, name, vcpus, memory_mb, root_gb): devstack's m1 family.
DEFAULT_FLAVORS = (
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
)
DEFAULT_IMAGE_NAME = "cirros-0.6.2-x86_64-disk"
#: The fake image's bytes: a qcow2 magic and padding (fake hosts never read it).
DEFAULT_IMAGE_DATA = b"QFI\xfb" + bytes(1020)


@dataclasses.dataclass
class Credentials:
    admin_password: str
    demo_password: str


async def ensure_user(
    db: Database,
    name: str,
    password: str | None,
    project: str | None = None,
    roles: Sequence[str] = (),
) -> dict[str, Any]:
    """Create ``name`` (or keep it), with ``roles`` on ``project`` (created when missing)."""
    hashed = await passwords.hash_password_async(password) if password is not None else None
    async with db.writer() as conn:
        await roles_db.bootstrap_roles(conn)
        project_row = None
        if project is not None:
            try:
                project_row = await identity.project_get(conn, project)
            except exception.NotFound:
                project_row = await identity.project_create(conn, project)
        user = await identity.user_get_by_name(conn, name)
        if user is None:
            user = await identity.user_create(
                conn, name, hashed, default_project_id=project_row["id"] if project_row else None
            )
        elif hashed is not None:
            await identity.user_update(conn, user["id"], {"password_hash": hashed})
        for role in roles:
            if project_row is None:
                raise exception.Invalid(reason="a role needs a project")
            await roles_db.assignment_add(conn, user["id"], project_row["id"], role)
    return user


async def is_bootstrapped(db: Database) -> bool:
    async with db.reader() as conn:
        return await identity.user_get_by_name(conn, "admin") is not None


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def bootstrap(db: Database, conf: cfg.ConfigOpts) -> Credentials | None:
    """First contents of a new cloud; None when it has them already."""
    if await is_bootstrapped(db):
        return None
    creds = Credentials(secrets.token_urlsafe(12), secrets.token_urlsafe(12))
    await ensure_user(db, "admin", creds.admin_password, "admin", ["admin"])
    await ensure_user(db, "demo", creds.demo_password, "demo", ["member"])
    async with db.writer() as conn:
        existing = {f["name"] for f in await flavors.get_all(conn)}
        for flavorid, name, vcpus, ram, disk in DEFAULT_FLAVORS:
            if name not in existing:
                await flavors.create(
                    conn,
                    {
                        "flavorid": flavorid,
                        "name": name,
                        "vcpus": vcpus,
                        "memory_mb": ram,
                        "root_gb": disk,
                    },
                )
        admin_project = await identity.project_get(conn, "admin")
    ctxt = RequestContext(project_id=admin_project["id"], roles=["admin"])
    image = await images.create_image(
        db,
        conf,
        ctxt,
        {
            "name": DEFAULT_IMAGE_NAME,
            "disk_format": "qcow2",
            "container_format": "bare",
            "visibility": "public",
        },
    )
    image_dir = Path(conf.api.image_dir or Path(conf.state_path) / "images")
    await images.upload(
        db,
        ctxt,
        image["id"],
        _one_chunk(DEFAULT_IMAGE_DATA),
        conf=conf,
        image_dir=image_dir,
        size_cap=conf.api.image_size_cap,
    )
    return creds


def _cloud(auth_url: str, user: str, password: str, project: str, region: str) -> dict[str, Any]:
    return {
        "auth": {
            "auth_url": auth_url,
            "username": user,
            "password": password,
            "project_name": project,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "region_name": region,
        "interface": "public",
        "identity_api_version": 3,
    }


def write_clouds_yaml(
    state_dir: Path, auth_url: str, region: str, creds: Credentials | None
) -> Path:
    """Write (or update the URL in) ``state_dir/clouds.yaml``; mode 0600 (it holds passwords)."""
    path = state_dir / "clouds.yaml"
    if creds is None and path.exists():
        data = yaml.safe_load(path.read_text()) or {}
        for cloud in data.get("clouds", {}).values():
            cloud.setdefault("auth", {})["auth_url"] = auth_url
    else:
        admin = creds.admin_password if creds else ""
        demo = creds.demo_password if creds else ""
        data = {
            "clouds": {
                "nubes-admin": _cloud(auth_url, "admin", admin, "admin", region),
                "nubes-demo": _cloud(auth_url, "demo", demo, "demo", region),
            }
        }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle, default_flow_style=False, sort_keys=False)
    return path


async def first_run(db: Database, conf: cfg.ConfigOpts, state_dir: Path, auth_url: str) -> Path:
    creds = await bootstrap(db, conf)
    return await asyncio.to_thread(
        write_clouds_yaml, state_dir, auth_url, conf.api.region_name, creds
    )
