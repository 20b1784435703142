"""Personality files (compute API ≤ 2.56) reach the guest's config drive: over
HTTP, every service in one process (memory://, SQLite, the conductor's task
engine, one fake host, which keeps the drive it would attach).

A create with ``personality`` gives the guest a drive with the files (Nova's
``openstack/content/NNNN`` and ``meta_data.json`` ``files``), even without
``config_drive``: the drive is the only way they reach it. A rebuild with
``personality`` writes its own files, and one without writes none. The build
task forgets them when it ends. A host too old to take them (compute RPC
below 1.10) is never sent a build that would drop them: the build fails with
a fault that says why, and a build without files still goes to it.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from nubes.api import bootstrap
from nubes.api.app import build_app
from nubes.api.moves import MovesAPI
from nubes.api.state import ApiState
from nubes.compute.host import ComputeHost
from nubes.compute.virt.fake import FakeDriver
from nubes.conductor.rpcapi import ConductorAPI
from nubes.conductor.tasks import caps
from nubes.context import RequestContext
from nubes.db.api import flavors, images
from nubes.db.models import conductor_tasks, instance_faults, services
from nubes.metadata.configdrive import ConfigDrive
from nubes.testing.allinone import AllInOne

pytestmark = pytest.mark.timeout(120)

PASSWORD = "secret-pw"
IMAGE_ID = "6a0f1f52-9e33-4b4e-8d8e-3d8a3f8b2c10"
SERVERS = "/compute/v2.1/servers"
#: The service version whose compute RPC API (1.9) takes no personality files.
BEFORE_FILES = 10
#: The service version whose compute RPC API (1.11) takes no live migration's files.
BEFORE_LIVE_FILES = 13
#: The service version whose compute RPC API (1.12) takes no cold move's files.
BEFORE_COLD_FILES = 14
ADMIN = RequestContext(user_id="admin", project_id="p1", roles=["admin", "member"])


def _personality(*files: tuple[str, bytes]) -> list[dict[str, str]]:
    return [{"path": p, "contents": base64.b64encode(c).decode()} for p, c in files]


class Cloud:
    def __init__(self, cloud: AllInOne, client: httpx.AsyncClient) -> None:
        self.cloud, self.c = cloud, client

    async def create(self, **server: Any) -> str:
        body = {"server": {"name": "p", "imageRef": IMAGE_ID, "flavorRef": "one", **server}}
        body["server"].setdefault("networks", "none")
        r = await self.c.post(SERVERS, json=body)
        assert r.status_code == 202, r.text
        return str(r.json()["server"]["id"])

    async def rebuild(self, uuid: str, **rebuild: Any) -> None:
        body = {"rebuild": {"imageRef": IMAGE_ID, **rebuild}}
        r = await self.c.post(f"{SERVERS}/{uuid}/action", json=body)
        assert r.status_code == 202, r.text

    async def settled(self, uuid: str) -> dict[str, Any]:
        """The server once its task is over (ACTIVE or ERROR, no task_state)."""
        await self.cloud.wait_tasks([uuid])
        (row,) = await self.cloud.instances([uuid])
        return row

    def _driver(self, host: str | None = None) -> FakeDriver:
        """The fake driver of ``host`` (None: of the cloud's only host)."""
        if host is None:
            (service,) = self.cloud.computes.values()
        else:
            service = self.cloud.computes[host]
        (node,) = [h for h in service.hooks if isinstance(h, ComputeHost)]
        assert isinstance(node.driver, FakeDriver)
        return node.driver

    def guests(self) -> set[str]:
        return set(self._driver().instances)

    def drive(self, uuid: str, host: str | None = None) -> ConfigDrive | None:
        """The config drive the host would attach to the guest (the fake driver keeps it)."""
        return self._driver(host).instances[uuid].config_drive

    async def payloads(self, uuid: str) -> list[dict[str, Any]]:
        t = conductor_tasks
        async with self.cloud.db.reader() as conn:
            rows = await conn.execute(t.select().where(t.c.instance_uuid == uuid))
            return [dict(r.payload or {}) for r in rows]


def _files(drive: ConfigDrive | None) -> dict[str, bytes]:
    """What the guest's init copies: each path of meta_data.json's ``files`` and its contents."""
    assert drive is not None
    meta = json.loads(drive.files["openstack/latest/meta_data.json"])
    return {f["path"]: drive.files[f"openstack{f['content_path']}"] for f in meta.get("files", [])}


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with _cloud(tmp_path, hosts=1) as made:
        yield made


@pytest.fixture
async def two_hosts(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with _cloud(tmp_path, hosts=2) as made:
        yield made


@contextlib.asynccontextmanager
async def _cloud(tmp_path: Path, *, hosts: int) -> AsyncIterator[Cloud]:
    made = await AllInOne.start(
        f"sqlite:///{tmp_path / 'pers.sqlite'}",
        hosts=hosts,
        overrides={"upgrade_levels": {"compute": "auto"}},
    )
    try:
        async with made.db.writer() as conn:
            await flavors.create(
                conn, {"flavorid": "one", "name": "one", "vcpus": 1, "memory_mb": 256}
            )
            await images.create(
                conn,
                {
                    "id": IMAGE_ID,
                    "name": "cirros",
                    "status": "active",
                    "disk_format": "qcow2",
                    "container_format": "bare",
                    "visibility": "public",
                    "size": 1024,
                },
            )
        await bootstrap.ensure_user(made.db, "demo", PASSWORD, "demo", ["member"])
        state = ApiState(conf=made.conf, db=made.db, transport=made.api_transport)
        await state.refresh_caps()
        transport = httpx.ASGITransport(app=build_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://nubes.test") as c:
            r = await c.post("/identity/v3/auth/tokens", json=_auth("demo"))
            assert r.status_code == 201, r.text
            c.headers["X-Auth-Token"] = r.headers["X-Subject-Token"]
            # The last microversion with personality.
            c.headers["OpenStack-API-Version"] = "compute 2.56"
            yield Cloud(made, c)
    finally:
        await made.stop()


def _auth(user: str) -> dict[str, Any]:
    scope = {"project": {"name": user, "domain": {"name": "Default"}}}
    identity = {
        "methods": ["password"],
        "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": PASSWORD}},
    }
    return {"auth": {"identity": identity, "scope": scope}}


async def test_create_and_rebuild_put_their_files_on_the_config_drive(cloud: Cloud) -> None:
    motd = ("/etc/motd", b"Hello, world!\n")
    blob = ("/var/lib/blob.bin", bytes(range(256)) * 4)
    uuid = await cloud.create(personality=_personality(motd, blob))
    row = await cloud.settled(uuid)
    assert row["vm_state"] == "active", row
    # No config_drive asked and none forced: the files alone make the drive.
    assert _files(cloud.drive(uuid)) == dict([motd, blob])
    # Nothing of them kept once the build ended (nor in the instance row).
    (build,) = await cloud.payloads(uuid)
    assert "injected_files" not in build
    assert "Hello" not in json.dumps(row, default=str)

    issue = ("/etc/issue", b"rebuilt")
    await cloud.rebuild(uuid, personality=_personality(issue))
    assert (await cloud.settled(uuid))["vm_state"] == "active"
    # The rebuild's files only (Nova does not keep a create's for later).
    assert _files(cloud.drive(uuid)) == dict([issue])
    assert all("injected_files" not in p for p in await cloud.payloads(uuid))

    # A rebuild without files of a server that never asked for a drive: none.
    await cloud.rebuild(uuid)
    assert (await cloud.settled(uuid))["vm_state"] == "active"
    assert cloud.drive(uuid) is None


async def test_a_drive_asked_for_carries_the_files_and_one_without_files_has_none(
    cloud: Cloud,
) -> None:
    given = ("/root/note", b"with a drive")
    uuid = await cloud.create(config_drive=True, personality=_personality(given))
    assert (await cloud.settled(uuid))["vm_state"] == "active"
    assert _files(cloud.drive(uuid)) == dict([given])
    plain = await cloud.create(config_drive=True)
    assert (await cloud.settled(plain))["vm_state"] == "active"
    assert _files(cloud.drive(plain)) == {}
    # The rebuild of a server created with a drive keeps one, without files.
    await cloud.rebuild(uuid)
    assert (await cloud.settled(uuid))["vm_state"] == "active"
    assert _files(cloud.drive(uuid)) == {}


async def test_a_host_too_old_for_files_is_never_sent_a_build_that_would_drop_them(
    cloud: Cloud,
) -> None:
    async with cloud.cloud.db.writer() as conn:
        stmt = update(services).where(services.c.binary == "compute")
        await conn.execute(stmt.values(version=BEFORE_FILES))
    for engine in cloud.cloud.engines:
        await caps.refresh(engine)
        assert engine.compute.client.version_cap == "1.9"
    uuid = await cloud.create(personality=_personality(("/etc/motd", b"hi")))
    row = await cloud.settled(uuid)
    assert row["vm_state"] == "error", row
    async with cloud.cloud.db.reader() as conn:
        f = instance_faults
        faults = [
            (r.message, r.details)
            for r in await conn.execute(f.select().where(f.c.instance_uuid == uuid))
        ]
    # The try's failure names the host and the version it lacks.
    assert any("1.10" in (details or "") for _, details in faults), faults
    assert uuid not in cloud.guests()  # never sent: no guest, so no drive without its files
    # Without files the same host builds as before (at its own version).
    plain = await cloud.create()
    assert (await cloud.settled(plain))["vm_state"] == "active"


async def test_a_live_migrated_guest_keeps_its_files_on_its_config_drive(
    two_hosts: Cloud,
) -> None:
    # Regression: the destination built the guest's drive from its metadata
    # alone, and a guest created with files but no config_drive got none.
    cloud = two_hosts
    motd = ("/etc/motd", b"Hello, world!\n")
    blob = ("/var/lib/blob.bin", bytes(range(256)) * 40)  # 10 KiB: the default quota's most
    uuid = await cloud.create(personality=_personality(motd, blob))
    source = (await cloud.settled(uuid))["host"]
    before = cloud.drive(uuid, source)
    assert before is not None
    moves = MovesAPI(cloud.cloud.db, ConductorAPI(cloud.cloud.api_transport), conf=cloud.cloud.conf)
    await moves.live_migrate_server(ADMIN, uuid)
    row = await cloud.settled(uuid)
    assert row["vm_state"] == "active" and row["host"] != source, row
    # The destination's drive is the source's: the same files, in the same order.
    after = cloud.drive(uuid, row["host"])
    assert _files(after) == dict([motd, blob])
    assert after is not None and after.files == before.files
    # Neither task keeps them once it ended (nor the migration's outcome).
    assert all("Hello" not in json.dumps(p) for p in await cloud.payloads(uuid))


async def test_a_live_migration_to_a_host_too_old_for_files_rolls_back_with_them(
    two_hosts: Cloud,
) -> None:
    cloud = two_hosts
    uuid = await cloud.create(personality=_personality(("/etc/motd", b"kept")))
    source = (await cloud.settled(uuid))["host"]
    async with cloud.cloud.db.writer() as conn:
        stmt = update(services).where(services.c.binary == "compute")
        await conn.execute(stmt.values(version=BEFORE_LIVE_FILES))
    for engine in cloud.cloud.engines:
        await caps.refresh(engine)
        assert engine.compute.client.version_cap == "1.11"
    moves = MovesAPI(cloud.cloud.db, ConductorAPI(cloud.cloud.api_transport), conf=cloud.cloud.conf)
    await moves.live_migrate_server(ADMIN, uuid)
    row = await cloud.settled(uuid)
    # Not moved to a drive without its files: still on the source, with them.
    assert (row["vm_state"], row["host"]) == ("active", source), row
    assert _files(cloud.drive(uuid, source)) == {"/etc/motd": b"kept"}
    async with cloud.cloud.db.reader() as conn:
        f = instance_faults
        faults = [
            r.details for r in await conn.execute(f.select().where(f.c.instance_uuid == uuid))
        ]
    assert any("1.12" in (details or "") for details in faults), faults


async def _with_flavor_two(cloud: Cloud) -> None:
    async with cloud.cloud.db.writer() as conn:
        await flavors.create(conn, {"flavorid": "two", "name": "two", "vcpus": 1, "memory_mb": 512})


async def _action(cloud: Cloud, uuid: str, body: dict[str, Any]) -> None:
    r = await cloud.c.post(f"{SERVERS}/{uuid}/action", json=body)
    assert r.status_code in (202, 204), r.text  # confirmResize: 204, as Nova


async def _faults(cloud: Cloud, uuid: str) -> list[str]:
    async with cloud.cloud.db.reader() as conn:
        f = instance_faults
        rows = await conn.execute(f.select().where(f.c.instance_uuid == uuid))
        return [str(r.details or "") for r in rows]


async def test_a_resized_guest_keeps_its_files_on_its_config_drive(two_hosts: Cloud) -> None:
    # Regression: the destination's finish_migration built the guest with no
    # drive at all, so the files given at create (and the drive they alone
    # made) were gone after a resize or cold migration; Nova copies disk.config.
    cloud = two_hosts
    await _with_flavor_two(cloud)
    motd = ("/etc/motd", b"Hello, world!\n")
    blob = ("/var/lib/blob.bin", bytes(range(256)) * 40)  # 10 KiB: the default quota's most
    uuid = await cloud.create(personality=_personality(motd, blob))
    source = (await cloud.settled(uuid))["host"]
    before = cloud.drive(uuid, source)
    await _action(cloud, uuid, {"resize": {"flavorRef": "two"}})
    row = await cloud.settled(uuid)
    assert (row["vm_state"], row["task_state"]) == ("resized", None), row
    assert row["host"] != source, row
    after = cloud.drive(uuid, row["host"])
    assert _files(after) == dict([motd, blob])
    assert after is not None and before is not None
    assert after.files["openstack/content/0001"] == before.files["openstack/content/0001"]
    await _action(cloud, uuid, {"confirmResize": None})
    row = await cloud.settled(uuid)
    assert row["vm_state"] == "active", row
    assert _files(cloud.drive(uuid, row["host"])) == dict([motd, blob])
    # No task keeps them once it ended.
    assert all("Hello" not in json.dumps(p) for p in await cloud.payloads(uuid))


async def test_a_reverted_resize_leaves_the_source_drive_as_it_was(two_hosts: Cloud) -> None:
    cloud = two_hosts
    await _with_flavor_two(cloud)
    given = ("/etc/issue", b"kept through a revert")
    uuid = await cloud.create(personality=_personality(given))
    source = (await cloud.settled(uuid))["host"]
    before = cloud.drive(uuid, source)
    await _action(cloud, uuid, {"resize": {"flavorRef": "two"}})
    dest = (await cloud.settled(uuid))["host"]
    assert dest != source
    assert _files(cloud.drive(uuid, dest)) == dict([given])
    await _action(cloud, uuid, {"revertResize": None})
    row = await cloud.settled(uuid)
    assert (row["vm_state"], row["host"]) == ("active", source), row
    # The source's own guest again, its drive untouched; none left on the destination.
    after = cloud.drive(uuid, source)
    assert after is not None and before is not None and after.files == before.files
    assert uuid not in cloud._driver(dest).instances
    assert all("kept through" not in json.dumps(p) for p in await cloud.payloads(uuid))


async def test_a_cold_migration_a_host_cannot_carry_files_for_leaves_the_guest_be(
    two_hosts: Cloud,
) -> None:
    cloud = two_hosts
    uuid = await cloud.create(personality=_personality(("/etc/motd", b"kept")))
    plain = await cloud.create()
    source = (await cloud.settled(uuid))["host"]
    plain_source = (await cloud.settled(plain))["host"]
    async with cloud.cloud.db.writer() as conn:
        stmt = update(services).where(services.c.binary == "compute")
        await conn.execute(stmt.values(version=BEFORE_COLD_FILES))
    for engine in cloud.cloud.engines:
        await caps.refresh(engine)
        assert engine.compute.client.version_cap == "1.12"
    moves = MovesAPI(cloud.cloud.db, ConductorAPI(cloud.cloud.api_transport), conf=cloud.cloud.conf)
    await moves.migrate_server(ADMIN, uuid)
    row = await cloud.settled(uuid)
    # Not moved to a drive without its files: still running on the source, with them.
    assert (row["vm_state"], row["host"]) == ("active", source), row
    assert _files(cloud.drive(uuid, source)) == {"/etc/motd": b"kept"}
    assert any("1.13" in details for details in await _faults(cloud, uuid))
    # A guest without files moves as before.
    await moves.migrate_server(ADMIN, plain)
    row = await cloud.settled(plain)
    assert (row["vm_state"], row["task_state"]) == ("resized", None), row
    assert row["host"] != plain_source


async def test_personality_after_2_56_is_refused_and_nothing_is_built(cloud: Cloud) -> None:
    cloud.c.headers["OpenStack-API-Version"] = "compute 2.57"
    body = {
        "server": {
            "name": "p",
            "imageRef": IMAGE_ID,
            "flavorRef": "one",
            "networks": "none",
            "personality": _personality(("/etc/motd", b"hi")),
        }
    }
    r = await cloud.c.post(SERVERS, json=body)
    assert r.status_code == 400, r.text
    assert "personality" in r.json()["badRequest"]["message"]
    assert await cloud.cloud.instances() == []


async def test_a_rebuild_over_the_personality_quotas_is_403_and_changes_nothing(
    cloud: Cloud,
) -> None:
    uuid = await cloud.create()
    before = await cloud.settled(uuid)
    # The default quota is 5 files ([quota] injected_files).
    six = _personality(*[(f"/f{i}", b"x") for i in range(6)])
    body = {"rebuild": {"imageRef": IMAGE_ID, "name": "renamed", "personality": six}}
    r = await cloud.c.post(f"{SERVERS}/{uuid}/action", json=body)
    assert r.status_code == 403, r.text
    assert r.json()["forbidden"]["message"] == "Personality file limit exceeded"
    after = await cloud.settled(uuid)
    assert (after["display_name"], after["task_state"]) == (before["display_name"], None)
    assert len(await cloud.payloads(uuid)) == 1  # the build's task only


async def test_a_build_deleted_before_it_ends_keeps_no_files_in_its_cancelled_task(
    cloud: Cloud,
) -> None:
    # Regression: the delete cancels the build's task, which ended outside
    # Run.finish and kept the user's files in the database.
    cloud._driver().faults.spawn_delay = 2.0
    uuid = await cloud.create(personality=_personality(("/etc/secret", b"not for the db")))
    # Written with the build's task by the create itself.
    assert any(p.get("injected_files") for p in await cloud.payloads(uuid))
    r = await cloud.c.delete(f"{SERVERS}/{uuid}")
    assert r.status_code == 204, r.text
    await cloud.cloud.wait_tasks([uuid])
    stored = await cloud.payloads(uuid)
    assert stored and all("injected_files" not in p for p in stored), stored
