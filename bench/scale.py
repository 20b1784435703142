"""Scale-out: boots through the REST API on real processes, 1 then 2 conductors and schedulers.

    python bench/scale.py [--servers 400] [--hosts 200] [--fleets 2]
                          [--clients 32] [--batch 50] [--quick]

Every service is a process of its own on RabbitMQ and PostgreSQL
(``nubes.testing.processes.ProcessCloud``: a scratch vhost, broker users and
database, removed at the end): one API process, conductors ``a`` (and
``b``), schedulers (one, then two), and ``--hosts`` fake compute hosts in
``--fleets`` processes (``nubes compute --fake-hosts``, each host logged in
to the broker as itself). For each shape it boots ``--servers`` servers
twice, from this process through the REST API as the demo user:

- ``singles``: one server per POST, ``--clients`` requests at a time;
- ``batches``: ``min_count = max_count = --batch`` per POST, four at a time.

With ``--profile DIR`` each service process is sampled by py-spy (from
PyPI) over every run, and the functions where each service spends its CPU
(own time, and cumulative time in nubes code) are printed after the run's
line; the raw stacks stay in ``DIR``. On a loaded machine read them with
care: a process that is runnable but waiting for a core is sampled where it
stands, so a socket write that woke another process (``StreamWriter.write``,
asyncpg's execute) or the event loop's return from its poll
(``Runner.run``) collects samples that are not CPU time.

Every service process serves ``/metrics`` on a port of its own, read before
and after each run: the bench prints, per server booted and per service, the
load-independent counts (SQL statements, database blocks that committed and
read blocks, RPC calls and casts sent and received, and the methods sent or
received most), which are what to optimise on a shared machine where wall
time is noise. What comes with time rather than with servers (heartbeats,
periodic reports) is measured with nothing booting for ``IDLE_SECONDS``
before each shape and taken out, so a run slowed by the machine's load does
not show more of it per server. Statements a group commit runs on the driver's connection
directly (nubes/db/group_commit.py) are not seen by the statement counter;
its transaction is.

It prints, per shape and way, servers/s (first POST to the last server
ACTIVE) and the CPU milliseconds per server each service spent (from
``/proc/<pid>/stat``, over the same interval; ``sys``: the kernel's part),
and on the next line those of the servers: the PostgreSQL processes serving
the run's database, and RabbitMQ (shared: it counts whatever else uses the
broker meanwhile), with the servers/s all of that CPU allows on the
machine's cores: the figure to hold against the target on a shared machine,
where servers/s follows the other work's load. Then it names the bottleneck:
a service whose processes keep their cores busy (CPU seconds per wall
second; one process cannot use more than one), else the machine's CPU when
it had almost no idle time (``/proc/stat``; the machine may be shared), else
waiting on the broker or the database. The last line ends with the two-conductor servers/s.

Then, for one conductor and for two (after each shape's boots, on the
servers just booted), the **saves**: the fleet's hosts save their own
instances through the conductors (``power_state``, the field a host's sync
writes), ``--saves-in-flight`` at a time for ``--saves-seconds``, from
``--save-callers`` processes of their own (bench/host_saves.py), each host
logged in to the broker as itself, so that each save is authorised for its
host as in production. In boots the conductor is not the bottleneck; here it
is meant to be. Per shape: saves/s, CPU ms per 1,000 saves of every group
(each service, the callers, PostgreSQL, RabbitMQ), the bottleneck verdict,
the counts per 1,000 saves, and the ceiling the measured costs put on the
ratio: with the conductor at k CPU per save and everything else at o, two
conductors on 2 cores give at most 2k/(k+o) times one. The ratio two/one
comes on the line before the last.

Targets on the 2-core machine: >= 150 servers/s end to end with two
conductors, and >= 1.4x from one conductor to two while the conductor is
the bottleneck (the saves).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nubes.db.models import compute_nodes, instances
from nubes.testing.processes import Proc, ProcessCloud
from nubes.testing.rest import SEED_SCRIPT, password_token_request
from nubes.testing.servers import POSTGRES_URL, RABBIT_URL, reachable

TICKS = os.sysconf("SC_CLK_TCK")
#: Cores one process keeps busy to count as CPU-bound (it cannot use more than one).
SATURATED = 0.6
#: Idle share of the machine's CPU below which the machine itself is the limit.
MACHINE_IDLE = 0.1
#: Batched POSTs in flight at once.
BATCHES_IN_FLIGHT = 4
#: Seconds each shape is watched idle, for the traffic that comes with time
#: (two heartbeats of each service, at the bench's ``report_interval``).
IDLE_SECONDS = 20.0


def free_port() -> int:
    """A TCP port nothing listens on now, below the kernel's ephemeral range:
    a port the kernel picked for us could be handed to someone's outgoing
    connection before the service that was to listen on it starts."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    below = min(int(ephemeral[0]), 32768)
    for _ in range(1000):
        port = random.randrange(10000, below)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between 10000 and {below}")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far ((0, 0) when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 when it is gone)."""
    return sum(cpu_times(pid))


