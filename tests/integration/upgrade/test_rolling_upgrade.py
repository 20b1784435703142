"""The grenade job: release N of nubes upgraded to this tree, service by service,
with servers running throughout.

Real processes on RabbitMQ and PostgreSQL. Release N is :data:`RELEASE_N`, a
commit of this repository's history (``nubes.testing.release``: exported with
``git archive`` into a venv of its own); N+1 is the tree under test. The
steps are those of ``docs/upgrade.md``:

1. a cloud of N (its ``db sync``, conductor, scheduler, API, two compute
   hosts with the fake driver), two servers booted through the REST API;
2. the database schema: ``nubes-manage db sync`` of N+1;
3. the conductors: an N+1 conductor starts, then N's stops (SIGTERM);
4. the scheduler, then the API (same port);
5. in the mixed cloud (N hosts, N+1 controllers): a new server boots on an
   old host, an old host's server reboots, resizes (confirmed) and
   live-migrates;
   a conductor rolled back to N (docs/upgrade.md) drives a reboot, then N+1
   returns;
6. the hosts one at a time: after the first, live migrations old -> new and
   new -> old; then the second;
7. the conductor and the API, not restarted while the hosts were, cap the
   compute API at what this tree serves (``[upgrade_levels] compute =
   auto``, the default, followed every ``refresh_interval``).

Every server stays ACTIVE and running through all of it (checked after each
step) and no task is left unfinished.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from nubes import versions
from nubes.db.api.tasks import ACTIVE_STATUSES
from nubes.db.models import conductor_tasks, instance_faults, services
from nubes.testing.processes import Proc, ProcessCloud
from nubes.testing.release import Release, prepare_release, repo_root
from nubes.testing.rest import SEED_SCRIPT
from tests.integration.upgrade.rest import Rest

#: Release N: the commit the upgrade starts from (the last release, "elm").
RELEASE_N = "06d86b4"
RUNNING = 1  # the power state of a running guest, as the API shows it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(argv: list[str], env: dict[str, str]) -> str:
    done = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def _stop(proc: Proc) -> None:
    """SIGTERM, as an operator's service manager stops it; it must exit 0."""
    assert proc.process is not None
    proc.process.send_signal(signal.SIGTERM)
    assert await proc.wait_exit(timeout=40) == 0, proc.tail()


class Upgrade:
    """The cloud under upgrade: its processes, REST client and servers."""

    def __init__(self, cloud: ProcessCloud, release: Release, port: int) -> None:
        self.cloud = cloud
        self.release = release
        self.port = port
        self.rest = Rest(f"http://127.0.0.1:{port}", cloud.workdir / "state" / "clouds.yaml")
        self.servers: list[str] = []
        #: Faults of live migrations refused between an old and a new host.
        self.refusals: list[str] = []
        self.hosts = cloud.host_names[:2]

    async def wait_api(self, proc: Proc) -> None:
        await proc.wait_log(r"API listening on", timeout=60)

    async def check_servers(self, when: str) -> dict[str, dict[str, Any]]:
        """Every server so far ACTIVE, running, with no task state, on one of the hosts."""
        found = {}
        for server_id in self.servers:
            server = await self.rest.wait(server_id, timeout=60)
            assert server["OS-EXT-STS:power_state"] == RUNNING, (when, server)
            assert server["OS-EXT-SRV-ATTR:host"] in self.hosts, (when, server)
            found[server_id] = server
        return found

    async def host_of(self, server_id: str) -> str:
        return str((await self.rest.server(server_id))["OS-EXT-SRV-ATTR:host"])

    async def live_migrate(self, server_id: str, dest: str, *, may_refuse: bool = False) -> str:
        """Live-migrate to ``dest``; the host it is on once the move ended.

        With ``may_refuse`` (between an old and a new host) the move may
        instead be refused at its first step, with a fault saying the host's
        RPC version cannot do it; the server must stay ACTIVE where it was.
        """
        source = await self.host_of(server_id)
        faults_before = len(await self.faults(server_id))
        body = {"os-migrateLive": {"host": dest, "block_migration": "auto"}}
        await self.rest.action(server_id, body, who="admin")
        server = await self.rest.wait(server_id, timeout=90)
        host = str(server["OS-EXT-SRV-ATTR:host"])
        if host == dest:
            return host
        faults = await self.faults(server_id)
        assert may_refuse and len(faults) > faults_before, (
            f"live migration of {server_id} to {dest} did not happen: {faults}"
        )
        assert host == source, server
        assert re.search(r"RPC version|cannot be asked", faults[-1]), faults[-1]
        self.refusals.append(faults[-1])
        return host

    async def faults(self, server_id: str) -> list[str]:
        assert self.cloud.db is not None
        async with self.cloud.db.reader() as conn:
            rows = await conn.execute(
                select(instance_faults.c.message, instance_faults.c.details)
                .where(instance_faults.c.instance_uuid == server_id)
                .order_by(instance_faults.c.id)
            )
            return [f"{r.message} {r.details or ''}" for r in rows]

    async def retire(self, binary: str, host: str) -> None:
        """Delete a stopped service that is not coming back, as docs/upgrade.md
        tells the operator (its row would keep its old version, and ``auto``
        keep capping at it)."""
        query = f"/os-services?binary={binary}&host={host}"
        (row,) = (await self.rest.call("GET", query))["services"]
        await self.rest.call("DELETE", f"/os-services/{row['id']}", expect=204)

    async def services(self) -> dict[tuple[str, str], int]:
        assert self.cloud.db is not None
        async with self.cloud.db.reader() as conn:
            rows = await conn.execute(
                select(services.c.binary, services.c.host, services.c.version).where(
                    services.c.deleted == 0
                )
            )
            return {(r.binary, r.host): r.version for r in rows}

    async def unfinished_tasks(self) -> int:
        assert self.cloud.db is not None
        active = [s.value for s in ACTIVE_STATUSES]
        async with self.cloud.db.reader() as conn:
            query = select(func.count()).where(conductor_tasks.c.status.in_(active))
            return int((await conn.execute(query)).scalar_one())


