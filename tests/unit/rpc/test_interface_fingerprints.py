"""Every RPC interface nubes serves, pinned: a method added, removed or given
other arguments without a version bump fails here, naming the method.

If this test fails, read its message: bump the API's version (rpcapi.VERSION,
the endpoint's RPC_API_VERSION, the history in the rpcapi's docstring, a new
SERVICE_VERSION in nubes/versions.py saying what the API serves), keep
accepting what older senders send, then paste the new table printed.
"""

from __future__ import annotations

import re
import types

import pytest

from nubes import versions
from nubes.compute import rpcapi as compute_rpcapi
from nubes.compute.actions import ActionSteps
from nubes.compute.live_migration import LiveMigrationSteps
from nubes.compute.manager import ComputeManager
from nubes.compute.rebuild import RebuildSteps
from nubes.compute.resize import ResizeSteps
from nubes.compute.shelve import ShelveSteps
from nubes.conductor import rpcapi as conductor_rpcapi
from nubes.conductor.manager import ConductorManager
from nubes.rpc import fingerprint
from nubes.rpc.fingerprint import Interface
from nubes.scheduler import rpcapi as scheduler_rpcapi
from nubes.scheduler.manager import SchedulerManager

#: API -> the endpoint classes that serve it (as nubes.cmd.main and
#: nubes.compute.launcher put them on the bus) and its client module.
SERVED: dict[str, tuple[tuple[type, ...], types.ModuleType]] = {
    "compute": (
        (ComputeManager, RebuildSteps, ResizeSteps, LiveMigrationSteps, ActionSteps, ShelveSteps),
        compute_rpcapi,
    ),
    "conductor": ((ConductorManager,), conductor_rpcapi),
    "scheduler": ((SchedulerManager,), scheduler_rpcapi),
}

EXPECTED = {
    "compute": Interface(
        "1.13",
        {
            "build_and_run_instance": "b906d4c08e97",
            "check_can_live_migrate_destination": "a694b224d519",
            "check_can_live_migrate_source": "cbd056dac5f6",
            "confirm_migration": "99efb74da8a2",
            "finish_migration": "9d3aa963c9ac",
            "finish_revert_migration": "5a3653bf1479",
            "get_console_output": "96b38358bd2e",
            "get_host_uptime": "4bf0ce34124c",
            "get_instance_diagnostics": "b54ad1581b60",
            "get_vnc_console": "67725f12b9d4",
            "live_migration": "7f2df6ba83ff",
            "live_migration_abort": "16ebb1924971",
            "live_migration_force_complete": "d972c22e9362",
            "migrate_disk_and_power_off": "f8bee367d41e",
            "unshelve_instance": "6dc1b0e6b254",
            "shelve_offload_instance": "c1488e18514c",
            "shelve_instance": "eaf491db14d7",
            "soft_delete_instance": "baa696f039cc",
            "restore_instance": "80ab545e7508",
            "unrescue_instance": "a5c66e8b2ccc",
            "unpause_instance": "56e04f2f255e",
            "trigger_crash_dump": "510a0d219b4d",
            "suspend_instance": "70a61bb28ec8",
            "set_admin_password": "699da6a602fa",
            "resume_instance": "9665db51d0a9",
            "rescue_instance": "b57c8cee4477",
            "pause_instance": "dc698eaed4dd",
            "post_live_migration": "aa436208b0ac",
            "post_live_migration_at_destination": "aca25ae1cca9",
            "pre_live_migration": "3464a752a290",
            "reboot_instance": "8db27523b830",
            "rebuild_instance": "ee5aaa3208cd",
            "remove_guest": "1d1eb56e6078",
            "revert_migration_destination": "8c905ba4e6c4",
            "rollback_evacuation_at_destination": "c0de883d7278",
            "rollback_live_migration_at_destination": "4f4ec0bf0ad4",
            "snapshot_instance": "b24f3dc24241",
            "start_instance": "b45d28a60f66",
            "stop_instance": "5f9cbd7cf23c",
            "terminate_instance": "d73b20549fed",
        },
    ),
    "conductor": Interface(
        "1.8",
        {
            "get_host_network": "d62f739b67a2",
            "get_network_peers": "4ec012cb8acb",
            "kick": "50d0b867689c",
            "live_migration_abort": "93e49701a72f",
            "live_migration_force_complete": "961a8ab16cec",
            "object_action": "ed172abe101d",
            "open_console": "85aacf9094a1",
            "object_backport_versions": "d806d74499b2",
            "object_class_action_versions": "fdb81889f398",
            "relay_notification": "14533e0b11a8",
            "relay_notifications": "e94584bf00ad",
            "step_finished": "fb8f501e5d01",
        },
    ),
    "scheduler": Interface(
        "1.0",
        {
            "claim_alternate": "c1aa02ad23ed",
            "close": "ed916af04109",
            "get_scheduler_hints": "8360c0e7aeef",
            "release": "0f7c5b00686f",
            "select_destinations": "8f06c8877acc",
        },
    ),
}