def broker_pids() -> list[int]:
    """RabbitMQ's Erlang VM (``beam.smp``) run by the ``rabbitmq`` user: the
    system's broker every run here shares, not a test's private cluster."""
    try:
        uid = pwd.getpwnam("rabbitmq").pw_uid
    except KeyError:
        uid = None
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp" and (
                    uid is None or entry.stat().st_uid == uid
                ):
                    pids.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return pids


def cpu_since(start: dict[int, float], pids: list[int]) -> float:
    """CPU seconds ``pids`` spent since ``start`` (pid -> CPU seconds then): one
    that started since counts from 0; one gone since is not counted (its end is unknown)."""
    total = 0.0
    for pid in pids:
        now = cpu_seconds(pid)
        if now:
            total += now - start.get(pid, 0.0)
    return total


async def backend_pids(cloud: ProcessCloud) -> list[int]:
    """The PostgreSQL server processes serving the run's database (its clients' connections)."""
    assert cloud.db is not None
    query = text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    async with cloud.db.reader() as conn:
        return [int(pid) for pid in (await conn.execute(query)).scalars()]


async def backend_kinds(cloud: ProcessCloud) -> dict[int, str]:
    """The run's database's server processes and their kinds (``client backend``,
    ``autovacuum worker``): an autovacuum of the saved table lands in some runs."""
    assert cloud.db is not None
    query = text(
        "SELECT pid, backend_type FROM pg_stat_activity WHERE datname = current_database()"
    )
    async with cloud.db.reader() as conn:
        return {int(pid): str(kind) for pid, kind in await conn.execute(query)}


def machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, every core (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICKS, idle / TICKS


#: A child process the bench started itself (a saves caller).
Child = asyncio.subprocess.Process

#: A service's counters: (series, labels that matter) -> value.
Counts = dict[tuple[str, ...], float]


def scrape(port: int) -> Counts:
    """The counters of one process's ``/metrics`` that the bench reports."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    counts: Counts = collections.defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == "nubes_db_statement_seconds_count":
                counts[("sql",)] += sample.value
            elif name == "nubes_db_transactions_total":
                counts[("txn", labels["end"])] += sample.value
            elif name in ("nubes_db_grouped_commits_total", "nubes_db_grouped_writes_total"):
                counts[("grouped", name.split("_")[3])] += sample.value
            elif name in ("nubes_rpc_client_seconds_count", "nubes_rpc_server_seconds_count"):
                way = "sent" if "client" in name else "received"
                counts[("rpc", way, labels["kind"])] += sample.value
                method = f"{labels['topic']}.{labels['method']}"
                counts[("method", way, labels["kind"], method)] += sample.value
    return counts


def difference(
    after: Counts, before: Counts, idle: Counts | None = None, seconds: float = 0.0
) -> Counts:
    """``after - before``, less what ``idle`` (counts per second with no
    boots) accounts for over ``seconds``: heartbeats and periodic reports
    come with time, not with servers, and a slow run would show more of them
    per server."""
    idle = idle or {}
    out = {}
    for k, v in after.items():
        d = max(0.0, v - before.get(k, 0.0) - idle.get(k, 0.0) * seconds)
        if d > 1e-9:
            out[k] = d
    return out


async def idle_rates(ports: dict[str, list[int]], seconds: float) -> dict[str, Counts]:
    """Each service's counts per second over ``seconds`` with nothing booting."""
    before = await asyncio.to_thread(scrape_all, ports)
    await asyncio.sleep(seconds)
    after = await asyncio.to_thread(scrape_all, ports)
    return {n: {k: v / seconds for k, v in difference(after[n], before[n]).items()} for n in after}


def scrape_all(ports: dict[str, list[int]]) -> dict[str, Counts]:
    """Each service's counters, summed over its processes."""
    total: dict[str, Counts] = {}
    for name, service_ports in ports.items():
        merged: Counts = collections.defaultdict(float)
        for port in service_ports:
            for key, value in scrape(port).items():
                merged[key] += value
        total[name] = merged
    return total


def report_counts(counts: dict[str, Counts], servers: float) -> None:
    """Per server booted: each service's statements, transactions and messages."""
    for name, c in counts.items():

        def per(*key: str, c: Counts = c) -> float:
            return c.get(key, 0.0) / servers

        methods = sorted(((v, k) for k, v in c.items() if k[0] == "method"), key=lambda vk: -vk[0])[
            :4
        ]
        top = ", ".join(f"{k[1][:4]} {k[2]} {k[3]} {v / servers:.2f}" for v, k in methods)
        print(
            f"    {name:<9} SQL {per('sql'):5.1f}  txn {per('txn', 'commit'):4.1f} commit "
            f"{per('txn', 'rollback'):3.1f} rollback {per('txn', 'read'):4.1f} read  RPC sent "
            f"{per('rpc', 'sent', 'call'):4.1f} call {per('rpc', 'sent', 'cast'):4.1f} cast, "
            f"received {per('rpc', 'received', 'call'):4.1f} call "
            f"{per('rpc', 'received', 'cast'):4.1f} cast; most: {top}",
            flush=True,
        )


@dataclass
class Run:
    shape: str
    way: str
    servers: int
    seconds: float
    #: Service -> CPU seconds over the run.
    cpu: dict[str, float] = field(default_factory=dict)
    #: The machine's busy and idle CPU seconds over the run (every process, every core).
    machine_busy: float = 0.0
    machine_idle: float = 0.0
    #: Service -> system (kernel) CPU seconds, a part of ``cpu``: socket reads and writes.
    system: dict[str, float] = field(default_factory=dict)
    #: The servers' CPU seconds over the run: PostgreSQL's processes serving the
    #: run's database, and the broker (shared by whatever else runs here).
    servers_cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.servers / self.seconds

    def bottleneck(self) -> tuple[str, float]:
        """The service busiest in cores per process (CPU s per wall s, per process)."""
        busy = {name: cpu / self.seconds for name, cpu in self.cpu.items()}
        name = max(busy, key=lambda n: busy[n])
        return name, busy[name]


class Client:
    """The demo user's REST calls (token from the clouds.yaml the seed wrote)."""

    def __init__(self, base: str, clouds: Path) -> None:
        import yaml

        self.base = base
        self.auth = yaml.safe_load(clouds.read_text())["clouds"]["nubes-demo"]["auth"]
        self.http = httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=256))
        self.token = ""

    async def login(self) -> None:
        body = password_token_request(self.auth)
        answer = await self.http.post(f"{self.base}/identity/v3/auth/tokens", json=body)
        answer.raise_for_status()
        self.token = answer.headers["X-Subject-Token"]

    async def image(self) -> str:
        answer = await self.http.get(
            f"{self.base}/image/v2/images", headers={"X-Auth-Token": self.token}
        )
        answer.raise_for_status()
        return str(answer.json()["images"][0]["id"])

    async def create(self, name: str, image: str, count: int) -> None:
        body: dict[str, Any] = {
            "server": {"name": name, "imageRef": image, "flavorRef": "1", "networks": "none"}
        }
        if count > 1:
            body["server"].update(min_count=count, max_count=count)
        answer = await self.http.post(
            f"{self.base}/compute/v2.1/servers",
            json=body,
            headers={"X-Auth-Token": self.token, "OpenStack-API-Version": "compute 2.61"},
        )
        if answer.status_code != 202:
            raise RuntimeError(f"POST /servers: {answer.status_code} {answer.text}")


