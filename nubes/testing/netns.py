"""Compute hosts that are hosts: each in its own network namespace, on a private subnet.

The design promises that a compute host reaches the broker, the image API
and the other hosts' migration ports, and never the database. This harness
makes that a fact of the network rather than of configuration:

- one **bridge** in the root namespace (where the controllers run) holding
  the gateway address ``10.213.N.1/24`` of a subnet chosen free per harness
  (several harnesses, of several test runs, coexist);
- per host a **network namespace** ``nubes-<run>-<i>`` whose ``eth0`` (one
  end of a veth pair, the other end on the bridge) has ``10.213.N.<10+i>``
  and a default route through the gateway: hosts reach each other over the
  bridge, and the root namespace at the gateway address;
- the machine's services listen on 127.0.0.1, which a namespace cannot
  reach (its loopback is its own). :meth:`HostNetwork.forward` exposes one
  of them on the gateway address through a small forwarder process
  (nubes.testing.tcpforward) instead of changing how a shared service
  listens. Only what is forwarded is reachable: forward the broker and the
  image API, never the database.

Usage::

    with HostNetwork(tmp_path, hosts=2) as net:
        broker = net.forward(5672)              # ("10.213.N.1", 5672)
        host = net.hosts[0]
        host.address                            # "10.213.N.10"
        host.run(["ip", "-br", "addr"])         # a command in its namespace
        lv = host.start_libvirtd()              # its own libvirtd (uri, tcp_uri)
        proc = host.popen([...])                # stopped at teardown
    # everything started is stopped by PID, namespaces and links deleted

:meth:`HostNetwork.teardown` (also on failure, through the context manager)
stops every process it started by PID, kills what is left inside its
namespaces (guests' QEMUs), and deletes namespaces and bridge. Everything
needs root, ``ip`` (iproute2) and ``unshare``; :func:`missing` says why not.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nubes.testing.libvirtd import PrivateLibvirtd

#: The private range subnets are chosen from (one /24 per harness).
SUPERNET = ipaddress.IPv4Network("10.213.0.0/16")
#: Host i gets .(FIRST_HOST + i) of the subnet; the gateway is .1.
FIRST_HOST = 10
_STOP_TIMEOUT = 10.0


def missing() -> str | None:
    """Why namespaced hosts cannot run here (None: they can)."""
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _used_subnets() -> set[ipaddress.IPv4Network]:
    out = _ip("-4", "-o", "addr", "show").stdout
    used = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            iface = ipaddress.IPv4Interface(parts[parts.index("inet") + 1])
            used.add(ipaddress.IPv4Network(f"{iface.ip}/24", strict=False))
    return used


def _stop(process: subprocess.Popen[Any], timeout: float = _STOP_TIMEOUT) -> None:
    """SIGTERM the process's session (it was started in one of its own), then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class NetnsHost:
    """One compute host: a network namespace, its address, what runs in it."""

    index: int
    netns: str
    address: str
    gateway: str
    workdir: Path
    #: The root-namespace end of its veth pair (on the bridge).
    veth: str
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    libvirtd: PrivateLibvirtd | None = None

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside this host's namespace (``ip netns exec`` execs it:
        the PID of the process is the command's own)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to its end in this host's namespace; its output as text."""
        return subprocess.run(
            self.wrap(argv), check=check, capture_output=True, text=True, timeout=timeout
        )

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running command in this host's namespace, in a session of
        its own; :meth:`HostNetwork.teardown` stops it by PID."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process: subprocess.Popen[Any] = subprocess.Popen(
            self.wrap(argv), start_new_session=True, **kwargs
        )
        self.processes.append(process)
        return process

    def start_libvirtd(self) -> PrivateLibvirtd:
        """This host's own libvirtd (own host_uuid, state dirs and socket), in its
        namespace, taking migrations on :attr:`address` (``tcp_uri``)."""
        base = Path(f"/tmp/nubes-lv-{self.netns.removeprefix('nubes-')}")
        daemon = PrivateLibvirtd(base, netns=self.netns, listen_address=self.address)
        self.libvirtd = daemon
        daemon.start()
        return daemon

    def compute_options(self, image_api_endpoint: str | None = None) -> dict[str, dict[str, Any]]:
        """Config sections of a ``nubes compute`` on this host with the libvirt
        driver on its libvirtd (:meth:`start_libvirtd` first): for
        ProcessCloud.start_compute(options=..., wrap=host.wrap(()), broker=...)."""
        assert self.libvirtd is not None, "start_libvirtd() first"
        libvirt: dict[str, Any] = {
            "connection_uri": self.libvirtd.uri,
            "virt_type": "qemu",
            "instances_path": self.workdir / "instances",
        }
        if image_api_endpoint is not None:
            libvirt["image_api_endpoint"] = image_api_endpoint
        return {
            "DEFAULT": {
                "compute_driver": "libvirt",
                "state_path": self.workdir,
            },
            "libvirt": libvirt,
        }

    def can_connect(self, host: str, port: int, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from this namespace to ``host:port`` opens."""
        code = (
            "import socket,sys\n"
            "try:\n"
            f"    socket.create_connection(({host!r}, {port}), timeout={timeout}).close()\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        return self.run([sys.executable, "-c", code], check=False).returncode == 0

    def pids(self) -> list[int]:
        """Every process in this host's namespace (ours: the namespace is)."""
        out = _ip("netns", "pids", self.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        """Stop what this host runs: its processes, its libvirtd (guests first),
        then anything left in the namespace (guests' QEMUs outlive libvirtd)."""
        for process in reversed(self.processes):
            _stop(process)
        self.processes.clear()
        if self.libvirtd is not None:
            self.libvirtd.cleanup()
            self.libvirtd = None
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class HostNetwork:
    """A bridge in the root namespace, ``hosts`` namespaced hosts on it, forwarders."""

    def __init__(self, workdir: Path, hosts: int = 2, *, run: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.run = run or uuid.uuid4().hex[:6]
        self.count = hosts
        # Not the data plane's bridge prefix (nbr-): a compute host's network
        # agent in the root namespace (an all-in-one test) must not take it
        # for one of its own.
        self.bridge = f"nth-{self.run}"
        self.subnet: ipaddress.IPv4Network | None = None
        self.hosts: list[NetnsHost] = []
        self.forwarders: list[subprocess.Popen[str]] = []
        self._bridge_made = False

    @property
    def gateway(self) -> str:
        """The root namespace's address on the hosts' subnet (controllers are here)."""
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    # -- setup ----------------------------------------------------------------------

    def _choose_subnet(self) -> ipaddress.IPv4Network:
        used = _used_subnets()
        free = [s for s in SUPERNET.subnets(new_prefix=24) if s not in used]
        return random.choice(free)

    def create(self) -> list[NetnsHost]:
        """Make the bridge and the hosts; on failure, undo what was made."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.subnet = self._choose_subnet()
            _ip("link", "add", self.bridge, "type", "bridge")
            self._bridge_made = True
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(self.count):
                self.hosts.append(self._make_host(i))
        except BaseException:
            self.teardown()
            raise
        return self.hosts

    def _make_host(self, i: int) -> NetnsHost:
        assert self.subnet is not None
        netns = f"nubes-{self.run}-{i}"
        outer, inner = f"nv{self.run}{i}", f"nvi{self.run}{i}"
        address = str(self.subnet.network_address + FIRST_HOST + i)
        _ip("netns", "add", netns)
        host = NetnsHost(i, netns, address, self.gateway, self.workdir / netns, outer)
        host.workdir.mkdir(parents=True, exist_ok=True)
        self.hosts.append(host)  # from here on teardown removes it
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", netns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        for args in (
            ("link", "set", "lo", "up"),
            ("link", "set", inner, "name", "eth0"),
            ("addr", "add", f"{address}/24", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
            ("route", "add", "default", "via", self.gateway),
        ):
            _ip("-n", netns, *args)
        self.hosts.remove(host)
        return host

    def forward(self, port: int, target: tuple[str, int] | None = None) -> tuple[str, int]:
        """Make ``target`` (default 127.0.0.1:``port``) reachable from the hosts at
        ``(gateway, port)``, through a forwarder process; that address."""
        to_host, to_port = target or ("127.0.0.1", port)
        process = subprocess.Popen(
            [sys.executable, "-m", "nubes.testing.tcpforward",
             self.gateway, str(port), to_host, str(to_port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.forwarders.append(process)
        assert process.stdout is not None
        if process.stdout.readline().strip() != "listening":
            raise RuntimeError(f"forwarder to {to_host}:{to_port} did not start")
        return self.gateway, port

    def free_port(self) -> int:
        """A TCP port free on the gateway address (for a forwarder of a service
        whose own port may be taken there)."""
        with socket.socket() as s:
            s.bind((self.gateway, 0))
            return int(s.getsockname()[1])

    # -- teardown ---------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop everything by PID, delete the namespaces and the bridge. Idempotent."""
        errors: list[BaseException] = []
        for host in self.hosts:
            try:
                host.stop()
            except Exception as exc:  # keep tearing down the rest
                errors.append(exc)
        for process in self.forwarders:
            _stop(process)
            if process.stdout is not None:
                process.stdout.close()
        self.forwarders.clear()
        for host in self.hosts:
            # Deleting the namespace deletes its eth0 and so the veth's other end;
            # the link too, should setup have failed before moving it in.
            _ip("netns", "del", host.netns, check=False)
            _ip("link", "del", host.veth, check=False)
        self.hosts.clear()
        if self._bridge_made:
            _ip("link", "del", self.bridge, check=False)
            self._bridge_made = False
        if errors:
            raise errors[0]

    def __enter__(self) -> HostNetwork:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()
