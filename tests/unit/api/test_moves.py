"""The move actions over HTTP: what each records (docs/moves.md) and every refusal.

No conductor runs here: a request's records are read back from the
database (instance state, migration row, action, task and its payload),
and the conductor client is a recorder of what it was asked (kicks, casts).
Tests put rows where a conductor would have left them (``boot``, ``settle``,
``finish_move``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from nubes.api.compute_v21 import server_views
from nubes.conductor.tasks.payloads import PAYLOAD_VERSION
from nubes.db.api import migrations as migrations_db
from nubes.db.api import services
from nubes.db.api import tasks as tasks_db
from nubes.db.types import utcnow
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.moves_cloud import (
    URL,
    Cloud,
    act,
    assert_untouched,
    boot,
    fault,
    make_cloud,
    migration_of,
    records,
    settle,
    status,
)


@pytest.fixture
async def cloud(api: ApiHarness) -> Cloud:
    return await make_cloud(api)


# --- cold migration --------------------------------------------------------------------------


async def test_migrate_records_the_move(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    r = await act(cloud, uuid, {"migrate": None})
    assert r.status_code == 202 and r.content == b""
    found = await records(cloud, uuid)
    inst, tiny = found["instance"], cloud.flavors["1"]
    assert (inst["vm_state"], inst["task_state"]) == ("active", "resize_prep")
    assert inst["old_flavor"] == inst["new_flavor"] == inst["flavor"]
    migration = migration_of(found)
    assert migration["migration_type"] == "migration"
    assert migration["status"] == "pre-migrating"
    assert (migration["source_compute"], migration["source_node"]) == ("fake-0", "fake-0")
    assert migration["dest_compute"] is None and migration["dest_node"] is None
    assert migration["old_instance_type_id"] == migration["new_instance_type_id"] == tiny["id"]
    assert migration["project_id"] == cloud.api.projects["admin"]
    assert found["action"]["action"] == "migrate"
    task = found["task"]
    assert (task["kind"], task["step"], task["status"]) == ("migrate", "schedule", "pending")
    assert task["payload"] == {
        "v": PAYLOAD_VERSION,
        "migration_id": migration["id"],
        "host": None,
        "flavor": inst["flavor"],
        "power_on": True,
    }
    assert cloud.conductor.calls == [("kick", [task["id"]])]
    assert await status(cloud, uuid) == "RESIZE"


async def test_migrate_to_a_host_from_2_56_and_a_stopped_server(cloud: Cloud) -> None:
    uuid = await boot(cloud, vm_state="stopped", power_state=4)
    # Before 2.56 the body's host is not read (Nova ignores it).
    r = await act(cloud, uuid, {"migrate": {"host": "fake-1"}}, version="2.55")
    assert r.status_code == 202, r.text
    found = await records(cloud, uuid)
    assert migration_of(found)["dest_compute"] is None
    assert found["task"]["payload"]["power_on"] is False
    assert await status(cloud, uuid) == "RESIZE"

    other = await boot(cloud)
    r = await act(cloud, other, {"migrate": {"host": "fake-1"}}, version="2.56")
    assert r.status_code == 202, r.text
    found = await records(cloud, other)
    assert migration_of(found)["dest_compute"] == "fake-1"
    assert found["task"]["payload"]["host"] == "fake-1"


@pytest.mark.parametrize(
    ("body", "version", "code", "words"),
    [
        ({"migrate": {"host": "fake-0"}}, "2.56", 400, "Cannot migrate to the host where"),
        ({"migrate": {"host": "nope"}}, "2.56", 400, "Compute host nope could not be found."),
        ({"migrate": {"bogus": 1}}, "2.56", 400, "Additional properties"),
        ({"migrate": {"host": ""}}, "2.56", 400, "migrate/host"),
    ],
)
async def test_migrate_refusals(
    cloud: Cloud, body: Any, version: str, code: int, words: str
) -> None:
    uuid = await boot(cloud)
    assert words in fault(await act(cloud, uuid, body, version=version), code)
    await assert_untouched(cloud, uuid)


async def test_migrate_is_for_admins_and_needs_an_idle_server(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    message = fault(await act(cloud, uuid, {"migrate": None}, user="demo"), 403)
    assert "os_compute_api:os-migrate-server:migrate" in message
    async with await cloud.login("other") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"migrate": None})
    assert fault(r, 404) == f"Instance {uuid} could not be found."
    await settle(cloud, uuid, task_state="rebooting")
    message = fault(await act(cloud, uuid, {"migrate": None}), 409)
    assert message == f"Cannot 'migrate' instance {uuid} while it is in task_state rebooting"
    await settle(cloud, uuid, task_state=None, vm_state="paused")
    message = fault(await act(cloud, uuid, {"migrate": None}), 409)
    assert message == f"Cannot 'migrate' instance {uuid} while it is in vm_state paused"
    await assert_untouched(cloud, uuid, "paused")


async def test_one_transaction_nothing_written_when_a_task_is_active(cloud: Cloud) -> None:
    """The task insert fails last (one active task per instance): the rest rolls back."""
    uuid = await boot(cloud)
    async with cloud.api.state.db.writer() as conn:
        await tasks_db.create(
            conn,
            kind="stop",
            instance_uuid=uuid,
            step="power",
            payload={},
            context={},
            deadline=utcnow() + dt.timedelta(hours=1),
        )
    message = fault(await act(cloud, uuid, {"migrate": None}), 409)
    assert "has an operation in progress" in message
    found = await records(cloud, uuid)
    assert found["migrations"] == [] and found["instance"]["task_state"] is None
    assert found["action"]["action"] == "create" and found["task"]["kind"] == "stop"
    assert cloud.conductor.calls == []


# --- resize -------------------------------------------------------------------------------


async def test_resize_records_the_move(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    body = {"resize": {"flavorRef": "2", "OS-DCF:diskConfig": "AUTO"}}
    r = await act(cloud, uuid, body, user="demo")
    assert r.status_code == 202 and r.content == b""
    found = await records(cloud, uuid)
    inst = found["instance"]
    assert inst["task_state"] == "resize_prep"
    assert inst["old_flavor"] == inst["flavor"] and inst["old_flavor"]["flavorid"] == "1"
    assert inst["new_flavor"]["flavorid"] == "2" and inst["new_flavor"]["root_gb"] == 20
    assert inst["system_metadata"]["disk_config"] == "AUTO"
    migration = migration_of(found)
    assert (migration["migration_type"], migration["status"]) == ("resize", "pre-migrating")
    assert migration["old_instance_type_id"] == cloud.flavors["1"]["id"]
    assert migration["new_instance_type_id"] == cloud.flavors["2"]["id"]
    assert migration["project_id"] == cloud.api.projects["demo"]
    assert found["action"]["action"] == "resize"
    assert found["task"]["kind"] == "migrate"
    assert found["task"]["payload"] == {
        "v": PAYLOAD_VERSION,
        "migration_id": migration["id"],
        "flavor": inst["new_flavor"],
        "power_on": True,
    }
    assert cloud.conductor.calls == [("kick", [found["task"]["id"]])]
    async with await cloud.login("demo") as c:
        shown = (await c.get(f"{URL}/{uuid}")).json()["server"]
    assert shown["status"] == "RESIZE" and shown["OS-DCF:diskConfig"] == "AUTO"
    assert shown["flavor"]["id"] == "1"  # the new flavor applies once the move finishes


@pytest.mark.parametrize(
    ("start", "flavor_ref", "words"),
    [
        ("1", "1", "When resizing, instances must change flavor!"),
        ("1", "nope", "Flavor nope could not be found."),
        ("1", "d", "Flavor d could not be found."),
        ("2", "1", "Server disk was unable to be resized because: Unable to resize disk down."),
        ("e", "2", "Unable to resize disk down."),
        ("2", "z", "Resize to zero disk flavor is not allowed."),
    ],
)
async def test_resize_refusals(cloud: Cloud, start: str, flavor_ref: str, words: str) -> None:
    uuid = await boot(cloud, flavor=start)
    r = await act(cloud, uuid, {"resize": {"flavorRef": flavor_ref}}, user="demo")
    assert words in fault(r, 400)
    await assert_untouched(cloud, uuid)


async def test_resize_checks_the_new_flavor_against_the_image(cloud: Cloud) -> None:
    uuid = await boot(cloud, flavor="2", image_ref=cloud.big_image)
    r = await act(cloud, uuid, {"resize": {"flavorRef": "m"}}, user="demo")
    assert fault(r, 400) == "Flavor's memory is too small for requested image."
    await assert_untouched(cloud, uuid)


async def test_resize_policy_lock_and_schema(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    resize = {"resize": {"flavorRef": "2"}}
    assert "servers:resize" in fault(await act(cloud, uuid, resize, user="viewer"), 403)
    for bad in (
        {"resize": {}},
        {"resize": {"flavorRef": ""}},
        {"resize": {"flavorRef": "2", "x": 1}},
    ):
        assert "resize" in fault(await act(cloud, uuid, bad, user="demo"), 400)
    assert (await act(cloud, uuid, {"lock": None})).status_code == 202  # an admin's lock
    message = fault(await act(cloud, uuid, resize, user="demo"), 409)
    assert message == f"Instance {uuid} is locked"
    await assert_untouched(cloud, uuid, action="lock")
    # Admins act on locked servers, and a flavor's URL names it too.
    r = await act(cloud, uuid, {"resize": {"flavorRef": "http://nubes.test/flavors/2"}})
    assert r.status_code == 202, r.text


# --- confirm and revert ---------------------------------------------------------------------


async def finish_move(cloud: Cloud, uuid: str) -> dict[str, Any]:
    """Where the migrate task leaves a resize: VERIFY_RESIZE, migration finished."""
    found = await records(cloud, uuid)
    migration = migration_of(found)
    await settle(cloud, uuid, vm_state="resized", task_state=None, host="fake-1", node="fake-1")
    async with cloud.api.state.db.writer() as conn:
        return await migrations_db.update(
            conn, migration["id"], {"status": "finished", "dest_compute": "fake-1"}
        )


async def test_confirm_and_revert_record_their_tasks(cloud: Cloud) -> None:
    kept, reverted = await boot(cloud), await boot(cloud)
    for uuid in (kept, reverted):
        r = await act(cloud, uuid, {"resize": {"flavorRef": "2"}}, user="demo")
        assert r.status_code == 202, r.text
        await finish_move(cloud, uuid)
        assert await status(cloud, uuid) == "VERIFY_RESIZE"
    cloud.conductor.calls.clear()

    r = await act(cloud, kept, {"confirmResize": None}, user="demo")
    assert r.status_code == 204 and r.content == b""
    found = await records(cloud, kept)
    assert (found["instance"]["vm_state"], found["instance"]["task_state"]) == (
        "resized",
        "resize_confirming",
    )
    assert migration_of(found)["status"] == "confirming"
    assert found["action"]["action"] == "confirmResize"
    assert (found["task"]["kind"], found["task"]["step"]) == ("confirm_resize", "confirm_source")
    assert found["task"]["payload"] == {
        "v": PAYLOAD_VERSION,
        "migration_id": migration_of(found)["id"],
    }
    assert await status(cloud, kept) == "VERIFY_RESIZE"

    r = await act(cloud, reverted, {"revertResize": None}, user="demo")
    assert r.status_code == 202 and r.content == b""
    found = await records(cloud, reverted)
    assert found["instance"]["task_state"] == "resize_reverting"
    assert migration_of(found)["status"] == "reverting"
    assert found["action"]["action"] == "revertResize"
    assert (found["task"]["kind"], found["task"]["step"]) == ("revert_resize", "revert_dest")
    assert found["task"]["payload"] == {
        "v": PAYLOAD_VERSION,
        "migration_id": migration_of(found)["id"],
    }
    assert await status(cloud, reverted) == "REVERT_RESIZE"
    tasks = [call[1][0] for call in cloud.conductor.calls]
    assert len(tasks) == 2 and all(call[0] == "kick" for call in cloud.conductor.calls)

    # Busy confirming: neither again.
    message = fault(await act(cloud, kept, {"revertResize": None}, user="demo"), 409)
    assert message == (
        f"Cannot 'revertResize' instance {kept} while it is in task_state resize_confirming"
    )


async def test_confirm_and_revert_refusals(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    for action in ("confirmResize", "revertResize"):
        message = fault(await act(cloud, uuid, {action: None}, user="demo"), 409)
        assert message == f"Cannot '{action}' instance {uuid} while it is in vm_state active"
    # VERIFY_RESIZE with no finished migration (say it was reset by hand).
    await settle(cloud, uuid, vm_state="resized")
    for action in ("confirmResize", "revertResize"):
        message = fault(await act(cloud, uuid, {action: None}, user="demo"), 400)
        assert message == "Instance has not been resized."
    assert "confirm_resize" in fault(
        await act(cloud, uuid, {"confirmResize": None}, user="viewer"), 403
    )
    await assert_untouched(cloud, uuid, "resized")


# --- live migration ------------------------------------------------------------------------


async def test_live_migrate_records_the_move(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    body = {"os-migrateLive": {"block_migration": False, "disk_over_commit": False, "host": None}}
    r = await act(cloud, uuid, body, version="2.1")
    assert r.status_code == 202 and r.content == b""
    found = await records(cloud, uuid)
    assert found["instance"]["task_state"] == "migrating"
    migration = migration_of(found)
    assert (migration["migration_type"], migration["status"]) == ("live-migration", "accepted")
    assert migration["source_compute"] == "fake-0" and migration["dest_compute"] is None
    assert found["action"]["action"] == "live-migration"
    assert (found["task"]["kind"], found["task"]["step"]) == ("live_migrate", "schedule")
    assert found["task"]["payload"] == {
        "v": PAYLOAD_VERSION,
        "migration_id": migration["id"],
        "host": None,
        "block_migration": False,
    }
    assert cloud.conductor.calls == [("kick", [found["task"]["id"]])]
    assert await status(cloud, uuid) == "MIGRATING"


@pytest.mark.parametrize(
    ("version", "live", "host", "block"),
    [
        ("2.25", {"block_migration": "auto", "host": None}, None, "auto"),
        ("2.25", {"block_migration": "yes", "host": "fake-1"}, "fake-1", True),
        ("2.30", {"block_migration": "auto", "host": "fake-1", "force": True}, "fake-1", "auto"),
        ("2.61", {"block_migration": False, "host": "fake-1"}, "fake-1", False),
        ("2.67", {"block_migration": "auto", "host": "fake-1", "force": True}, "fake-1", "auto"),
        ("2.73", {"block_migration": "auto", "host": "fake-1"}, "fake-1", "auto"),
    ],
)
async def test_live_migrate_versions(
    cloud: Cloud, version: str, live: dict[str, Any], host: str | None, block: Any
) -> None:
    uuid = await boot(cloud)
    r = await act(cloud, uuid, {"os-migrateLive": live}, version=version)
    assert r.status_code == 202, r.text
    found = await records(cloud, uuid)
    assert migration_of(found)["dest_compute"] == host
    assert found["task"]["payload"]["host"] == host
    assert found["task"]["payload"]["block_migration"] == block


@pytest.mark.parametrize(
    ("version", "live", "code", "words"),
    [
        ("2.30", {"block_migration": "auto", "host": "fake-0"}, 400, "to current host (fake-0)"),
        ("2.30", {"block_migration": "auto", "host": "nope"}, 400, "Compute host nope could"),
        ("2.30", {"block_migration": "auto", "host": None, "force": True}, 400, "Can't force"),
        ("2.24", {"block_migration": "auto", "disk_over_commit": False, "host": None}, 400, "auto"),
        ("2.25", {"block_migration": True, "disk_over_commit": False, "host": None}, 400, "disk"),
        ("2.29", {"block_migration": True, "host": None, "force": True}, 400, "force"),
        ("2.68", {"block_migration": "auto", "host": "fake-1", "force": True}, 400, "force"),
        ("2.1", {"block_migration": False, "host": None}, 400, "disk_over_commit"),
    ],
)
async def test_live_migrate_refusals(
    cloud: Cloud, version: str, live: dict[str, Any], code: int, words: str
) -> None:
    uuid = await boot(cloud)
    r = await act(cloud, uuid, {"os-migrateLive": live}, version=version)
    assert words in fault(r, code)
    await assert_untouched(cloud, uuid)


async def test_live_migrate_state_and_policy(cloud: Cloud) -> None:
    uuid = await boot(cloud, vm_state="stopped", power_state=4)
    live = {"os-migrateLive": {"block_migration": "auto", "host": None}}
    message = fault(await act(cloud, uuid, live, version="2.25"), 409)
    assert message == f"Cannot 'os-migrateLive' instance {uuid} while it is in vm_state stopped"
    r = await act(cloud, uuid, live, user="demo", version="2.25")
    assert "migrate_live" in fault(r, 403)
    await assert_untouched(cloud, uuid, "stopped")
    # A paused server live-migrates (Nova's state rule).
    await settle(cloud, uuid, vm_state="paused", power_state=3)
    assert (await act(cloud, uuid, live, version="2.25")).status_code == 202
    assert await status(cloud, uuid) == "MIGRATING"


# --- evacuate -----------------------------------------------------------------------------


async def host_down(cloud: Cloud, host: str, *, forced: bool = True) -> None:
    async with cloud.api.state.db.writer() as conn:
        svc = await services.get_by_host_and_binary(conn, host, "compute")
        if forced:
            await services.update(conn, svc["id"], {"forced_down": True})
        else:
            stale = utcnow() - dt.timedelta(seconds=cloud.api.state.conf.service_down_time + 5)
            await services.heartbeat(conn, svc["id"], now=stale)


async def test_evacuate_needs_its_host_down(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    message = fault(await act(cloud, uuid, {"evacuate": {}}, version="2.29"), 400)
    assert message == "Compute service of fake-0 is still in use."
    await assert_untouched(cloud, uuid)
    await host_down(cloud, "fake-0", forced=False)  # stopped reporting
    r = await act(cloud, uuid, {"evacuate": {}}, version="2.29")
    assert r.status_code == 200 and r.content == b""


async def test_evacuate_records_the_move(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    await host_down(cloud, "fake-0")
    r = await act(cloud, uuid, {"evacuate": {"host": "fake-1"}}, version="2.29")
    assert r.status_code == 200 and r.content == b""
    found = await records(cloud, uuid)
    assert (found["instance"]["vm_state"], found["instance"]["task_state"]) == (
        "active",
        "rebuilding",
    )
    migration = migration_of(found)
    assert (migration["migration_type"], migration["status"]) == ("evacuation", "accepted")
    assert (migration["source_compute"], migration["dest_compute"]) == ("fake-0", "fake-1")
    assert found["action"]["action"] == "evacuate"
    assert (found["task"]["kind"], found["task"]["step"]) == ("evacuate", "schedule")
    assert found["task"]["payload"] == {
        "v": PAYLOAD_VERSION,
        "migration_id": migration["id"],
        "host": "fake-1",
        "image": {"id": cloud.image, "properties": {}},
        "power_on": True,
    }
    assert cloud.conductor.calls == [("kick", [found["task"]["id"]])]
    assert await status(cloud, uuid) == "REBUILD"


@pytest.mark.parametrize(("version", "power_on"), [("2.94", True), ("2.95", False)])
async def test_evacuate_leaves_the_server_stopped_from_2_95(
    cloud: Cloud, version: str, power_on: bool
) -> None:
    uuid = await boot(cloud)
    await host_down(cloud, "fake-0")
    r = await act(cloud, uuid, {"evacuate": {"host": "fake-1"}}, version=version)
    assert r.status_code == 200, r.text
    assert (await records(cloud, uuid))["task"]["payload"]["power_on"] is power_on


async def test_evacuate_before_2_14_answers_the_password(cloud: Cloud) -> None:
    errored = await boot(cloud, vm_state="error")
    await host_down(cloud, "fake-0")
    r = await act(cloud, errored, {"evacuate": {"onSharedStorage": False}}, version="2.13")
    assert r.status_code == 200 and len(r.json()["adminPass"]) == 12
    found = await records(cloud, errored)
    # As in Nova, only a STOPPED instance is left off: one in ERROR comes back ACTIVE.
    assert found["task"]["payload"]["power_on"] is True
    assert await status(cloud, errored) == "REBUILD"
    shared = await boot(cloud)
    body = {"evacuate": {"onSharedStorage": True, "adminPass": "pw"}}
    message = fault(await act(cloud, shared, body, version="2.13"), 400)
    assert message == "admin password can't be changed on existing disk"
    r = await act(cloud, shared, {"evacuate": {"onSharedStorage": "yes"}}, version="2.13")
    assert r.status_code == 200 and r.json() == {"adminPass": None}


@pytest.mark.parametrize(
    ("body", "version", "code", "words"),
    [
        ({"evacuate": {"host": "nope"}}, "2.29", 404, "Compute host nope not found."),
        ({"evacuate": {"host": "fake-0"}}, "2.29", 400, "The target host can't be the same one."),
        ({"evacuate": {"force": True}}, "2.29", 400, "Can't force to a non-provided destination"),
        ({"evacuate": {"force": True}}, "2.28", 400, "force"),
        ({"evacuate": {"host": "fake-1", "force": True}}, "2.68", 400, "force"),
        ({"evacuate": {}}, "2.13", 400, "onSharedStorage"),
        ({"evacuate": {"onSharedStorage": False}}, "2.14", 400, "onSharedStorage"),
    ],
)
async def test_evacuate_refusals(
    cloud: Cloud, body: Any, version: str, code: int, words: str
) -> None:
    uuid = await boot(cloud)
    await host_down(cloud, "fake-0")
    assert words in fault(await act(cloud, uuid, body, version=version), code)
    await assert_untouched(cloud, uuid)


async def test_evacuate_state_and_policy(cloud: Cloud) -> None:
    uuid = await boot(cloud, vm_state="paused")
    await host_down(cloud, "fake-0")
    message = fault(await act(cloud, uuid, {"evacuate": {}}, version="2.29"), 409)
    assert message == f"Cannot 'evacuate' instance {uuid} while it is in vm_state paused"
    r = await act(cloud, uuid, {"evacuate": {}}, user="demo", version="2.29")
    assert "os-evacuate" in fault(r, 403)
    await assert_untouched(cloud, uuid, "paused")


# --- rebuild ------------------------------------------------------------------------------


async def test_rebuild_records_and_answers_the_server(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    body = {
        "rebuild": {
            "imageRef": cloud.image,
            "name": "rebuilt",
            "metadata": {"new": "1"},
            "description": "again",
            "adminPass": "pw",
            "accessIPv4": "10.0.0.5",
            "preserve_ephemeral": False,
        }
    }
    async with await cloud.login("demo", "2.19") as c:
        r = await c.post(f"{URL}/{uuid}/action", json=body)
    assert r.status_code == 202, r.text
    server = r.json()["server"]
    assert server["status"] == "REBUILD" and server["adminPass"] == "pw"
    assert server["name"] == "rebuilt" and server["metadata"] == {"new": "1"}
    assert server["description"] == "again" and server["accessIPv4"] == "10.0.0.5"
    assert server["image"]["id"] == cloud.image
    # Nova's short body (that of an update) plus the password.
    assert "OS-EXT-STS:task_state" not in server and "key_name" not in server
    assert {"id", "links", "progress", "locked", "adminPass"} <= set(server)
    assert r.headers["location"].endswith(f"/v2.1/servers/{uuid}")
    found = await records(cloud, uuid)
    inst = found["instance"]
    assert (inst["task_state"], inst["image_ref"]) == ("rebuilding", cloud.image)
    assert inst["display_name"] == "rebuilt" and inst["metadata"] == {"new": "1"}
    assert inst["display_description"] == "again"
    assert found["migrations"] == []
    assert found["action"]["action"] == "rebuild"
    assert (found["task"]["kind"], found["task"]["step"]) == ("rebuild", "rebuild")
    assert found["task"]["payload"] == {
        "v": PAYLOAD_VERSION,
        "image": {"id": cloud.image, "properties": {}},
        "power_on": True,
    }
    assert cloud.conductor.calls == [("kick", [found["task"]["id"]])]


async def test_rebuild_preserving_the_ephemeral_disk_is_refused_and_changes_nothing(
    cloud: Cloud,
) -> None:
    # Issue #15: accepted and ignored, the rebuild threw the ephemeral disk away.
    uuid = await boot(cloud)
    body = {"rebuild": {"imageRef": cloud.image, "preserve_ephemeral": True}}
    async with await cloud.login("demo", "2.1") as c:
        r = await c.post(f"{URL}/{uuid}/action", json=body)
    assert r.status_code == 400, r.text
    assert r.json() == {
        "badRequest": {
            "code": 400,
            "message": "The current driver does not support preserving ephemeral partitions.",
        }
    }
    found = await records(cloud, uuid)
    assert found["instance"]["task_state"] is None and found["task"] is None


async def test_rebuild_at_2_57_and_a_stopped_server(cloud: Cloud) -> None:
    uuid = await boot(cloud, vm_state="stopped", power_state=4)
    body = {"rebuild": {"imageRef": cloud.image, "user_data": "aGk=", "key_name": None}}
    async with await cloud.login("demo", "2.57") as c:
        r = await c.post(f"{URL}/{uuid}/action", json=body)
        assert r.status_code == 202, r.text
        server = r.json()["server"]
        assert server["user_data"] == "aGk=" and server["key_name"] is None
        assert len(server["adminPass"]) == 12 and server["status"] == "REBUILD"
    found = await records(cloud, uuid)
    assert found["task"]["payload"]["power_on"] is False
    assert found["instance"]["user_data"] == "aGk="


async def test_rebuild_at_2_75_carries_user_data_once_and_addresses_canonical(
    cloud: Cloud,
) -> None:
    uuid = await boot(cloud)
    given = "0000:0000:0000:0000:0000:babe:220.12.22.2"
    body = {"rebuild": {"imageRef": cloud.image, "user_data": "aGk=", "accessIPv6": given}}
    async with await cloud.login("admin", "2.75") as c:
        r = await c.post(f"{URL}/{uuid}/action", json=body)
        assert r.status_code == 202, r.text
        server = r.json()["server"]
    # Nova's rebuild body: user data at the top only, even for an admin.
    assert server["user_data"] == "aGk=" and "OS-EXT-SRV-ATTR:user_data" not in server
    assert "OS-EXT-SRV-ATTR:host" in server
    # Kept and shown in canonical form (RFC 5952), as Nova's address column does.
    assert server["accessIPv6"] == "::babe:dc0c:1602"


@pytest.mark.parametrize(
    ("version", "rebuild", "words"),
    [
        (
            "2.1",
            {"imageRef": "2b1c0c7a-4b0e-4a39-8dc5-6a3c0b1f9a11"},
            "Cannot find image for rebuild",
        ),
        ("2.1", {"imageRef": "queued"}, "is not active."),
        ("2.1", {"imageRef": "big"}, "Flavor's memory is too small for requested image."),
        ("2.1", {"imageRef": "wide"}, "Flavor's disk is smaller than the minimum size"),
        ("2.1", {}, "imageRef"),
        ("2.1", {"imageRef": "not-a-uuid"}, "imageRef"),
        ("2.18", {"imageRef": "cirros", "description": "x"}, "description"),
        ("2.53", {"imageRef": "cirros", "key_name": None}, "key_name"),
        ("2.54", {"imageRef": "cirros", "key_name": "mine"}, "Invalid key_name provided."),
        ("2.57", {"imageRef": "cirros", "user_data": "***"}, "Userdata"),
        ("2.57", {"imageRef": "cirros", "personality": []}, "personality"),
    ],
)
async def test_rebuild_refusals(
    cloud: Cloud, version: str, rebuild: dict[str, Any], words: str
) -> None:
    uuid = await boot(cloud)
    names = {
        "cirros": cloud.image,
        "queued": cloud.queued_image,
        "big": cloud.big_image,
        "wide": cloud.wide_image,
    }
    if rebuild.get("imageRef") in names:
        rebuild = {**rebuild, "imageRef": names[rebuild["imageRef"]]}
    r = await act(cloud, uuid, {"rebuild": rebuild}, user="demo", version=version)
    assert words in fault(r, 400)
    await assert_untouched(cloud, uuid)


async def test_rebuild_state_lock_and_policy(cloud: Cloud) -> None:
    uuid = await boot(cloud)
    rebuild = {"rebuild": {"imageRef": cloud.image}}
    assert "servers:rebuild" in fault(await act(cloud, uuid, rebuild, user="viewer"), 403)
    assert (await act(cloud, uuid, {"lock": None})).status_code == 202
    assert fault(await act(cloud, uuid, rebuild, user="demo"), 409).endswith("is locked")
    await settle(cloud, uuid, locked=False, vm_state="building", task_state="spawning")
    message = fault(await act(cloud, uuid, rebuild, user="demo"), 409)
    assert message == f"Cannot 'rebuild' instance {uuid} while it is in task_state spawning"
    await settle(cloud, uuid, vm_state="error", task_state=None)
    r = await act(cloud, uuid, rebuild, user="demo")
    assert r.status_code == 202 and r.json()["server"]["status"] == "REBUILD"


# --- views --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vm_state", "task_state", "shown"),
    [
        ("active", "resize_prep", "RESIZE"),
        ("stopped", "resize_migrating", "RESIZE"),
        ("active", "resize_finish", "RESIZE"),
        ("resized", None, "VERIFY_RESIZE"),
        ("resized", "resize_confirming", "VERIFY_RESIZE"),
        ("resized", "resize_reverting", "REVERT_RESIZE"),
        ("active", "migrating", "MIGRATING"),
        ("paused", "migrating", "MIGRATING"),
        ("active", "rebuilding", "REBUILD"),
        ("stopped", "rebuild_spawning", "REBUILD"),
        ("error", "rebuilding", "REBUILD"),
    ],
)
def test_move_statuses_are_novas(vm_state: str, task_state: str | None, shown: str) -> None:
    assert server_views.status_from_state(vm_state, task_state) == shown
