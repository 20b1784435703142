"""What a user installs with each extra is enough for the commands it offers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run a benchmark with the test-only packages made unimportable, as they are
# in a venv that installed only the ``bench`` extra.
_WITHOUT_TEST_EXTRA = """
import runpy, sys
for name in ("pytest", "hypothesis", "httpx", "_pytest"):
    sys.modules[name] = None
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_bench_scheduler_runs_without_pytest_installed(tmp_path: Path) -> None:
    # A user ran `pip install -e '.[bench]'` then `python bench/scheduler.py`
    # and got "No module named 'pytest'": the bench reached into tests/.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _WITHOUT_TEST_EXTRA,
            str(ROOT / "bench" / "scheduler.py"),
            "--hosts",
            "3",
            "--requests",
            "3",
            "--backends",
            "sqlite",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    assert "select + claim, 1 scheduler, 3 hosts, sqlite" in done.stdout


def test_sqlalchemy_dependency_brings_its_asyncio_extra() -> None:
    # `pip install -e . && nubes all-in-one` failed on a fresh machine with
    # "requires that the Python 'greenlet' library is installed": SQLAlchemy
    # 2.1 pulls greenlet only through its asyncio extra. CI's readme smoke job
    # proves the install in a fresh venv; this names the cause.
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("sqlalchemy[asyncio]") for d in deps), deps


def test_cryptography_is_a_declared_dependency() -> None:
    # nubes.api.keypairs generates and reads keys with cryptography; the venv
    # had it only through other packages, a fresh `pip install -e .` may not.
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("cryptography") for d in deps), deps
