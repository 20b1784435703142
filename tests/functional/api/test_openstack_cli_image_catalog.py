"""Image quotas and the metadata definitions catalog through the unmodified
openstack CLI against ``nubes all-in-one``: an operator sets a project's
image limit the Glance way (``openstack limit create --service glance``),
the project's next ``openstack image create`` fails with Glance's 413, and
``openstack image metadef namespace`` manages namespaces."""

from __future__ import annotations

import shutil

import pytest

from tests.functional.api.cli import Cloud

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("openstack") is None,
        reason="python-openstackclient is not installed (pip install -e '.[test]')",
    ),
]

ADMIN, DEMO = "nubes-admin", "nubes-demo"


def test_image_quota_set_with_openstack_limit_stops_the_next_image(cloud: Cloud) -> None:
    demo_project = cloud.json(DEMO, "token", "issue")["project_id"]
    used = len(cloud.json(ADMIN, "image", "list", "--project", demo_project))
    limit = cloud.json(
        ADMIN,
        "limit",
        "create",
        "--service",
        "glance",
        "--project",
        demo_project,
        "--resource-limit",
        str(used + 1),
        "image_count_total",
    )
    assert limit["resource_name"] == "image_count_total"
    assert limit["resource_limit"] == used + 1
    listed = cloud.json(ADMIN, "limit", "list", "--project", demo_project)
    assert [item["ID"] for item in listed] == [limit["id"]]
    made = cloud.json(DEMO, "image", "create", "--disk-format", "raw", "first")
    assert made["name"] == "first"
    refused = cloud.openstack(
        DEMO, "image", "create", "--disk-format", "raw", "second", check=False
    )
    assert refused.returncode != 0
    assert "413" in refused.stderr and "image_count_total" in refused.stderr, refused.stderr
    names = [i["Name"] for i in cloud.json(DEMO, "image", "list", "--private")]
    assert "second" not in names
    # Raising the limit lets the project go on.
    cloud.openstack(ADMIN, "limit", "set", "--resource-limit", str(used + 2), limit["id"])
    cloud.json(DEMO, "image", "create", "--disk-format", "raw", "second")
    cloud.openstack(ADMIN, "limit", "delete", limit["id"])
    assert cloud.json(ADMIN, "limit", "list", "--project", demo_project) == []


def test_metadef_namespaces_with_the_openstack_cli(cloud: Cloud) -> None:
    made = cloud.json(
        ADMIN,
        "image",
        "metadef",
        "namespace",
        "create",
        "--display-name",
        "CPU",
        "--description",
        "CPU pinning",
        "--public",
        "--protected",
        "OS::Compute::CPU",
    )
    assert made["namespace"] == "OS::Compute::CPU" and made["visibility"] == "public"
    shown = cloud.json(DEMO, "image", "metadef", "namespace", "show", "OS::Compute::CPU")
    assert shown["display_name"] == "CPU" and shown["protected"] is True
    listed = cloud.json(DEMO, "image", "metadef", "namespace", "list")
    assert "OS::Compute::CPU" in [n["namespace"] for n in listed]
    # The demo project may read it, not delete it; nor may an admin while protected.
    refused = cloud.openstack(
        DEMO, "image", "metadef", "namespace", "delete", "OS::Compute::CPU", check=False
    )
    assert refused.returncode != 0
    refused = cloud.openstack(
        ADMIN, "image", "metadef", "namespace", "delete", "OS::Compute::CPU", check=False
    )
    assert refused.returncode != 0
    cloud.openstack(
        ADMIN, "image", "metadef", "namespace", "set", "--unprotected", "OS::Compute::CPU"
    )
    cloud.openstack(ADMIN, "image", "metadef", "namespace", "delete", "OS::Compute::CPU")
    missing = cloud.openstack(
        DEMO, "image", "metadef", "namespace", "show", "OS::Compute::CPU", check=False
    )
    assert missing.returncode != 0
