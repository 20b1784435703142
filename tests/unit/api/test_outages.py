"""With the database unreachable the API answers a Nova-style 503 with
Retry-After, never "An unexpected error occurred"."""

from __future__ import annotations

import shutil
from pathlib import Path

from nubes import exception
from nubes.api import errors
from tests.unit.api.conftest import ApiHarness


async def test_with_the_database_down_the_api_answers_503_with_retry_after(
    api: ApiHarness, tmp_path: Path
) -> None:
    token = await api.token("demo")
    # The database file goes away under the running API (its connections
    # closed): every request that reads it finds the database unreachable.
    await api.state.db.dispose()
    path = tmp_path / "api.sqlite"
    shutil.move(path, tmp_path / "elsewhere.sqlite")
    path.mkdir()
    async with api.client(token) as c:
        r = await c.get("/compute/v2.1/servers")
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    fault = r.json()["serviceUnavailable"]
    assert fault["code"] == 503
    assert "database is unavailable" in fault["message"]
    assert exception.GENERIC_MESSAGE not in fault["message"]


def test_a_bus_outage_is_a_503_with_retry_after_too() -> None:
    response = errors.error_response(
        "compute", exception.TransportError(hop="broker 127.0.0.1:5672", reason="refused")
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    assert b"message bus is unavailable" in response.body
