"""Glance's tasks: POST /v2/tasks imports an image from a URL with the
web-download import's code; its status machine; listing and the image's tasks."""

from __future__ import annotations

from typing import Any

import pytest

from nubes import exception
from nubes.api import image_tasks
from nubes.api.image_tasks import TaskStatus
from nubes.db.api import quotas as quotas_db
from tests.unit.api.conftest import WEB_PAYLOAD, ApiHarness

TASKS = "/image/v2/tasks"
IMAGES = "/image/v2/images"


def _task(uri: str, **props: Any) -> dict[str, Any]:
    return {
        "type": "import",
        "input": {
            "import_from": uri,
            "import_from_format": "qcow2",
            "image_properties": {
                "name": "from-task",
                "container_format": "bare",
                "disk_format": "qcow2",
                **props,
            },
        },
    }


def test_the_status_machine_walks_to_an_end_and_stops_there() -> None:
    reachable = {TaskStatus.PENDING}
    frontier = [TaskStatus.PENDING]
    while frontier:
        for nxt in image_tasks.TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(TaskStatus)
    for end in (TaskStatus.SUCCESS, TaskStatus.FAILURE):
        assert image_tasks.TRANSITIONS[end] == frozenset()
        for status in TaskStatus:
            with pytest.raises(exception.Conflict):
                image_tasks.check_transition(end, status)
    image_tasks.check_transition(TaskStatus.PENDING, TaskStatus.PROCESSING)
    with pytest.raises(exception.Conflict):
        image_tasks.check_transition(TaskStatus.PENDING, TaskStatus.SUCCESS)


async def test_an_import_task_makes_an_active_image(api: ApiHarness, web_server: str) -> None:
    async with await api.login("admin") as c:
        r = await c.post(TASKS, json=_task(f"{web_server}/image.raw", protected=True))
        assert r.status_code == 201, r.text
        task = r.json()
        assert task["status"] == "success" and task["type"] == "import"
        assert r.headers["Location"] == f"/v2/tasks/{task['id']}"
        assert task["expires_at"] and task["message"] == ""
        image_id = task["result"]["image_id"]
        image = (await c.get(f"{IMAGES}/{image_id}")).json()
        assert image["status"] == "active" and image["disk_format"] == "qcow2"
        assert image["name"] == "from-task" and image["size"] == len(WEB_PAYLOAD)
        assert image["protected"] is True
        assert (await c.get(f"{IMAGES}/{image_id}/file")).content == WEB_PAYLOAD
        shown = (await c.get(f"{TASKS}/{task['id']}")).json()
        assert shown["input"]["import_from"] == f"{web_server}/image.raw"
        assert shown["input"]["image_properties"]["protected"] is True
        of_image = (await c.get(f"{IMAGES}/{image_id}/tasks")).json()["tasks"]
        assert [(t["id"], t["image_id"], t["status"]) for t in of_image] == [
            (task["id"], image_id, "success")
        ]
        listed = (await c.get(TASKS, params={"status": "success"})).json()
        assert [t["id"] for t in listed["tasks"]] == [task["id"]]
        assert "input" not in listed["tasks"][0]
        assert (await c.get(TASKS, params={"status": "failure"})).json()["tasks"] == []
        assert (await c.get(TASKS, params={"status": "nope"})).status_code == 400
        assert (await c.get(f"{TASKS}/00000000-0000-0000-0000-000000000000")).status_code == 404
        schema = (await c.get("/image/v2/schemas/task")).json()
        assert schema["name"] == "task"


async def test_a_failed_fetch_fails_the_task_and_leaves_no_image(
    api: ApiHarness, web_server: str
) -> None:
    async with await api.login("admin") as c:
        before = len((await c.get(IMAGES)).json()["images"])
        r = await c.post(TASKS, json=_task(f"{web_server}/missing", protected=True))
        assert r.status_code == 201, r.text
        task = r.json()
        assert task["status"] == "failure" and task["result"] is None
        assert "answered 404" in task["message"]
        assert len((await c.get(IMAGES)).json()["images"]) == before


async def test_bad_input_is_refused_before_anything_is_written(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        before = len((await c.get(IMAGES)).json()["images"])
        good = _task("http://127.0.0.1:9/x")
        bad_bodies = [
            {**good, "type": "export"},
            {"type": "import"},
            {**good, "input": {"image_properties": {}}},
            _task("file:///etc/passwd"),
            _task("http://127.0.0.1:9/x", disk_format="raw"),  # no conversion
            _task("http://127.0.0.1:9/x", min_ram="lots"),
            {**good, "extra": 1},
        ]
        for body in bad_bodies:
            r = await c.post(TASKS, json=body)
            assert r.status_code == 400, (body, r.text)
        r = await c.post(TASKS, json=_task("http://127.0.0.1:9/x", status="active"))
        assert r.status_code == 403
        assert (await c.get(TASKS)).json()["tasks"] == []
        assert len((await c.get(IMAGES)).json()["images"]) == before
    async with await api.login("demo") as c:
        assert (await c.post(TASKS, json=good)).status_code == 403
        assert (await c.get(TASKS)).status_code == 403


async def test_image_count_quota_refuses_the_task(api: ApiHarness, web_server: str) -> None:
    async with api.state.db.writer() as conn:
        await quotas_db.limits_set(conn, api.projects["admin"], {"image_count_total": 0})
    async with await api.login("admin") as c:
        r = await c.post(TASKS, json=_task(f"{web_server}/image.raw"))
        assert r.status_code == 413, r.text
        assert (await c.get(TASKS)).json()["tasks"] == []
