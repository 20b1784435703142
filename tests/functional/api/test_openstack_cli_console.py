"""Consoles, snapshots and diagnostics through the unmodified openstack CLI
against ``nubes all-in-one`` (``cloud`` from this directory's conftest)."""

from __future__ import annotations

import shutil

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


def _create(cloud: Cloud, name: str) -> dict[str, str]:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME

    create = ("server", "create", "--flavor", "m1.tiny", "--image", DEFAULT_IMAGE_NAME)
    result: dict[str, str] = cloud.json(DEMO, *create, "--nic", "none", "--wait", name)
    return result


def test_server_show_diagnostics_reads_the_guests_counters(cloud: Cloud) -> None:
    """``openstack server show --diagnostics`` (admin): the API asks the
    server's host (compute RPC get_instance_diagnostics)."""
    vm = _create(cloud, "diag1")
    diags = cloud.json(ADMIN, "server", "show", "--diagnostics", vm["id"])
    assert diags["driver"] == "fake" and diags["state"] == "running", diags
    assert diags["num_cpus"] == len(diags["cpu_details"]) >= 1, diags
    assert diags["disk_details"][0]["write_requests"] == 1, diags
    assert diags["memory_details"]["maximum"] > 0, diags
    # Diagnostics are an admin's: the project's member is refused.
    refused = cloud.openstack(DEMO, "server", "show", "--diagnostics", "diag1", check=False)
    assert refused.returncode != 0, refused.stderr
    assert "Policy doesn't allow os_compute_api:os-server-diagnostics" in refused.stderr
    # A stopped server has no running guest to ask: Nova's 409.
    cloud.openstack(DEMO, "server", "stop", "diag1")
    wait_status(connect_sdk(cloud, DEMO), vm["id"], "SHUTOFF")
    stopped = cloud.openstack(ADMIN, "server", "show", "--diagnostics", vm["id"], check=False)
    assert stopped.returncode != 0, stopped.stderr
    assert "power_state shutdown" in stopped.stderr or "not running" in stopped.stderr
