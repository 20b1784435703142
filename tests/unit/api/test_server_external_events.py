"""os-server-external-events over HTTP: who may send them, each event's code,
the 207 multi-status, and what power-update changes."""

from __future__ import annotations

import uuid as uuidlib

from nubes.api import bootstrap
from nubes.db.api import instances as instances_db
from nubes.objects.states import PowerState
from tests.unit.api.conftest import PASSWORD, ApiHarness, auth_body
from tests.unit.api.test_servers import URL, create, login, make_active

__all__ = ["cloud"]

from tests.unit.api.test_servers import cloud

EVENTS = "/compute/v2.1/os-server-external-events"


async def _service_client(cloud: ApiHarness, version: str):
    # Keystone's service role, held by the network service's user.
    await bootstrap.ensure_user(cloud.state.db, "neutron", PASSWORD, "service", ["service"])
    async with cloud.client() as c:
        r = await c.post("/identity/v3/auth/tokens", json=auth_body("neutron", PASSWORD, "service"))
    assert r.status_code == 201, r.text
    return cloud.client(r.headers["X-Subject-Token"], version)


async def _server(cloud: ApiHarness, *, active: bool = True, **values) -> str:
    async with await login(cloud, "demo", "2.37") as c:
        server = await create(c, cloud, networks="none")
    if active:
        await make_active(cloud, server["id"], **values)
    return str(server["id"])


async def _row(cloud: ApiHarness, uuid: str):
    async with cloud.state.db.reader() as conn:
        return await instances_db.get_by_uuid(conn, uuid)


async def test_the_service_role_exists_at_bootstrap(cloud: ApiHarness) -> None:
    async with await login(cloud, "admin") as c:
        r = await c.get("/identity/v3/roles?name=service")
    assert [role["name"] for role in r.json()["roles"]] == ["service"]


async def test_each_event_gets_its_code_and_any_failure_makes_207(cloud: ApiHarness) -> None:
    active = await _server(cloud)
    building = await _server(cloud, active=False)  # no host yet
    missing = str(uuidlib.uuid4())
    async with await _service_client(cloud, "2.76") as c:
        r = await c.post(
            EVENTS, json={"events": [{"name": "network-changed", "server_uuid": active}]}
        )
        assert r.status_code == 200, r.text
        assert r.json() == {
            "events": [
                {
                    "name": "network-changed",
                    "server_uuid": active,
                    "status": "completed",
                    "code": 200,
                }
            ]
        }
        events = [
            {"name": "network-vif-plugged", "server_uuid": active, "tag": "port-1"},
            {"name": "network-vif-unplugged", "server_uuid": missing},
            {"name": "network-vif-deleted", "server_uuid": building, "status": "in-progress"},
            {"name": "power-update", "server_uuid": active},  # no tag
        ]
        r = await c.post(EVENTS, json={"events": events})
        assert r.status_code == 207, r.text
        got = r.json()["events"]
        assert [(e["code"], e["status"]) for e in got] == [
            (200, "completed"),
            (404, "failed"),
            (422, "failed"),
            (400, "failed"),
        ]
        assert got[0]["tag"] == "port-1" and got[1]["server_uuid"] == missing
        # Every event failing is still a 207 with each one's code (Nova since Stein).
        r = await c.post(
            EVENTS, json={"events": [{"name": "network-changed", "server_uuid": missing}]}
        )
        assert r.status_code == 207 and r.json()["events"][0]["code"] == 404


async def test_bad_bodies_and_names_beyond_the_microversion_are_400(cloud: ApiHarness) -> None:
    active = await _server(cloud)
    async with await _service_client(cloud, "2.75") as c:
        for body in (
            {"events": []},
            {"events": [{"name": "network-changed"}]},
            {"events": [{"name": "network-changed", "server_uuid": "not-a-uuid"}]},
            {"events": [{"name": "nope", "server_uuid": active}]},
            {"events": [{"name": "network-changed", "server_uuid": active, "extra": 1}]},
            {"events": [{"name": "network-changed", "server_uuid": active, "status": "x"}]},
            # power-update is 2.76's.
            {"events": [{"name": "power-update", "server_uuid": active, "tag": "POWER_OFF"}]},
        ):
            r = await c.post(EVENTS, json=body)
            assert r.status_code == 400, (body, r.text)
            assert "badRequest" in r.json(), r.text
        r = await c.post(
            EVENTS,
            json={"events": [{"name": "volume-extended", "server_uuid": active, "tag": "v"}]},
        )
        assert r.status_code == 200, r.text


async def test_only_a_service_or_an_admin_may_send_events(cloud: ApiHarness) -> None:
    active = await _server(cloud)
    body = {"events": [{"name": "network-changed", "server_uuid": active}]}
    async with await login(cloud, "demo") as c:
        r = await c.post(EVENTS, json=body)
        assert r.status_code == 403 and "forbidden" in r.json()
    async with await login(cloud, "admin") as c:
        assert (await c.post(EVENTS, json=body)).status_code == 200


async def test_power_update_records_the_power_another_service_saw(cloud: ApiHarness) -> None:
    uuid = await _server(cloud)
    async with await _service_client(cloud, "2.76") as c:

        async def send(tag: str) -> None:
            event = {"name": "power-update", "server_uuid": uuid, "tag": tag}
            r = await c.post(EVENTS, json={"events": [event]})
            assert r.status_code == 200 and r.json()["events"][0]["code"] == 200, r.text

        await send("POWER_OFF")
        row = await _row(cloud, uuid)
        assert (row["vm_state"], row["power_state"]) == ("stopped", PowerState.SHUTDOWN)
        await send("POWER_OFF")  # already so: nothing changes
        assert (await _row(cloud, uuid))["vm_state"] == "stopped"
        await send("POWER_ON")
        row = await _row(cloud, uuid)
        assert (row["vm_state"], row["power_state"]) == ("active", PowerState.RUNNING)
        # While an operation runs it records its own outcome: the event changes nothing.
        async with cloud.state.db.writer() as conn:
            await instances_db.update(conn, uuid, {"task_state": "powering-off"})
        await send("POWER_OFF")
        row = await _row(cloud, uuid)
        assert (row["vm_state"], row["task_state"]) == ("active", "powering-off")
    async with await login(cloud, "demo", "2.76") as c:
        shown = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert shown["status"] == "ACTIVE"
