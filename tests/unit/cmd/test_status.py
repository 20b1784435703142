"""``nubes-manage status``: its JSON shape and exit codes (0 healthy, 1 degraded,
2 unreachable) on SQLite and memory://. The same against real RabbitMQ and
PostgreSQL processes: tests/integration/operations/test_backlog.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
from pathlib import Path

import pytest

from nubes.cmd import manage
from nubes.db import migration
from nubes.db.api import services, tasks
from nubes.db.engine import Database
from nubes.db.types import utcnow

TOP_KEYS = {
    "time",
    "queue_source",
    "queues",
    "services",
    "caps",
    "tasks",
    "verdicts",
    "status",
    "exit_code",
    "notes",
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cloud_conf(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'nubes.sqlite'}"
    asyncio.run(migration.db_sync(url))
    path = tmp_path / "nubes.conf"
    path.write_text(f"[DEFAULT]\ntransport_url = memory://\n[database]\nconnection = {url}\n")
    return path


def _status(conf: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    code = manage.main(["--config-file", str(conf), "status", "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_a_quiet_cloud_is_healthy_and_the_json_has_every_part(cloud_conf, capsys) -> None:
    code, status = _status(cloud_conf, capsys)
    assert code == 0 and status["exit_code"] == 0 and status["status"] == "healthy"
    assert set(status) == TOP_KEYS
    # memory:// lives in the all-in-one process: said, not guessed.
    assert status["queue_source"] == "memory" and status["queues"] == []
    assert "[metrics] port" in status["notes"][0]
    assert set(status["caps"]) == {"compute", "conductor", "scheduler"}
    assert set(status["tasks"]) == {
        "by_kind",
        "oldest_waiting",
        "takeovers_last_hour",
        "past_deadline",
    }
    assert status["verdicts"] == []


def test_a_service_down_and_a_task_past_its_deadline_are_degraded(cloud_conf, capsys) -> None:
    url = cloud_conf.read_text().split("connection = ")[1].strip()

    async def seed() -> None:
        db = Database(url)
        long_ago = utcnow() - dt.timedelta(hours=1)
        async with db.writer() as conn:
            svc = await services.create(
                conn, {"host": "ctl-1", "binary": "conductor", "topic": "conductor", "version": 5}
            )
            await services.heartbeat(conn, svc["id"], now=long_ago)
            await tasks.create(conn, kind="build", deadline=long_ago)
        await db.dispose()

    asyncio.run(seed())
    code, status = _status(cloud_conf, capsys)
    assert code == 1 and status["status"] == "degraded"
    assert "conductor on ctl-1 is down" in status["verdicts"]
    assert "1 tasks are past their deadline" in status["verdicts"]
    [svc] = status["services"]
    assert svc["up"] is False and svc["version"] == 5
    assert status["tasks"]["by_kind"] == {"build": {"pending": 1}}
    assert status["tasks"]["oldest_waiting"]["kind"] == "build"
    assert manage.main(["--config-file", str(cloud_conf), "status"]) == 1
    text = capsys.readouterr().out
    assert "DEGRADED" in text and "conductor on ctl-1 is down" in text


def test_a_broker_that_does_not_answer_is_exit_2(cloud_conf, capsys) -> None:
    port = _closed_port()
    text = cloud_conf.read_text().replace("memory://", f"rabbit://guest:guest@127.0.0.1:{port}/")
    cloud_conf.write_text(text)
    code, status = _status(
        cloud_conf, capsys, "--management-url", f"http://127.0.0.1:{port}", "--timeout", "1"
    )
    assert code == 2 and status["status"] == "unreachable"
    assert "cannot reach the broker: no answer within 1 s" in status["verdicts"]
    # The database part still answers.
    assert status["services"] == []
