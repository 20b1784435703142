"""The lifecycle actions through the unmodified ``openstack`` CLI against a
real all-in-one: pause/unpause, suspend/resume, rescue/unrescue,
shelve/unshelve and, with ``[DEFAULT] reclaim_instance_interval``, restore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.api.cli import Cloud, connect_sdk, free_port, wait_status

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def soft_cloud(tmp_path: Path) -> Iterator[Cloud]:
    conf = tmp_path / "reclaim.conf"
    conf.write_text("[DEFAULT]\nreclaim_instance_interval = 3600\n")
    c = Cloud(tmp_path / "state", free_port(), config_files=(conf,))
    c.start()
    try:
        yield c
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.stop()


def test_openstack_cli_server_actions(soft_cloud: Cloud) -> None:
    cloud, demo, admin = soft_cloud, "nubes-demo", "nubes-admin"
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    vm = cloud.json(
        demo,
        *("server", "create", "--flavor", "m1.tiny", "--image", image),
        *("--nic", "none", "--wait", "vm"),
    )
    sdk = connect_sdk(cloud, demo)
    for command, status in (
        ("pause", "PAUSED"),
        ("unpause", "ACTIVE"),
        ("suspend", "SUSPENDED"),
        ("resume", "ACTIVE"),
        ("unrescue", None),  # refused below: not rescued
    ):
        if status is None:
            refused = cloud.openstack(demo, "server", command, "vm", check=False)
            assert refused.returncode != 0 and "409" in refused.stderr, refused.stderr
            continue
        cloud.openstack(demo, "server", command, "vm")
        wait_status(sdk, vm["id"], status)
    cloud.openstack(demo, "server", "rescue", "--image", image, "--password", "pw-1", "vm")
    wait_status(sdk, vm["id"], "RESCUE")
    cloud.openstack(demo, "server", "unrescue", "vm")
    wait_status(sdk, vm["id"], "ACTIVE")
    # shelved_offload_time is 0 by default: offloaded as part of the shelve.
    cloud.openstack(demo, "server", "shelve", "vm")
    wait_status(sdk, vm["id"], "SHELVED_OFFLOADED")
    shown = cloud.json(admin, "server", "show", vm["id"])
    assert shown["OS-EXT-SRV-ATTR:host"] in (None, "")
    # The guest's disk went to an image of the project, as Nova's shelve does.
    (shelved,) = cloud.json(demo, "image", "list", "--name", "vm-shelved")
    assert shelved["Status"] == "active", shelved
    image_props = cloud.json(demo, "image", "show", shelved["ID"])["properties"]
    assert image_props["image_type"] == "snapshot", image_props
    assert image_props["instance_uuid"] == vm["id"], image_props
    cloud.openstack(demo, "server", "unshelve", "vm")
    wait_status(sdk, vm["id"], "ACTIVE")
    # Spawned from it, then deleted.
    assert cloud.json(demo, "image", "list", "--name", "vm-shelved") == []
    # Soft delete, then restore.
    cloud.openstack(demo, "server", "delete", "vm")
    wait_status(sdk, vm["id"], "SOFT_DELETED")
    cloud.openstack(demo, "server", "restore", "vm")
    wait_status(sdk, vm["id"], "ACTIVE")
    actions = [e["Action"] for e in cloud.json(demo, "server", "event", "list", "vm")]
    for name in (
        "pause",
        "unpause",
        "suspend",
        "resume",
        "rescue",
        "unrescue",
        "shelve",
        "unshelve",
        "delete",
        "restore",
    ):
        assert name in actions, actions
