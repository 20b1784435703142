"""Driving the unmodified openstack CLI and openstacksdk against a real all-in-one.

:class:`Cloud` starts ``nubes all-in-one`` as its own process on a free
port and runs ``openstack`` against the clouds.yaml it writes; the ``cloud``
fixture (conftest.py) gives each test a new one.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Seconds all-in-one gets to print "Ready." More than its own readiness ping
#: (nubes.cmd.main.READY_TIMEOUT): on a loaded machine a start takes a while.
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free ports (a fleet's metadata proxies
    listen on the port plus the host's index). Free now, not reserved: a start
    that loses one to another test's bind retries (:meth:`Cloud.start_retrying`)."""
    while True:
        base = free_port()
        socks = []
        try:
            for offset in range(count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()


#: What all-in-one prints when a port picked free was taken before it bound it.
ADDRESS_IN_USE = "address already in use"


class Cloud:
    def __init__(
        self,
        state_dir: Path,
        port: int,
        *,
        options: tuple[str, ...] = (),
        config_files: tuple[Path, ...] = (),
    ) -> None:
        self.state_dir = state_dir
        self.port = port
        #: More all-in-one options (``--virt libvirt``), and config files layered on its own.
        self.options = options
        self.config_files = config_files
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self) -> float:
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nubes.cmd.main",
                *(a for f in self.config_files for a in ("--config-file", str(f))),
                "all-in-one",
                "--state-dir",
                str(self.state_dir),
                "--port",
                str(self.port),
                # Side by side with other clouds: the console proxy on any free port.
                "--console-port",
                "0",
                *self.options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = started + START_TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("Ready."):
                return time.monotonic() - started
        self.stop()
        raise AssertionError("all-in-one did not become ready:\n" + "".join(self.output))

    def start_retrying(self, reconfigure: Any, attempts: int = 3) -> float:
        """:meth:`start`, again after ``reconfigure()`` (new ports) when a port
        picked free was bound by another test in between: xdist workers start
        clouds side by side."""
        for attempt in range(attempts):
            try:
                return self.start()
            except AssertionError:
                if attempt == attempts - 1 or ADDRESS_IN_USE not in "".join(self.output):
                    raise
                self.output.clear()
                reconfigure()
        raise AssertionError("unreachable")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.output.append(out or "")
        return self.proc.returncode

    def openstack(
        self, cloud: str, *args: str, check: bool = True, path: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``openstack --os-cloud cloud args``; ``path``: a directory searched first
        for the programs the CLI runs (``server ssh`` runs ``ssh``)."""
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(self.state_dir / "clouds.yaml")}
        if path is not None:
            env["PATH"] = f"{path}{os.pathsep}{env.get('PATH', '')}"
        for key in list(env):
            if key.startswith("OS_") and key != "OS_CLIENT_CONFIG_FILE":
                del env[key]
        result = subprocess.run(
            ["openstack", "--os-cloud", cloud, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if check:
            assert result.returncode == 0, f"openstack {' '.join(args)}:\n{result.stderr}"
        return result

    def json(self, cloud: str, *args: str) -> Any:
        return json.loads(self.openstack(cloud, *args, "-f", "json").stdout)


def parallel(*calls: Any) -> list[Any]:
    """Run the callables side by side (each is a chain of CLI commands); their results."""
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


def connect_sdk(cloud: Cloud, name: str) -> Any:
    import openstack.config
    import openstack.connection

    config = openstack.config.OpenStackConfig(
        config_files=[str(cloud.state_dir / "clouds.yaml")], load_envvars=False
    )
    return openstack.connection.Connection(config=config.get_one(cloud=name))


def wait_status(conn: Any, server_id: str, status: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        server = conn.compute.get_server(server_id)
        if server.status == status and server.task_state is None:
            return server
        assert time.monotonic() < deadline, (server.status, server.task_state)
        time.sleep(0.2)
