"""The lifecycle actions over HTTP: Nova's bodies, codes, microversions and
policies (the tasks they start are driven in tests/functional)."""

from __future__ import annotations

from typing import Any

from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_servers import URL, cloud, create, finish_task, login, make_active

__all__ = ["cloud"]


async def _server(cloud: ApiHarness) -> str:
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    await make_active(cloud, uuid)
    return str(uuid)


async def test_pause_suspend_rescue_set_nova_task_states(cloud: ApiHarness) -> None:
    uuid = await _server(cloud)
    async with await login(cloud, "demo") as c:

        async def act(payload: Any, code: int = 202) -> dict[str, Any]:
            r = await c.post(f"{URL}/{uuid}/action", json=payload)
            assert r.status_code == code, r.text
            return dict((await c.get(f"{URL}/{uuid}")).json()["server"])

        server = await act({"pause": None})
        assert server["OS-EXT-STS:task_state"] == "pausing"
        await act({"suspend": None}, 409)  # busy
        await finish_task(cloud, uuid, task_state=None, vm_state="paused", power_state=3)
        server = await act({"unpause": None})
        assert server["OS-EXT-STS:task_state"] == "unpausing"
        await finish_task(cloud, uuid, task_state=None, vm_state="active", power_state=1)
        server = await act({"suspend": None})
        assert server["OS-EXT-STS:task_state"] == "suspending"
        await finish_task(cloud, uuid, task_state=None, vm_state="suspended", power_state=7)
        assert (await c.get(f"{URL}/{uuid}")).json()["server"]["status"] == "SUSPENDED"
        r = await c.post(f"{URL}/{uuid}/action", json={"pause": None})
        assert r.status_code == 409
        assert "while it is in vm_state suspended" in r.json()["conflictingRequest"]["message"]
        server = await act({"resume": None})
        assert server["OS-EXT-STS:task_state"] == "resuming"
        await finish_task(cloud, uuid, task_state=None, vm_state="active", power_state=1)
        # Rescue answers 200 with the password of the rescue boot (given or made).
        r = await c.post(f"{URL}/{uuid}/action", json={"rescue": {"adminPass": "MySecret"}})
        assert r.status_code == 200, r.text
        assert r.json() == {"adminPass": "MySecret"}
        server = dict((await c.get(f"{URL}/{uuid}")).json()["server"])
        assert server["OS-EXT-STS:task_state"] == "rescuing"
        await finish_task(cloud, uuid, task_state=None, vm_state="rescued")
        assert (await c.get(f"{URL}/{uuid}")).json()["server"]["status"] == "RESCUE"
        server = await act({"unrescue": None})
        assert server["OS-EXT-STS:task_state"] == "unrescuing"
        await finish_task(cloud, uuid, task_state=None, vm_state="active")
        r = await c.post(f"{URL}/{uuid}/action", json={"rescue": None})
        assert r.status_code == 200 and len(r.json()["adminPass"]) >= 8
        await finish_task(cloud, uuid, task_state=None, vm_state="active")
        server = await act({"changePassword": {"adminPass": "new-one"}})
        assert server["OS-EXT-STS:task_state"] == "updating_password"
        await finish_task(cloud, uuid, task_state=None)
        r = await c.get(f"{URL}/{uuid}/os-instance-actions")
        names = [a["action"] for a in r.json()["instanceActions"]]
    for name in ("pause", "unpause", "suspend", "resume", "rescue", "unrescue", "changePassword"):
        assert name in names


async def test_bad_bodies_are_400_and_unknown_images_404(cloud: ApiHarness) -> None:
    uuid = await _server(cloud)
    async with await login(cloud, "demo") as c:
        for payload in (
            {"rescue": {"rescue_image_ref": "not-a-uuid"}},
            {"rescue": {"adminPass": 1}},
            {"rescue": {"other": "x"}},
            {"changePassword": None},
            {"changePassword": {}},
            {"changePassword": {"adminPass": "x", "more": 1}},
        ):
            r = await c.post(f"{URL}/{uuid}/action", json=payload)
            assert r.status_code == 400, (payload, r.text)
            assert r.json()["badRequest"]["message"]
        r = await c.post(
            f"{URL}/{uuid}/action",
            json={"rescue": {"rescue_image_ref": "0b1f4bb1-5d9e-4d4b-9b0a-8a1e6b6f9c11"}},
        )
        assert r.status_code == 404
        assert "could not be found" in r.json()["itemNotFound"]["message"]
        async with cloud.state.db.reader() as conn:
            from nubes.db.api import tasks as tasks_db

            assert await tasks_db.get_active_for_instance(conn, uuid) is None


