"""Moves of a real guest between two hosts that are hosts (nubes.testing.realhosts):
controllers as processes on RabbitMQ and PostgreSQL, each compute host in its
own network namespace with its own libvirtd. One guest does every step, so
each test pays for one TCG boot; each ends with a crash (the conductor
killed mid-live-migration, the source's agent killed mid-cold-migration)
and the crash suite's consistency check, with the hypervisors' side read
from the real libvirtd.
"""

from __future__ import annotations

import asyncio
import configparser
import re
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest
from sqlalchemy.engine import make_url

from nubes.db.api import tasks
from nubes.injected_files import InjectedFiles
from nubes.metadata import configdrive
from nubes.objects.states import MigrationStatus
from nubes.testing.guestimage import BOOT_MARKER, TICK_MARKER
from nubes.testing.realhosts import BIGGER, FLAVOR, RealHostsCloud

pytestmark = [pytest.mark.timeout(420), pytest.mark.libvirt]

#: Slow enough (MiB/s) that an abort or a force-complete lands mid-copy.
BANDWIDTH = 8


def _ticks(text: str) -> list[int]:
    return [int(n) for n in re.findall(rf"{TICK_MARKER} (\d+)", text)]


def _settled_on(host: str) -> Any:
    return lambda r: r["host"] == host and r["vm_state"] == "active" and r["task_state"] is None


async def _running_migration(real: RealHostsCloud, uuid: str, timeout: float = 60.0) -> int:
    """The id of the instance's live migration once its memory copy is under way."""
    deadline = time.monotonic() + timeout
    while True:
        for m in await real.migrations(uuid):
            if m["status"] == MigrationStatus.RUNNING and (m["memory_processed"] or 0) > 0:
                return int(m["id"])
        assert time.monotonic() < deadline, await real.migrations(uuid)
        await asyncio.sleep(0.1)


def _host_uuid(uri: str) -> str:
    """The host UUID a libvirtd reports (its capabilities' first <uuid>)."""
    conn = libvirt.open(uri)
    try:
        return str(conn.getCapabilities().split("<uuid>", 1)[1].split("</uuid>", 1)[0])
    finally:
        conn.close()


def _hosts_never_reach_the_database(real: RealHostsCloud, postgres_url: str) -> None:
    """Each agent runs in its host's namespace on its own libvirtd; from there the
    broker and the other hosts' migration ports answer, the database port does
    not (at any address), and the agent's config holds no database option."""
    net = real.net
    for name, host in zip(real.cloud.host_names, net.hosts, strict=True):
        assert real.computes[name].pid in host.pids()
    uris = [h.libvirtd.uri for h in net.hosts if h.libvirtd is not None]
    assert len({_host_uuid(u) for u in uris}) == 2
    a, b = net.hosts
    assert a.can_connect(b.address, 16509) and b.can_connect(a.address, 16509)
    assert real.broker is not None
    assert a.can_connect(*real.broker)  # the check can succeed at all
    db = make_url(postgres_url)
    for address in (net.gateway, "127.0.0.1", db.host or "127.0.0.1"):
        assert not a.can_connect(address, db.port or 5432), f"database reachable at {address}"
    for name in real.cloud.host_names:
        text = (real.cloud.workdir / f"compute-{name}.conf").read_text()
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(text)
        assert not parser.has_section("database")
        assert real.cloud.db_name not in text and "postgresql" not in text
        for section in parser.sections():
            assert "connection" not in parser[section], section


def _settled_anywhere(r: dict[str, Any]) -> bool:
    return r["task_state"] is None and r["vm_state"] in ("active", "resized", "error")


