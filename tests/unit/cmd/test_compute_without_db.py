"""A compute host runs with no database configured, or a broken one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _start(tmp_path, conf_text: str) -> subprocess.Popen[str]:
    conf = tmp_path / "compute.conf"
    conf.write_text(conf_text)
    return subprocess.Popen(
        [sys.executable, "-m", "nubes.cmd.main", "--config-file", str(conf), "compute"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _read_until(proc: subprocess.Popen[str], needle: str, seconds: float) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen in {lines}")


def test_compute_runs_with_a_bad_database_url_and_no_conductor(tmp_path):
    # memory:// in its own process: no conductor answers, so heartbeats fail;
    # the compute keeps running, says so once, and never touches the DB.
    proc = _start(
        tmp_path,
        "[DEFAULT]\nhost = lonely\nreport_interval = 1\nrpc_response_timeout = 0.5\n"
        "[database]\nconnection = this-is-not-a-database://at all\n",
    )
    try:
        _read_until(proc, "compute on lonely serving topic compute as compute.lonely", 20)
        lines = _read_until(proc, "cannot report liveness", 20)
        time.sleep(3)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    # Logged once, not on every beat.
    assert text.count("cannot report liveness") == 1, text
    assert "Traceback" not in text


def test_compute_config_needs_no_database_section(tmp_path):
    proc = _start(tmp_path, "[DEFAULT]\nhost = bare\nreport_interval = 60\n")
    try:
        _read_until(proc, "serving topic compute", 20)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