async def test_trigger_crash_dump_is_217_and_needs_a_running_guest(cloud: ApiHarness) -> None:
    uuid = await _server(cloud)
    async with await login(cloud, "demo", "2.16") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"trigger_crash_dump": None})
        assert r.status_code == 404, r.text
    async with await login(cloud, "demo", "2.17") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"trigger_crash_dump": {}})
        assert r.status_code == 400, r.text
        r = await c.post(f"{URL}/{uuid}/action", json={"trigger_crash_dump": None})
        assert r.status_code == 202, r.text
        # Nova sets no task_state for it; the task makes the next one wait.
        server = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert server["OS-EXT-STS:task_state"] is None
        await finish_task(cloud, uuid, power_state=4)
        r = await c.post(f"{URL}/{uuid}/action", json={"trigger_crash_dump": None})
        assert r.status_code == 409
        assert "is not running" in r.json()["conflictingRequest"]["message"]


async def test_strangers_readers_and_removed_actions(cloud: ApiHarness) -> None:
    uuid = await _server(cloud)
    async with await login(cloud, "other") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"pause": None})
        assert r.status_code == 404
    async with await login(cloud, "viewer") as c:
        for payload in ({"pause": None}, {"suspend": None}, {"rescue": None}):
            r = await c.post(f"{URL}/{uuid}/action", json=payload)
            assert r.status_code == 403, r.text
    async with await login(cloud, "demo") as c:
        # Nova removed them with the XenAPI driver; its admins get 410.
        r = await c.post(f"{URL}/{uuid}/action", json={"os-resetNetwork": None})
        assert r.status_code == 403
    async with await login(cloud, "admin") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"os-resetNetwork": None})
        assert r.status_code == 410, r.text
        # Nova's fault name for a code it has none for (410 among them).
        assert r.json()["computeFault"]["code"] == 410
        # injectNetworkInfo Nova still accepts (its drivers, like nubes', have
        # nothing to inject), whatever its value (Tempest sends {}).
        for value in (None, {}):
            r = await c.post(f"{URL}/{uuid}/action", json={"injectNetworkInfo": value})
            assert r.status_code == 202, r.text
    async with await login(cloud, "demo") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"injectNetworkInfo": None})
        assert r.status_code == 403, r.text
    async with await login(cloud, "demo") as c:
        assert (await c.post(f"{URL}/{uuid}/action", json={"lock": None})).status_code == 202
    async with await login(cloud, "demo") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"pause": None})
        assert r.status_code == 409 and "locked" in r.text