async def _migration_in(
    real: RealHostsCloud, uuid: str, status: MigrationStatus, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while not any(m["status"] == status for m in await real.migrations(uuid)):
        assert time.monotonic() < deadline, await real.migrations(uuid)
        await asyncio.sleep(0.05)


async def _live_migrate(real: RealHostsCloud, uuid: str) -> None:
    await real.moves(lambda api, ctxt: api.live_migrate_server(ctxt, uuid))


async def test_a_real_guest_live_migrates_is_aborted_and_forced_and_ticks_on(
    namespaced_hosts: None, rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    real = await RealHostsCloud.start(
        rabbit_url, postgres_url, tmp_path, libvirt={"live_migration_bandwidth": BANDWIDTH}
    )
    try:
        uuid = await real.create_server("mover")
        _hosts_never_reach_the_database(real, postgres_url)
        row = await real.wait(uuid, lambda r: r["vm_state"] == "active", timeout=180)
        a = row["host"]
        [b] = [h for h in real.cloud.host_names if h != a]
        await real.wait_console(a, uuid, TICK_MARKER, 3)

        # 1. Live migration a -> b: the guest's counter carries on at b, no reboot;
        # progress was recorded; nothing is left on a.
        last = max(_ticks(real.console(a, uuid)))
        await _live_migrate(real, uuid)
        await real.wait(uuid, _settled_on(b), timeout=120)
        [m1] = await real.migrations(uuid)
        assert m1["status"] == MigrationStatus.COMPLETED, m1
        assert m1["memory_total"] and m1["memory_processed"], m1
        await real.wait_console(b, uuid, f"{TICK_MARKER} {last + 3}\n")
        on_b = real.files(b, uuid)
        here = _ticks(on_b.console_log.read_text())
        assert here and min(here) > last - 2, (last, here[:5])
        history = real.console(b, uuid)
        assert history.count(BOOT_MARKER) == 1, history[-400:]
        assert not real.files(a, uuid).directory.exists()

        # 2. Abort mid-copy: the guest stays on b, running; a keeps nothing.
        await _live_migrate(real, uuid)
        mid = await _running_migration(real, uuid)
        await real.moves(lambda api, ctxt: api.abort_live_migration(ctxt, uuid, mid))
        await real.wait(uuid, _settled_on(b), timeout=120)
        [m2] = [m for m in await real.migrations(uuid) if m["id"] == mid]
        assert m2["status"] == MigrationStatus.CANCELLED, m2
        last = max(_ticks(real.console(b, uuid)))
        await real.wait_console(b, uuid, f"{TICK_MARKER} {last + 2}\n")
        assert not real.files(a, uuid).directory.exists()

        # 3. Force-complete mid-copy: the guest ends on a, running (resumed), ticking on.
        await _live_migrate(real, uuid)
        mid = await _running_migration(real, uuid)
        await real.moves(lambda api, ctxt: api.force_complete_live_migration(ctxt, uuid, mid))
        row = await real.wait(uuid, _settled_on(a), timeout=120)
        assert row["power_state"] == 1, row  # RUNNING, not left paused
        [m3] = [m for m in await real.migrations(uuid) if m["id"] == mid]
        assert m3["status"] == MigrationStatus.COMPLETED, m3
        last = max(_ticks(real.console(a, uuid)))
        await real.wait_console(a, uuid, f"{TICK_MARKER} {last + 2}\n")
        assert real.console(a, uuid).count(BOOT_MARKER) == 1
        assert not real.files(b, uuid).directory.exists()

        # 4. The conductor killed mid-copy: another carries the task on, and the
        # instance ends consistent, its guest running where the database says.
        await _live_migrate(real, uuid)
        await _running_migration(real, uuid)
        await real.restart_conductor()
        row = await real.wait(uuid, _settled_anywhere, timeout=180)
        assert await real.check_consistent(uuid) == []
        last = max(_ticks(real.console(row["host"], uuid)))
        await real.wait_console(row["host"], uuid, f"{TICK_MARKER} {last + 2}\n")
    finally:
        await real.stop()


async def test_a_real_guests_personality_files_are_on_its_drive_after_a_live_migration(
    namespaced_hosts: None, rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    # Regression: the destination wrote the guest's config drive from its
    # metadata alone: the files given at create were gone, and a guest given
    # files but no config_drive had no drive there at all.
    real = await RealHostsCloud.start(rabbit_url, postgres_url, tmp_path)
    try:
        given = InjectedFiles.of([("/etc/motd", b"moved along\n"), ("/root/b", bytes(range(64)))])
        uuid = await real.create_server("pers", injected_files=given)
        row = await real.wait(uuid, lambda r: r["vm_state"] == "active", timeout=180)
        a = row["host"]
        [b] = [h for h in real.cloud.host_names if h != a]
        before = configdrive.read_drive(real.files(a, uuid).config_drive)
        assert before.injected_files() == given
        await _live_migrate(real, uuid)
        await real.wait(uuid, _settled_on(b), timeout=120)
        after = configdrive.read_drive(real.files(b, uuid).config_drive)
        assert after.injected_files() == given
        assert after.files == before.files
        # The task keeps none of them once it ended.
        assert real.cloud.db is not None
        async with real.cloud.db.reader() as conn:
            stored = [t["payload"] for t in await tasks.list_for_instance(conn, uuid)]
        assert len(stored) == 2 and all("injected_files" not in str(p) for p in stored)
    finally:
        await real.stop()


async def test_a_real_guests_personality_files_survive_a_resize_revert_and_cold_migration(
    namespaced_hosts: None, rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    # Regression: a cold move's destination defined the guest with no config
    # drive at all (its disk server serves none): the files given at create,
    # and the drive they alone made, were gone. Nova copies disk.config.
    real = await RealHostsCloud.start(rabbit_url, postgres_url, tmp_path)
    try:
        given = InjectedFiles.of([("/etc/motd", b"moved cold\n"), ("/root/b", bytes(range(64)))])
        uuid = await real.create_server("cold", injected_files=given)
        row = await real.wait(uuid, lambda r: r["vm_state"] == "active", timeout=180)
        a = row["host"]
        [b] = [h for h in real.cloud.host_names if h != a]
        before = configdrive.read_drive(real.files(a, uuid).config_drive)
        assert before.injected_files() == given
        # A resize to b has them; its revert leaves a's drive as it was.
        await real.moves(lambda api, ctxt: api.resize_server(ctxt, uuid, BIGGER["flavorid"]))
        await real.wait(uuid, _on(b, "resized"), timeout=180)
        assert configdrive.read_drive(real.files(b, uuid).config_drive).injected_files() == given
        await real.moves(lambda api, ctxt: api.revert_resize(ctxt, uuid))
        await real.wait(uuid, _settled_on(a), timeout=180)
        assert configdrive.read_drive(real.files(a, uuid).config_drive).files == before.files
        # A cold migration and its confirm: b's drive has them, a keeps nothing.
        await real.moves(lambda api, ctxt: api.migrate_server(ctxt, uuid))
        await real.wait(uuid, _on(b, "resized"), timeout=180)
        await real.moves(lambda api, ctxt: api.confirm_resize(ctxt, uuid))
        await real.wait(uuid, _settled_on(b), timeout=120)
        assert configdrive.read_drive(real.files(b, uuid).config_drive).injected_files() == given
        assert not real.files(a, uuid).directory.exists()
        assert real.cloud.db is not None
        async with real.cloud.db.reader() as conn:
            stored = [t["payload"] for t in await tasks.list_for_instance(conn, uuid)]
        assert all("injected_files" not in str(p) for p in stored)
    finally:
        await real.stop()


def _on(host: str, vm_state: str) -> Any:
    return lambda r: r["host"] == host and r["vm_state"] == vm_state and r["task_state"] is None


async def test_a_real_guest_resizes_reverts_migrates_confirms_and_rebuilds(
    namespaced_hosts: None, rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    real = await RealHostsCloud.start(rabbit_url, postgres_url, tmp_path)
    try:
        uuid = await real.create_server("cold")
        row = await real.wait(uuid, lambda r: r["vm_state"] == "active", timeout=180)
        a = row["host"]
        [b] = [h for h in real.cloud.host_names if h != a]
        await real.wait_console(a, uuid, TICK_MARKER, 2)

        # 1. Resize: the disk moves to b over the data plane, the guest boots there
        # with the new flavor; its console history came along.
        await real.moves(lambda api, ctxt: api.resize_server(ctxt, uuid, BIGGER["flavorid"]))
        row = await real.wait(uuid, _on(b, "resized"), timeout=180)
        assert row["memory_mb"] == BIGGER["memory_mb"] and row["root_gb"] == BIGGER["root_gb"]
        on_b = real.files(b, uuid)
        await real.wait_console(b, uuid, BOOT_MARKER, 2)  # a's boot (history), then b's
        assert BOOT_MARKER in on_b.console_log.read_text()
        assert (real.files(a, uuid).directory / "disk").exists()  # kept for a revert

        # 2. Revert: b's guest goes, a's boots again with the old flavor.
        await real.moves(lambda api, ctxt: api.revert_resize(ctxt, uuid))
        row = await real.wait(uuid, _on(a, "active"), timeout=180)
        assert row["memory_mb"] == FLAVOR["memory_mb"]
        assert not on_b.directory.exists()
        await real.wait_console(a, uuid, BOOT_MARKER, 2)

        # 3. Cold migration and confirm: the guest runs on b, a keeps nothing.
        await real.moves(lambda api, ctxt: api.migrate_server(ctxt, uuid))
        await real.wait(uuid, _on(b, "resized"), timeout=180)
        await real.moves(lambda api, ctxt: api.confirm_resize(ctxt, uuid))
        await real.wait(uuid, _on(b, "active"), timeout=120)
        assert not real.files(a, uuid).directory.exists()
        booted = real.console(b, uuid).count(BOOT_MARKER)
        await real.wait_console(b, uuid, BOOT_MARKER, booted)
        [*_, migrated] = await real.migrations(uuid)
        assert migrated["status"] == MigrationStatus.CONFIRMED, migrated

        # 4. Rebuild on b: a new guest from the image boots there.
        await real.moves(lambda api, ctxt: api.rebuild_server(ctxt, uuid, real.image["id"]))
        await real.wait(uuid, _on(b, "active"), timeout=180)
        await real.wait_console(b, uuid, BOOT_MARKER)
        await real.wait_console(b, uuid, TICK_MARKER, 2)

        # 5. The source's agent killed mid-migration (then back): the move ends
        # consistent, done or rolled back, the guest running where it should.
        await real.moves(lambda api, ctxt: api.migrate_server(ctxt, uuid))
        await _migration_in(real, uuid, MigrationStatus.MIGRATING)
        await real.kill_compute(b)
        await real.cloud.wait_serving([await real.start_compute(b)], timeout=120)
        row = await real.wait(uuid, _settled_anywhere, timeout=240)
        assert await real.check_consistent(uuid) == []
        if row["vm_state"] == "resized":
            await real.moves(lambda api, ctxt: api.confirm_resize(ctxt, uuid))
            row = await real.wait(uuid, _on(row["host"], "active"), timeout=120)
            assert await real.check_consistent(uuid) == []
        await real.wait_console(row["host"], uuid, TICK_MARKER, 1)

        # 6. Evacuate: the host's agent is down (its guest still runs there, as
        # on a host cut off); the guest is rebuilt from the image on the other
        # host; the returning host removes what it had and completes the move.
        source = row["host"]
        [target] = [h for h in real.cloud.host_names if h != source]
        await real.kill_compute(source)
        await real.force_down(source)
        await real.moves(lambda api, ctxt: api.evacuate_server(ctxt, uuid))
        await real.wait(uuid, _on(target, "active"), timeout=180)
        await real.wait_console(target, uuid, TICK_MARKER, 1)
        await real.force_down(source, down=False)
        await real.cloud.wait_serving([await real.start_compute(source)], timeout=120)
        deadline = time.monotonic() + 90
        while (await real.migrations(uuid))[-1]["status"] != MigrationStatus.COMPLETED:
            assert time.monotonic() < deadline, (await real.migrations(uuid))[-1]
            await asyncio.sleep(0.2)
        assert not real.files(source, uuid).directory.exists()
        assert await real.check_consistent(uuid) == []
    finally:
        await real.stop()
