"""Private infrastructure for fault tests: a RabbitMQ cluster and a PostgreSQL
primary with a streaming replica, each on its own ports and directories.

Fault tests stop and restart servers; the shared servers on the standard
ports serve everybody's tests at once, so they are never touched. Instead:

- :class:`RabbitCluster` starts N RabbitMQ nodes (``nubes-q<i>-<run>@localhost``)
  with their own AMQP and distribution ports, mnesia/log directories and
  Erlang cookie (a ``HOME`` of their own, which the CLI uses too), and joins
  nodes 2..N to node 1. No plugins: the CLI is all the tests need, and the
  management plugin would double each node's start time.
- :class:`PostgresPair` makes a primary with ``initdb`` and a streaming
  replica of it with ``pg_basebackup -R``, run by the ``postgres`` user when
  the tests run as root (PostgreSQL refuses to run as root).

Both clean up after themselves (processes stopped by their own pids,
directories removed) in ``stop()``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

RABBIT_LIB = Path("/usr/lib/rabbitmq/bin")
#: How long one CLI call or one node start may take on a loaded 2-core machine.
CTL_TIMEOUT = 120.0


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _rabbit_binary(name: str) -> str:
    # The Debian wrapper in /usr/sbin switches to the rabbitmq user, whose
    # HOME holds the shared node's cookie; the scripts under /usr/lib run as
    # we are, with our own HOME and cookie.
    path = RABBIT_LIB / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install rabbitmq-server")
    return found


@dataclass
class RabbitNode:
    name: str
    port: int
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def short(self) -> str:
        return self.name.partition("@")[0]


@dataclass
class RabbitCluster:
    """N RabbitMQ nodes clustered together, private to one test session."""

    size: int = 3
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nubes-rmq-")))
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    nodes: list[RabbitNode] = field(default_factory=list)
    #: Seconds start() took (printed by the tests: the expensive part of the suite).
    startup_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.home = self.workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        for i in range(1, self.size + 1):
            base = self.workdir / f"q{i}"
            base.mkdir(exist_ok=True)
            self.nodes.append(
                RabbitNode(f"nubes-q{i}-{self.run}@localhost", free_port(), free_port(), base)
            )

    # -- the CLI -------------------------------------------------------------

    def _env(self, node: RabbitNode | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env["HOME"] = str(self.home)
        if node is not None:
            env.update(
                RABBITMQ_NODENAME=node.name,
                RABBITMQ_NODE_PORT=str(node.port),
                RABBITMQ_DIST_PORT=str(node.dist_port),
                RABBITMQ_MNESIA_BASE=str(node.base / "mnesia"),
                RABBITMQ_LOG_BASE=str(node.base / "log"),
                RABBITMQ_PID_FILE=str(node.base / "pid"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(self.workdir / "enabled_plugins"),
                # No config file: defaults, on our own ports.
                RABBITMQ_CONFIG_FILE=str(node.base / "none"),
                RABBITMQ_ADVANCED_CONFIG_FILE=str(node.base / "none-advanced.config"),
            )
        return env

    def ctl(self, *args: str, node: int = 0) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl`` against node ``node`` (0-based)."""
        return subprocess.run(
            [_rabbit_binary("rabbitmqctl"), "-n", self.nodes[node].name, *args],
            env=self._env(), capture_output=True, text=True, check=False, timeout=CTL_TIMEOUT,
        )  # fmt: skip

    def _ctl_ok(self, *args: str, node: int = 0) -> str:
        done = self.ctl(*args, node=node)
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl -n {self.nodes[node].name} {' '.join(args)}: {done.stderr}"
            )
        return done.stdout

    # -- nodes -------------------------------------------------------------------

    def _launch(self, index: int) -> None:
        node = self.nodes[index]
        log = (node.base / "server.log").open("ab")
        node.process = subprocess.Popen(
            [_rabbit_binary("rabbitmq-server")], env=self._env(node), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def _await_started(self, index: int) -> None:
        # await_startup gives up at once while the node has not registered
        # with epmd yet (its VM still starting): ask again until it waits.
        node = self.nodes[index]
        deadline = time.monotonic() + CTL_TIMEOUT
        while True:
            done = self.ctl("await_startup", "--timeout", str(int(CTL_TIMEOUT)), node=index)
            if done.returncode == 0:
                return
            if node.process is not None and node.process.poll() is not None:
                log = (node.base / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"RabbitMQ node {node.name} exited:\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node {node.name} did not start: {done.stderr}")
            time.sleep(0.5)

    def start(self) -> None:
        """Start every node (in parallel) and cluster them."""
        began = time.monotonic()
        for i in range(self.size):
            self._launch(i)
        for i in range(self.size):
            self._await_started(i)
        for i in range(1, self.size):
            self._ctl_ok("stop_app", node=i)
            self._ctl_ok("join_cluster", self.nodes[0].name, node=i)
            self._ctl_ok("start_app", node=i)
        self.startup_seconds = time.monotonic() - began

    def stop_node(self, index: int) -> None:
        """Stop one node for good (its Erlang VM too), as a node lost."""
        node = self.nodes[index]
        self.ctl("stop", node=index)
        if node.process is not None:
            try:
                node.process.wait(timeout=CTL_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait()
            node.process = None

    def start_node(self, index: int) -> None:
        """Start a stopped node again; it rejoins the cluster it was in."""
        self._launch(index)
        self._await_started(index)

    def stop_all(self) -> None:
        """The whole broker down (the last node stopped is the first back in
        RabbitMQ's book, but start_all starts them together anyway)."""
        for i in reversed(range(self.size)):
            if self.running(i):
                self.stop_node(i)

    def start_all(self) -> None:
        """Every stopped node again, in parallel (they wait for each other)."""
        stopped = [i for i in range(self.size) if not self.running(i)]
        for i in stopped:
            self._launch(i)
        for i in stopped:
            self._await_started(i)

    def queue_messages(self, vhost: str, queue: str) -> int:
        """Messages ready + unacknowledged in ``queue``."""
        node = next(i for i in range(self.size) if self.running(i))
        out = self._ctl_ok(
            "list_queues", "-p", vhost, "--no-table-headers", "--quiet", "name", "messages",
            node=node,
        )  # fmt: skip
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return int(parts[1])
        raise LookupError(f"no queue {queue} on vhost {vhost}")

    def running(self, index: int) -> bool:
        process = self.nodes[index].process
        return process is not None and process.poll() is None

    def stop(self) -> None:
        for i in range(self.size):
            if self.running(i):
                self.stop_node(i)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- addresses --------------------------------------------------------------

    def url(self, user: str = "guest", password: str = "guest", vhost: str = "") -> str:
        """A transport URL listing every node, as oslo.messaging writes a cluster."""
        hosts = ",".join(f"{user}:{password}@127.0.0.1:{n.port}" for n in self.nodes)
        return f"rabbit://{hosts}/{vhost}"

    def queue_leaders(self, vhost: str) -> dict[str, str]:
        """Quorum queue name -> the node leading it, on ``vhost``."""
        node = next(i for i in range(self.size) if self.running(i))
        out = self._ctl_ok(
            "list_queues", "-p", vhost, "--no-table-headers", "--quiet", "name", "type",
            "leader", node=node,
        )  # fmt: skip
        leaders: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "quorum":
                leaders[parts[0]] = parts[2]
        return leaders

    def queue_types(self, vhost: str) -> dict[str, str]:
        node = next(i for i in range(self.size) if self.running(i))
        out = self._ctl_ok(
            "list_queues", "-p", vhost, "--no-table-headers", "--quiet", "name", "type", node=node
        )
        return dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)


# -- PostgreSQL ------------------------------------------------------------------


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian layout)."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        found = shutil.which("initdb")
        if found is None:
            raise RuntimeError("initdb not found: install postgresql")
        return Path(found).parent
    return versions[-1]


