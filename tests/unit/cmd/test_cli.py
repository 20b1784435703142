from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from nubes.cmd import main as main_cmd
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_all_in_one_starts_answers_and_stops_on_sigint(tmp_path):
    port = str(_free_port())
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nubes.cmd.main",
            "all-in-one",
            "--state-dir",
            str(tmp_path),
            "--port",
            port,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
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
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_workers_over_one_on_the_memory_bus_is_refused(tmp_path, capsys):
    # Worker processes share the topic through the broker; memory:// cannot
    # reach another process, so N workers there would be N separate clouds.
    path = tmp_path / "nubes.conf"
    path.write_text("[DEFAULT]\ntransport_url = memory://\n[scheduler]\nworkers = 3\n")
    assert main_cmd.main(["--config-file", str(path), "scheduler"]) == 2
    assert "[scheduler] workers = 3 needs a bus the processes share" in capsys.readouterr().err


def test_the_ssh_guest_needs_real_guests(tmp_path, capsys):
    # An image only libvirt hosts boot: asked with the fake driver, refused
    # rather than registered for nothing.
    argv = ["all-in-one", "--state-dir", str(tmp_path), "--ssh-guest"]
    assert main_cmd.main(argv) == 2
    assert "--ssh-guest needs --virt libvirt" in capsys.readouterr().err
