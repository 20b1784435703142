"""The compute API's image proxy (up to 2.35): list, detail, show, delete, metadata."""

from __future__ import annotations

from tests.unit.api.conftest import ApiHarness

IMAGES = "/compute/v2.1/images"


async def _image(api: ApiHarness, **props: str) -> str:
    async with await api.login("demo") as c:
        body = {"name": "snap", "disk_format": "raw", "container_format": "bare", "min_ram": 64}
        r = await c.post("/image/v2/images", json={**body, **props})
        assert r.status_code == 201, r.text
        image_id: str = r.json()["id"]
        headers = {"Content-Type": "application/octet-stream"}
        r = await c.put(f"/image/v2/images/{image_id}/file", content=b"x" * 10, headers=headers)
        assert r.status_code == 204
    return image_id


async def test_list_detail_show_in_novas_shape(api: ApiHarness) -> None:
    server = "11111111-2222-3333-4444-555555555555"
    image_id = await _image(api, instance_uuid=server, image_type="snapshot")
    async with await api.login("demo", "2.35") as c:
        listed = (await c.get(IMAGES)).json()["images"]
        (mine,) = [i for i in listed if i["id"] == image_id]
        assert set(mine) == {"id", "name", "links"}
        shown = (await c.get(f"{IMAGES}/{image_id}")).json()["image"]
        assert (shown["status"], shown["progress"], shown["minRam"]) == ("ACTIVE", 100, 64)
        assert shown["OS-EXT-IMG-SIZE:size"] == 10 and shown["server"]["id"] == server
        assert shown["metadata"]["image_type"] == "snapshot"
        assert {link["rel"] for link in shown["links"]} == {"self", "bookmark", "alternate"}
        detail = (await c.get(f"{IMAGES}/detail", params={"server": server})).json()["images"]
        assert [i["id"] for i in detail] == [image_id]
        # The server as any of its links (what Tempest sends), not only its id;
        # a prefix of the id or another server's link matches nothing.
        for ref, found in (
            (f"http://cloud.example/compute/v2.1/servers/{server}", True),
            (f"http://cloud.example/compute/servers/{server}", True),
            (server[:8], False),
            (f"http://cloud.example/compute/v2.1/servers/{server[:-1]}0", False),
        ):
            for path in (IMAGES, f"{IMAGES}/detail"):
                listed = (await c.get(path, params={"server": ref})).json()["images"]
                assert (image_id in [i["id"] for i in listed]) is found, (path, ref)
        for params, found in (
            ({"type": "snapshot"}, True),
            ({"type": "backup"}, False),
            ({"minRam": "64"}, True),
            ({"minRam": "65"}, False),
            ({"status": "ACTIVE", "name": "snap"}, True),
            ({"status": "SAVING"}, False),
        ):
            ids = [
                i["id"] for i in (await c.get(f"{IMAGES}/detail", params=params)).json()["images"]
            ]
            assert (image_id in ids) is found, params
        r = await c.get(IMAGES, params={"limit": 1})
        assert len(r.json()["images"]) == 1
        assert (await c.get(f"{IMAGES}/nope")).status_code == 404
    async with await api.login("demo", "2.36") as c:
        assert (await c.get(f"{IMAGES}/{image_id}")).status_code == 404


async def test_metadata_is_the_images_properties(api: ApiHarness) -> None:
    image_id = await _image(api, os_distro="cirros")
    meta = f"{IMAGES}/{image_id}/metadata"
    async with await api.login("demo", "2.35") as c:
        assert (await c.get(meta)).json()["metadata"] == {"os_distro": "cirros"}
        r = await c.post(meta, json={"metadata": {"a": "1", "os_distro": "fedora"}})
        assert r.json()["metadata"] == {"a": "1", "os_distro": "fedora"}
        r = await c.put(meta, json={"metadata": {"b": "2"}})
        assert r.json()["metadata"] == {"b": "2"}
        r = await c.put(f"{meta}/c", json={"meta": {"c": "3"}})
        assert r.json() == {"meta": {"c": "3"}}
        assert (await c.get(f"{meta}/c")).json() == {"meta": {"c": "3"}}
        assert (await c.put(f"{meta}/c", json={"meta": {"d": "3"}})).status_code == 400
        assert (await c.delete(f"{meta}/c")).status_code == 204
        assert (await c.get(f"{meta}/c")).status_code == 404
        assert (await c.delete(f"{meta}/c")).status_code == 404
        # Attributes are not metadata.
        assert (await c.post(meta, json={"metadata": {"name": "x"}})).status_code == 400
        shown = (await c.get(f"/image/v2/images/{image_id}")).json()
        assert shown["b"] == "2" and "a" not in shown
    async with await api.login("other", "2.35") as c:
        # Another project's private image is not found, nor its metadata.
        assert (await c.get(meta)).status_code == 404
    async with await api.login("demo", "2.35") as c:
        assert (await c.delete(f"{IMAGES}/{image_id}")).status_code == 204
        assert (await c.get(f"{IMAGES}/{image_id}")).status_code == 404