@dataclass
class PostgresPair:
    """A scratch primary and its streaming replica, on their own ports."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nubes-pg-")))
    primary_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)
    startup_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.bin = postgres_bin()
        self.primary_dir = self.workdir / "primary"
        self.replica_dir = self.workdir / "replica"
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam("postgres")
            os.chown(self.workdir, self._user.pw_uid, self._user.pw_gid)
        self.workdir.chmod(0o755)

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = self._user

        def demote() -> None:
            if user is not None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=CTL_TIMEOUT,
            preexec_fn=demote if user is not None else None, cwd=self.workdir,
            env={**os.environ, "PGHOST": "127.0.0.1"},
        )  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stdout}\n{done.stderr}")
        return done

    def _pg_ctl(self, data: Path, action: str, port: int | None = None) -> None:
        argv = [str(self.bin / "pg_ctl"), "-D", str(data), "-w", "-t", "60", action]
        if action == "stop":
            argv += ["-m", "fast"]
        if port is not None:
            # Unix sockets in our own directory: the system's may belong to
            # the shared server, and we reach ours over TCP anyway.
            argv += ["-o", f"-p {port} -k {self.workdir} -c listen_addresses=127.0.0.1"]
            argv += ["-l", str(data.parent / f"{data.name}.log")]
        self._run(*argv)

    def start(self) -> None:
        began = time.monotonic()
        self._run(
            str(self.bin / "initdb"), "-D", str(self.primary_dir), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip
        with (self.primary_dir / "postgresql.conf").open("a") as conf:
            # Enough for a replica and a quick test: no durability needed.
            conf.write(
                "\nwal_level = replica\nmax_wal_senders = 4\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
            )
        self._pg_ctl(self.primary_dir, "start", self.primary_port)
        self._run(
            str(self.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary_port),
            "-U", "postgres", "-D", str(self.replica_dir), "-R", "-X", "stream", "--no-sync",
        )  # fmt: skip
        self._pg_ctl(self.replica_dir, "start", self.replica_port)
        self.startup_seconds = time.monotonic() - began

    def stop_primary(self) -> None:
        self._pg_ctl(self.primary_dir, "stop")

    def start_primary(self) -> None:
        self._pg_ctl(self.primary_dir, "start", self.primary_port)

    def stop_replica(self) -> None:
        self._pg_ctl(self.replica_dir, "stop")

    def start_replica(self) -> None:
        self._pg_ctl(self.replica_dir, "start", self.replica_port)

    def url(self, database: str = "postgres", *, replica: bool = False) -> str:
        port = self.replica_port if replica else self.primary_port
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def stop(self) -> None:
        for data in (self.replica_dir, self.primary_dir):
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._pg_ctl(data, "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)
