"""The unmodified openstack CLI against a running ``nubes all-in-one``.

Starts all-in-one as a subprocess on a free port with a fresh state dir and
drives it with python-openstackclient through the clouds.yaml it wrote;
phase 1 then stops it with Ctrl-C and starts it again on the same state dir.
The servers test runs independent commands side by side (each ``openstack``
costs seconds of interpreter start and password hashing) and polls with
openstacksdk in-process.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.functional.api.cli import Cloud, connect_sdk, parallel, wait_status

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("openstack") is None,
        reason="python-openstackclient is not installed (pip install -e '.[test]')",
    ),
]


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

    _demoted_admin_token_loses_admin(cloud)

    # Ctrl-C stops it cleanly; a second start keeps everything.
    assert cloud.stop() == 0
    cloud.start()
    assert "cli-flavor" in {f["Name"] for f in cloud.json(admin, "flavor", "list")}
    assert {i["Name"] for i in cloud.json(admin, "image", "list")} >= {"cli-image"}
    assert len({f["Name"] for f in cloud.json(admin, "flavor", "list")} & {"m1.tiny"}) == 1


def _demoted_admin_token_loses_admin(cloud: Cloud) -> None:
    """A token issued while its user was admin is no admin's once the role
    is removed with nubes-manage: the CLI, still holding it, is refused."""
    conf = str(cloud.state_dir / "nubes.conf")
    manage = [sys.executable, "-m", "nubes.cmd.manage", "--config-file", conf]
    password = "Eve-pw-123"
    create = ["user", "create", "eve", "--password", password, "--project", "admin"]
    result = subprocess.run(
        [*manage, *create, "--role", "admin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    path = cloud.state_dir / "clouds.yaml"
    data = yaml.safe_load(path.read_text())
    eve = copy.deepcopy(data["clouds"]["nubes-admin"])
    eve["auth"].update(username="eve", password=password)
    data["clouds"]["nubes-eve"] = eve
    path.write_text(yaml.safe_dump(data))
    token = cloud.openstack("nubes-eve", "token", "issue", "-f", "value", "-c", "id").stdout

    def with_token(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        endpoint = f"http://127.0.0.1:{cloud.port}/compute/v2.1"
        auth = ["--os-auth-type", "admin_token", "--os-endpoint", endpoint]
        return subprocess.run(
            ["openstack", *auth, "--os-token", token.strip(), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    assert with_token("hypervisor", "list").returncode == 0
    result = subprocess.run(
        [*manage, "role", "remove", "admin", "--user", "eve", "--project", "admin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    refused = with_token("hypervisor", "list")
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr


# --- servers ---------------------------------------------------------------------------------


def _add_other_project(cloud: Cloud) -> str:
    """A member of project ``other`` (nubes-manage), as cloud ``nubes-other``."""
    conf = str(cloud.state_dir / "nubes.conf")
    manage = [sys.executable, "-m", "nubes.cmd.manage", "--config-file", conf]
    password = "Other-pw-123"
    user = ["user", "create", "mallory", "--password", password, "--project", "other"]
    for args in (["project", "create", "other"], [*user, "--role", "member"]):
        result = subprocess.run([*manage, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    path = cloud.state_dir / "clouds.yaml"
    data = yaml.safe_load(path.read_text())
    other = copy.deepcopy(data["clouds"]["nubes-demo"])
    other["auth"].update(username="mallory", password=password, project_name="other")
    data["clouds"]["nubes-other"] = other
    path.write_text(yaml.safe_dump(data))
    return "nubes-other"


def test_openstack_cli_servers(cloud: Cloud) -> None:
    admin, demo = "nubes-admin", "nubes-demo"
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    create = ("server", "create", "--flavor", "m1.tiny", "--image", image, "--wait")
    vm1, vm2, other = parallel(
        lambda: cloud.json(demo, *create, "--nic", "none", "vm1"),
        lambda: cloud.json(demo, *create, "vm2"),  # no --nic: "auto" at 2.37 and later
        lambda: _add_other_project(cloud),
    )
    for vm in (vm1, vm2):
        assert vm["status"] == "ACTIVE" and vm["adminPass"]
    assert vm1["addresses"] == {}
    # get-me-a-network: the project's network, made on first use.
    assert vm2["addresses"] == {"auto_allocated_network": ["10.0.0.2"]}, vm2["addresses"]

    listed, everything, shown, others, hidden, undeletable = parallel(
        lambda: cloud.json(demo, "server", "list"),
        lambda: cloud.json(admin, "server", "list", "--all-projects", "--long"),
        lambda: cloud.json(demo, "server", "show", vm1["id"]),
        lambda: cloud.json(other, "server", "list"),
        lambda: cloud.openstack(other, "server", "show", vm1["id"], check=False),
        lambda: cloud.openstack(other, "server", "delete", vm1["id"], check=False),
    )
    assert {s["Name"]: s["Status"] for s in listed} == {"vm1": "ACTIVE", "vm2": "ACTIVE"}
    assert {s["Name"] for s in everything} == {"vm1", "vm2"}
    assert {s["Host"] for s in everything} <= {"fake-0", "fake-1"}
    assert shown["name"] == "vm1" and shown["status"] == "ACTIVE"
    assert shown["flavor"]["original_name"] == "m1.tiny"  # embedded flavor (2.47+)
    assert others == []
    assert hidden.returncode != 0 and "No Server found" in hidden.stderr, hidden.stderr
    assert undeletable.returncode != 0, undeletable.stderr
    assert cloud.json(demo, "server", "show", vm1["id"])["status"] == "ACTIVE"

    sdk = connect_sdk(cloud, demo)

    def power_cycle() -> list[str]:
        cloud.openstack(demo, "server", "stop", "vm1")
        wait_status(sdk, vm1["id"], "SHUTOFF")
        cloud.openstack(demo, "server", "start", "vm1")
        wait_status(sdk, vm1["id"], "ACTIVE")
        return [e["Action"] for e in cloud.json(demo, "server", "event", "list", "vm1")]

    def reboot_and_lock() -> str:
        cloud.openstack(demo, "server", "reboot", "--hard", "--wait", "vm2")
        cloud.openstack(demo, "server", "lock", "vm2")
        refused = cloud.openstack(demo, "server", "stop", "vm2", check=False)
        cloud.openstack(demo, "server", "unlock", "vm2")
        return refused.stderr

    events, refused = parallel(power_cycle, reboot_and_lock)
    assert events == ["start", "stop", "create"], events
    assert "409" in refused and "is locked" in refused, refused
    actions = [e["Action"] for e in cloud.json(admin, "server", "event", "list", vm2["id"])]
    assert actions == ["unlock", "lock", "reboot", "create"], actions
    assert sdk.compute.get_server(vm2["id"]).is_locked is False

    # One openstacksdk round trip, then the CLI deletes everything and waits.
    flavor = sdk.compute.find_flavor("m1.tiny")
    image_id = sdk.image.find_image(image).id
    server = sdk.compute.create_server(
        name="sdk-vm", flavor_id=flavor.id, image_id=image_id, networks="none"
    )
    server = sdk.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
    assert server.status == "ACTIVE" and server.flavor.original_name == "m1.tiny"
    cloud.openstack(demo, "server", "delete", "--wait", "vm1", "vm2", "sdk-vm")
    assert cloud.json(demo, "server", "list") == []
