"""A cloud of real ``nubes`` processes on RabbitMQ and PostgreSQL, for crash tests.

Each service runs as its own ``python -m nubes.cmd.main`` process (a
conductor with ``crash_at``: ``nubes.testing.crash``, the same with the
crash hook) with its
own broker user (``conductor.<host>``, ``scheduler.<host>``,
``compute.<host>``) and config file; compute hosts get no database
connection. Everything a run makes is its own and is removed at the end:

- a RabbitMQ **virtual host** (``nubes-<run>``) holding every queue and
  exchange of the run, so the fixed topic queues (``conductor``,
  ``scheduler``, ``compute``) of concurrent runs never mix and deleting the
  vhost deletes exactly what the run declared;
- one broker user per identity, named by the identity with the run's id in
  the host name (created in one ``rabbitmqctl import_definitions``);
- a scratch PostgreSQL database (``nubes_crash_<run>``), migrated with
  ``db_sync``.

Each compute host is a ``nubes compute`` process of its own: a fleet in one
process (``--fake-hosts``) would log in to the broker as one user, and the
conductor tells hosts apart by their broker user::

    cloud = ProcessCloud(rabbit_url, postgres_url, tmp_path, options={...})
    await cloud.setup()
    await cloud.start_scheduler()
    conductor = await cloud.start_conductor("a", crash_at="build:after:schedule")
    await cloud.start_computes()
    ...
    await cloud.cleanup()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from nubes.db import engine as db_engine
from nubes.db import migration
from nubes.db.engine import Database
from nubes.db.models import compute_nodes, service_heartbeats, services
from nubes.rpc import rabbit_access
from nubes.rpc.rabbit_session import wants_quorum
from nubes.rpc.transport import TransportURL
from nubes.testing.crash import CRASH_ENV

#: Options every process of the cloud runs with: quick to react.
BASE_OPTIONS: dict[str, dict[str, Any]] = {
    "DEFAULT": {"report_interval": 1, "service_down_time": 30, "rpc_response_timeout": 15},
    "conductor": {
        "task_lease_seconds": 3,
        "task_poll_interval": 0.2,
        "compute_step_timeout": 20,
        "build_deadline": 60,
    },
    "scheduler": {"host_state_refresh_interval": 0.2},
    "compute": {"resource_update_interval": 0},
    "oslo_messaging_rabbit": {"reconnect_backoff_max": 1.0},
}
RABBITMQCTL_TIMEOUT = 60.0


def _ini(sections: Mapping[str, Mapping[str, Any]]) -> str:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{name} = {value}" for name, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def _merge(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", *args], check=False, capture_output=True, text=True,
        timeout=RABBITMQCTL_TIMEOUT,
    )  # fmt: skip


@dataclass
class Proc:
    """One service process: its command, log file and exit status."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    async def wait_log(self, pattern: str, timeout: float = 30.0) -> None:
        """Until ``pattern`` (a regex) appears in the log; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while not regex.search(self.log()):
            if self.returncode is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.returncode}) before logging {pattern!r}:\n"
                    + self.tail()
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not log {pattern!r}:\n{self.tail()}")
            await asyncio.sleep(0.05)

    async def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name} still runs after {timeout}s:\n{self.tail()}") from None

    async def kill(self) -> int | None:
        """SIGKILL, like a crash; the exit status (None if it never started)."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            # The whole session: a service with [*] workers > 1 is a parent
            # and its workers, and a crash of the service takes them all.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        code = await self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