async def settled(cloud: ProcessCloud, prefix: str) -> tuple[int, int]:
    """(servers named ``prefix``*, of them ACTIVE or ERROR)."""
    assert cloud.db is not None
    named = instances.c.display_name.like(f"{prefix}%")
    async with cloud.db.reader() as conn:
        total = (await conn.execute(select(func.count()).where(named))).scalar_one()
        done = (
            await conn.execute(
                select(func.count()).where(named, instances.c.vm_state.in_(["active", "error"]))
            )
        ).scalar_one()
    return int(total), int(done)


async def boot(
    cloud: ProcessCloud,
    client: Client,
    image: str,
    label: str,
    servers: int,
    *,
    per_post: int,
    in_flight: int,
) -> float:
    """Seconds from the first POST to the last of ``servers`` servers settled."""
    posts = [per_post] * (servers // per_post)
    gate = asyncio.Semaphore(in_flight)

    async def post(i: int, count: int) -> None:
        async with gate:
            await client.create(f"{label}-{i}", image, count)

    start = time.monotonic()
    await asyncio.gather(*(post(i, c) for i, c in enumerate(posts)))
    while True:
        total, done = await settled(cloud, f"{label}-")
        if total >= servers and done >= servers:
            return time.monotonic() - start
        await asyncio.sleep(0.05)


async def errors(cloud: ProcessCloud) -> int:
    assert cloud.db is not None
    async with cloud.db.reader() as conn:
        query = select(func.count()).where(instances.c.vm_state == "error")
        return int((await conn.execute(query)).scalar_one())


async def wait_fleet(cloud: ProcessCloud, timeout: float = 180.0) -> None:
    assert cloud.db is not None
    deadline = time.monotonic() + timeout
    while True:
        async with cloud.db.reader() as conn:
            query = select(func.count()).where(compute_nodes.c.deleted == 0)
            nodes = int((await conn.execute(query)).scalar_one())
        if nodes >= len(cloud.fleet_hosts):
            return
        if time.monotonic() > deadline or any(p.returncode is not None for p in cloud.procs):
            raise RuntimeError(f"{nodes} of {len(cloud.fleet_hosts)} nodes\n{cloud.describe()}")
        await asyncio.sleep(0.5)


class Profiler:
    """py-spy sampling every service process over one run (``--profile``)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.spies: list[tuple[str, Path, asyncio.subprocess.Process]] = []

    async def start(self, label: str, procs: Mapping[str, Sequence[Proc | Child]]) -> None:
        spy = shutil.which("py-spy")
        if spy is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        for name, ps in procs.items():
            for i, proc in enumerate(ps):
                path = self.out / f"{label}-{name}-{i}.txt"
                child = await asyncio.create_subprocess_exec(
                    spy, "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "200",
                    "--nonblocking", "--output", str(path),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                self.spies.append((name, path, child))
        # py-spy needs a moment to attach before the run starts.
        await asyncio.sleep(1.0)

    async def stop(self) -> dict[str, list[Path]]:
        files: dict[str, list[Path]] = collections.defaultdict(list)
        for name, path, child in self.spies:
            # SIGINT makes py-spy write what it sampled and exit; one whose
            # process has exited (a saves caller) has written it and gone.
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGINT)
            await child.wait()
            files[name].append(path)
        self.spies = []
        return files


def summarise(files: list[Path], top: int = 8) -> str:
    """The heaviest frames of one service: own samples, and cumulative in nubes code."""
    own: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            # Frames look like "function (path/to/file.py:line)"; the leaf is the last.
            own[frames[-1].split(" (")[0] + " " + _where(frames[-1])] += n
            for frame in set(frames):
                if "nubes/" in frame:
                    ours[frame.split(" (")[0] + " " + _where(frame)] += n
    if not total:
        return "    no samples"
    lines = [f"    {total} samples; own time:"]
    lines += [f"      {100 * n / total:5.1f}% {f}" for f, n in own.most_common(top)]
    lines.append("    cumulative in nubes code:")
    lines += [f"      {100 * n / total:5.1f}% {f}" for f, n in ours.most_common(top)]
    return "\n".join(lines)


def _where(frame: str) -> str:
    inside = frame.rpartition("(")[2].rstrip(")")
    path, _, _line = inside.rpartition(":")
    parts = path.split("/")
    return "/".join(parts[-2:]) if parts else inside


def report(run: Run, procs: dict[str, list[Proc]], cores: int) -> None:
    def ms(seconds: float) -> float:
        return 1000 * seconds / run.servers

    parts = [
        f"{name} {ms(cpu):.1f} (sys {ms(run.system.get(name, 0.0)):.1f})"
        for name, cpu in run.cpu.items()
    ]
    servers = [f"{name} {ms(cpu):.1f}" for name, cpu in run.servers_cpu.items()]
    total = sum(run.cpu.values()) + sum(run.servers_cpu.values())
    print(
        f"{run.shape:<26} {run.way:<8} {run.servers:>5} servers {run.rate:7.1f} servers/s  "
        f"CPU ms/server: {', '.join(parts)}; {verdict(run, procs)}",
        flush=True,
    )
    # What the machine could do if this run had it to itself: the load of
    # other work on a shared machine changes servers/s, hardly CPU per server.
    print(
        f"    servers' CPU ms/server: {', '.join(servers)} (the broker's includes whatever "
        f"else uses it); all of it {ms(total):.1f} ms/server, so at most "
        f"{cores * run.servers / total if total else 0.0:.0f} servers/s on {cores} cores",
        flush=True,
    )


def verdict(run: Run, procs: Mapping[str, Sequence[object]]) -> str:
    """The bottleneck: the busiest service if it keeps its processes' cores busy,
    else waiting (no process of ours is CPU-bound)."""
    name, busy = run.bottleneck()
    count = len(procs.get(name, [])) or 1
    per_process = busy / count
    where = f"{name} at {busy:.2f} cores in {count} process{'es' if count > 1 else ''}"
    if per_process >= SATURATED:
        return f"bottleneck: {name} (CPU-bound, {where})"
    total = run.machine_busy + run.machine_idle
    idle = run.machine_idle / total if total else 1.0
    if idle < MACHINE_IDLE:
        ours = sum(run.cpu.values()) / run.machine_busy if run.machine_busy else 0.0
        return (
            f"bottleneck: the machine's CPU (idle {100 * idle:.0f}%; this run's processes "
            f"used {100 * ours:.0f}% of its busy time, other work the rest; busiest {where})"
        )
    return (
        f"bottleneck: waiting, no process CPU-bound and the machine {100 * idle:.0f}% idle "
        f"(busiest {where}): the broker or the database"
    )


#: The caller processes' program (bench/host_saves.py) and its lines.
HOST_SAVES = Path(__file__).resolve().with_name("host_saves.py")


@dataclass
class Callers:
    """Caller processes of the saves, each logged in as some of the fleet's hosts."""

    children: list[asyncio.subprocess.Process]

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    @classmethod
    async def start(
        cls, cloud: ProcessCloud, processes: int, in_flight: int, workdir: Path
    ) -> tuple[Callers, int]:
        """``processes`` callers sharing the fleet's hosts and ``in_flight``
        saves at a time; returns once each has warmed up, with how many
        instances they save."""
        hosts = cloud.fleet_hosts
        # The URL each host logs in with, with ``{identity}`` left to fill in.
        template = cloud.url_for("{identity}")
        children = []
        for i in range(processes):
            mine = hosts[i::processes]
            share = in_flight // processes + (i < in_flight % processes)
            children.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(HOST_SAVES),
                    template,
                    str(share),
                    *mine,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=(workdir / f"callers-{i}.log").open("ab"),
                    env=cloud.environ(),
                )
            )
        callers = cls(children)
        ready = [await callers._line(c, "ready", 180) for c in children]
        return callers, sum(int(words[0]) for words in ready)

    @staticmethod
    async def _line(child: asyncio.subprocess.Process, word: str, timeout: float) -> list[str]:
        assert child.stdout is not None
        line = (await asyncio.wait_for(child.stdout.readline(), timeout)).decode()
        said, *rest = line.split() or [""]
        if said != word:
            raise RuntimeError(f"a saves caller said {line!r} (see callers-*.log), not {word!r}")
        return rest

    async def run(self, seconds: float) -> tuple[int, float, float]:
        """(saves done, seconds from go to the last reply, the callers' CPU seconds)."""
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(f"go {seconds}\n".encode())
            await child.stdin.drain()
        said = [await self._line(c, "done", seconds + 120) for c in self.children]
        for child in self.children:
            await child.wait()
        return (
            sum(int(w[0]) for w in said),
            max(float(w[1]) for w in said),
            sum(float(w[2]) for w in said),
        )

    def kill(self) -> None:
        for child in self.children:
            if child.returncode is None:
                child.kill()


