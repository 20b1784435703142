"""The unmodified openstack CLI against a running ``nubes all-in-one`` (phase 1 subset).

Starts all-in-one as a subprocess on a free port with a fresh state dir and
drives it with python-openstackclient through the clouds.yaml it wrote;
then stops it with Ctrl-C and starts it again on the same state dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("openstack") is None,
        reason="python-openstackclient is not installed (pip install -e '.[test]')",
    ),
]

START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cloud:
    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = state_dir
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self) -> float:
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nubes.cmd.main",
                "all-in-one",
                "--state-dir",
                str(self.state_dir),
                "--port",
                str(self.port),
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
        self, cloud: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(self.state_dir / "clouds.yaml")}
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


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    c = Cloud(tmp_path / "state", _free_port())
    c.start()
    try:
        yield c
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.stop()


def test_openstack_cli_phase1(cloud: Cloud, tmp_path: Path) -> None:
    admin, demo = "nubes-admin", "nubes-demo"
    assert (cloud.state_dir / "nubes.conf").exists()

    # Flavors: the defaults, then create and delete one.
    names = {f["Name"] for f in cloud.json(admin, "flavor", "list")}
    assert {"m1.tiny", "m1.small"} <= names
    created = cloud.json(
        admin,
        "flavor",
        "create",
        "--ram",
        "256",
        "--disk",
        "1",
        "--vcpus",
        "1",
        "--property",
        "hw:cpu_policy=dedicated",
        "cli-flavor",
    )
    assert created["ram"] == 256
    cloud.openstack(
        admin, "flavor", "create", "--ram", "128", "--disk", "0", "--vcpus", "1", "doomed"
    )
    cloud.openstack(admin, "flavor", "delete", "doomed")
    names = {f["Name"] for f in cloud.json(admin, "flavor", "list")}
    assert "cli-flavor" in names and "doomed" not in names

    # Images: the bootstrap image, and one uploaded from a file.
    images = cloud.json(admin, "image", "list")
    assert [i["Status"] for i in images] == ["active"]
    data = tmp_path / "disk.raw"
    data.write_bytes(os.urandom(4096))
    cloud.openstack(
        admin,
        "image",
        "create",
        "--file",
        str(data),
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "cli-image",
    )
    shown = cloud.json(admin, "image", "show", "cli-image")
    assert shown["status"] == "active" and shown["size"] == 4096

    # Hypervisors and services.
    hypervisors = cloud.json(admin, "hypervisor", "list")
    assert sorted(h["Hypervisor Hostname"] for h in hypervisors) == ["fake-0", "fake-1"]
    cloud.openstack(
        admin,
        "compute",
        "service",
        "set",
        "--disable",
        "--disable-reason",
        "maint",
        "fake-0",
        "nubes-compute",
    )
    cloud.openstack(admin, "compute", "service", "set", "--down", "fake-1", "nubes-compute")
    services = {
        (s["Host"], s["Binary"]): s
        for s in cloud.json(admin, "compute", "service", "list", "--long")
    }
    assert services[("fake-0", "nubes-compute")]["Status"] == "disabled"
    assert services[("fake-0", "nubes-compute")]["Disabled Reason"] == "maint"
    assert services[("fake-1", "nubes-compute")]["State"] == "down"
    assert services[("fake-1", "nubes-compute")]["Forced Down"] is True

    # Aggregates with an availability zone and metadata.
    cloud.openstack(admin, "aggregate", "create", "--zone", "az1", "agg1")
    cloud.openstack(admin, "aggregate", "add", "host", "agg1", "fake-0")
    cloud.openstack(admin, "aggregate", "set", "--property", "filter_tenant_id=abc", "agg1")
    agg = cloud.json(admin, "aggregate", "show", "agg1")
    assert agg["hosts"] == ["fake-0"]
    assert agg["availability_zone"] == "az1"
    assert agg["properties"]["filter_tenant_id"] == "abc"

    # A member of another project sees no admin-only things.
    for args in (("hypervisor", "list"), ("compute", "service", "list"), ("aggregate", "list")):
        result = cloud.openstack(demo, *args, check=False)
        assert result.returncode != 0 and "403" in result.stderr, (args, result.stderr)
    assert "m1.tiny" in {f["Name"] for f in cloud.json(demo, "flavor", "list")}
    result = cloud.openstack(
        demo, "flavor", "create", "--ram", "1", "--disk", "1", "--vcpus", "1", "nope", check=False
    )
    assert result.returncode != 0 and "403" in result.stderr

    # Ctrl-C stops it cleanly; a second start keeps everything.
    assert cloud.stop() == 0
    cloud.start()
    assert "cli-flavor" in {f["Name"] for f in cloud.json(admin, "flavor", "list")}
    assert {i["Name"] for i in cloud.json(admin, "image", "list")} >= {"cli-image"}
    assert len({f["Name"] for f in cloud.json(admin, "flavor", "list")} & {"m1.tiny"}) == 1
