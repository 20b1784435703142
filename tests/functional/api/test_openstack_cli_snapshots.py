"""createImage and createBackup through the unmodified openstack CLI and
openstacksdk against ``nubes all-in-one`` (fake hosts uploading to the
image API with the conductor's upload grants; ``cloud`` from conftest)."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import pytest

from tests.functional.api.cli import Cloud, connect_sdk, wait_status

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("openstack") is None,
        reason="python-openstackclient is not installed (pip install -e '.[test]')",
    ),
]

ADMIN, DEMO = "nubes-admin", "nubes-demo"


def _create(cloud: Cloud, name: str, image: str | None = None) -> dict[str, Any]:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME

    create = ("server", "create", "--flavor", "m1.tiny", "--image", image or DEFAULT_IMAGE_NAME)
    result: dict[str, Any] = cloud.json(DEMO, *create, "--nic", "none", "--wait", name)
    return result


def _task_state(conn: Any, server_id: str) -> str | None:
    state: str | None = conn.compute.get_server(server_id).task_state
    return state


def _wait_idle(conn: Any, server_id: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = conn.compute.get_server(server_id)
        if server.task_state is None:
            return server
        time.sleep(0.2)
    raise AssertionError(f"server {server_id} still {server.task_state}")


def _images(conn: Any) -> list[dict[str, Any]]:
    """Every image the project sees, as the image API shows it (properties
    as top-level keys)."""
    found: list[dict[str, Any]] = conn.image.get("/images").json()["images"]
    return found


def _wait_image(conn: Any, image_id: str, status: str = "active", timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = conn.image.get_image(image_id)
        if image.status == status:
            return image
        time.sleep(0.2)
    raise AssertionError(f"image {image_id} is {image.status}, not {status}")


def test_server_image_create_wait_then_boot_from_the_snapshot(cloud: Cloud) -> None:
    """``openstack server image create --wait``: the host's copy of the guest
    lands in the image API (active, with size and checksum and Nova's
    properties); a new server boots from it; the first stays ACTIVE."""
    vm = _create(cloud, "snap-src")
    made = cloud.json(DEMO, "server", "image", "create", "--wait", "--name", "snap1", vm["id"])
    assert made["name"] == "snap1" and made["status"] == "active", made
    image = cloud.json(DEMO, "image", "show", made["id"])
    assert image["size"] > 0 and image["checksum"], image
    props = image["properties"]
    assert props["image_type"] == "snapshot" and props["instance_uuid"] == vm["id"], props
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME

    base = cloud.json(DEMO, "image", "show", DEFAULT_IMAGE_NAME)
    assert props["base_image_ref"] == base["id"], props
    assert props["user_id"] and image["owner"], props
    assert image["visibility"] == "private" and image["disk_format"] == "raw", image
    # The data is the fake guest's own: its id and console so far.
    data = cloud.openstack(DEMO, "image", "save", made["id"]).stdout
    assert json.loads(data)["uuid"] == vm["id"]
    conn = connect_sdk(cloud, DEMO)
    src = _wait_idle(conn, vm["id"])
    assert src.status == "ACTIVE"
    booted = _create(cloud, "snap-child", image=made["id"])
    assert booted["status"] == "ACTIVE", booted


def test_server_backup_create_rotate_one_keeps_only_the_newest(cloud: Cloud) -> None:
    """``openstack server backup create --rotate 1`` twice leaves one backup
    of that type (the newest), as Nova's rotation does; a stopped server can
    be backed up and stays SHUTOFF."""
    vm = _create(cloud, "bak-src")
    conn = connect_sdk(cloud, DEMO)
    cloud.openstack(DEMO, "server", "stop", vm["id"])
    wait_status(conn, vm["id"], "SHUTOFF")
    ids = []
    for name in ("bak-1", "bak-2"):
        cloud.openstack(
            DEMO,
            "server",
            "backup",
            "create",
            "--name",
            name,
            "--type",
            "daily",
            "--rotate",
            "1",
            "--wait",
            vm["id"],
        )
        _wait_idle(conn, vm["id"])
        (found,) = [i for i in _images(conn) if i["name"] == name]
        ids.append(found["id"])
    backups = [
        i
        for i in _images(conn)
        if i.get("image_type") == "backup" and i.get("instance_uuid") == vm["id"]
    ]
    assert [b["id"] for b in backups] == [ids[1]], backups
    assert backups[0]["backup_type"] == "daily" and backups[0]["status"] == "active"
    assert conn.compute.get_server(vm["id"]).status == "SHUTOFF"


def _action(cloud: Cloud, who: str, server_id: str, body: dict[str, Any], version: str) -> Any:
    conn = connect_sdk(cloud, who)
    return conn.compute.post(
        f"/servers/{server_id}/action",
        json=body,
        headers={"OpenStack-API-Version": f"compute {version}"},
        raise_exc=False,
    )


def test_create_image_answers_as_nova_per_microversion_and_refuses_bad_requests(
    cloud: Cloud,
) -> None:
    vm = _create(cloud, "neg-src")
    conn = connect_sdk(cloud, DEMO)
    # Before 2.45: 202, the image's URL in Location, no body.
    old = _action(cloud, DEMO, vm["id"], {"createImage": {"name": "old"}}, "2.44")
    assert old.status_code == 202, old.text
    location = old.headers["Location"]
    assert "/image/v2/images/" in location and not old.text
    _wait_idle(conn, vm["id"])
    # From 2.45: {"image_id": ...}, with metadata on the image.
    new = _action(
        cloud,
        DEMO,
        vm["id"],
        {"createBackup": {"name": "b", "backup_type": "weekly", "rotation": 0}},
        "2.45",
    )
    assert new.status_code == 202 and set(new.json()) == {"image_id"}, new.text
    _wait_idle(conn, vm["id"])
    meta = _action(
        cloud, DEMO, vm["id"], {"createImage": {"name": "m", "metadata": {"k": "v"}}}, "2.45"
    )
    image_id = meta.json()["image_id"]
    _wait_image(conn, image_id)
    (image,) = [i for i in _images(conn) if i["id"] == image_id]
    assert image["k"] == "v" and image["image_type"] == "snapshot", image
    _wait_idle(conn, vm["id"])
    # Rotation 0: every backup of that type goes, the new one too (Nova's
    # rule); the conductor rotates once the host reported the upload.
    deadline = time.monotonic() + 30
    while [i for i in _images(conn) if i.get("backup_type") == "weekly"]:
        assert time.monotonic() < deadline, _images(conn)
        time.sleep(0.2)
    # Bad bodies: 400 with Nova's badRequest body.
    for body in (
        {"createImage": {}},
        {"createImage": {"name": ""}},
        {"createImage": {"name": "x", "metadata": {"k": 1}}},
        {"createImage": {"name": "x", "extra": 1}},
        {"createBackup": {"name": "x", "backup_type": "daily"}},
        {"createBackup": {"name": "x", "backup_type": "daily", "rotation": -1}},
        {"createBackup": {"name": "x", "backup_type": "daily", "rotation": "a"}},
    ):
        bad = _action(cloud, DEMO, vm["id"], body, "2.45")
        assert bad.status_code == 400, (body, bad.text)
        assert "badRequest" in bad.json(), bad.text
    # Not yours: the admin project's server is not found for the demo project.
    theirs = cloud.json(
        ADMIN,
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        base_image(cloud),
        "--nic",
        "none",
        "--wait",
        "admins",
    )
    hidden = _action(cloud, DEMO, theirs["id"], {"createImage": {"name": "x"}}, "2.45")
    assert hidden.status_code == 404 and "itemNotFound" in hidden.json(), hidden.text
    # A server in a state Nova refuses (error): 409, and no image is left.
    reset = _action(cloud, ADMIN, vm["id"], {"os-resetState": {"state": "error"}}, "2.45")
    assert reset.status_code == 202, reset.text
    before = {i["id"] for i in _images(conn)}
    refused = _action(cloud, DEMO, vm["id"], {"createImage": {"name": "err"}}, "2.45")
    assert refused.status_code == 409 and "conflictingRequest" in refused.json(), refused.text
    assert {i["id"] for i in _images(conn)} == before


def base_image(cloud: Cloud) -> str:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME

    return DEFAULT_IMAGE_NAME