async def instance_updates(cloud: ProcessCloud) -> tuple[int, int, int]:
    """(row updates of ``instances``, of them HOT: written in place, sessions
    the database has had) so far, as PostgreSQL's statistics have them (a
    backend reports within a second or so)."""
    assert cloud.db is not None
    query = text(
        "SELECT n_tup_upd, n_tup_hot_upd, (SELECT sessions FROM pg_stat_database "
        "WHERE datname = current_database()) FROM pg_stat_user_tables WHERE relname = 'instances'"
    )
    async with cloud.db.reader() as conn:
        updated, hot, sessions = (await conn.execute(query)).one()
    return int(updated), int(hot), int(sessions)


#: Seconds the saves' groups are watched with the callers ready and idle.
SAVES_IDLE_SECONDS = 4.0


async def idle_cpu(
    cloud: ProcessCloud, procs: dict[str, list[Proc]], broker: list[int], seconds: float
) -> dict[str, float]:
    """Each group's CPU seconds per second with no saves running: what comes
    with time (the task engines' and the scheduler's polls, heartbeats), not
    with saves."""
    before = {n: sum(cpu_seconds(p.pid) for p in ps) for n, ps in procs.items()}
    backends0 = {pid: cpu_seconds(pid) for pid in await backend_pids(cloud)}
    broker0 = {pid: cpu_seconds(pid) for pid in broker}
    await asyncio.sleep(seconds)
    rates = {
        n: (sum(cpu_seconds(p.pid) for p in ps) - before[n]) / seconds for n, ps in procs.items()
    }
    rates["postgres"] = cpu_since(backends0, await backend_pids(cloud)) / seconds
    rates["rabbitmq"] = cpu_since(broker0, broker) / seconds
    return rates


