"""Servers and server actions over HTTP: bodies per microversion, policy, validation.

No bus here: a create records the instance and its build task (BUILD,
scheduling) and nothing runs it, so tests that need a running server put
the rows where a finished build would (:func:`make_active`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from nubes.api.compute_v21 import server_views
from nubes.db.api import flavors as flavors_db
from nubes.db.api import images as images_db
from nubes.db.api import instances as instances_db
from nubes.db.api import tasks as tasks_db
from nubes.db.types import utcnow
from tests.unit.api.conftest import ApiHarness

URL = "/compute/v2.1/servers"

BASE_KEYS = {
    "id",
    "name",
    "status",
    "tenant_id",
    "user_id",
    "metadata",
    "hostId",
    "image",
    "flavor",
    "created",
    "updated",
    "addresses",
    "accessIPv4",
    "accessIPv6",
    "links",
    "OS-DCF:diskConfig",
}
SHOW_KEYS = BASE_KEYS | {
    "OS-EXT-AZ:availability_zone",
    "config_drive",
    "key_name",
    "OS-SRV-USG:launched_at",
    "OS-SRV-USG:terminated_at",
    "OS-EXT-STS:task_state",
    "OS-EXT-STS:vm_state",
    "OS-EXT-STS:power_state",
    "os-extended-volumes:volumes_attached",
}
ADMIN_21 = {
    "OS-EXT-SRV-ATTR:host",
    "OS-EXT-SRV-ATTR:hypervisor_hostname",
    "OS-EXT-SRV-ATTR:instance_name",
}
ADMIN_23 = ADMIN_21 | {
    f"OS-EXT-SRV-ATTR:{k}"
    for k in (
        "reservation_id",
        "launch_index",
        "hostname",
        "kernel_id",
        "ramdisk_id",
        "root_device_name",
        "user_data",
    )
}


def vt(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def expected_keys(
    version: str, *, admin: bool, mode: str = "show", listed: bool = False
) -> set[str]:
    """Nova's server body at ``version`` for an ACTIVE server (progress included).

    ``listed``: as ``servers/detail`` shows it (without ``server_groups``).
    """

    def at(v: str) -> bool:
        return vt(version) >= vt(v)

    if at("2.75"):
        mode = "show"  # PUT and rebuild answer with the whole server
    keys = set(SHOW_KEYS if mode == "show" else BASE_KEYS) | {"progress"}
    if mode == "show" and admin:
        keys |= ADMIN_23 if at("2.3") else ADMIN_21
        if at("2.16"):
            keys.add("host_status")
    later = (
        ("2.9", "locked"),
        ("2.19", "description"),
        ("2.26", "tags"),
        ("2.63", "trusted_image_certificates"),
        ("2.73", "locked_reason"),
        ("2.96", "pinned_availability_zone"),
    )
    for added, name in later:
        if at(added):
            keys.add(name)
    if at("2.71") and not listed:
        keys.add("server_groups")
    if at("2.100") and mode == "show":
        keys.add("scheduler_hints")
    if at("2.90") and mode == "show" and not admin:
        keys.add("OS-EXT-SRV-ATTR:hostname")  # admins have it from 2.3
    return keys


@pytest.fixture
async def cloud(api: ApiHarness) -> ApiHarness:
    """The harness with flavors (m1.tiny public, private granted to nobody) and an image."""
    async with api.state.db.writer() as conn:
        await flavors_db.create(
            conn,
            {
                "flavorid": "1",
                "name": "m1.tiny",
                "vcpus": 1,
                "memory_mb": 512,
                "root_gb": 1,
                "swap": 0,
            },
            extra_specs={"hw:cpu_policy": "shared"},
        )
        await flavors_db.create(
            conn,
            {
                "flavorid": "p",
                "name": "private",
                "vcpus": 1,
                "memory_mb": 64,
                "root_gb": 1,
                "is_public": False,
            },
        )
    async with await api.login("admin") as c:
        r = await c.post(
            "/image/v2/images",
            json={
                "name": "cirros",
                "disk_format": "raw",
                "container_format": "bare",
                "visibility": "public",
            },
        )
        image = r.json()
        r = await c.put(
            f"/image/v2/images/{image['id']}/file",
            content=b"x" * 100,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 204
        r = await c.post(
            "/image/v2/images",
            json={"name": "queued", "disk_format": "raw", "container_format": "bare"},
        )
        api.queued_image = r.json()["id"]  # type: ignore[attr-defined]
    api.image = image["id"]  # type: ignore[attr-defined]
    return api


async def login(cloud: ApiHarness, user: str, version: str | None = None) -> httpx.AsyncClient:
    """A client for ``user``; tokens are issued once per test (password hashing is slow)."""
    tokens: dict[str, str] = cloud.__dict__.setdefault("tokens", {})
    if user not in tokens:
        tokens[user] = await cloud.token(user)
    return cloud.client(tokens[user], version)


def body(cloud: ApiHarness, **server: Any) -> dict[str, Any]:
    return {"server": {"name": "vm", "flavorRef": "1", "imageRef": cloud.image, **server}}  # type: ignore[attr-defined]


async def create(c: httpx.AsyncClient, cloud: ApiHarness, **server: Any) -> dict[str, Any]:
    r = await c.post(URL, json=body(cloud, **server))
    assert r.status_code == 202, r.text
    return dict(r.json()["server"])


async def make_active(cloud: ApiHarness, uuid: str, **values: Any) -> None:
    """Where a finished build leaves a server: ACTIVE on fake-0, its task done."""
    async with cloud.state.db.writer() as conn:
        task = await tasks_db.get_active_for_instance(conn, uuid)
        if task is not None:
            await tasks_db.cancel(conn, task["id"], reason="test")
        await instances_db.update(
            conn,
            uuid,
            {
                "vm_state": "active",
                "task_state": None,
                "power_state": 1,
                "host": "fake-0",
                "node": "fake-0",
                "launched_at": utcnow(),
                **values,
            },
        )


async def finish_task(cloud: ApiHarness, uuid: str, **values: Any) -> None:
    async with cloud.state.db.writer() as conn:
        task = await tasks_db.get_active_for_instance(conn, uuid)
        if task is not None:
            await tasks_db.cancel(conn, task["id"], reason="test")
        if values:
            await instances_db.update(conn, uuid, values)


# --- create -------------------------------------------------------------------------------


async def test_create_answers_202_with_nova_body_and_build_status(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo") as c:
        r = await c.post(URL, json=body(cloud, metadata={"k": "v"}))
        assert r.status_code == 202, r.text
        server = r.json()["server"]
        assert set(server) == {"id", "links", "OS-DCF:diskConfig", "security_groups", "adminPass"}
        assert server["security_groups"] == [{"name": "default"}]
        assert len(server["adminPass"]) == 12
        assert r.headers["location"].endswith(f"/v2.1/servers/{server['id']}")
        # The transitional status is there before the answer.
        shown = (await c.get(f"{URL}/{server['id']}")).json()["server"]
        assert shown["status"] == "BUILD"
        assert shown["OS-EXT-STS:task_state"] == "scheduling"
        assert shown["metadata"] == {"k": "v"}
        assert shown["image"]["id"] == cloud.image  # type: ignore[attr-defined]
        assert shown["flavor"]["id"] == "1"
        assert shown["addresses"] == {} and shown["hostId"] == ""
        assert shown["progress"] == 0 and shown["OS-EXT-AZ:availability_zone"] == ""
        assert shown["tenant_id"] == cloud.projects["demo"]


async def test_create_many_and_admin_pass_and_reservation(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo", "2.37") as c:
        r = await c.post(
            URL, json=body(cloud, networks="auto", min_count=2, max_count=3, adminPass="pw")
        )
        assert r.status_code == 202, r.text
        assert r.json()["server"]["adminPass"] == "pw"
        names = sorted(s["name"] for s in (await c.get(URL)).json()["servers"])
        assert names == ["vm-1", "vm-2", "vm-3"]
        r = await c.post(URL, json=body(cloud, networks="none", return_reservation_id=True))
        assert r.status_code == 202 and r.json()["reservation_id"].startswith("r-")
        servers = (await c.get(URL, params={"reservation_id": r.json()["reservation_id"]})).json()
        assert len(servers["servers"]) == 1


@pytest.mark.parametrize("version", ["2.1", "2.37", "2.61"])
async def test_unknown_scheduler_hints_are_accepted_and_a_group_hint_joins_the_group(
    cloud: ApiHarness, version: str
) -> None:
    """Nova's schema lets any other hint through (ignored) at every microversion;
    the group's member shows up in ``server group show`` from the create on."""
    networks = {"networks": "none"} if version != "2.1" else {}
    async with await login(cloud, "demo", version) as c:
        group = (
            await c.post(
                "/compute/v2.1/os-server-groups",
                json={"server_group": {"name": "g", "policies": ["anti-affinity"]}},
            )
        ).json()["server_group"]
        hints = {"group": group["id"], "colour": "blue", "same_host": []}
        r = await c.post(URL, json={**body(cloud, **networks), "os:scheduler_hints": hints})
        assert r.status_code == 202, r.text
        shown = await c.get(f"/compute/v2.1/os-server-groups/{group['id']}")
        assert shown.json()["server_group"]["members"] == [r.json()["server"]["id"]]
        bad = {"os:scheduler_hints": {"group": "not-a-uuid"}}
        r = await c.post(URL, json={**body(cloud, **networks), **bad})
        assert r.status_code == 400 and "badRequest" in r.json(), r.text
    async with await login(cloud, "other", version) as c:
        # Another project's group is not there for this user (nothing is created).
        foreign = {"os:scheduler_hints": {"group": group["id"]}}
        r = await c.post(URL, json={**body(cloud, **networks), **foreign})
        assert r.status_code == 400 and "could not be found" in r.text, r.text
        assert (await c.get(URL)).json()["servers"] == []


