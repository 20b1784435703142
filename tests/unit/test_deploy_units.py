"""The systemd units under deploy/systemd start real console scripts with options that exist.

Every service has a unit (templated per instance where several copies run on
one host); each ExecStart names a ``[project.scripts]`` entry and parses with
that command's own argument parser; where ``systemd-analyze`` is installed,
it verifies the units too (unknown keys, a command that is not executable).
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nubes.cmd import main as main_cmd
from nubes.service import TOPICS

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALL_PREFIX = "/opt/nubes/bin/"


def _units() -> dict[str, configparser.ConfigParser]:
    found = {}
    for path in sorted(UNITS.iterdir()):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(path)
        found[path.name] = parser
    return found


def _exec_start(unit: configparser.ConfigParser, instance: str = "a") -> list[str]:
    return shlex.split(unit["Service"]["ExecStart"].replace("%i", instance))


def test_every_service_has_a_unit_templated_where_several_share_a_host() -> None:
    names = set(_units())
    assert {"nubes-api.service", "nubes-compute.service", "nubes.target"} <= names
    # Conductors and schedulers scale out by more copies, several per host.
    assert {"nubes-conductor@.service", "nubes-scheduler@.service"} <= names
    binaries = {_exec_start(u)[-1] for n, u in _units().items() if n.endswith(".service")}
    assert binaries == {"api", "console-proxy", *TOPICS}


def test_exec_start_runs_a_console_script_with_options_that_exist() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    parser = main_cmd.build_parser()
    for name, unit in _units().items():
        if not name.endswith(".service"):
            continue
        argv = _exec_start(unit)
        assert argv[0].startswith(INSTALL_PREFIX), name
        assert argv[0].removeprefix(INSTALL_PREFIX) in scripts, name
        args = parser.parse_args(argv[1:])  # exits (SystemExit) on an unknown option
        assert args.command == argv[-1]
        assert all(f.startswith("/etc/nubes/") for f in args.config_file), name
        service = unit["Service"]
        assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
        assert unit["Install"]["WantedBy"] == "nubes.target"


def test_compute_unit_gets_no_database_config() -> None:
    argv = _exec_start(_units()["nubes-compute.service"])
    assert argv[1:] == ["--config-file", "/etc/nubes/compute.conf", "compute"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    # Point ExecStart at this environment's scripts, so "is it executable" is checked.
    bindir = Path(sys.executable).parent
    assert (bindir / "nubes").exists()
    for path in UNITS.iterdir():
        text = path.read_text().replace(INSTALL_PREFIX, f"{bindir}/")
        (tmp_path / path.name).write_text(text)
    units = [
        str(tmp_path / n) for n in ("nubes-api.service", "nubes-compute.service", "nubes.target")
    ] + [str(tmp_path / f"nubes-{s}@a.service") for s in ("conductor", "scheduler")]
    for s in ("conductor", "scheduler"):
        (tmp_path / f"nubes-{s}@a.service").symlink_to(tmp_path / f"nubes-{s}@.service")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ours = [line for line in done.stderr.splitlines() if str(tmp_path) in line or "nubes" in line]
    assert not ours, done.stderr
