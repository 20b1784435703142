"""Identity administration and image management with the unmodified
openstack CLI against one ``nubes all-in-one``.

Identity: the commands an operator runs to onboard a team (a project, a
user with a password, a role, the assignments listed by name, a group, and
an application credential the team's scripts then log in with). Images:
properties, tags, sharing with another project, deactivation, and an
import through staging.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.functional.api.cli import Cloud, free_port

pytestmark = pytest.mark.timeout(300)

ADMIN, DEMO = "nubes-admin", "nubes-demo"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    # One cloud for both tests: starting all-in-one is most of their time.
    c = Cloud(tmp_path_factory.mktemp("cli-identity-image") / "state", free_port())
    c.start()
    try:
        yield c
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.stop()


def _with_cred(cloud: Cloud, cred_id: str, secret: str, *args: str) -> Any:
    """``openstack`` logged in with an application credential alone (no clouds.yaml entry)."""
    conf = yaml.safe_load((cloud.state_dir / "clouds.yaml").read_text())
    auth_url = conf["clouds"][ADMIN]["auth"]["auth_url"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(
        OS_AUTH_TYPE="v3applicationcredential",
        OS_AUTH_URL=auth_url,
        OS_APPLICATION_CREDENTIAL_ID=cred_id,
        OS_APPLICATION_CREDENTIAL_SECRET=secret,
    )
    return subprocess.run(["openstack", *args], capture_output=True, text=True, env=env, timeout=60)


def test_openstack_cli_onboards_a_user_with_an_application_credential(cloud: Cloud) -> None:
    project = cloud.json(ADMIN, "project", "create", "--description", "team a", "team-a")
    assert project["name"] == "team-a" and project["domain_id"] == "default"
    user = cloud.json(
        ADMIN, "user", "create", "--password", "pw-alice", "--project", "team-a", "alice"
    )
    assert user["default_project_id"] == project["id"]
    cloud.openstack(ADMIN, "role", "add", "--user", "alice", "--project", "team-a", "member")
    rows = cloud.json(
        ADMIN, "role", "assignment", "list", "--user", "alice", "--effective", "--names"
    )
    assert {(r["Role"], r["Project"]) for r in rows} == {
        ("member", "team-a@Default"),
        ("reader", "team-a@Default"),
    }
    group = cloud.json(ADMIN, "group", "create", "auditors")
    cloud.openstack(ADMIN, "group", "add", "user", "auditors", "alice")
    assert [u["Name"] for u in cloud.json(ADMIN, "user", "list", "--group", group["id"])] == [
        "alice"
    ]

    as_alice = (
        "--os-username",
        "alice",
        "--os-password",
        "pw-alice",
        "--os-project-name",
        "team-a",
    )
    cred = cloud.json(ADMIN, *as_alice, "application", "credential", "create", "ci")
    assert cred["Secret"] if "Secret" in cred else cred["secret"]
    secret = cred.get("Secret") or cred["secret"]
    cred_id = cred.get("ID") or cred["id"]
    token = _with_cred(cloud, cred_id, secret, "token", "issue", "-f", "json")
    assert token.returncode == 0, token.stderr
    assert json.loads(token.stdout)["project_id"] == project["id"]

    cloud.openstack(ADMIN, "role", "remove", "--user", "alice", "--project", "team-a", "member")
    refused = _with_cred(cloud, cred_id, secret, "token", "issue")
    assert refused.returncode != 0
    cloud.openstack(ADMIN, "user", "delete", "alice")
    cloud.openstack(ADMIN, "project", "delete", "team-a")
    assert "alice" not in {u["Name"] for u in cloud.json(ADMIN, "user", "list")}


def test_openstack_cli_images_properties_sharing_deactivation_import(
    cloud: Cloud, tmp_path: Path
) -> None:
    data = tmp_path / "disk.raw"
    data.write_bytes(b"\0" * 4096)
    created = cloud.json(
        DEMO, "image", "create", "--disk-format", "raw", "--file", str(data), "--import", "img1"
    )
    shown = cloud.json(DEMO, "image", "show", created["id"])
    assert shown["status"] == "active" and shown["size"] == 4096
    cloud.openstack(
        DEMO,
        "image",
        "set",
        "--property",
        "os_distro=debian",
        "--tag",
        "golden",
        "--name",
        "img-renamed",
        created["id"],
    )
    shown = cloud.json(DEMO, "image", "show", created["id"])
    assert shown["name"] == "img-renamed" and shown["tags"] == ["golden"]
    assert shown["properties"]["os_distro"] == "debian"
    cloud.openstack(DEMO, "image", "unset", "--property", "os_distro", created["id"])
    assert "os_distro" not in cloud.json(DEMO, "image", "show", created["id"])["properties"]

    cloud.openstack(DEMO, "image", "set", "--shared", created["id"])
    # A member cannot look other projects up by name: it shares by id, as with Keystone.
    admin_project = cloud.json(ADMIN, "project", "show", "admin")["id"]
    cloud.openstack(DEMO, "image", "add", "project", created["id"], admin_project)
    cloud.openstack(ADMIN, "image", "set", "--accept", created["id"])
    members = cloud.json(DEMO, "image", "member", "list", created["id"])
    assert [m["Status"] for m in members] == ["accepted"]

    cloud.openstack(ADMIN, "image", "set", "--deactivate", created["id"])
    assert cloud.json(DEMO, "image", "show", created["id"])["status"] == "deactivated"
    refused = cloud.openstack(
        DEMO, "image", "save", "--file", str(tmp_path / "out"), created["id"], check=False
    )
    assert refused.returncode != 0
    cloud.openstack(ADMIN, "image", "set", "--activate", created["id"])
    cloud.openstack(DEMO, "image", "save", "--file", str(tmp_path / "out"), created["id"])
    assert (tmp_path / "out").read_bytes() == data.read_bytes()
    cloud.openstack(DEMO, "image", "delete", created["id"])


def test_openstack_cli_server_properties(cloud: Cloud) -> None:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    server = cloud.json(
        DEMO,
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        image,
        "--nic",
        "none",
        "--property",
        "role=web",
        "--wait",
        "props",
    )
    cloud.openstack(DEMO, "server", "set", "--property", "tier=gold", "props")
    assert cloud.json(DEMO, "server", "show", server["id"])["properties"] == {
        "role": "web",
        "tier": "gold",
    }
    cloud.openstack(DEMO, "server", "unset", "--property", "role", "props")
    assert cloud.json(DEMO, "server", "show", server["id"])["properties"] == {"tier": "gold"}
    cloud.openstack(DEMO, "server", "delete", "--wait", "props")