async def test_flavor_access_and_extra_specs_hold_from_the_next_create(cloud: ApiHarness) -> None:
    demo = cloud.projects["demo"]
    flavors_url = "/compute/v2.1/flavors"
    async with await login(cloud, "admin") as admin:
        r = await admin.post(
            flavors_url,
            json={
                "flavor": {
                    "name": "kept-for-demo",
                    "id": "kept",
                    "ram": 256,
                    "vcpus": 1,
                    "disk": 1,
                    "os-flavor-access:is_public": False,
                }
            },
        )
        assert r.status_code == 200, r.text
    async with await login(cloud, "demo") as c:
        r = await c.post(URL, json=body(cloud, flavorRef="kept"))
        assert r.status_code == 400, r.text
        async with await login(cloud, "admin") as admin:
            grant = {"addTenantAccess": {"tenant": demo}}
            assert (await admin.post(f"{flavors_url}/kept/action", json=grant)).status_code == 200
            specs = {"extra_specs": {"aggregate_instance_extra_specs:ssd": "true"}}
            r = await admin.post(f"{flavors_url}/kept/os-extra_specs", json=specs)
            assert r.status_code == 200, r.text
        made = await create(c, cloud, flavorRef="kept")
        async with cloud.state.db.reader() as conn:
            row = await instances_db.get_by_uuid(conn, made["id"])
        # The instance's flavor (what the scheduler is asked) has the new spec.
        assert row["flavor"]["extra_specs"] == {"aggregate_instance_extra_specs:ssd": "true"}
        async with await login(cloud, "admin") as admin:
            revoke = {"removeTenantAccess": {"tenant": demo}}
            assert (await admin.post(f"{flavors_url}/kept/action", json=revoke)).status_code == 200
        r = await c.post(URL, json=body(cloud, flavorRef="kept"))
        assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    ("version", "server", "words"),
    [
        ("2.1", {"flavorRef": None}, ["flavorRef"]),
        ("2.1", {"name": ""}, ["name"]),
        ("2.1", {"min_count": 0}, ["min_count"]),
        ("2.1", {"min_count": 3, "max_count": 2}, ["min_count must be <= max_count"]),
        ("2.1", {"networks": "none"}, ["networks"]),
        ("2.37", {}, ["networks"]),
        ("2.37", {"networks": "some"}, ["networks"]),
        ("2.18", {"description": "x"}, ["description"]),
        ("2.51", {"networks": "none", "tags": ["a"]}, ["tags"]),
        ("2.1", {"imageRef": "not-a-uuid"}, ["imageRef"]),
        ("2.1", {"imageRef": ""}, ["Missing imageRef attribute"]),
        ("2.1", {"imageRef": "2b1c0c7a-4b0e-4a39-8dc5-6a3c0b1f9a11"}, ["Can not find"]),
        ("2.1", {"flavorRef": "nope"}, ["Invalid flavorRef provided."]),
        ("2.1", {"flavorRef": "p"}, ["Invalid flavorRef provided."]),
        ("2.1", {"availability_zone": "mars"}, ["availability zone"]),
        ("2.1", {"key_name": "k"}, ["key_name"]),
        ("2.1", {"user_data": "***"}, ["Userdata"]),
        ("2.1", {"networks": [{"uuid": "net"}]}, ["Network net could not be found"]),
        ("2.1", {"bogus": 1}, ["bogus"]),
        ("2.1", {"metadata": {"k": 1}}, ["metadata"]),
    ],
)
async def test_bad_create_is_400_naming_the_field(
    cloud: ApiHarness, version: str, server: dict[str, Any], words: list[str]
) -> None:
    async with await login(cloud, "demo", version) as c:
        payload = body(cloud, **server)
        payload["server"] = {k: v for k, v in payload["server"].items() if v is not None}
        r = await c.post(URL, json=payload)
    assert r.status_code == 400, r.text
    message = r.json()["badRequest"]["message"]
    for word in words:
        assert word in message, message
    async with cloud.state.db.reader() as conn:
        assert await instances_db.get_all(conn) == []


