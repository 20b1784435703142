"""Microversions 2.62 to 2.73 at their boundaries (N-1 without, N with).

The views' key sets per version are walked in test_servers.py
(test_show_fields_at_each_boundary); here, what each version changes in
requests and in the other resources.
"""

from __future__ import annotations

import datetime as dt

from nubes.api.compute_v21 import server_views
from nubes.conductor.tasks import build, payloads
from nubes.db.api import actions
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.moves_cloud import boot, fault, make_cloud, records, settle
from tests.unit.api.test_servers import (  # noqa: F401
    URL,
    body,
    cloud,
    create,
    login,
    make_active,
)

BASE = "/compute/v2.1"


def _message(r: object) -> str:
    assert getattr(r, "status_code") == 400, getattr(r, "text")  # noqa: B009
    return str(getattr(r, "json")()["badRequest"]["message"])  # noqa: B009


async def test_event_host_and_host_id_from_2_62(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo") as c:
        server = await create(c, cloud)
    uuid = server["id"]
    async with cloud.state.db.reader() as conn:
        (action,) = await actions.actions_get(conn, uuid)
    async with cloud.state.db.writer() as conn:
        await actions.event_start(
            conn,
            instance_uuid=uuid,
            request_id=action["request_id"],
            event="compute_build",
            host="fake-0",
        )
    path = f"{URL}/{uuid}/os-instance-actions/{action['request_id']}"
    hashed = server_views.host_id({"host": "fake-0", "project_id": cloud.projects["demo"]})
    for user, version, expected in (
        ("admin", "2.61", {"traceback"}),
        ("admin", "2.62", {"traceback", "host", "hostId"}),
        ("demo", "2.61", set()),
        ("demo", "2.62", {"hostId"}),
        ("demo", "2.73", {"hostId"}),
    ):
        async with await login(cloud, user, version) as c:
            (event,) = (await c.get(path)).json()["instanceAction"]["events"]
        base = {"event", "start_time", "finish_time", "result"}
        assert set(event) == base | expected, (user, version)
        if "hostId" in event:
            assert event["hostId"] == hashed
        if "host" in event:
            assert event["host"] == "fake-0"


async def test_trusted_image_certificates_from_2_63_are_refused(cloud: ApiHarness) -> None:  # noqa: F811
    certs = {"trusted_image_certificates": ["0b5d2c72-12cc-4ba6-a8d7-3ff5cc1d8cb8"]}
    async with await login(cloud, "demo", "2.62") as c:
        assert "trusted_image_certificates" in _message(
            await c.post(URL, json=body(cloud, networks="none", **certs))
        )
    async with await login(cloud, "demo", "2.63") as c:
        message = _message(await c.post(URL, json=body(cloud, networks="none", **certs)))
        assert "certificate validation is not enabled" in message
        r = await c.post(URL, json=body(cloud, networks="none", trusted_image_certificates=[]))
        assert r.status_code == 400  # an empty list is no list of ids (minItems)
        server = await create(c, cloud, networks="none", trusted_image_certificates=None)
        await make_active(cloud, server["id"])
        shown = (await c.get(f"{URL}/{server['id']}")).json()["server"]
        assert shown["trusted_image_certificates"] is None
        action = f"{URL}/{server['id']}/action"
        rebuild = {"rebuild": {"imageRef": cloud.image, **certs}}  # type: ignore[attr-defined]
        assert "certificate validation" in _message(await c.post(action, json=rebuild))
        r = await c.post(action, json={"rebuild": {"imageRef": cloud.image}})  # type: ignore[attr-defined]
        assert r.status_code == 202, r.text
        assert r.json()["server"]["trusted_image_certificates"] is None


async def test_changes_before_from_2_66(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo") as c:
        old = (await create(c, cloud, name="old"))["id"]
        # Between the two creates: after the old one's last change, before the new one.
        cut = dt.datetime.now(dt.UTC).isoformat()
        new = (await create(c, cloud, name="new"))["id"]
    async with await login(cloud, "demo", "2.65") as c:
        listed = (await c.get(URL, params={"changes-before": cut})).json()["servers"]
        assert {s["id"] for s in listed} == {old, new}  # not a filter yet
    async with await login(cloud, "demo", "2.66") as c:
        listed = (await c.get(URL, params={"changes-before": cut})).json()["servers"]
        assert [s["id"] for s in listed] == [old]
        window = {"changes-since": "2999-01-01T00:00:00Z", "changes-before": cut}
        assert "less than or equal" in _message(await c.get(URL, params=window))
        assert "changes-before" in _message(await c.get(URL, params={"changes-before": "x"}))
        path = f"{URL}/{new}/os-instance-actions"
        acts = (await c.get(path, params={"changes-before": cut})).json()["instanceActions"]
        assert acts == []
        assert len((await c.get(path)).json()["instanceActions"]) == 1
        assert "less than or equal" in _message(await c.get(path, params=window))
    async with await login(cloud, "admin", "2.65") as c:
        r = await c.get("/compute/v2.1/os-migrations", params={"changes-before": cut})
        assert "changes-before" in _message(r)
    async with await login(cloud, "admin", "2.66") as c:
        r = await c.get("/compute/v2.1/os-migrations", params={"changes-before": cut})
        assert r.status_code == 200 and r.json()["migrations"] == []
        r = await c.get("/compute/v2.1/os-migrations", params=window)
        assert "less than or equal" in _message(r)


async def test_volume_type_from_2_67_has_no_volume(cloud: ApiHarness) -> None:  # noqa: F811
    bdm = {
        "boot_index": 0,
        "uuid": cloud.image,  # type: ignore[attr-defined]
        "source_type": "image",
        "destination_type": "local",
        "volume_type": "fast",
    }
    async with await login(cloud, "demo", "2.66") as c:
        r = await c.post(URL, json=body(cloud, networks="none", block_device_mapping_v2=[bdm]))
        assert "volume_type" in _message(r)
    async with await login(cloud, "demo", "2.67") as c:
        r = await c.post(URL, json=body(cloud, networks="none", block_device_mapping_v2=[bdm]))
        assert _message(r) == (
            "Specifying a volume_type with destination_type=local is not supported."
        )
        r = await c.post(
            URL, json=body(cloud, networks="none", block_device_mapping_v2=[{**bdm, "tag": "d"}])
        )
        assert "Device tagging" in _message(r)
        plain = {**bdm, "volume_type": None}
        r = await c.post(URL, json=body(cloud, networks="none", block_device_mapping_v2=[plain]))
        assert r.status_code == 202, r.text


async def test_ephemeral_and_swap_block_device_mappings_are_refused(
    cloud: ApiHarness,  # noqa: F811
) -> None:
    # Issue #15: a server's local disks beyond the root are its flavor's.
    root = {
        "boot_index": 0,
        "uuid": cloud.image,  # type: ignore[attr-defined]
        "source_type": "image",
        "destination_type": "local",
    }
    swap = {"source_type": "blank", "destination_type": "local", "guest_format": "swap",
            "volume_size": 1, "boot_index": -1}  # fmt: skip
    ephemeral = {**swap, "guest_format": "ext4"}
    async with await login(cloud, "demo", "2.67") as c:
        for extra in (swap, ephemeral):
            r = await c.post(
                URL, json=body(cloud, networks="none", block_device_mapping_v2=[root, extra])
            )
            assert r.status_code == 400, r.text
            assert _message(r).startswith("Ephemeral and swap block device mappings")


async def test_server_groups_in_one_server_from_2_71(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo", "2.64") as c:
        r = await c.post(
            "/compute/v2.1/os-server-groups",
            json={"server_group": {"name": "g", "policy": "anti-affinity"}},
        )
        group = r.json()["server_group"]["id"]
        r = await c.post(
            URL, json={**body(cloud, networks="none"), "os:scheduler_hints": {"group": group}}
        )
        member = r.json()["server"]["id"]
        loner = (await create(c, cloud, networks="none"))["id"]
    await make_active(cloud, member)
    async with await login(cloud, "demo", "2.70") as c:
        assert "server_groups" not in (await c.get(f"{URL}/{member}")).json()["server"]
    async with await login(cloud, "demo", "2.71") as c:
        assert (await c.get(f"{URL}/{member}")).json()["server"]["server_groups"] == [group]
        assert (await c.get(f"{URL}/{loner}")).json()["server"]["server_groups"] == []
        r = await c.put(f"{URL}/{member}", json={"server": {"name": "renamed"}})
        assert r.json()["server"]["server_groups"] == [group]
        r = await c.post(
            f"{URL}/{member}/action",
            json={"rebuild": {"imageRef": cloud.image}},  # type: ignore[attr-defined]
        )
        assert r.json()["server"]["server_groups"] == [group]
        detail = (await c.get(f"{URL}/detail")).json()["servers"]
        assert all("server_groups" not in s for s in detail)


async def test_lock_reason_and_locked_filter_from_2_73(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo") as c:
        locked = (await create(c, cloud, name="locked"))["id"]
        free = (await create(c, cloud, name="free"))["id"]
    await make_active(cloud, locked)
    await make_active(cloud, free)
    async with await login(cloud, "demo", "2.73") as c:
        action = f"{URL}/{locked}/action"
        for bad in ({"lock": {"locked_reason": ""}}, {"lock": {"reason": "x"}}):
            assert _message(await c.post(action, json=bad))
        r = await c.post(action, json={"lock": {"locked_reason": "maintenance"}})
        assert r.status_code == 202, r.text
        shown = (await c.get(f"{URL}/{locked}")).json()["server"]
        assert shown["locked"] is True and shown["locked_reason"] == "maintenance"
        (listed,) = (await c.get(f"{URL}/detail", params={"locked": "true"})).json()["servers"]
        assert listed["id"] == locked and listed["locked_reason"] == "maintenance"
        (listed,) = (await c.get(URL, params={"locked": "0"})).json()["servers"]
        assert listed["id"] == free
        assert "Unrecognized value 'maybe'" in _message(
            await c.get(URL, params={"locked": "maybe"})
        )
        by_lock = (await c.get(URL, params={"sort_key": "locked", "sort_dir": "asc"})).json()
        assert [s["id"] for s in by_lock["servers"]] == [free, locked]
        assert (await c.post(action, json={"unlock": None})).status_code == 202
        shown = (await c.get(f"{URL}/{locked}")).json()["server"]
        assert shown["locked"] is False and shown["locked_reason"] is None
        # A lock without a reason has none.
        assert (await c.post(action, json={"lock": None})).status_code == 202
        assert (await c.get(f"{URL}/{locked}")).json()["server"]["locked_reason"] is None
    async with await login(cloud, "demo", "2.72") as c:
        # Before 2.73: no filter (both listed), no sort key, no reason shown.
        assert len((await c.get(URL, params={"locked": "true"})).json()["servers"]) == 2
        assert (await c.get(URL, params={"sort_key": "locked"})).status_code == 400
        assert "locked_reason" not in (await c.get(f"{URL}/{locked}")).json()["server"]


async def test_requested_destination_from_2_74(api: ApiHarness) -> None:
    moves = await make_cloud(api)
    server = {"name": "vm", "flavorRef": "1", "imageRef": moves.image, "networks": "none"}
    async with await moves.login("admin", "2.73") as c:
        r = await c.post(URL, json={"server": {**server, "host": "fake-1"}})
        assert "host" in fault(r, 400)
    async with await moves.login("demo", "2.74") as c:
        r = await c.post(URL, json={"server": {**server, "host": "fake-1"}})
        assert "requested_destination" in fault(r, 403)
    async with await moves.login("admin", "2.74") as c:
        for bad in ({"host": "nope"}, {"host": "fake-1", "hypervisor_hostname": "nope"}):
            r = await c.post(URL, json={"server": {**server, **bad}})
            assert fault(r, 400) == f"Compute host {bad['host']} could not be found."
        r = await c.post(
            URL, json={"server": {**server, "host": "fake-1", "hypervisor_hostname": "fake-1"}}
        )
        assert r.status_code == 202, r.text
    found = await records(moves, r.json()["server"]["id"])
    payload = payloads.decode(found["task"]["payload"], payloads.BuildPayload)
    assert (payload.requested_host, payload.requested_node) == ("fake-1", "fake-1")
    spec = build.request_spec(
        dict(found["instance"]),
        payload.scheduling,
        host=payload.requested_host,
        node=payload.requested_node,
    )
    assert spec.requested_destination == "fake-1" and spec.force_nodes == ["fake-1"]
    # What later moves schedule with carries no destination.
    assert (
        build.request_spec(dict(found["instance"]), payload.scheduling).requested_destination
        is None
    )


async def test_strict_queries_full_bodies_and_hypervisor_servers_from_2_75(
    api: ApiHarness,
) -> None:
    moves = await make_cloud(api)
    async with await moves.login("demo", "2.74") as c:
        assert (await c.get(URL, params={"bogus": "1"})).status_code == 200
        assert (await c.get(URL, params={"services": "1"})).status_code == 200
    async with await moves.login("demo", "2.75") as c:
        message = fault(await c.get(URL, params={"bogus": "1"}), 400)
        assert message == (
            "Invalid input for query parameters bogus. Value: 1. "
            "Additional properties are not allowed ('bogus' was unexpected)"
        )
        # Known to Nova's schema, so not refused (and, as there, not a filter).
        assert (await c.get(URL, params={"services": "1"})).status_code == 200
    uuid = await boot(moves)
    path = f"{BASE}/os-hypervisors/detail"
    async with await moves.login("admin", "2.74") as c:
        nodes = (await c.get(path, params={"with_servers": "true"})).json()["hypervisors"]
        held = {n["hypervisor_hostname"]: n.get("servers") for n in nodes}
        assert held["fake-0"] == [{"name": "vm", "uuid": uuid}] and held["fake-1"] is None
        r = await c.post(f"{URL}/{uuid}/action", json={"rebuild": {"imageRef": moves.image}})
        assert "OS-EXT-STS:vm_state" not in r.json()["server"]
    async with await moves.login("admin", "2.75") as c:
        nodes = (await c.get(path, params={"with_servers": "true"})).json()["hypervisors"]
        held = {n["hypervisor_hostname"]: n.get("servers") for n in nodes}
        assert held["fake-1"] == []
        nodes = (await c.get(path)).json()["hypervisors"]
        assert all("servers" not in n for n in nodes)
    await settle(moves, uuid, vm_state="active", task_state=None)
    async with await moves.login("admin", "2.75") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"rebuild": {"imageRef": moves.image}})
        assert r.status_code == 202, r.text
        rebuilt = r.json()["server"]
        shown = (await c.get(f"{URL}/{uuid}")).json()["server"]
        # The whole server, plus what only a rebuild answers; the user data
        # once, at the top (Nova's rebuild body, Tempest's schema of it).
        expected = set(shown) - {"OS-EXT-SRV-ATTR:user_data"}
        assert set(rebuilt) == expected | {"adminPass", "key_name", "user_data"}


async def test_topology_from_2_78(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    path = f"{URL}/{uuid}/topology"
    async with await login(cloud, "demo", "2.77") as c:
        assert (await c.get(path)).status_code == 404
    async with await login(cloud, "demo", "2.78") as c:
        r = await c.get(path)
        assert r.status_code == 200 and r.json() == {"nodes": [], "pagesize_kb": None}
    async with await login(cloud, "other", "2.78") as c:
        assert (await c.get(path)).status_code == 404


async def test_migration_owner_from_2_80(api: ApiHarness) -> None:
    moves = await make_cloud(api)
    uuid = await boot(moves)
    async with await moves.login("admin", "2.56") as c:
        assert (await c.post(f"{URL}/{uuid}/action", json={"migrate": None})).status_code == 202
    path = f"{BASE}/os-migrations"
    project = api.projects["admin"]
    async with await moves.login("admin", "2.79") as c:
        (found,) = (await c.get(path)).json()["migrations"]
        assert "user_id" not in found and "project_id" not in found
        assert "user_id" in fault(await c.get(path, params={"user_id": "x"}), 400)
    async with await moves.login("admin", "2.80") as c:
        (found,) = (await c.get(path)).json()["migrations"]
        assert found["project_id"] == project and found["user_id"]
        mine = {"user_id": found["user_id"], "project_id": project}
        assert len((await c.get(path, params=mine)).json()["migrations"]) == 1
        for other in ({"user_id": "someone"}, {"project_id": "elsewhere"}):
            assert (await c.get(path, params=other)).json()["migrations"] == []


async def test_volume_attachments_answer_that_there_are_no_volumes(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    path = f"{URL}/{uuid}/os-volume_attachments"
    volume = "5b1e3b0f-6a59-4f6c-9d8e-0c5a8e7c9f10"
    attach = {"volumeAttachment": {"volumeId": volume, "delete_on_termination": True}}
    async with await login(cloud, "demo", "2.78") as c:
        assert (await c.get(path)).json() == {"volumeAttachments": []}
        assert "delete_on_termination" in _message(await c.post(path, json=attach))
    async with await login(cloud, "demo", "2.79") as c:
        r = await c.post(path, json=attach)
        assert r.status_code == 404
        assert r.json()["itemNotFound"]["message"] == f"Volume {volume} could not be found."
        for r in (await c.get(f"{path}/{volume}"), await c.delete(f"{path}/{volume}")):
            assert r.status_code == 404, r.text
        assert _message(await c.post(path, json={"volumeAttachment": {"volumeId": "x"}}))
    async with await login(cloud, "other", "2.79") as c:
        assert (await c.get(path)).status_code == 404


async def test_image_precaching_from_2_81_is_refused(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "admin", "2.81") as c:
        r = await c.post(f"{BASE}/os-aggregates", json={"aggregate": {"name": "a"}})
        agg = r.json()["aggregate"]["id"]
    path = f"{BASE}/os-aggregates/{agg}/images"
    cache = {"cache": [{"id": cloud.image}]}  # type: ignore[attr-defined]
    async with await login(cloud, "admin", "2.80") as c:
        assert (await c.post(path, json=cache)).status_code == 404
    async with await login(cloud, "admin", "2.81") as c:
        assert "precaching is not supported" in _message(await c.post(path, json=cache))
        assert _message(await c.post(path, json={"cache": []}))
        r = await c.post(f"{BASE}/os-aggregates/999/images", json=cache)
        assert r.status_code == 404
    async with await login(cloud, "demo", "2.81") as c:
        assert (await c.post(path, json=cache)).status_code == 403


async def test_member_filters_from_2_83(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo") as c:
        drive = (await create(c, cloud, name="drive", config_drive=True))["id"]
        plain = (await create(c, cloud, name="plain"))["id"]
    await make_active(cloud, drive, progress=42)
    await make_active(cloud, plain, key_name=None)
    async with await login(cloud, "demo", "2.82") as c:
        # Admin filters: a member's are dropped before 2.83.
        assert len((await c.get(URL, params={"config_drive": "true"})).json()["servers"]) == 2
    async with await login(cloud, "demo", "2.83") as c:

        async def ids(**params: str) -> set[str]:
            return {s["id"] for s in (await c.get(URL, params=params)).json()["servers"]}

        assert await ids(config_drive="true") == {drive}
        assert await ids(config_drive="false") == {plain}
        assert await ids(progress="^42$") == {drive}
        year = str(dt.datetime.now(dt.UTC).year)
        assert await ids(launched_at=f"^{year}-") == {drive, plain}
        assert await ids(terminated_at=".") == set()
        assert await ids(vm_state="active", power_state="1") == {drive, plain}
        assert "Unrecognized value" in _message(await c.get(URL, params={"config_drive": "x"}))
        assert _message(await c.get(URL, params={"progress": "("}))


async def test_event_details_from_2_84(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    async with cloud.state.db.reader() as conn:
        (action,) = await actions.actions_get(conn, uuid)
    async with cloud.state.db.writer() as conn:
        await actions.event_start(
            conn, instance_uuid=uuid, request_id=action["request_id"], event="compute_build"
        )
        await actions.event_finish(
            conn,
            instance_uuid=uuid,
            request_id=action["request_id"],
            event="compute_build",
            result="Error",
            details="No valid host was found.",
        )
    path = f"{URL}/{uuid}/os-instance-actions/{action['request_id']}"
    async with await login(cloud, "demo", "2.83") as c:
        (event,) = (await c.get(path)).json()["instanceAction"]["events"]
        assert "details" not in event
    async with await login(cloud, "demo", "2.84") as c:
        (event,) = (await c.get(path)).json()["instanceAction"]["events"]
        assert event["details"] == "No valid host was found."


async def test_attachment_update_body_from_2_85(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    volume = "5b1e3b0f-6a59-4f6c-9d8e-0c5a8e7c9f10"
    path = f"{URL}/{uuid}/os-volume_attachments/{volume}"
    change = {"volumeAttachment": {"volumeId": volume, "delete_on_termination": False}}
    async with await login(cloud, "demo", "2.84") as c:
        assert "delete_on_termination" in _message(await c.put(path, json=change))
    async with await login(cloud, "demo", "2.85") as c:
        r = await c.put(path, json=change)
        assert r.status_code == 404
        assert r.json()["itemNotFound"]["message"] == (
            f"No volume Block Device Mapping with id {volume}."
        )


async def test_extra_spec_validation_from_2_86(cloud: ApiHarness) -> None:  # noqa: F811
    path = f"{BASE}/flavors/1/os-extra_specs"
    bad = {"hw:cpu_policy": "sometimes"}
    async with await login(cloud, "admin", "2.85") as c:
        assert (await c.post(path, json={"extra_specs": bad})).status_code == 200
    async with await login(cloud, "admin", "2.86") as c:
        assert _message(await c.post(path, json={"extra_specs": bad})) == (
            "Validation failed; hw:cpu_policy must be one of shared, dedicated, mixed; "
            "got sometimes."
        )
        for name, value, words in (
            ("hw:numa_nodes", "0", "greater than or equal to 1"),
            ("hw:numa_nodes", "two", "must be an integer"),
            ("hw_rng:allowed", "maybe", "must be a boolean"),
            ("hw:no_such_thing", "1", "does not appear to be a valid extra spec"),
            ("trait:HW_CPU_X86_AVX2", "wanted", "must be one of required, forbidden"),
        ):
            r = await c.put(f"{path}/{name}", json={name: value})
            assert words in _message(r), name
        good = {
            "hw:cpu_policy": "dedicated",
            "hw:numa_nodes": "2",
            "hw:mem_page_size": "2MiB",
            "resources1:CUSTOM_GPU": "1",
            "trait:HW_CPU_X86_AVX2": "required",
            "aggregate_instance_extra_specs:ssd": "true",
            "my_own:anything": "goes",
            "plain": "too",
        }
        r = await c.post(path, json={"extra_specs": good})
        assert r.status_code == 200, r.text
        r = await c.put(f"{path}/hw:numa_nodes", json={"hw:numa_nodes": "4"})
        assert r.status_code == 200, r.text


async def test_hypervisor_shape_from_2_88(api: ApiHarness) -> None:
    await make_cloud(api)
    counters = {"vcpus", "memory_mb", "local_gb", "running_vms", "cpu_info", "free_ram_mb"}
    async with await api.login("admin", "2.87") as c:
        (node, _) = (await c.get(f"{BASE}/os-hypervisors/detail")).json()["hypervisors"]
        assert counters <= set(node) and "uptime" not in node
        assert (await c.get(f"{BASE}/os-hypervisors/statistics")).status_code == 200
    async with await api.login("admin", "2.88") as c:
        (node, _) = (await c.get(f"{BASE}/os-hypervisors/detail")).json()["hypervisors"]
        assert not counters & set(node)
        # This harness has no bus to ask the host on: its uptime is unknown.
        assert node["uptime"] is None and node["state"] == "up"
        shown = (await c.get(f"{BASE}/os-hypervisors/{node['id']}")).json()["hypervisor"]
        assert shown == node
        for gone in ("statistics", f"{node['id']}/uptime"):
            assert (await c.get(f"{BASE}/os-hypervisors/{gone}")).status_code == 404


async def test_hostname_from_2_90_and_fqdn_from_2_94(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo", "2.89") as c:
        r = await c.post(URL, json=body(cloud, networks="none", hostname="web-1"))
        assert "hostname" in _message(r)
        uuid = (await create(c, cloud, networks="none", name="My Server"))["id"]
        assert "OS-EXT-SRV-ATTR:hostname" not in (await c.get(f"{URL}/{uuid}")).json()["server"]
        fqdn = (await create(c, cloud, networks="none", name="-Guest_1.domain.com!"))["id"]
    await make_active(cloud, uuid)
    async with await login(cloud, "demo", "2.90") as c:
        # Without a hostname, Nova's sanitized name: what the guest sets and
        # Tempest compares with the name lowered.
        shown = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert shown["OS-EXT-SRV-ATTR:hostname"] == "my-server"
        shown = (await c.get(f"{URL}/{fqdn}")).json()["server"]
        assert shown["OS-EXT-SRV-ATTR:hostname"] == "guest-1-domain-com"
        made = await create(c, cloud, networks="none", hostname="web-1")
        shown = (await c.get(f"{URL}/{made['id']}")).json()["server"]
        assert shown["OS-EXT-SRV-ATTR:hostname"] == "web-1" and shown["name"] == "vm"
        many = body(cloud, networks="none", hostname="web-2", max_count=2)
        assert "more than one server" in _message(await c.post(URL, json=many))
        for bad in ("-x", "a", "web.example.org"):
            assert _message(await c.post(URL, json=body(cloud, networks="none", hostname=bad)))
        r = await c.put(f"{URL}/{uuid}", json={"server": {"hostname": "db-1"}})
        assert r.status_code == 200, r.text
        assert r.json()["server"]["OS-EXT-SRV-ATTR:hostname"] == "db-1"
        rebuild = {"rebuild": {"imageRef": cloud.image, "hostname": "db-2"}}  # type: ignore[attr-defined]
        r = await c.post(f"{URL}/{uuid}/action", json=rebuild)
        assert r.status_code == 202, r.text
        assert r.json()["server"]["OS-EXT-SRV-ATTR:hostname"] == "db-2"
    async with await login(cloud, "demo", "2.94") as c:
        made = await create(c, cloud, networks="none", hostname="web.example.org")
        shown = (await c.get(f"{URL}/{made['id']}")).json()["server"]
        assert shown["OS-EXT-SRV-ATTR:hostname"] == "web.example.org"


async def test_keypairs_are_imported_only_from_2_92(cloud: ApiHarness) -> None:  # noqa: F811
    path = f"{BASE}/os-keypairs"
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzqf9a7Ch2r3lNrnzA3gJ7x6cC4vIuJ3Uy9fGqW2nLk a@b"
    async with await login(cloud, "demo", "2.91") as c:
        r = await c.post(path, json={"keypair": {"name": "made"}})
        assert r.status_code == 201 and r.json()["keypair"]["private_key"]
        assert _message(await c.post(path, json={"keypair": {"name": "me@x", "public_key": key}}))
    async with await login(cloud, "demo", "2.92") as c:
        assert "public_key" in _message(await c.post(path, json={"keypair": {"name": "gen"}}))
        r = await c.post(path, json={"keypair": {"name": "me@x.org", "public_key": key}})
        assert r.status_code == 201, r.text
        assert "private_key" not in r.json()["keypair"]


async def test_pinned_availability_zone_from_2_96(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo", "2.96") as c:
        pinned = (await create(c, cloud, networks="none", availability_zone="nova"))["id"]
        free = (await create(c, cloud, networks="none"))["id"]
        assert (await c.get(f"{URL}/{pinned}")).json()["server"]["pinned_availability_zone"] == (
            "nova"
        )
        listed = {s["id"]: s for s in (await c.get(f"{URL}/detail")).json()["servers"]}
        assert listed[free]["pinned_availability_zone"] is None
    async with await login(cloud, "demo", "2.95") as c:
        assert "pinned_availability_zone" not in (await c.get(f"{URL}/{pinned}")).json()["server"]


async def test_shares_from_2_97_answer_that_there_are_none(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    path = f"{URL}/{uuid}/shares"
    share = "5b1e3b0f-6a59-4f6c-9d8e-0c5a8e7c9f10"
    async with await login(cloud, "demo", "2.96") as c:
        assert (await c.get(path)).status_code == 404
    async with await login(cloud, "demo", "2.97") as c:
        assert (await c.get(path)).json() == {"shares": []}
        r = await c.post(path, json={"share": {"share_id": share}})
        assert r.status_code == 404
        assert r.json()["itemNotFound"]["message"] == f"Share {share} could not be found."
        assert _message(await c.post(path, json={"share": {"share_id": share, "x": 1}}))
        assert (await c.get(f"{path}/{share}")).status_code == 404


async def test_image_properties_from_2_98(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "admin") as c:
        r = await c.patch(
            f"/image/v2/images/{cloud.image}",  # type: ignore[attr-defined]
            json=[{"op": "add", "path": "/hw_disk_bus", "value": "scsi"}],
            headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
        )
        assert r.status_code == 200, r.text
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    await make_active(cloud, uuid)
    async with await login(cloud, "demo", "2.97") as c:
        assert "properties" not in (await c.get(f"{URL}/{uuid}")).json()["server"]["image"]
    async with await login(cloud, "demo", "2.98") as c:
        image = (await c.get(f"{URL}/{uuid}")).json()["server"]["image"]
        assert image["properties"] == {"hw_disk_bus": "scsi"}
        (listed,) = (await c.get(f"{URL}/detail")).json()["servers"]
        assert listed["image"] == image
    async with await login(cloud, "admin") as c:
        r = await c.post(
            "/image/v2/images",
            json={"name": "plain", "disk_format": "raw", "container_format": "bare"},
        )
        plain = r.json()["id"]
        r = await c.put(
            f"/image/v2/images/{plain}/file",
            content=b"x" * 100,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 204
        await c.patch(
            f"/image/v2/images/{plain}",
            json=[{"op": "replace", "path": "/visibility", "value": "public"}],
            headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
        )
    async with await login(cloud, "demo", "2.98") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"rebuild": {"imageRef": plain}})
        assert r.status_code == 202, r.text
        # The rebuilt server shows its new image's properties, not the old one's.
        assert r.json()["server"]["image"]["properties"] == {}


async def test_scheduler_hints_from_2_100(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo") as c:
        other = (await create(c, cloud))["id"]
        hints = {"different_host": [other], "build_near_host_ip": "10.0.0.1", "cidr": "/24"}
        r = await c.post(URL, json={**body(cloud), "os:scheduler_hints": hints})
        uuid = r.json()["server"]["id"]
    await make_active(cloud, uuid)
    async with await login(cloud, "demo", "2.99") as c:
        assert "scheduler_hints" not in (await c.get(f"{URL}/{uuid}")).json()["server"]
    async with await login(cloud, "demo", "2.100") as c:
        shown = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert shown["scheduler_hints"] == {
            "different_host": [other],
            "build_near_host_ip": ["10.0.0.1"],
            "cidr": ["/24"],
        }
        assert (await c.get(f"{URL}/{other}")).json()["server"]["scheduler_hints"] == {}
        r = await c.put(f"{URL}/{uuid}", json={"server": {"name": "renamed"}})
        assert r.json()["server"]["scheduler_hints"] == shown["scheduler_hints"]
