"""The ``cloud`` fixture every CLI test module shares: a new all-in-one per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.api.cli import Cloud, free_port


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    c = Cloud(tmp_path / "state", free_port())
    c.start()
    try:
        yield c
    finally:
        if c.proc is not None and c.proc.poll() is None:
            c.stop()
