"""A real all-in-one and Debian's Chromium, driven by Playwright, for the dashboard tests.

The browser is the system's (``/usr/bin/chromium``, ``apt-get install -y chromium``);
Playwright never downloads one. Without it the tests skip, except under CI,
where they fail. Screenshots of every main page go to
``$PYTEST_OUTPUT_DIR/screenshots`` (default: the run's pytest temporary
directory, ``.../pytest-of-<user>/pytest-<n>/screenshots``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from tests.functional.api.cli import Cloud, free_port

CHROMIUM = "/usr/bin/chromium"
#: Seconds a fake live migration takes: long enough to be seen in progress.
MIGRATION_SECONDS = 20
#: Seconds the cloud may take to stop.
STOP_TIMEOUT = 30
#: The session key the test cloud uses, so a test can make an expired session.
SESSION_KEY = Fernet.generate_key().decode()


def require_chromium() -> None:
    if os.path.exists(CHROMIUM) and shutil.which("chromium"):
        return
    message = f"Chromium is not at {CHROMIUM}; install it with: apt-get install -y chromium"
    if os.environ.get("CI"):
        pytest.fail(f"CI requires {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    base = tmp_path_factory.mktemp("dashboard")
    conf = base / "dashboard.conf"
    conf.write_text(
        "[fake_driver]\n"
        "spawn_delay = 0.5\n"
        f"migration_delay = {MIGRATION_SECONDS}\n"
        "[dashboard]\n"
        f"session_key = {SESSION_KEY}\n"
        "refresh_interval = 0.5\n"
    )
    c = Cloud(base / "state", free_port(), config_files=(conf,))
    c.start()
    assert c.proc is not None and c.proc.stdout is not None
    # Keep reading its log: a full pipe would block the cloud mid-request.
    drain = threading.Thread(target=c.output.extend, args=(c.proc.stdout,), daemon=True)
    drain.start()
    try:
        yield c
    finally:
        c.proc.send_signal(signal.SIGINT)
        try:
            c.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()
        drain.join(timeout=STOP_TIMEOUT)


def password(cloud: Cloud, name: str) -> str:
    clouds = yaml.safe_load((cloud.state_dir / "clouds.yaml").read_text())["clouds"]
    return str(clouds[f"nubes-{name}"]["auth"]["password"])


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("PYTEST_OUTPUT_DIR")
    base = Path(configured) if configured else tmp_path_factory.getbasetemp()
    path = base / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            await chromium.close()
