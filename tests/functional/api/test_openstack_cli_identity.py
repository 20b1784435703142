"""Identity administration with the unmodified openstack CLI against ``nubes all-in-one``.

The commands an operator runs to onboard a team: a project, a user with a
password, a role, the assignments listed by name, and an application
credential the team's scripts then log in with.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from tests.functional.api.cli import Cloud

pytestmark = pytest.mark.timeout(300)

ADMIN = "nubes-admin"


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