async def host_saves(
    cloud: ProcessCloud,
    shape: str,
    procs: dict[str, list[Proc]],
    broker: list[int],
    args: argparse.Namespace,
    workdir: Path,
    metrics_ports: dict[str, list[int]],
    profiler: Profiler | None,
) -> Run:
    """The fleet's hosts saving their instances through the conductors, from
    ``args.save_callers`` processes of their own: saves/s and each group's CPU."""
    assert cloud.db is not None
    # The statistics a deployed cloud's autovacuum keeps: the run's database
    # is minutes old, on a server shared with other work's databases, and
    # autovacuum may not have visited it. Without statistics PostgreSQL's
    # cached generic plan of a save finds the row through an index on
    # ``deleted`` and filters the whole table (measured: 74 against 24 us of
    # the server's CPU per save on 400 instances), so saves/s would shrink
    # with the instances booted before.
    async with cloud.db.writer() as conn:
        await conn.execute(text("ANALYZE"))
    callers, instances_saved = await Callers.start(
        cloud, args.save_callers, args.saves_in_flight, workdir
    )
    try:
        idle = await idle_cpu(cloud, procs, broker, SAVES_IDLE_SECONDS)
        if profiler is not None:
            await profiler.start(
                f"saves-{len(procs['conductor'])}", {**procs, "callers": callers.children}
            )
        counted = await asyncio.to_thread(scrape_all, metrics_ports)
        before = {n: sum(cpu_seconds(p.pid) for p in ps) for n, ps in procs.items()}
        system0 = {n: sum(cpu_times(p.pid)[1] for p in ps) for n, ps in procs.items()}
        kinds = await backend_kinds(cloud)
        backends0 = {pid: cpu_seconds(pid) for pid in kinds}
        broker0 = {pid: cpu_seconds(pid) for pid in broker}
        busy0, idle0 = machine_cpu()
        updates0 = await instance_updates(cloud)
        saves, seconds, callers_cpu = await callers.run(args.saves_seconds)
        busy1, idle1 = machine_cpu()
        cpu = {n: sum(cpu_seconds(p.pid) for p in ps) - before[n] for n, ps in procs.items()}
        system = {n: sum(cpu_times(p.pid)[1] for p in ps) - system0[n] for n, ps in procs.items()}
        # Their own process_time (user + system): they have exited by now.
        cpu["callers"] = callers_cpu
        kinds.update(await backend_kinds(cloud))
        by_kind: dict[str, float] = collections.defaultdict(float)
        for pid, kind in kinds.items():
            by_kind[kind] += cpu_since(backends0, [pid])
        servers_cpu = {"postgres": sum(by_kind.values()), "rabbitmq": cpu_since(broker0, broker)}
        after = await asyncio.to_thread(scrape_all, metrics_ports)
        # The backends' last counts reach the statistics within a second or so.
        await asyncio.sleep(1.5)
        updates1 = await instance_updates(cloud)
        profiles = await profiler.stop() if profiler is not None else {}
    finally:
        callers.kill()
    run = Run(
        shape, "saves", saves, seconds, cpu, busy1 - busy0, idle1 - idle0, system, servers_cpu
    )
    print(
        f"  {shape}: saves of {instances_saved} instances by {len(cloud.fleet_hosts)} hosts "
        f"in {args.save_callers} caller processes, one save in flight each",
        flush=True,
    )
    report_saves(run, {**procs, "callers": callers.children}, idle)
    updated, hot, sessions = (b - a for a, b in zip(updates0, updates1, strict=True))
    grouped = difference(after["conductor"], counted["conductor"])
    commits = grouped.get(("grouped", "commits"), 0.0)
    print(
        f"    PostgreSQL: {updated} updates of instances, {100 * hot / max(1, updated):.0f}% "
        f"of them HOT (written in place); the conductors' group commits: {commits:.0f} "
        f"transactions, {grouped.get(('grouped', 'writes'), 0.0) / max(1.0, commits):.1f} "
        f"writes each; {sessions} new database sessions; its CPU ms per 1,000 saves by "
        "kind of process: "
        + ", ".join(f"{k} {1e6 * v / max(1, saves):.0f}" for k, v in sorted(by_kind.items())),
        flush=True,
    )
    # Per 1,000 saves (the idle traffic over these seconds is a rounding error here).
    print("    per 1,000 saves:", flush=True)
    report_counts({n: difference(after[n], counted[n]) for n in after}, max(1, saves) / 1000)
    for name, files in profiles.items():
        print(f"  {name}:\n{summarise(files)}", flush=True)
    return run