async def test_image_not_active_is_400(cloud: ApiHarness) -> None:
    async with await login(cloud, "admin") as c:
        r = await c.post(URL, json=body(cloud, imageRef=cloud.queued_image))  # type: ignore[attr-defined]
    assert r.status_code == 400
    assert "is not active" in r.json()["badRequest"]["message"]


async def test_boot_refuses_an_image_larger_than_the_flavor_disk(cloud: ApiHarness) -> None:
    """Regression: boot checked memory and min_disk but not the image's size, which
    resize and rebuild refused (the image-fits rule now has one home for all three)."""
    async with cloud.state.db.writer() as conn:
        # m1.tiny has a 1 GiB root disk; the image is one byte more.
        await images_db.update_fields(conn, cloud.image, {"size": 1024**3 + 1})  # type: ignore[attr-defined]
    async with await login(cloud, "demo") as c:
        r = await c.post(URL, json=body(cloud))
    assert r.status_code == 400, r.text
    assert r.json()["badRequest"]["message"] == (
        "Flavor's disk is too small for requested image. Flavor disk is 1073741824 bytes, "
        "image is 1073741825 bytes."
    )
    async with cloud.state.db.reader() as conn:
        assert await instances_db.get_all(conn) == []


async def test_malformed_and_unknown_bodies_are_400(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo") as c:
        assert (await c.post(URL, content=b"{nope")).status_code == 400
        assert (await c.post(URL, json=[])).status_code == 400
        assert (await c.post(URL, json={"server": "x"})).status_code == 400
        uuid = (await create(c, cloud))["id"]
        bad: Any
        for bad in ({}, {"a": 1, "b": 2}, {"nope": None}, {"reboot": {"type": "GENTLE"}}, []):
            r = await c.post(f"{URL}/{uuid}/action", json=bad)
            assert r.status_code == 400, (bad, r.text)
        r = await c.put(f"{URL}/{uuid}", json={"server": {"name": 5}})
        assert r.status_code == 400 and "name" in r.json()["badRequest"]["message"]


# --- views per microversion -------------------------------------------------------------------

BOUNDARIES = ["2.1", "2.2", "2.3", "2.8", "2.9", "2.15", "2.16", "2.18", "2.19", "2.25", "2.26"]
BOUNDARIES += [
    "2.46",
    "2.47",
    "2.61",
    "2.62",
    "2.63",
    "2.70",
    "2.71",
    "2.72",
    "2.73",
    "2.75",
    "2.89",
    "2.90",
    "2.95",
    "2.96",
]


@pytest.mark.parametrize("version", BOUNDARIES)
async def test_show_fields_at_each_boundary(cloud: ApiHarness, version: str) -> None:
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    await make_active(cloud, uuid)
    for user, admin in (("demo", False), ("admin", True)):
        async with await login(cloud, user, version) as c:
            shown = (await c.get(f"{URL}/{uuid}")).json()["server"]
            params = {"all_tenants": "1"} if admin else {}
            (listed,) = (await c.get(f"{URL}/detail", params=params)).json()["servers"]
        assert set(shown) == expected_keys(version, admin=admin), (user, version)
        assert set(listed) == expected_keys(version, admin=admin, listed=True)
        assert listed == {k: val for k, val in shown.items() if k != "server_groups"}
        if vt(version) >= (2, 47):
            assert shown["flavor"] == {
                "vcpus": 1,
                "ram": 512,
                "disk": 1,
                "ephemeral": 0,
                "swap": 0,
                "original_name": "m1.tiny",
                "extra_specs": {"hw:cpu_policy": "shared"},
            }
        else:
            assert set(shown["flavor"]) == {"id", "links"}
        assert shown["status"] == "ACTIVE" and shown["OS-EXT-STS:power_state"] == 1
        assert shown["hostId"] and shown["OS-EXT-AZ:availability_zone"] == "nova"
        if admin:
            assert shown["OS-EXT-SRV-ATTR:host"] == "fake-0"
            if "host_status" in shown:
                assert shown["host_status"] == ""  # no compute service on record


@pytest.mark.parametrize("version", ["2.1", "2.9", "2.19", "2.26", "2.61", "2.74", "2.75"])
async def test_update_answers_with_the_short_view(cloud: ApiHarness, version: str) -> None:
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    await make_active(cloud, uuid)
    for user, admin in (("demo", False), ("admin", True)):
        async with await login(cloud, user, version) as c:
            server: dict[str, Any] = {"name": f"renamed-{user}"}
            if vt(version) >= (2, 19):
                server["description"] = "desc"
            r = await c.put(f"{URL}/{uuid}", json={"server": server})
            assert r.status_code == 200, r.text
            got = r.json()["server"]
            assert set(got) == expected_keys(version, admin=admin, mode="update")
            assert got["name"] == f"renamed-{user}"
            if "description" in got:
                assert got["description"] == "desc"


async def test_index_is_brief_and_pages(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo") as c:
        for n in range(5):
            await create(c, cloud, name=f"s{n}")
        r = await c.get(URL, params={"limit": 2})
        page = r.json()
        assert [set(s) for s in page["servers"]] == [{"id", "name", "links"}] * 2
        assert [s["name"] for s in page["servers"]] == ["s4", "s3"]  # newest first
        seen = [s["name"] for s in page["servers"]]
        while "servers_links" in page:
            nxt = page["servers_links"][0]
            assert nxt["rel"] == "next" and "marker=" in nxt["href"]
            page = (await c.get(nxt["href"])).json()
            seen += [s["name"] for s in page["servers"]]
        assert seen == ["s4", "s3", "s2", "s1", "s0"]
        r = await c.get(URL, params={"marker": "nope"})
        assert r.status_code == 400 and "marker" in r.json()["badRequest"]["message"]
        r = await c.get(f"{URL}/detail", params={"sort_key": "display_name", "sort_dir": "asc"})
        assert [s["name"] for s in r.json()["servers"]] == ["s0", "s1", "s2", "s3", "s4"]
        assert (await c.get(URL, params={"sort_key": "bogus"})).status_code == 400
        assert (await c.get(URL, params={"sort_key": "host"})).status_code == 403


async def test_list_filters(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo") as c:
        web = [(await create(c, cloud, name=f"web-{n}"))["id"] for n in range(2)]
        db = (await create(c, cloud, name="db.1"))["id"]
    await make_active(cloud, web[0])
    async with await login(cloud, "demo", "2.38") as c:

        async def names(**params: Any) -> list[str]:
            r = await c.get(f"{URL}/detail", params=params)
            assert r.status_code == 200, r.text
            return sorted(s["name"] for s in r.json()["servers"])

        assert await names(name="web") == ["web-0", "web-1"]
        assert await names(name="^web-[1]$") == ["web-1"]
        assert await names(name="db\\.") == ["db.1"]
        assert await names(status="ACTIVE") == ["web-0"]
        assert await names(status="BUILD") == ["db.1", "web-1"]
        assert await names(image=cloud.image) == ["db.1", "web-0", "web-1"]  # type: ignore[attr-defined]
        assert await names(flavor="1") == ["db.1", "web-0", "web-1"]
        assert await names(flavor="2") == []
        assert await names(ip="10.0.0.1") == []
        assert await names(host="fake-0") == ["db.1", "web-0", "web-1"]  # ignored for users
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        assert await names(**{"changes-since": future}) == []
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
        assert await names(**{"changes-since": past}) == ["db.1", "web-0", "web-1"]
        assert (await c.get(URL, params={"changes-since": "yesterday"})).status_code == 400
        assert (await c.get(URL, params={"status": "NOPE"})).status_code == 400
        assert (await c.get(URL, params={"status": "DELETED"})).status_code == 403
        assert (await c.get(URL, params={"all_tenants": "1"})).status_code == 403
    async with await login(cloud, "demo", "2.37") as c:
        r = await c.get(URL, params={"status": "NOPE"})
        assert r.status_code == 200 and r.json()["servers"] == []
    async with await login(cloud, "admin") as c:
        assert (await c.get(URL)).json()["servers"] == []  # own project only
        r = await c.get(URL, params={"all_tenants": "true", "host": "fake-0"})
        assert [s["id"] for s in r.json()["servers"]] == [web[0]]
        r = await c.get(URL, params={"all_tenants": "", "project_id": cloud.projects["other"]})
        assert r.json()["servers"] == []
        assert (await c.get(URL, params={"all_tenants": "maybe"})).status_code == 400
    del db


async def test_deleted_servers_show_up_in_changes_since(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    await make_active(cloud, uuid)
    async with cloud.state.db.writer() as conn:
        await instances_db.destroy(conn, uuid)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    async with await login(cloud, "demo") as c:
        assert (await c.get(URL)).json()["servers"] == []
        r = await c.get(f"{URL}/detail", params={"changes-since": past})
        (server,) = r.json()["servers"]
        assert server["status"] == "DELETED" and "progress" not in server
        assert (await c.get(f"{URL}/{uuid}")).status_code == 404


# --- policy --------------------------------------------------------------------------------


async def test_projects_see_only_their_servers_and_readers_only_read(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    await make_active(cloud, uuid)
    async with await login(cloud, "other") as c:
        assert (await c.get(URL)).json()["servers"] == []
        for method, path, payload in (
            ("GET", f"{URL}/{uuid}", None),
            ("PUT", f"{URL}/{uuid}", {"server": {"name": "x"}}),
            ("DELETE", f"{URL}/{uuid}", None),
            ("POST", f"{URL}/{uuid}/action", {"os-stop": None}),
            ("GET", f"{URL}/{uuid}/os-instance-actions", None),
        ):
            r = await c.request(method, path, json=payload)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["itemNotFound"]["message"] == f"Instance {uuid} could not be found."
    async with await login(cloud, "viewer") as c:
        assert (await c.get(f"{URL}/{uuid}")).status_code == 200
        assert len((await c.get(URL)).json()["servers"]) == 1
        assert (await c.post(URL, json=body(cloud))).status_code == 403
        assert (await c.delete(f"{URL}/{uuid}")).status_code == 403
        for act in ({"os-stop": None}, {"reboot": {"type": "SOFT"}}, {"lock": None}):
            r = await c.post(f"{URL}/{uuid}/action", json=act)
            assert r.status_code == 403, act
            assert "forbidden" in r.json()
    async with await login(cloud, "demo") as c:
        r = await c.post(f"{URL}/{uuid}/action", json={"os-resetState": {"state": "error"}})
        assert r.status_code == 403


# --- actions --------------------------------------------------------------------------------


async def test_power_actions_set_the_transitional_state(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
        r = await c.post(f"{URL}/{uuid}/action", json={"os-stop": None})
        assert r.status_code == 409  # still building
        assert "Cannot 'stop' instance" in r.json()["conflictingRequest"]["message"]
        await make_active(cloud, uuid)

        async def act(payload: Any, code: int = 202) -> dict[str, Any]:
            r = await c.post(f"{URL}/{uuid}/action", json=payload)
            assert r.status_code == code, r.text
            return dict((await c.get(f"{URL}/{uuid}")).json()["server"])

        server = await act({"reboot": {"type": "soft"}})
        assert server["status"] == "REBOOT"
        await act({"os-stop": None}, 409)  # busy
        await finish_task(cloud, uuid, task_state=None)
        server = await act({"reboot": {"type": "HARD"}})
        assert server["status"] == "HARD_REBOOT"
        await finish_task(cloud, uuid, task_state=None)
        server = await act({"os-stop": None})
        assert server["OS-EXT-STS:task_state"] == "powering-off"
        await finish_task(cloud, uuid, task_state=None, vm_state="stopped", power_state=4)
        assert (await c.get(f"{URL}/{uuid}")).json()["server"]["status"] == "SHUTOFF"
        r = await c.post(f"{URL}/{uuid}/action", json={"os-stop": None})
        assert r.status_code == 409
        assert "while it is in vm_state stopped" in r.json()["conflictingRequest"]["message"]
        server = await act({"os-start": None})
        assert server["OS-EXT-STS:task_state"] == "powering-on"
        await finish_task(cloud, uuid, task_state=None, vm_state="active")
        r = await c.delete(f"{URL}/{uuid}")
        assert r.status_code == 204
        server = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert server["OS-EXT-STS:task_state"] == "deleting"


async def test_lock_unlock(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo", "2.9") as c:
        uuid = (await create(c, cloud))["id"]
    await make_active(cloud, uuid)
    demo_client = await login(cloud, "demo", "2.9")
    admin_client = await login(cloud, "admin", "2.9")
    async with demo_client as demo, admin_client as admin:
        assert (await demo.post(f"{URL}/{uuid}/action", json={"lock": None})).status_code == 202
        assert (await demo.get(f"{URL}/{uuid}")).json()["server"]["locked"] is True
        for act in ({"os-stop": None}, {"reboot": {"type": "HARD"}}):
            r = await demo.post(f"{URL}/{uuid}/action", json=act)
            assert r.status_code == 409
            assert r.json()["conflictingRequest"]["message"] == f"Instance {uuid} is locked"
        assert (await demo.delete(f"{URL}/{uuid}")).status_code == 409
        assert (await demo.get(URL, params={})).status_code == 200
        # The owner unlocks its own lock; an admin's lock needs an admin.
        assert (await demo.post(f"{URL}/{uuid}/action", json={"unlock": None})).status_code == 202
        assert (await admin.post(f"{URL}/{uuid}/action", json={"lock": None})).status_code == 202
        r = await demo.post(f"{URL}/{uuid}/action", json={"unlock": None})
        assert r.status_code == 403 and "unlock_override" in r.json()["forbidden"]["message"]
        # Admins act on locked servers.
        r = await admin.post(f"{URL}/{uuid}/action", json={"reboot": {"type": "SOFT"}})
        assert r.status_code == 202
        assert (await admin.post(f"{URL}/{uuid}/action", json={"unlock": None})).status_code == 202
        assert (await demo.get(f"{URL}/{uuid}")).json()["server"]["locked"] is False


async def test_reset_state_and_faults(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    await finish_task(cloud, uuid)
    async with await login(cloud, "admin") as c:
        bad: dict[str, Any]
        for bad in ({"os-resetState": {"state": "stopped"}}, {"os-resetState": {}}):
            assert (await c.post(f"{URL}/{uuid}/action", json=bad)).status_code == 400
        r = await c.post(f"{URL}/{uuid}/action", json={"os-resetState": {"state": "error"}})
        assert r.status_code == 202
    async with cloud.state.db.writer() as conn:
        await instances_db.fault_create(
            conn,
            {"instance_uuid": uuid, "code": 500, "message": "boom", "details": "Traceback..."},
        )
    async with await login(cloud, "demo") as c:
        server = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert server["status"] == "ERROR" and server["OS-EXT-STS:task_state"] is None
        assert server["fault"]["message"] == "boom" and "details" not in server["fault"]
        assert server["fault"]["created"].endswith("Z") and "progress" not in server
    async with await login(cloud, "admin") as c:
        server = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert server["fault"]["details"] == "Traceback..."
        r = await c.post(f"{URL}/{uuid}/action", json={"os-resetState": {"state": "active"}})
        server = (await c.get(f"{URL}/{uuid}")).json()["server"]
        assert server["status"] == "ACTIVE" and "fault" not in server


# --- instance actions -----------------------------------------------------------------------


async def test_instance_actions(cloud: ApiHarness) -> None:
    async with await login(cloud, "demo") as c:
        r = await c.post(URL, json=body(cloud))
        uuid = r.json()["server"]["id"]
        request_id = r.headers["x-openstack-request-id"]
    async with cloud.state.db.writer() as conn:
        from nubes.db.api import actions

        await actions.event_start(
            conn, instance_uuid=uuid, request_id=request_id, event="conductor_schedule"
        )
        await actions.event_finish(
            conn,
            instance_uuid=uuid,
            request_id=request_id,
            event="conductor_schedule",
            result="Error",
            traceback="tb",
        )
    path = f"{URL}/{uuid}/os-instance-actions"
    async with await login(cloud, "demo") as c:
        (action,) = (await c.get(path)).json()["instanceActions"]
        assert set(action) == {
            "action",
            "instance_uuid",
            "request_id",
            "user_id",
            "project_id",
            "start_time",
            "message",
        }
        assert action["action"] == "create" and action["message"] == "Error"
        shown = (await c.get(f"{path}/{request_id}")).json()["instanceAction"]
        assert "events" not in shown  # owners see events from 2.51
        assert (await c.get(f"{path}/req-nope")).status_code == 404
    async with await login(cloud, "demo", "2.51") as c:
        (event,) = (await c.get(f"{path}/{request_id}")).json()["instanceAction"]["events"]
        assert set(event) == {"event", "start_time", "finish_time", "result"}
    async with await login(cloud, "admin") as c:
        (event,) = (await c.get(f"{path}/{request_id}")).json()["instanceAction"]["events"]
        assert event["traceback"] == "tb" and event["result"] == "Error"
    async with await login(cloud, "demo", "2.58") as c:
        await make_active(cloud, uuid)
        await c.post(f"{URL}/{uuid}/action", json={"lock": None})
        await c.post(f"{URL}/{uuid}/action", json={"unlock": None})
        listed = (await c.get(path)).json()
        assert [a["action"] for a in listed["instanceActions"]] == ["unlock", "lock", "create"]
        assert all("updated_at" in a for a in listed["instanceActions"])
        page = (await c.get(path, params={"limit": 1})).json()
        assert [a["action"] for a in page["instanceActions"]] == ["unlock"]
        assert page["links"][0]["rel"] == "next"
        marker = page["instanceActions"][0]["request_id"]
        page = (await c.get(path, params={"limit": 5, "marker": marker})).json()
        assert [a["action"] for a in page["instanceActions"]] == ["lock", "create"]
        assert (await c.get(path, params={"marker": "req-x"})).status_code == 400
    # Deleted servers: 404 before 2.21, readable from it.
    async with cloud.state.db.writer() as conn:
        await instances_db.destroy(conn, uuid)
    async with await login(cloud, "demo", "2.20") as c:
        assert (await c.get(path)).status_code == 404
    async with await login(cloud, "demo", "2.21") as c:
        assert len((await c.get(path)).json()["instanceActions"]) == 3


def test_status_mapping_round_trips() -> None:
    assert server_views.status_from_state("active", "rebooting_hard") == "HARD_REBOOT"
    assert server_views.status_from_state("active", "powering-off") == "ACTIVE"
    assert server_views.status_from_state("stopped", None) == "SHUTOFF"
    assert server_views.status_from_state("weird", None) == "UNKNOWN"
    assert server_views.states_from_status(["reboot"]) == (
        ["active"],
        ["reboot_pending", "reboot_started", "rebooting"],
    )
    # "default": any task_state, so no task filter.
    assert server_views.states_from_status(["ACTIVE"]) == (["active"], ["default"])


async def test_console_output_refuses_bad_lengths_servers_not_running_and_strangers(
    cloud: ApiHarness,
) -> None:
    """``os-getConsoleOutput`` before it asks any host: Nova's 400/404/409.
    (The answer from a host is tested through the CLI, with a bus and hosts.)"""
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]

        async def ask(body: Any) -> httpx.Response:
            return await c.post(f"{URL}/{uuid}/action", json={"os-getConsoleOutput": body})

        r = await ask({})
        assert r.status_code == 409, r.text  # building: on no host yet
        assert "on no host" in r.json()["conflictingRequest"]["message"]
        for bad in ({"length": -2}, {"length": "-5"}, {"length": "ten"}, {"length": 1.5}, {"x": 1}):
            r = await ask(bad)
            assert r.status_code == 400, (bad, r.text)
            assert "badRequest" in r.json()
        await make_active(cloud, uuid, vm_state="stopped", power_state=4)
        r = await ask({"length": 5})
        assert r.status_code == 409, r.text
        assert "not running" in r.json()["conflictingRequest"]["message"]
        r = await c.post(
            f"{URL}/2b9dd1a6-4ad4-4f5f-9f3e-3c8e4b8a9d00/action", json={"os-getConsoleOutput": {}}
        )
        assert r.status_code == 404
    async with await login(cloud, "other") as c:
        # Another project's server does not exist for it.
        r = await c.post(f"{URL}/{uuid}/action", json={"os-getConsoleOutput": {}})
        assert r.status_code == 404


async def test_diagnostics_are_for_admins_and_only_of_an_active_placed_server(
    cloud: ApiHarness,
) -> None:
    """``GET /servers/{id}/diagnostics`` before it asks any host: 404 for a
    stranger, 403 for a member, 409 while on no host or not running. (The
    host's answer is tested with a bus and hosts, and through the CLI.)"""
    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
        r = await c.get(f"{URL}/{uuid}/diagnostics")
        assert r.status_code == 403, r.text
    async with await login(cloud, "other") as c:
        assert (await c.get(f"{URL}/{uuid}/diagnostics")).status_code == 404
    async with await login(cloud, "admin") as c:
        r = await c.get(f"{URL}/{uuid}/diagnostics")
        assert r.status_code == 409, r.text
        assert "on no host" in r.json()["conflictingRequest"]["message"]
        await make_active(cloud, uuid, vm_state="stopped", power_state=4)
        r = await c.get(f"{URL}/{uuid}/diagnostics")
        assert r.status_code == 409, r.text
        assert "not running" in r.json()["conflictingRequest"]["message"]
        r = await c.get(f"{URL}/2b9dd1a6-4ad4-4f5f-9f3e-3c8e4b8a9d00/diagnostics")
        assert r.status_code == 404


async def test_remote_consoles_refuse_what_nova_refuses_before_asking_a_host(
    cloud: ApiHarness,
) -> None:
    """``remote-consoles`` and the 2.1-2.5 console actions: 404 outside their
    microversions, 400 for a bad or unoffered type, 409 while on no host."""
    path_of = f"{URL}/{{}}/remote-consoles"
    async with await login(cloud, "demo", "2.6") as c:
        uuid = (await create(c, cloud))["id"]
        path = path_of.format(uuid)

        async def ask(protocol: str, kind: str) -> httpx.Response:
            return await c.post(path, json={"remote_console": {"protocol": protocol, "type": kind}})

        r = await ask("vnc", "novnc")
        assert r.status_code == 409, r.text  # building: on no host yet
        for protocol, kind in (("vnc", "nope"), ("ssh", "novnc"), ("mks", "webmks")):
            assert (await ask(protocol, kind)).status_code == 400, (protocol, kind)
        r = await ask("vnc", "serial")  # a type of another protocol
        assert r.status_code == 400 and "Invalid console type serial" in r.text, r.text
        for protocol, kind in (("spice", "spice-html5"), ("serial", "serial"), ("vnc", "xvpvnc")):
            r = await ask(protocol, kind)
            assert r.status_code == 400, r.text
            assert f"Unavailable console type {kind}." in r.text, r.text
        assert (await c.post(path, json={"remote_console": {}})).status_code == 400
        # The old actions are gone from 2.6.
        r = await c.post(f"{URL}/{uuid}/action", json={"os-getVNCConsole": {"type": "novnc"}})
        assert r.status_code == 404, r.text
    async with await login(cloud, "demo", "2.8") as c:
        r = await c.post(path, json={"remote_console": {"protocol": "mks", "type": "webmks"}})
        assert r.status_code == 400 and "Unavailable console type webmks." in r.text, r.text
    async with await login(cloud, "demo", "2.5") as c:
        r = await c.post(path, json={"remote_console": {"protocol": "vnc", "type": "novnc"}})
        assert r.status_code == 404, r.text
        action = f"{URL}/{uuid}/action"
        r = await c.post(action, json={"os-getVNCConsole": {"type": "novnc"}})
        assert r.status_code == 409, r.text
        r = await c.post(action, json={"os-getVNCConsole": {"type": "spice-html5"}})
        assert r.status_code == 400, r.text
        for name, kind in (
            ("os-getSPICEConsole", "spice-html5"),
            ("os-getRDPConsole", "rdp-html5"),
            ("os-getSerialConsole", "serial"),
        ):
            r = await c.post(action, json={name: {"type": kind}})
            assert r.status_code == 400 and "Unavailable console type" in r.text, r.text
    async with await login(cloud, "viewer", "2.6") as c:
        r = await c.post(path, json={"remote_console": {"protocol": "vnc", "type": "novnc"}})
        assert r.status_code == 403, r.text
    async with await login(cloud, "other", "2.6") as c:
        r = await c.post(path, json={"remote_console": {"protocol": "vnc", "type": "novnc"}})
        assert r.status_code == 404, r.text


async def test_console_auth_tokens_are_shown_and_revoked_by_admins_only(
    cloud: ApiHarness,
) -> None:
    from nubes.db.api import consoles as consoles_db

    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
    values = {
        "console_type": "novnc",
        "instance_uuid": uuid,
        "compute_host": "fake-0",
        "host": "127.0.0.1",
        "port": 6081,
        "internal_access_path": None,
        "access_url_base": "http://127.0.0.1:6080/vnc_auto.html",
    }
    async with cloud.state.db.writer() as conn:
        await consoles_db.create(conn, "tok-live", 600, values)
        await consoles_db.create(conn, "tok-old", -1, values)
    path = "/compute/v2.1/os-console-auth-tokens/{}"
    async with await login(cloud, "demo", "2.31") as c:
        assert (await c.get(path.format("tok-live"))).status_code == 403
        assert (await c.delete(path.format("tok-live"))).status_code == 403
    async with await login(cloud, "admin", "2.30") as c:
        # Before 2.31 Nova shows only RDP tokens.
        r = await c.get(path.format("tok-live"))
        assert r.status_code == 400 and "not accessible" in r.text, r.text
    async with await login(cloud, "admin", "2.31") as c:
        r = await c.get(path.format("tok-live"))
        assert r.status_code == 200, r.text
        assert r.json() == {
            "console": {
                "instance_uuid": uuid,
                "host": "127.0.0.1",
                "port": 6081,
                "internal_access_path": None,
            }
        }
        # Reading does not spend it; an expired or unknown one is not found.
        assert (await c.get(path.format("tok-live"))).status_code == 200
        for gone in ("tok-old", "nope"):
            r = await c.get(path.format(gone))
            assert r.status_code == 404 and "Token not found" in r.text, r.text
        assert (await c.delete(path.format("tok-live"))).status_code == 204
        assert (await c.get(path.format("tok-live"))).status_code == 404
        assert (await c.delete(path.format("tok-live"))).status_code == 404
    async with await login(cloud, "admin", "2.99") as c:
        async with cloud.state.db.writer() as conn:
            await consoles_db.create(conn, "tok-new", 600, values)
        r = await c.get(path.format("tok-new"))
        assert r.json()["console"]["tls_port"] is None, r.text


async def test_server_password_is_shown_to_the_project_and_cleared_by_members(
    cloud: ApiHarness,
) -> None:
    from nubes.db.api import metadata as metadata_db

    async with await login(cloud, "demo") as c:
        uuid = (await create(c, cloud))["id"]
        path = f"{URL}/{uuid}/os-server-password"
        r = await c.get(path)
        assert r.status_code == 200 and r.json() == {"password": ""}, r.text
    # What a guest posts through the metadata service: up to 4 x 255 characters.
    posted = "x" * 300 + "y" * 300
    async with cloud.state.db.writer() as conn:
        assert await metadata_db.set_password(conn, uuid, posted, only_if_unset=True)
        assert not await metadata_db.set_password(conn, uuid, "again", only_if_unset=True)
    async with await login(cloud, "viewer") as c:
        assert (await c.get(path)).json() == {"password": posted}
        assert (await c.delete(path)).status_code == 403
    async with await login(cloud, "other") as c:
        assert (await c.get(path)).status_code == 404
        assert (await c.delete(path)).status_code == 404
    async with await login(cloud, "demo") as c:
        assert (await c.delete(path)).status_code == 204
        assert (await c.get(path)).json() == {"password": ""}
    # Cleared, the guest may post a new one.
    async with cloud.state.db.writer() as conn:
        assert await metadata_db.set_password(conn, uuid, "new", only_if_unset=True)
