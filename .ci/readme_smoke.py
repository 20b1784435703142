#!/usr/bin/env python3
"""CI job: do exactly what the README says, as a new user on a fresh machine.

A green CI once hid a broken install: the test extras pulled in a library
(greenlet) that a plain ``pip install -e .`` did not. So this job copies the
clone to a scratch directory, makes a brand-new virtualenv with nothing in it,
and runs the README's own shell blocks, read from README.md rather than
restated here so that the README cannot drift from what works:

- the block marked ``<!-- ci: background -->`` (install, then ``nubes
  all-in-one``) runs in the background until all-in-one prints ``Ready.``;
- every block marked ``<!-- ci: run -->`` then runs in order under
  ``bash -euo pipefail`` (install the openstack CLI, boot a server to ACTIVE,
  reboot it, delete it, manage identity with nubes-manage);
- all-in-one is stopped with SIGINT, as Ctrl-C would, and must exit 0.

Any command that fails fails the job, with the output of the step and the
tail of all-in-one's log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = re.compile(r"^<!-- ci: (background|run) -->\n```sh\n(.*?)^```", re.M | re.S)
READY_TIMEOUT = 900.0  # a cold pip install of every dependency, then the start
STOP_TIMEOUT = 60.0


def blocks(readme: str) -> list[tuple[str, str]]:
    found = [(m.group(1), m.group(2)) for m in MARK.finditer(readme)]
    kinds = [k for k, _ in found]
    if kinds[:1] != ["background"] or kinds.count("background") != 1 or len(found) < 2:
        sys.exit("readme-smoke: README must mark one background block, first, then run blocks")
    return found


def copy_clone(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files: what a clone holds."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = Path(raw.decode())
        if not (ROOT / rel).is_file():
            continue  # deleted in the work tree but still in the index
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)


def fail(message: str, log: Path | None) -> None:
    print(f"readme-smoke: FAILED: {message}", file=sys.stderr)
    if log is not None and log.exists():
        tail = log.read_text(errors="replace").splitlines()[-40:]
        print("--- all-in-one log (tail) ---", *tail, sep="\n", file=sys.stderr)
    sys.exit(1)


def main() -> int:
    readme = (ROOT / "README.md").read_text()
    steps = blocks(readme)
    with tempfile.TemporaryDirectory(prefix="nubes-readme-") as tmp:
        work = Path(tmp) / "nubes"
        work.mkdir()
        copy_clone(work)
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
        log = Path(tmp) / "all-in-one.log"

        started = time.monotonic()
        _, first = steps[0]
        print(f"readme-smoke: background: {first.strip()}", flush=True)
        with log.open("wb") as out:
            aio = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", first],
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            while b"Ready." not in log.read_bytes():
                if aio.poll() is not None:
                    fail(f"the first README command exited with {aio.returncode}", log)
                if time.monotonic() - started > READY_TIMEOUT:
                    fail("all-in-one did not print Ready.", log)
                time.sleep(1.0)
            print(f"readme-smoke: all-in-one ready in {time.monotonic() - started:.0f} s")
            for _, script in steps[1:]:
                print(f"readme-smoke: run:\n{script}", flush=True)
                done = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", script],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                print(done.stdout[-4000:])
                if done.returncode != 0:
                    print(done.stderr[-4000:], file=sys.stderr)
                    fail(f"a README block exited with {done.returncode}", log)
        finally:
            if aio.poll() is None:
                # Ctrl-C reaches the whole foreground group; so does this.
                os.killpg(aio.pid, signal.SIGINT)
        try:
            code = aio.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(aio.pid, signal.SIGKILL)
            fail("all-in-one did not stop on SIGINT", log)
        if code != 0:
            fail(f"all-in-one exited with {code} on SIGINT", log)
    print(f"readme-smoke: passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
