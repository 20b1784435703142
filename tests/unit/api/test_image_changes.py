"""Glance v2 after create: JSON-patch update, tags, members, deactivate, import."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from tests.unit.api.conftest import WEB_PAYLOAD, ApiHarness

URL = "/image/v2/images"
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
OCTETS = {"Content-Type": "application/octet-stream"}


async def _image(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await c.post(
        URL, json={"name": "img", "disk_format": "raw", "container_format": "bare", **body}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_patch_sets_and_removes_properties_name_tags(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        image = await _image(c, os_distro="cirros")
        ops = [
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
            {"op": "remove", "path": "/os_distro"},
            {"op": "replace", "path": "/tags", "value": ["b", "a", "b"]},
            {"op": "replace", "path": "/min_ram", "value": 128},
        ]
        r = await c.patch(f"{URL}/{image['id']}", json=ops, headers=PATCH)
        assert r.status_code == 200, r.text
        shown = r.json()
        assert shown["name"] == "renamed" and shown["hw_disk_bus"] == "virtio"
        assert "os_distro" not in shown and shown["tags"] == ["a", "b"] and shown["min_ram"] == 128
        # All or nothing: a bad op leaves the image as it was.
        bad = [
            {"op": "replace", "path": "/name", "value": "again"},
            {"op": "replace", "path": "/size", "value": 3},
        ]
        r = await c.patch(f"{URL}/{image['id']}", json=bad, headers=PATCH)
        assert r.status_code == 403
        assert (await c.get(f"{URL}/{image['id']}")).json()["name"] == "renamed"
        missing = [{"op": "remove", "path": "/nope"}]
        assert (
            await c.patch(f"{URL}/{image['id']}", json=missing, headers=PATCH)
        ).status_code == 409
        wrong_type = [{"op": "replace", "path": "/min_ram", "value": "lots"}]
        r = await c.patch(f"{URL}/{image['id']}", json=wrong_type, headers=PATCH)
        assert r.status_code == 400
        r = await c.patch(
            f"{URL}/{image['id']}", json=ops, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 415
        public = [{"op": "replace", "path": "/visibility", "value": "public"}]
        assert (
            await c.patch(f"{URL}/{image['id']}", json=public, headers=PATCH)
        ).status_code == 403
        assert (await c.put(f"{URL}/{image['id']}/tags/c")).status_code == 204
        assert (await c.delete(f"{URL}/{image['id']}/tags/a")).status_code == 204
        assert (await c.delete(f"{URL}/{image['id']}/tags/zz")).status_code == 404
        assert (await c.get(f"{URL}/{image['id']}")).json()["tags"] == ["b", "c"]
    async with await api.login("other") as c:
        ops = [{"op": "replace", "path": "/name", "value": "mine"}]
        assert (await c.patch(f"{URL}/{image['id']}", json=ops, headers=PATCH)).status_code == 404


async def test_patch_in_glance_2_0_form(api: ApiHarness) -> None:
    """Glance's older patch media type names each operation by its one
    member (``{"add": "/path", "value": ...}``); Tempest's image client sends
    it (the stable-rescue tests set ``hw_rescue_bus`` so)."""
    v20 = {"Content-Type": "application/openstack-images-v2.0-json-patch"}
    async with await api.login("demo") as c:
        image = await _image(c, os_distro="cirros")
        ops = [
            {"add": "/hw_rescue_bus", "value": "scsi"},
            {"replace": "/name", "value": "renamed"},
            {"remove": "/os_distro"},
        ]
        r = await c.patch(f"{URL}/{image['id']}", json=ops, headers=v20)
        assert r.status_code == 200, r.text
        shown = (await c.get(f"{URL}/{image['id']}")).json()
        assert shown["hw_rescue_bus"] == "scsi" and shown["name"] == "renamed"
        assert "os_distro" not in shown
        # Neither or both of the kinds, or the 2.1 form under the 2.0 type: 400,
        # and nothing changed.
        for bad in (
            [{"value": "x"}],
            [{"add": "/a", "replace": "/b", "value": "x"}],
            [{"op": "add", "path": "/a", "value": "x"}],
            ["add"],
        ):
            r = await c.patch(f"{URL}/{image['id']}", json=bad, headers=v20)
            assert r.status_code == 400, (bad, r.text)
        # Glance's reserved namespace: not added, nor given at create.
        for form, op in (
            (v20, {"add": "/os_glance_foo", "value": "bar"}),
            (PATCH, {"op": "add", "path": "/os_glance_foo", "value": "bar"}),
        ):
            r = await c.patch(f"{URL}/{image['id']}", json=[op], headers=form)
            assert r.status_code == 403, r.text
        r = await c.post(URL, json={"name": "r", "os_glance_foo": "bar"})
        assert r.status_code == 403, r.text
        assert not [i for i in (await c.get(URL)).json()["images"] if i["name"] == "r"]
        # The same rules as the 2.1 form: a read-only attribute is 403.
        r = await c.patch(
            f"{URL}/{image['id']}", json=[{"replace": "/size", "value": 1}], headers=v20
        )
        assert r.status_code == 403
        assert (await c.get(f"{URL}/{image['id']}")).json()["name"] == "renamed"


async def test_sharing_with_a_member_project(api: ApiHarness) -> None:
    other = api.projects["other"]
    async with await api.login("demo") as c:
        image = await _image(c)
        r = await c.post(f"{URL}/{image['id']}/members", json={"member": other})
        assert r.status_code == 200 and r.json()["status"] == "pending"
        assert (
            await c.post(f"{URL}/{image['id']}/members", json={"member": other})
        ).status_code == 409
    async with await api.login("other") as c:
        # Usable by id at once, listed only once accepted.
        assert (await c.get(f"{URL}/{image['id']}")).status_code == 200
        assert image["id"] not in {i["id"] for i in (await c.get(URL)).json()["images"]}
        r = await c.get(URL, params={"member_status": "pending"})
        assert image["id"] in {i["id"] for i in r.json()["images"]}
        r = await c.put(f"{URL}/{image['id']}/members/{other}", json={"status": "accepted"})
        assert r.status_code == 200 and r.json()["status"] == "accepted"
        assert image["id"] in {i["id"] for i in (await c.get(URL)).json()["images"]}
        # A member neither adds members nor removes itself (it rejects instead).
        r = await c.post(f"{URL}/{image['id']}/members", json={"member": "x"})
        assert r.status_code == 403
        assert (await c.delete(f"{URL}/{image['id']}/members/{other}")).status_code == 403
    async with await api.login("demo") as c:
        # Only the member answers.
        r = await c.put(f"{URL}/{image['id']}/members/{other}", json={"status": "rejected"})
        assert r.status_code == 403
        members = (await c.get(f"{URL}/{image['id']}/members")).json()["members"]
        assert [(m["member_id"], m["status"]) for m in members] == [(other, "accepted")]
        assert (await c.delete(f"{URL}/{image['id']}/members/{other}")).status_code == 204
    async with await api.login("other") as c:
        assert (await c.get(f"{URL}/{image['id']}")).status_code == 404


async def test_member_schemas_describe_the_member_view(api: ApiHarness) -> None:
    other = api.projects["other"]
    async with await api.login("demo") as c:
        image = await _image(c, visibility="shared")
        member = (await c.post(f"{URL}/{image['id']}/members", json={"member": other})).json()
        schema = (await c.get("/image/v2/schemas/member")).json()
        assert schema["name"] == "member"
        # Every field the member view shows is described, and its status is one of them.
        assert set(schema["properties"]) == set(member)
        assert member["status"] in schema["properties"]["status"]["enum"]
        listing = (await c.get("/image/v2/schemas/members")).json()
        assert listing["name"] == "members"
        assert listing["properties"]["members"]["items"] == schema


async def test_deactivated_image_cannot_be_downloaded_or_booted(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        image = await _image(c)
        assert (
            await c.put(f"{URL}/{image['id']}/file", content=b"x" * 10, headers=OCTETS)
        ).status_code == 204
    async with await api.login("other") as c:
        # Another project's image: unknown to it, so nor can it deactivate it.
        assert (await c.post(f"{URL}/{image['id']}/actions/deactivate")).status_code == 404
    async with await api.login("viewer") as c:
        assert (await c.post(f"{URL}/{image['id']}/actions/deactivate")).status_code == 403
    async with await api.login("demo") as c:
        # Its own project deactivates it (Glance's default: admin or the project's member).
        assert (await c.post(f"{URL}/{image['id']}/actions/deactivate")).status_code == 204
        assert (await c.post(f"{URL}/{image['id']}/actions/deactivate")).status_code == 204
    async with await api.login("admin") as c:
        assert (await c.get(f"{URL}/{image['id']}/file")).status_code == 200
    async with await api.login("demo") as c:
        assert (await c.get(f"{URL}/{image['id']}")).json()["status"] == "deactivated"
        assert (await c.get(f"{URL}/{image['id']}/file")).status_code == 403
        body = {
            "server": {"name": "s", "imageRef": image["id"], "flavorRef": "1", "networks": "none"}
        }
        r = await c.post(
            "/compute/v2.1/servers", json=body, headers={"OpenStack-API-Version": "compute 2.37"}
        )
        assert r.status_code == 400, r.text
    async with await api.login("admin") as c:
        assert (await c.post(f"{URL}/{image['id']}/actions/reactivate")).status_code == 204
    async with await api.login("demo") as c:
        assert (await c.get(f"{URL}/{image['id']}/file")).content == b"x" * 10


async def test_glance_direct_import(api: ApiHarness) -> None:
    data = b"staged-bytes" * 100
    async with await api.login("demo") as c:
        info = (await c.get("/image/v2/info/import")).json()
        assert info["import-methods"]["value"] == ["glance-direct", "web-download"]
        image = await _image(c)
        direct = {"method": {"name": "glance-direct"}}
        # Nothing staged yet.
        assert (await c.post(f"{URL}/{image['id']}/import", json=direct)).status_code == 409
        assert (
            await c.put(f"{URL}/{image['id']}/stage", content=data, headers=OCTETS)
        ).status_code == 204
        assert (await c.get(f"{URL}/{image['id']}")).json()["status"] == "uploading"
        assert (await c.post(f"{URL}/{image['id']}/import", json=direct)).status_code == 202
        shown = (await c.get(f"{URL}/{image['id']}")).json()
        assert shown["status"] == "active" and shown["size"] == len(data)
        assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
        assert (await c.get(f"{URL}/{image['id']}/file")).content == data
        # The import ran within its request: once it answered, the image has
        # no task pending (what Tempest's snapshot tests poll for).
        r = await c.get(f"{URL}/{image['id']}/tasks")
        assert r.status_code == 200 and r.json() == {"tasks": []}
        missing = "00000000-0000-0000-0000-000000000000"
        assert (await c.get(f"{URL}/{missing}/tasks")).status_code == 404
    assert not (api.state.image_dir / "staging" / image["id"]).exists()
    async with await api.login("other") as c:
        # Another project's private image: its tasks are as unknown as it is.
        assert (await c.get(f"{URL}/{image['id']}/tasks")).status_code == 404


async def test_web_download_import(api: ApiHarness, web_server: str) -> None:
    async with await api.login("demo") as c:
        image = await _image(c)
        body = {"method": {"name": "web-download", "uri": f"{web_server}/missing"}}
        r = await c.post(f"{URL}/{image['id']}/import", json=body)
        assert r.status_code == 400
        assert (await c.get(f"{URL}/{image['id']}")).json()["status"] == "queued"
        body = {"method": {"name": "web-download", "uri": "file:///etc/passwd"}}
        assert (await c.post(f"{URL}/{image['id']}/import", json=body)).status_code == 400
        body = {"method": {"name": "web-download", "uri": f"{web_server}/image.raw"}}
        r = await c.post(f"{URL}/{image['id']}/import", json=body)
        assert r.status_code == 202, r.text
        assert (await c.get(f"{URL}/{image['id']}/file")).content == WEB_PAYLOAD
    api.state.conf.set_override("image_import_allowed_hosts", ["images.example"], group="api")
    async with await api.login("demo") as c:
        image = await _image(c)
        body = {"method": {"name": "web-download", "uri": f"{web_server}/image.raw"}}
        assert (await c.post(f"{URL}/{image['id']}/import", json=body)).status_code == 403