async def test_shelve_offload_unshelve_bodies_microversions_and_policies(
    cloud: ApiHarness,
) -> None:
    uuid = await _server(cloud)
    async with await login(cloud, "demo") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"shelve": None})
        assert r.status_code == 202, r.text
        server = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert server["OS-EXT-STS:task_state"] == "shelving"
    await finish_task(cloud, uuid, task_state=None, vm_state="shelved", power_state=4)
    async with await login(cloud, "demo") as c:
        assert (await c.get(f"{URL}/{uuid}")).json()["server"]["status"] == "SHELVED"
        # Offloading is an admin's (Nova's default rule).
        r = await c.post(f"{URL}/{uuid}/action", json={"shelveOffload": None})
        assert r.status_code == 403
    async with await login(cloud, "demo", "2.77") as c:
        # A zone for a server that is not offloaded: 409.
        r = await c.post(f"{URL}/{uuid}/action", json={"unshelve": {"availability_zone": "nova"}})
        assert r.status_code == 409, r.text
        assert "SHELVED_OFFLOADED" in r.json()["conflictingRequest"]["message"]
        r = await c.post(f"{URL}/{uuid}/action", json={"unshelve": {"host": "fake-0"}})
        assert r.status_code == 400  # no host before 2.91
    async with await login(cloud, "admin", "2.91") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"shelveOffload": None})
        assert r.status_code == 202, r.text
    await finish_task(
        cloud, uuid, task_state=None, vm_state="shelved_offloaded", host=None, node=None
    )
    async with await login(cloud, "demo", "2.77") as c:
        assert (await c.get(f"{URL}/{uuid}")).json()["server"]["status"] == "SHELVED_OFFLOADED"
        r = await c.post(
            f"{URL}/{uuid}/action", json={"unshelve": {"availability_zone": "nowhere"}}
        )
        assert r.status_code == 400
        assert "availability zone is not available" in r.json()["badRequest"]["message"]
        r = await c.post(f"{URL}/{uuid}/action", json={"unshelve": {"availability_zone": None}})
        assert r.status_code == 400  # null only from 2.91
    async with await login(cloud, "demo", "2.91") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"unshelve": {"host": "fake-0"}})
        assert r.status_code == 403  # a host is an admin's to name
    async with await login(cloud, "admin", "2.91") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"unshelve": {"host": "no-such-host"}})
        assert r.status_code == 400
        assert "could not be found" in r.json()["badRequest"]["message"]
        r = await c.post(f"{URL}/{uuid}/action", json={"unshelve": {"availability_zone": None}})
        assert r.status_code == 202, r.text
        server = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert server["OS-EXT-STS:task_state"] == "unshelving"
        r = await c.get(f"{URL}/{uuid}/os-instance-actions")
        names = [a["action"] for a in r.json()["instanceActions"]]
    assert {"shelve", "shelveOffload", "unshelve"} <= set(names)


async def test_restore_and_force_delete(cloud: ApiHarness) -> None:
    uuid = await _server(cloud)
    async with await login(cloud, "demo") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"restore": None})
        assert r.status_code == 409
        assert "Cannot 'restore' instance" in r.json()["conflictingRequest"]["message"]
    await finish_task(cloud, uuid, vm_state="soft-delete", power_state=4)
    async with await login(cloud, "demo") as c:
        assert (await c.get(f"{URL}/{uuid}")).json()["server"]["status"] == "SOFT_DELETED"
        r = await c.post(f"{URL}/{uuid}/action", json={"restore": None})
        assert r.status_code == 202, r.text
        server = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert server["OS-EXT-STS:task_state"] == "restoring"
        await finish_task(cloud, uuid, task_state=None)
        r = await c.post(f"{URL}/{uuid}/action", json={"forceDelete": None})
        assert r.status_code == 202, r.text
        server = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert server["OS-EXT-STS:task_state"] == "deleting"


async def test_a_delete_while_a_build_closes_deletes_for_good(cloud: ApiHarness) -> None:
    """With soft delete on, a server whose build wrote it ACTIVE but whose
    build task has not closed yet is deleted for good (the delete cancels the
    task), not refused as busy: Nova deletes what it may not soft-delete."""
    from nubes.db.api import instances as instances_db
    from nubes.db.api import tasks as tasks_db
    from nubes.db.types import utcnow

    cloud.state.conf.set_override("reclaim_instance_interval", 3600)
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
        async with cloud.state.db.writer() as conn:
            build = await tasks_db.get_active_for_instance(conn, uuid)
            assert build is not None and build["kind"] == "build"
            values = {"vm_state": "active", "task_state": None, "host": "fake-0"}
            await instances_db.update(conn, uuid, {**values, "launched_at": utcnow()})
        r = await c.delete(f"{URL}/{uuid}")
        assert r.status_code == 204, r.text
        async with cloud.state.db.reader() as conn:
            task = await tasks_db.get_active_for_instance(conn, uuid)
        assert task is not None and task["kind"] == "delete"
        # Once idle, the same delete only soft-deletes.
        other = (await create(c, cloud))["id"]
        await make_active(cloud, other)
        assert (await c.delete(f"{URL}/{other}")).status_code == 204
        async with cloud.state.db.reader() as conn:
            task = await tasks_db.get_active_for_instance(conn, other)
        assert task is not None and task["kind"] == "soft_delete"