def actual() -> dict[str, Interface]:
    return {api: fingerprint.interface(classes) for api, (classes, _) in SERVED.items()}


def test_rpc_interface_fingerprints() -> None:
    message = fingerprint.explain_mismatch(EXPECTED, actual())
    assert not message, message


@pytest.mark.parametrize("api", sorted(SERVED))
def test_one_version_per_api_everywhere(api: str) -> None:
    """The client, the endpoints and the current service version agree."""
    classes, client = SERVED[api]
    served = fingerprint.interface(classes).version
    assert client.VERSION == served, f"{client.__name__}.VERSION {client.VERSION} != {served}"
    current = versions.SERVICE_VERSION_HISTORY[versions.SERVICE_VERSION][api]
    assert current == served, (
        f"SERVICE_VERSION {versions.SERVICE_VERSION} says {api} {current}, the code serves "
        f"{served}: add a SERVICE_VERSION for the new API version"
    )


@pytest.mark.parametrize("api", sorted(SERVED))
def test_rpcapi_docstring_has_every_version(api: str) -> None:
    """The rpcapi's "Version history" names each minor from 1.0 to the current one."""
    client = SERVED[api][1]
    major, minor = versions.parse_version(client.VERSION)
    history = (client.__doc__ or "").partition("Version history:")[2]
    assert history, f"{client.__name__} has no 'Version history:' in its docstring"
    listed = re.findall(r"^\s+(\d+\.\d+) - ", history, re.MULTILINE)
    assert listed == [f"{major}.{m}" for m in range(minor + 1)], listed


@pytest.mark.parametrize("api", versions.APIS)
def test_every_api_version_served_came_with_a_service_version(api: str) -> None:
    """Each service version serves the same or a newer API than the one before."""
    seen = [
        versions.SERVICE_VERSION_HISTORY[v][api] for v in sorted(versions.SERVICE_VERSION_HISTORY)
    ]
    parsed = [versions.parse_version(v) for v in seen]
    assert parsed == sorted(parsed), seen


class _Old:
    RPC_API_VERSION = "1.0"

    async def ping(self, context: object, a: int) -> None: ...

    async def gone(self, context: object) -> None: ...


class _NewSameVersion:
    RPC_API_VERSION = "1.0"

    async def ping(self, context: object, a: int, b: int = 0) -> None: ...

    async def added(self, context: object) -> None: ...


def test_a_change_without_a_bump_is_named() -> None:
    old = {"toy": fingerprint.interface([_Old])}
    new = {"toy": fingerprint.interface([_NewSameVersion])}
    message = fingerprint.explain_mismatch(old, new)
    assert "toy 1.0: added added; gone removed; ping changed its arguments" in message
    assert "RPC_API_VERSION did not change" in message
    assert fingerprint.explain_mismatch(old, old) == ""


def test_two_endpoints_serving_one_method_are_refused() -> None:
    with pytest.raises(ValueError, match="ping is served by two"):
        fingerprint.interface([_Old, _NewSameVersion])