def report_saves(
    run: Run, procs: Mapping[str, Sequence[object]], idle: Mapping[str, float]
) -> None:
    """Saves/s, CPU ms per 1,000 saves of every group, the bottleneck, and the
    ceiling the measured costs put on two conductors against one; then the
    same less what each group spends idle (``idle``: CPU seconds per second)."""

    def per_k(seconds: float) -> float:
        return 1e6 * seconds / run.servers if run.servers else 0.0

    groups = {**run.cpu, **run.servers_cpu}
    report_ceiling(run, groups, per_k, procs)
    net = {n: max(0.0, cpu - idle.get(n, 0.0) * run.seconds) for n, cpu in groups.items()}
    shown = ", ".join(f"{n} {1000 * rate:.0f}" for n, rate in idle.items() if rate >= 0.0005)
    print(f"    idle, CPU ms per second: {shown}; less that:", flush=True)
    net_k = per_k(net.get("conductor", 0.0))
    net_o = sum(per_k(cpu) for name, cpu in net.items() if name != "conductor")
    parts = ", ".join(f"{name} {per_k(cpu):.0f}" for name, cpu in net.items())
    print(f"    CPU ms per 1,000 saves: {parts}", flush=True)
    if net_k:
        print(
            f"    conductor k = {net_k:.0f} ms, everything else o = {net_o:.0f} ms per 1,000 "
            f"saves (o/k {net_o / net_k:.2f}): at most {2 * net_k / (net_k + net_o):.2f}x",
            flush=True,
        )