@dataclass
class ProcessCloud:
    """Scratch broker identities and database, config files and service processes."""

    rabbit_url: str
    postgres_url: str
    workdir: Path
    hosts: int = 3
    #: Overrides of BASE_OPTIONS for every process (section -> option -> value).
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: list[Proc] = field(default_factory=list)
    db: Database | None = None
    #: How to run ``rabbitmqctl`` (a private cluster passes its own, see
    #: nubes.testing.infra.RabbitCluster.ctl).
    ctl: Callable[..., subprocess.CompletedProcess[str]] = rabbitmqctl
    #: Fleets of fake hosts, each one ``nubes compute --fake-hosts`` process
    #: (:meth:`start_fleet`): how many, and the hosts of each.
    fleets: int = 0
    fleet_size: int = 0
    #: Extra schedulers (each its own identity), besides the first.
    extra_schedulers: Sequence[str] = ()
    #: ``[database] replica_connection`` of the processes (a URL of a server
    #: replicating ``postgres_url``'s; the run's database name is put in).
    replica_url: str | None = None
    #: Options of the controllers only (conductor, scheduler, API), never of a
    #: compute host: secrets such as ``[DEFAULT] image_grant_secret``.
    controller_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vhost = f"nubes-{self.run}"
        self.password = uuid.uuid4().hex
        self.db_name = f"nubes_crash_{self.run}"
        self.db_url = (
            make_url(self.postgres_url)
            .set(database=self.db_name)
            .render_as_string(hide_password=False)
        )
        self.host_names = [f"cr-{self.run}-{i}" for i in range(self.hosts)]
        self.scheduler_host = f"sch-{self.run}"
        #: Fleet -> the host name prefix its hosts have (``<prefix><i>``).
        self.fleet_prefixes = [f"fl{j}-{self.run}-" for j in range(self.fleets)]
        self.fleet_hosts = [
            f"{prefix}{i}" for prefix in self.fleet_prefixes for i in range(self.fleet_size)
        ]
        self.api_host = f"api-{self.run}"
        self._users: list[str] = []
        self._db_created = False
        self._vhost_created = False

    # -- names --------------------------------------------------------------------

    def conductor_host(self, name: str) -> str:
        return f"ctl-{name}-{self.run}"

    def option(self, section: str, name: str) -> Any:
        """What the processes run with for ``[section] name`` (of those set here)."""
        return _merge(BASE_OPTIONS, self.options)[section][name]

    def url_for(self, identity: str, broker: tuple[str, int] | None = None) -> str:
        """The transport URL of ``identity``: its own broker user, the run's vhost
        (every broker of ``rabbit_url``, for a cluster; or ``broker``, the address
        a namespaced host reaches the broker at)."""
        addresses = (
            [broker]
            if broker is not None
            else [
                (h.host or "127.0.0.1", h.port or 5672)
                for h in TransportURL.parse(self.rabbit_url).hosts
            ]
        )
        hosts = ",".join(f"{identity}:{self.password}@{a}:{p}" for a, p in addresses)
        return f"rabbit://{hosts}/{self.vhost}"

    @property
    def quorum(self) -> bool:
        """Whether the services declare quorum queues (the pre-made ones must match)."""
        option = _merge(BASE_OPTIONS, self.options).get("oslo_messaging_rabbit", {})
        brokers = len(TransportURL.parse(self.rabbit_url).hosts)
        return wants_quorum(option.get("rabbit_quorum_queue"), brokers)

    def identities(self, conductors: Sequence[str]) -> list[str]:
        return [
            f"scheduler.{self.scheduler_host}",
            *(f"scheduler.{self.scheduler_host_of(n)}" for n in self.extra_schedulers),
            f"api.{self.api_host}",
            *(f"conductor.{self.conductor_host(c)}" for c in conductors),
            *(f"compute.{h}" for h in [*self.host_names, *self.fleet_hosts]),
        ]

    # -- setup and cleanup -----------------------------------------------------------

    async def setup(self, conductors: Sequence[str] = ("a", "b"), *, migrate: bool = True) -> None:
        """Broker vhost and users, the database (migrated by this code unless
        ``migrate`` is false: an older release's ``db sync`` makes the schema)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(
            self._setup_broker(self.identities(conductors)), self._setup_db(migrate)
        )
        self.db = Database(self.db_url)

    async def _setup_broker(self, identities: list[str]) -> None:
        # The least-privilege setup an operator makes with nubes-manage broker
        # (docs/security.md): compute hosts get only their own queues.
        users = [
            rabbit_access.host_user(i.partition(".")[2])
            if i.startswith("compute.")
            else rabbit_access.controller_user(i)
            for i in identities
        ]
        definitions = {
            "vhosts": [{"name": self.vhost}],
            **rabbit_access.definitions(self.vhost, users, self.password, quorum=self.quorum),
        }
        self._users = list(identities)
        self._vhost_created = True
        # The broker's CLI may run as another user (Debian's wrapper does) and
        # cannot read the test's private tmp dir, nor stdin (3.10): a file of
        # its own in the system tmp dir, removed at once.
        fd, name = tempfile.mkstemp(prefix="nubes-broker-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(definitions, f)
            os.chmod(name, 0o644)
            done = await asyncio.to_thread(self.ctl, "import_definitions", name)
        finally:
            os.unlink(name)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl import_definitions failed: {done.stderr}")
        # The import finishes asynchronously: wait until every user logs in.
        await asyncio.gather(*(self._wait_login(i) for i in identities))

    async def _wait_login(self, identity: str, timeout: float = 20.0) -> None:
        import aiormq

        from nubes.rpc.rabbit_connection import amqp_url

        parsed = TransportURL.parse(self.url_for(identity))
        url = amqp_url(parsed.hosts[0], parsed.virtual_host, 0)
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = await aiormq.connect(url)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
            else:
                await conn.close()
                return

    async def _admin(self, statement: str) -> None:
        admin = create_async_engine(
            db_engine.normalize_url(self.postgres_url), isolation_level="AUTOCOMMIT"
        )
        try:
            async with admin.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await admin.dispose()

    async def _setup_db(self, migrate: bool = True) -> None:
        await self._admin(f'CREATE DATABASE "{self.db_name}"')
        self._db_created = True
        if migrate:
            await migration.db_sync(self.db_url)

    async def cleanup(self) -> None:
        """Kill every process, drop the database, delete the vhost and the users."""
        for proc in self.procs:
            await proc.kill()
        if self.db is not None:
            await self.db.dispose()
            self.db = None
        if self._db_created:
            await self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self._db_created = False
        await asyncio.to_thread(self._delete_broker_objects)
        self._users = []
        self._vhost_created = False

    def _delete_broker_objects(self) -> None:
        users, vhost = self._users, self.vhost if self._vhost_created else None
        if not users and vhost is None:
            return
        # One CLI call instead of one per object (each starts an Erlang VM,
        # about a second); the documented commands if the internal API moved.
        binaries = ", ".join(f'<<"{u}">>' for u in users)
        who = '<<"nubes-tests">>'
        script = f"[ok = rabbit_auth_backend_internal:delete_user(U, {who}) || U <- [{binaries}]]"
        if vhost is not None:
            script += f', ok = rabbit_vhost:delete(<<"{vhost}">>, {who})'
        if self.ctl("eval", script + ".").returncode == 0:
            return
        commands: list[tuple[str, ...]] = [("delete_user", u) for u in users]
        if vhost is not None:
            commands.append(("delete_vhost", vhost))
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda c: self.ctl(*c), commands))

    # -- processes ---------------------------------------------------------------------

    def _config(
        self,
        name: str,
        identity: str,
        host: str,
        *,
        database: bool,
        extra: Mapping[str, Mapping[str, Any]] | None = None,
        broker: tuple[str, int] | None = None,
    ) -> Path:
        sections = _merge(
            BASE_OPTIONS,
            self.options,
            extra or {},
            {"DEFAULT": {"host": host, "transport_url": self.url_for(identity, broker)}},
        )
        if database:
            sections = _merge(sections, self.controller_options)
            sections["database"] = {**sections.get("database", {}), "connection": self.db_url}
            if self.replica_url is not None:
                sections["database"]["replica_connection"] = (
                    make_url(self.replica_url)
                    .set(database=self.db_name)
                    .render_as_string(hide_password=False)
                )
        path = self.workdir / f"{name}.conf"
        path.write_text(_ini(sections))
        return path

    def environ(
        self, python: str | None = None, env: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The environment of a process of this cloud run by ``python``."""
        return self.environ_of(python, env)

    @staticmethod
    def environ_of(
        python: str | None = None, env: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The environment of a process run by ``python`` (None: this interpreter).

        Another interpreter (an older release's venv) gets no PYTHONPATH: the
        tree that runs the tests must not shadow the release's own code.
        """
        drop = {CRASH_ENV} if python is None else {CRASH_ENV, "PYTHONPATH"}
        environ = {k: v for k, v in os.environ.items() if k not in drop}
        environ.update({"PYTHONUNBUFFERED": "1", **(env or {})})
        return environ

    async def _spawn(
        self,
        name: str,
        config: Path,
        args: list[str],
        env: dict[str, str],
        python: str | None = None,
        wrap: Sequence[str] = (),
        module: str = "nubes.cmd.main",
    ) -> Proc:
        environ = self.environ(python, env)
        # -P: the current directory (this tree) must not shadow another release's.
        interpreter = [sys.executable] if python is None else [python, "-P"]
        argv = [*wrap, *interpreter, "-m", module, "--config-file", str(config), *args]
        proc = Proc(name, argv, environ, self.workdir / f"{name}.log")
        self.procs.append(proc)
        await proc.start()
        return proc

    def _run_name(self, name: str) -> str:
        """``name``, or ``name-N`` for its N-th process (a restart, an upgrade)."""
        runs = sum(1 for p in self.procs if p.name == name or p.name.startswith(f"{name}-"))
        return name + (f"-{runs}" if runs else "")

    def scheduler_host_of(self, name: str = "") -> str:
        """The host of scheduler ``name`` ("" the first, else one of ``extra_schedulers``)."""
        return self.scheduler_host if not name else f"sch-{name}-{self.run}"

    def scheduler_config(
        self, name: str = "", options: Mapping[str, Mapping[str, Any]] | None = None
    ) -> Path:
        host = self.scheduler_host_of(name)
        label = "scheduler" + (f"-{name}" if name else "")
        return self._config(label, f"scheduler.{host}", host, database=True, extra=options)

    async def start_scheduler(
        self,
        name: str = "",
        *,
        python: str | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Proc:
        """Scheduler ``name`` ("" the first; ``python``: another release's
        interpreter, see :meth:`environ`); ``options`` are its own on top of the cloud's."""
        config = self.scheduler_config(name, options)
        label = "scheduler" + (f"-{name}" if name else "")
        return await self._spawn(self._run_name(label), config, ["scheduler"], {}, python)

    async def start_fleet(
        self, index: int, *, options: Mapping[str, Mapping[str, Any]] | None = None
    ) -> Proc:
        """Fleet ``index``: ``fleet_size`` fake hosts in one compute process, each
        logged in to the broker as itself (``{host}`` in its transport URL);
        ``options`` are its own on top of the cloud's."""
        prefix = self.fleet_prefixes[index]
        config = self._config(
            f"fleet-{index}", "compute.{host}", f"{prefix}0", database=False, extra=options
        )
        args = ["compute", "--fake-hosts", str(self.fleet_size), "--host-prefix", prefix]
        return await self._spawn(f"fleet-{index}", config, args, {})

    async def start_conductor(
        self,
        name: str,
        *,
        crash_at: str | None = None,
        python: str | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Proc:
        """Conductor ``name`` (one of those given to :meth:`setup`), maybe with the crash
        hook; ``options`` are its own on top of the cloud's."""
        host = self.conductor_host(name)
        config = self._config(
            f"conductor-{name}", f"conductor.{host}", host, database=True, extra=options
        )
        label = f"conductor-{name}"
        if not crash_at:
            return await self._spawn(label, config, ["conductor"], {}, python)
        env = {CRASH_ENV: crash_at}
        module = "nubes.testing.crash"  # the ordinary command with the hook (see there)
        return await self._spawn(label, config, ["conductor"], env, python, module=module)

    async def start_compute(
        self,
        host: str,
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        broker: tuple[str, int] | None = None,
        wrap: Sequence[str] = (),
        python: str | None = None,
    ) -> Proc:
        """The compute process of ``host`` (a new one each call; same config, same identity).

        A host in a network namespace (nubes.testing.netns) passes ``wrap`` (its
        ``ip netns exec``) and ``broker`` (where it reaches the broker from there);
        ``options`` are its own (its ``[libvirt]``, say); ``python`` runs another
        release's interpreter (the rolling-upgrade test)."""
        config = self._config(
            f"compute-{host}", f"compute.{host}", host, database=False, extra=options, broker=broker
        )
        name = self._run_name(f"compute-{host}")
        return await self._spawn(name, config, ["compute"], {}, python, wrap)

    def api_config(
        self,
        port: int,
        image_dir: Path | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Path:
        """The API's config: the REST API on 127.0.0.1:``port`` (image data in
        ``image_dir``); ``options`` are its own on top of the cloud's."""
        api: dict[str, Any] = {"bind_host": "127.0.0.1", "bind_port": port}
        if image_dir is not None:
            api["image_dir"] = image_dir
        extra = _merge(options or {}, {"api": api})
        return self._config(
            "api", f"api.{self.api_host}", self.api_host, database=True, extra=extra
        )

    async def start_api(
        self,
        port: int,
        image_dir: Path | None = None,
        *,
        python: str | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Proc:
        """The API process (identity, compute, image, network) on ``port``; ``options``
        are its own on top of the cloud's."""
        config = self.api_config(port, image_dir, options)
        return await self._spawn(self._run_name("api"), config, ["api"], {}, python)

    async def start_computes(self) -> dict[str, Proc]:
        return {h: await self.start_compute(h) for h in self.host_names}

    @staticmethod
    async def wait_serving(procs: Sequence[Proc], timeout: float = 60.0) -> None:
        """Until each process logged that its service listens on the bus."""
        await asyncio.gather(*(p.wait_log(r"serving topic \w+", timeout) for p in procs))

    async def wait_hosts_registered(self, timeout: float = 60.0) -> None:
        """Until every compute host has its node record and a heartbeat."""
        assert self.db is not None
        names = self.host_names
        deadline = time.monotonic() + timeout
        hb = service_heartbeats
        while True:
            async with self.db.reader() as conn:
                nodes = (
                    await conn.execute(
                        select(func.count()).where(
                            compute_nodes.c.host.in_(names), compute_nodes.c.deleted == 0
                        )
                    )
                ).scalar_one()
                beats = (
                    await conn.execute(
                        select(func.count())
                        .select_from(hb.join(services, services.c.id == hb.c.service_id))
                        .where(services.c.host.in_(names), services.c.binary == "compute")
                    )
                ).scalar_one()
            if nodes >= len(names) and beats >= len(names):
                return
            dead = [p for p in self.procs if p.returncode is not None]
            if dead or time.monotonic() > deadline:
                raise TimeoutError(
                    f"{nodes} nodes and {beats} heartbeats of {len(names)} hosts; "
                    + self.describe()
                )
            await asyncio.sleep(0.1)

    def describe(self, lines: int = 25) -> str:
        """Every process's status and the end of its log (for failure messages)."""
        parts = []
        for p in self.procs:
            parts.append(f"--- {p.name} (exit {p.returncode}) {p.log_path}\n{p.tail(lines)}")
        return "\n".join(parts)
