from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from nubes.cmd import manage


def test_manage_config_sample_prints_options(capsys):
    assert manage.main(["config", "sample"]) == 0
    out = capsys.readouterr().out
    assert "[database]" in out and "#connection = " in out


def test_manage_refuses_bad_file_with_exit_code(tmp_path, capsys):
    path = tmp_path / "bad.conf"
    path.write_text("[DEFAULT]\nservice_down_time = soon\n")
    assert manage.main(["--config-file", str(path), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "service_down_time" in err and str(path) in err


def test_all_in_one_starts_answers_and_stops_on_sigint(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "nubes.cmd.main", "all-in-one", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ready"):
            break
    assert any(line.startswith("Ready") for line in lines), lines
    assert any("compute" in line and "fake-1" in line for line in lines)
    assert (tmp_path / "nubes.conf").exists()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
