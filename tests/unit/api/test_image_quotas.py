"""Image quotas (Glance's unified limits): set through Keystone's /v3/limits,
shown by /v2/info/usage, enforced on create, upload, stage and import."""

from __future__ import annotations

from typing import Any

import httpx

from nubes.api import quotas
from tests.unit.api.conftest import ApiHarness

URL = "/image/v2/images"
LIMITS = "/identity/v3/limits"
OCTETS = {"Content-Type": "application/octet-stream"}
MIB = 1024 * 1024


async def _image(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await c.post(
        URL, json={"name": "img", "disk_format": "raw", "container_format": "bare", **body}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _service_id(c: httpx.AsyncClient) -> str:
    r = await c.get("/identity/v3/registered_limits")
    assert r.status_code == 200, r.text
    services = {item["service_id"] for item in r.json()["registered_limits"]}
    (service,) = services
    return str(service)


async def _set(api: ApiHarness, project: str, **limits: int) -> list[dict[str, Any]]:
    async with await api.login("admin") as c:
        service = await _service_id(c)
        body = {
            "limits": [
                {
                    "service_id": service,
                    "project_id": api.projects[project],
                    "resource_name": name,
                    "resource_limit": value,
                }
                for name, value in limits.items()
            ]
        }
        r = await c.post(LIMITS, json=body)
        assert r.status_code == 201, r.text
        return list(r.json()["limits"])


async def _usage(c: httpx.AsyncClient) -> dict[str, dict[str, int]]:
    r = await c.get("/image/v2/info/usage")
    assert r.status_code == 200, r.text
    return dict(r.json()["usage"])


async def test_defaults_come_from_the_quota_options_and_show_in_usage(api: ApiHarness) -> None:
    api.state.conf.set_override("image_count_total", 7, group="quota")
    async with await api.login("demo") as c:
        usage = await _usage(c)
        assert set(usage) == set(quotas.IMAGE_RESOURCES)
        assert usage["image_count_total"] == {"limit": 7, "usage": 0}
        assert usage["image_size_total"] == {"limit": -1, "usage": 0}
        await _image(c)
        assert (await _usage(c))["image_count_total"] == {"limit": 7, "usage": 1}
        r = await c.get("/identity/v3/registered_limits")
        defaults = {i["resource_name"]: i["default_limit"] for i in r.json()["registered_limits"]}
        assert defaults["image_count_total"] == 7


async def test_image_count_total_refuses_the_create_past_it(api: ApiHarness) -> None:
    await _set(api, "demo", image_count_total=1)
    async with await api.login("demo") as c:
        await _image(c)
        r = await c.post(URL, json={"name": "second"})
        assert r.status_code == 413, r.text
        message = r.json()["message"]
        assert "Resource image_count_total is over limit of 1" in message
        assert "current usage 1 and delta 1" in message
        # Nothing half-written: still one image.
        assert len((await c.get(URL)).json()["images"]) == 1
    # Another project's count is its own.
    async with await api.login("other") as c:
        await _image(c)
        await _image(c)


async def test_size_total_lets_an_upload_start_while_within_it_then_refuses(
    api: ApiHarness,
) -> None:
    await _set(api, "demo", image_size_total=1)
    async with await api.login("demo") as c:
        first = await _image(c)
        r = await c.put(f"{URL}/{first['id']}/file", content=b"x" * (2 * MIB), headers=OCTETS)
        assert r.status_code == 204, r.text
        assert (await _usage(c))["image_size_total"] == {"limit": 1, "usage": 2}
        second = await _image(c)
        r = await c.put(f"{URL}/{second['id']}/file", content=b"y", headers=OCTETS)
        assert r.status_code == 413, r.text
        assert "image_size_total" in r.json()["message"]
        assert (await c.get(f"{URL}/{second['id']}")).json()["status"] == "queued"
        # web-download import is an upload too.
        body = {"method": {"name": "web-download", "uri": "http://127.0.0.1:9/x"}}
        r = await c.post(f"{URL}/{second['id']}/import", json=body)
        assert r.status_code == 413, r.text


async def test_count_uploading_and_stage_total_bound_staging(api: ApiHarness) -> None:
    await _set(api, "demo", image_count_uploading=1, image_stage_total=0)
    async with await api.login("demo") as c:
        first = await _image(c)
        r = await c.put(f"{URL}/{first['id']}/stage", content=b"s" * MIB, headers=OCTETS)
        assert r.status_code == 204, r.text
        usage = await _usage(c)
        assert usage["image_count_uploading"]["usage"] == 1
        assert usage["image_stage_total"] == {"limit": 0, "usage": 1}
        assert usage["image_size_total"]["usage"] == 0
        second = await _image(c)
        r = await c.put(f"{URL}/{second['id']}/stage", content=b"t", headers=OCTETS)
        assert r.status_code == 413, r.text
        message = r.json()["message"]
        assert "image_count_uploading" in message and "image_stage_total" in message
        # Importing the staged image is not one more upload: it goes through.
        body = {"method": {"name": "glance-direct"}}
        r = await c.post(f"{URL}/{first['id']}/import", json=body)
        assert r.status_code == 202, r.text
        usage = await _usage(c)
        assert usage["image_count_uploading"]["usage"] == 0
        assert usage["image_stage_total"]["usage"] == 0
        assert usage["image_size_total"]["usage"] == 1
    await _set(api, "other", image_count_uploading=0)
    async with await api.login("other") as c:
        image = await _image(c)
        r = await c.put(f"{URL}/{image['id']}/file", content=b"z", headers=OCTETS)
        assert r.status_code == 413


async def test_limits_api_admin_writes_projects_read_their_own(api: ApiHarness) -> None:
    (made,) = await _set(api, "demo", image_count_total=3)
    assert made["resource_limit"] == 3 and made["project_id"] == api.projects["demo"]
    async with await api.login("admin") as c:
        service = await _service_id(c)
        item = {
            "service_id": service,
            "project_id": api.projects["demo"],
            "resource_name": "image_count_total",
            "resource_limit": 5,
        }
        # The same limit twice is Keystone's 409.
        assert (await c.post(LIMITS, json={"limits": [item]})).status_code == 409
        for bad in (
            {**item, "resource_name": "instances"},
            {**item, "service_id": "nope"},
            {**item, "resource_limit": -2},
            {**item, "description": "not kept"},
        ):
            r = await c.post(LIMITS, json={"limits": [bad]})
            assert r.status_code == 400, (bad, r.text)
        r = await c.post(LIMITS, json={"limits": [{**item, "project_id": "no-such-project"}]})
        assert r.status_code == 404
        r = await c.patch(f"{LIMITS}/{made['id']}", json={"limit": {"resource_limit": 9}})
        assert r.status_code == 200 and r.json()["limit"]["resource_limit"] == 9
        r = await c.get(LIMITS, params={"resource_name": "image_count_total"})
        assert [x["resource_limit"] for x in r.json()["limits"]] == [9]
    async with await api.login("demo") as c:
        assert (await _usage(c))["image_count_total"]["limit"] == 9
        r = await c.get(f"{LIMITS}/{made['id']}")
        assert r.status_code == 200 and r.json()["limit"]["resource_limit"] == 9
        assert (await c.post(LIMITS, json={"limits": [item]})).status_code == 403
        assert (await c.delete(f"{LIMITS}/{made['id']}")).status_code == 403
    async with await api.login("other") as c:
        assert (await c.get(LIMITS)).json()["limits"] == []
        assert (await c.get(f"{LIMITS}/{made['id']}")).status_code == 404
    async with await api.login("admin") as c:
        assert (await c.delete(f"{LIMITS}/{made['id']}")).status_code == 204
        assert (await c.get(f"{LIMITS}/{made['id']}")).status_code == 404
    async with await api.login("demo") as c:
        assert (await _usage(c))["image_count_total"]["limit"] == -1