def report_ceiling(
    run: Run,
    groups: Mapping[str, float],
    per_k: Callable[[float], float],
    procs: Mapping[str, Sequence[object]],
) -> None:
    """The saves' line: saves/s, each group's CPU, the verdict, and k, o and the ceiling."""
    parts = ", ".join(f"{name} {per_k(cpu):.0f}" for name, cpu in groups.items())
    print(
        f"{run.shape:<26} {run.way:<8} {run.servers:>6} saves {run.rate:7.0f} saves/s  "
        f"CPU ms per 1,000 saves: {parts}; {verdict(run, procs)}",
        flush=True,
    )
    k = per_k(run.cpu.get("conductor", 0.0))
    o = sum(per_k(cpu) for name, cpu in groups.items() if name != "conductor")
    if k:
        # One conductor gives at most 1/k (its one core), two at most
        # cores/(k+o) (the machine's CPU); a run whose lone conductor did not
        # keep its core busy measures below 1/k, so its ratio can pass this.
        print(
            f"    conductor k = {k:.0f} ms, everything else o = {o:.0f} ms per 1,000 saves "
            f"(o/k {o / k:.2f}; 1.4x needs <= 0.43): one conductor gives at most "
            f"{1e6 / k:.0f} saves/s (one core), two at most {2e6 / (k + o):.0f} on 2 cores, "
            f"{2 * k / (k + o):.2f}x one",
            flush=True,
        )