def _last_cap(proc: Proc, api: str) -> str | None:
    caps = re.findall(rf"{api} RPC API capped at (\S+) \(was", proc.log())
    return caps[-1] if caps else None


@pytest.mark.timeout(300)
async def test_rolling_upgrade_from_release_n(rabbit_url: str, postgres_url: str, tmp_path: Path):
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to create one broker user per identity")
    release = await asyncio.to_thread(prepare_release, repo_root(), RELEASE_N, tmp_path / "n")
    n_version = await asyncio.to_thread(release.service_version)
    where = await _run([*release.argv(), "-c", "import nubes; print(nubes.__file__)"],
                       ProcessCloud.environ_of(release.python))  # fmt: skip
    assert Path(where.strip()).is_relative_to(release.tree), where
    assert n_version >= versions.MINIMUM_SERVICE_VERSION, (
        f"release N ({RELEASE_N}, service version {n_version}) is older than this tree "
        f"serves ({versions.MINIMUM_SERVICE_VERSION}): name a newer release N"
    )
    state = tmp_path / "cloud" / "state"
    state.mkdir(parents=True)
    cloud = ProcessCloud(
        rabbit_url,
        postgres_url,
        tmp_path / "cloud",
        hosts=2,
        options={
            "DEFAULT": {"state_path": str(state)},
            # Guests outlive their compute process, as a hypervisor's do.
            "fake_driver": {"state_path": str(state / "fake-driver")},
            # The caps follow the services within a second (default: a minute).
            "upgrade_levels": {"refresh_interval": 1},
            "conductor": {"build_deadline": 120, "task_deadline": 120},
        },
    )
    port = _free_port()
    up = Upgrade(cloud, release, port)
    old = release.python
    try:
        await cloud.setup(conductors=("n", "new", "back"), migrate=False)
        old_env = cloud.environ(old)
        this_env = cloud.environ()
        config = str(cloud.scheduler_config())

        # 1. A cloud of release N, two servers on it.
        await _run([*release.argv(), "-m", "nubes.cmd.manage", "--config-file", config,
                    "db", "sync"], old_env)  # fmt: skip
        await _run(
            [*release.argv(), "-c", SEED_SCRIPT, str(cloud.api_config(port)), str(state)], old_env
        )
        scheduler = await cloud.start_scheduler(python=old)
        conductor = await cloud.start_conductor("n", python=old)
        api = await cloud.start_api(port, python=old)
        await cloud.wait_serving([scheduler, conductor])
        computes = {h: await cloud.start_compute(h, python=old) for h in up.hosts}
        await cloud.wait_serving(list(computes.values()))
        await cloud.wait_hosts_registered()
        await up.wait_api(api)
        await up.rest.login()
        image = await up.rest.image_id()
        for i in range(2):
            up.servers.append(await up.rest.boot(f"n-{i}", image))
        await up.check_servers("release N")
        assert set((await up.services()).values()) == {n_version}

        # 2. The schema, by N+1, under the running N services.
        await _run([sys.executable, "-m", "nubes.cmd.manage", "--config-file", config,
                    "db", "sync"], this_env)  # fmt: skip
        await up.check_servers("schema upgraded")

        # 3. Conductors: the new one serves before the old one goes.
        new_conductor = await cloud.start_conductor("new")
        await cloud.wait_serving([new_conductor])
        await _stop(conductor)
        # 4. The scheduler, then the API.
        await _stop(scheduler)
        scheduler = await cloud.start_scheduler()
        await cloud.wait_serving([scheduler])
        await _stop(api)
        api = await cloud.start_api(port)
        await up.wait_api(api)
        await up.rest.login()
        await up.check_servers("controllers upgraded")

        # 5. The mixed cloud: N+1 controllers, N hosts.
        up.servers.append(await up.rest.boot("mixed", image))
        await up.check_servers("a build on an old host")
        first = up.servers[0]
        await up.rest.action(first, {"reboot": {"type": "SOFT"}})
        await up.check_servers("reboot on an old host")
        await up.rest.action(first, {"resize": {"flavorRef": "2"}})
        await up.rest.wait(first, "VERIFY_RESIZE", timeout=90)
        await up.rest.action(first, {"confirmResize": None}, expect=204)
        await up.check_servers("resize on old hosts")
        source = await up.host_of(first)
        other = next(h for h in up.hosts if h != source)
        assert await up.live_migrate(first, other) == other
        await up.check_servers("live migration between old hosts")

        # Rolling a controller back: N's conductor alone drives a reboot the N+1
        # API asked for, then N+1 comes back.
        back = await cloud.start_conductor("back", python=old)
        await cloud.wait_serving([back])
        await _stop(new_conductor)
        await up.rest.action(first, {"reboot": {"type": "HARD"}})
        await up.check_servers("reboot with the conductor rolled back to N")
        new_conductor = await cloud.start_conductor("new")
        await cloud.wait_serving([new_conductor])
        await _stop(back)
        # The N conductors are gone for good: their records go with them.
        await up.retire("nubes-conductor", cloud.conductor_host("n"))
        await up.retire("nubes-conductor", cloud.conductor_host("back"))

        # 6. The hosts, one at a time: live migrations across the versions.
        new_host, old_host = up.hosts
        await _stop(computes[new_host])
        computes[new_host] = await cloud.start_compute(new_host)
        await cloud.wait_serving([computes[new_host]])
        await up.check_servers(f"{new_host} upgraded")
        on_old = [s for s in up.servers if await up.host_of(s) == old_host]
        if not on_old:
            assert await up.live_migrate(first, old_host) == old_host
            on_old = [first]
        # Old -> new, then new -> old: each works or is refused at once, clearly.
        moved = await up.live_migrate(on_old[0], new_host, may_refuse=True)
        if moved == new_host:
            assert await up.live_migrate(on_old[0], old_host, may_refuse=True) in up.hosts
        await up.check_servers("live migrations between an old and a new host")
        await _stop(computes[old_host])
        computes[old_host] = await cloud.start_compute(old_host)
        await cloud.wait_serving([computes[old_host]])

        # 7. Caps follow the hosts with no restart; a build on the new cloud.
        current = versions.SERVICE_VERSION
        # The N conductors stopped for good keep N's version in their rows (a
        # row outlives its process; docs/upgrade.md): every running one is N+1's.
        retired = {("conductor", cloud.conductor_host(name)) for name in ("n", "back")}
        deadline = time.monotonic() + 30
        while {v for k, v in (await up.services()).items() if k not in retired} != {current}:
            assert time.monotonic() < deadline, await up.services()
            await asyncio.sleep(0.2)
        newest = versions.api_version_of(current, "compute")
        deadline = time.monotonic() + 30
        while _last_cap(new_conductor, "compute") != newest or _last_cap(api, "compute") != newest:
            assert time.monotonic() < deadline, (
                _last_cap(new_conductor, "compute"),
                _last_cap(api, "compute"),
                newest,
            )
            await asyncio.sleep(0.2)
        assert new_conductor.returncode is None and api.returncode is None
        up.servers.append(await up.rest.boot("upgraded", image))
        await up.check_servers("every service upgraded")
        assert await up.unfinished_tasks() == 0
        print(
            f"\nrolling upgrade {RELEASE_N} (service version {n_version}) -> this tree "
            f"({current}): {len(up.servers)} servers ACTIVE throughout; live migrations "
            f"refused between versions: {up.refusals or 'none'}"
        )
    except BaseException:
        print(cloud.describe(40))
        raise
    finally:
        await cloud.cleanup()
