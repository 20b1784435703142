"""Nova 34's last microversions through the unmodified openstack CLI.

``--os-compute-api-version 2.104`` ``server set/unset
--pinned-availability-zone`` (2.104) and the flavor bodies of 2.102, against
``nubes all-in-one`` (``cloud`` comes through this directory's conftest).
"""

from __future__ import annotations

import shutil

import pytest

from tests.functional.api.cli import Cloud, connect_sdk

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("openstack") is None,
        reason="python-openstackclient is not installed (pip install -e '.[test]')",
    ),
]

ADMIN, DEMO = "nubes-admin", "nubes-demo"


def test_server_set_and_unset_pinned_availability_zone(cloud: Cloud) -> None:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    at = ("--os-compute-api-version", "2.104")
    create = ("server", "create", "--flavor", "m1.tiny", "--image", image, "--nic", "none")
    vm = cloud.json(DEMO, *create, "--availability-zone", "nova", "--wait", "pinned")
    assert cloud.json(DEMO, *at, "server", "show", vm["id"])["pinned_availability_zone"] == "nova"

    cloud.openstack(DEMO, *at, "server", "unset", "--pinned-availability-zone", vm["id"])
    shown = cloud.json(DEMO, *at, "server", "show", vm["id"])
    assert shown["pinned_availability_zone"] is None
    assert shown["OS-EXT-AZ:availability_zone"] == "nova"

    refused = cloud.openstack(
        DEMO, *at, "server", "set", "--pinned-availability-zone", "az9", vm["id"], check=False
    )
    assert refused.returncode != 0
    assert "can only be pinned to its current availability zone 'nova'" in refused.stderr

    cloud.openstack(DEMO, *at, "server", "set", "--pinned-availability-zone", "nova", vm["id"])
    assert cloud.json(DEMO, *at, "server", "show", vm["id"])["pinned_availability_zone"] == "nova"
    # openstacksdk, the same request by another client.
    conn = connect_sdk(cloud, DEMO)
    conn.compute.default_microversion = "2.104"
    conn.compute.update_server(vm["id"], pinned_availability_zone=None)
    assert conn.compute.get_server(vm["id"]).pinned_availability_zone is None


def test_flavors_without_rxtx_factor_from_2_102(cloud: Cloud) -> None:
    old = ("--os-compute-api-version", "2.101")
    new = ("--os-compute-api-version", "2.102")
    made = cloud.json(
        ADMIN, *old, "flavor", "create", "--ram", "64", "--vcpus", "1", "--rxtx-factor", "2", "f1"
    )
    assert made["rxtx_factor"] == 2.0
    old_show = cloud.json(ADMIN, *old, "flavor", "show", "f1")
    assert old_show["rxtx_factor"] == 2.0 and old_show["OS-FLV-DISABLED:disabled"] is False
    made = cloud.json(ADMIN, *new, "flavor", "create", "--ram", "64", "--vcpus", "1", "f2")
    shown = cloud.json(ADMIN, *new, "flavor", "show", "f1")
    # The CLI lists every field it knows; those the body lacks are empty.
    for flavor in (made, shown):
        assert flavor["rxtx_factor"] is None, flavor
        assert flavor["OS-FLV-DISABLED:disabled"] is None, flavor
    assert shown["ram"] == 64 and shown["id"] == old_show["id"]
    listed = cloud.json(ADMIN, *new, "flavor", "list", "--long")
    assert {"f1", "f2", "m1.tiny"} <= {f["Name"] for f in listed}