async def main(args: argparse.Namespace) -> int:
    for server in ("rabbit", "postgres"):
        if not reachable(server):
            print(f"{server} is not reachable", file=sys.stderr)
            return 2
    work = Path(args.workdir or f"/tmp/nubes-scale-{os.getpid()}")
    state = work / "state"
    state.mkdir(parents=True, exist_ok=True)
    per_fleet = args.hosts // args.fleets
    cloud = ProcessCloud(
        RABBIT_URL,
        POSTGRES_URL,
        work,
        hosts=0,
        fleets=args.fleets,
        fleet_size=per_fleet,
        extra_schedulers=("b",),
        options={
            # Liveness as deployed (a beat every 10 s), not the tests' every second.
            "DEFAULT": {
                "state_path": str(state),
                "report_interval": 10,
                "service_down_time": 60,
                "rpc_response_timeout": 60,
            },
            "quota": {"instances": -1, "cores": -1, "ram": -1},
            # The PostgreSQL server is shared (max_connections 100 here): the
            # default pools (10 + 20 overflow) of five processes could take
            # every connection and fail builds with "too many clients".
            "database": {"max_pool_size": 6, "max_overflow": 4},
            # As deployed: the crash tests' 20 s step timeout would reschedule
            # builds that a loaded fleet reports late.
            "conductor": {
                "build_deadline": 600,
                "task_lease_seconds": 30,
                "compute_step_timeout": 600,
            },
            "scheduler": {"host_subset_size": 4},
        },
    )
    port = free_port()
    metrics_ports: dict[str, list[int]] = collections.defaultdict(list)

    def metrics_at(service: str) -> dict[str, dict[str, Any]]:
        # A port of its own, free now: one computed from our pid fell in the
        # ephemeral range, where a connection of anyone's could hold it.
        chosen = free_port()
        metrics_ports[service].append(chosen)
        return {"metrics": {"port": chosen}}

    procs: dict[str, list[Proc]] = {}
    runs: list[Run] = []
    saves: list[Run] = []
    broker = broker_pids()
    cores = os.cpu_count() or 1
    bench_name = "bench client"
    profiler = Profiler(Path(args.profile)) if args.profile else None
    try:
        await cloud.setup(conductors=("a", "b"))
        env = cloud.environ()
        seed = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SEED_SCRIPT, str(cloud.api_config(port)), str(state), env=env
        )
        assert await seed.wait() == 0, "seeding the cloud failed"
        procs["api"] = [await cloud.start_api(port, options=metrics_at("api"))]
        procs["conductor"] = [await cloud.start_conductor("a", options=metrics_at("conductor"))]
        procs["scheduler"] = [await cloud.start_scheduler(options=metrics_at("scheduler"))]
        await cloud.wait_serving([*procs["conductor"], *procs["scheduler"]])
        procs["compute"] = [
            await cloud.start_fleet(j, options=metrics_at("compute")) for j in range(args.fleets)
        ]
        await wait_fleet(cloud)
        await procs["api"][0].wait_log("API listening on", timeout=60)
        client = Client(f"http://127.0.0.1:{port}", state / "clouds.yaml")
        await client.login()
        image = await client.image()
        await boot(cloud, client, image, "warm", 20, per_post=1, in_flight=8)
        print(
            f"{len(cloud.fleet_hosts)} fake hosts in {args.fleets} compute processes; "
            f"{args.servers} servers per run; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        shapes = [("1 conductor, 1 scheduler", None), ("2 conductors, 1 scheduler", "conductor")]
        shapes.append(("2 conductors, 2 schedulers", "scheduler"))
        for shape, grow in shapes:
            if grow == "conductor":
                procs["conductor"].append(
                    await cloud.start_conductor("b", options=metrics_at("conductor"))
                )
                await cloud.wait_serving(procs["conductor"][-1:])
            elif grow == "scheduler":
                procs["scheduler"].append(
                    await cloud.start_scheduler("b", options=metrics_at("scheduler"))
                )
                await cloud.wait_serving(procs["scheduler"][-1:])
            idle = await idle_rates(metrics_ports, IDLE_SECONDS)
            quiet = ", ".join(
                f"{n} {sum(v for k, v in c.items() if k[0] == 'rpc' and k[1] == 'received'):.1f}"
                for n, c in idle.items()
            )
            print(
                f"  {shape}, idle for {IDLE_SECONDS:.0f} s: RPC messages received per second "
                f"{quiet}; the counts below are less these (times each run's seconds)",
                flush=True,
            )
            for way, per_post, in_flight in (
                ("singles", 1, args.clients),
                ("batches", args.batch, BATCHES_IN_FLIGHT),
            ):
                label = f"{len(runs)}{way}"
                if profiler is not None:
                    await profiler.start(label, procs)
                counted = await asyncio.to_thread(scrape_all, metrics_ports)
                before = {n: sum(cpu_seconds(p.pid) for p in ps) for n, ps in procs.items()}
                system0 = {n: sum(cpu_times(p.pid)[1] for p in ps) for n, ps in procs.items()}
                backends0 = {pid: cpu_seconds(pid) for pid in await backend_pids(cloud)}
                broker0 = {pid: cpu_seconds(pid) for pid in broker}
                mine = time.process_time()
                busy0, idle0 = machine_cpu()
                seconds = await boot(
                    cloud,
                    client,
                    image,
                    label,
                    args.servers,
                    per_post=per_post,
                    in_flight=in_flight,
                )
                cpu = {
                    n: sum(cpu_seconds(p.pid) for p in ps) - before[n] for n, ps in procs.items()
                }
                cpu[bench_name] = time.process_time() - mine
                system = {
                    n: sum(cpu_times(p.pid)[1] for p in ps) - system0[n] for n, ps in procs.items()
                }
                busy1, idle1 = machine_cpu()
                servers_cpu = {
                    "postgres": cpu_since(backends0, await backend_pids(cloud)),
                    "rabbitmq": cpu_since(broker0, broker),
                }
                run = Run(
                    shape, way, args.servers, seconds, cpu, busy1 - busy0, idle1 - idle0,
                    system, servers_cpu,
                )  # fmt: skip
                runs.append(run)
                after = await asyncio.to_thread(scrape_all, metrics_ports)
                report(run, procs, cores)
                report_counts(
                    {n: difference(after[n], counted[n], idle.get(n), seconds) for n in after},
                    args.servers,
                )
                if profiler is not None:
                    for name, files in (await profiler.stop()).items():
                        print(f"  {name}:\n{summarise(files)}", flush=True)
            if grow != "scheduler" and args.saves_seconds > 0:
                saves.append(
                    await host_saves(
                        cloud, shape, procs, broker, args, work, metrics_ports, profiler
                    )
                )
        failed = await errors(cloud)
        await client.http.aclose()
    except BaseException:
        print(cloud.describe(30), file=sys.stderr)
        raise
    finally:
        await cloud.cleanup()

    def best(shape: str) -> float:
        return max(r.rate for r in runs if r.shape == shape)

    one = best(shapes[0][0])
    two = max(best(shapes[1][0]), best(shapes[2][0]))
    print(f"servers in ERROR: {failed}; load average now {os.getloadavg()[0]:.1f}")
    first = [verdict(r, {"conductor": procs["conductor"][:1]}) for r in runs[:2]]
    print(f"one conductor: {one:.1f} servers/s ({'; '.join(first)})")
    print(
        f"from one conductor to two: {two / one:.2f}x (target >= 1.4x when the conductor "
        f"is the bottleneck; >= 150 servers/s)"
    )
    if len(saves) == 2:
        print(
            f"conductor-routed saves: one conductor {saves[0].rate:.0f}/s "
            f"({verdict(saves[0], {'conductor': procs['conductor'][:1]})}), two "
            f"{saves[1].rate:.0f}/s: {saves[1].rate / saves[0].rate:.2f}x (target >= 1.4x)"
        )
    print(f"two conductors: {two:.1f} servers/s")
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=400, help="servers per run")
    parser.add_argument("--hosts", type=int, default=200, help="fake compute hosts")
    parser.add_argument("--fleets", type=int, default=2, help="compute processes they run in")
    parser.add_argument("--clients", type=int, default=32, help="single POSTs at a time")
    parser.add_argument("--batch", type=int, default=50, help="servers per batched POST")
    parser.add_argument("--workdir", help="where config files and logs go")
    parser.add_argument("--profile", help="sample every service with py-spy; stacks go here")
    parser.add_argument(
        "--saves-seconds",
        type=float,
        default=15.0,
        help="seconds of host saves after the boots of each conductor count (0: none)",
    )
    parser.add_argument(
        "--save-callers", type=int, default=2, help="processes the hosts' saves come from"
    )
    parser.add_argument(
        "--saves-in-flight", type=int, default=128, help="host saves at a time, all callers"
    )
    parser.add_argument("--quick", action="store_true", help="100 servers per run, 40 hosts")
    args = parser.parse_args(argv)
    if args.quick:
        args.servers, args.hosts = 100, 40
        args.saves_seconds = min(args.saves_seconds, 8.0)
    if args.servers % args.batch:
        parser.error("--servers must be a multiple of --batch")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
