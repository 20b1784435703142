"""Quotas with the unmodified openstack CLI against ``nubes all-in-one``.

An admin lowers the demo project's instance quota; the project's third
server is refused with Nova's 403 text, and ``quota show`` and ``limits
show --absolute`` agree on the limit and on what is used.
"""

from __future__ import annotations

import pytest

from tests.functional.api.cli import Cloud, parallel

pytestmark = pytest.mark.timeout(300)

ADMIN, DEMO = "nubes-admin", "nubes-demo"


def test_openstack_cli_instance_quota_refuses_the_third_server(cloud: Cloud) -> None:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    cloud.openstack(ADMIN, "quota", "set", "--instances", "2", "demo")
    create = ("server", "create", "--flavor", "m1.tiny", "--image", image, "--nic", "none")
    parallel(*(lambda n=n: cloud.json(DEMO, *create, f"vm{n}") for n in (1, 2)))
    refused = cloud.openstack(DEMO, *create, "vm3", check=False)
    assert refused.returncode != 0
    assert "403" in refused.stderr, refused.stderr
    assert (
        "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances"
        in refused.stderr
    ), refused.stderr
    assert sorted(s["Name"] for s in cloud.json(DEMO, "server", "list")) == ["vm1", "vm2"]

    quota, usage, limits = parallel(
        lambda: cloud.json(ADMIN, "quota", "show", "demo"),
        lambda: cloud.json(DEMO, "quota", "show", "--usage", "demo"),
        lambda: cloud.json(DEMO, "limits", "show", "--absolute"),
    )
    shown = {row["Resource"]: row["Limit"] for row in quota}
    assert (shown["instances"], shown["cores"], shown["ram"]) == (2, 20, 51200)
    used = {row["Resource"]: row["In Use"] for row in usage}
    absolute = {row["Name"]: row["Value"] for row in limits}
    assert absolute["max_total_instances"] == shown["instances"] == 2
    assert absolute["max_total_cores"] == shown["cores"]
    assert absolute["max_total_ram_size"] == shown["ram"]
    assert absolute["total_instances_used"] == used["instances"] == 2
    assert absolute["total_cores_used"] == used["cores"] == 2
    assert absolute["total_ram_used"] == used["ram"] == 1024
