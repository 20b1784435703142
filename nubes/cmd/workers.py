"""``[conductor] workers`` / ``[scheduler] workers``: N copies of a service under one parent.

Nova forks worker processes for its conductor; nubes starts each worker as a
fresh interpreter running the same command (no fork of a process that holds
an event loop, sockets and a database pool). The workers share nothing but
the bus and the database, which is already how separate conductor or
scheduler processes cooperate: they consume the same topic queue, and the
task engine gives each process its own lease owner id.

The parent runs no service itself. It restarts a worker that dies (after a
pause, so a worker that cannot start does not spin), passes SIGINT/SIGTERM
on to every worker, and exits once they have all stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from nubes.metrics import WORKER_INDEX_ENV

LOG = logging.getLogger(__name__)

#: Set in a worker's environment: it runs the service itself, not more workers.
WORKER_ENV = "NUBES_WORKER"
#: Seconds before a dead worker is started again.
RESTART_DELAY = 1.0
#: Seconds a worker has to stop after the signal before it is killed.
STOP_TIMEOUT = 30.0


def is_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def supervise(argv: Sequence[str], count: int, stop_timeout: float = STOP_TIMEOUT) -> int:
    """Run ``count`` workers of ``nubes <argv>`` until SIGINT or SIGTERM; each has
    ``stop_timeout`` seconds to stop after it (a conductor's drain included)."""
    env = {**os.environ, WORKER_ENV: "1"}
    command = [sys.executable, "-m", "nubes.cmd.main", *argv]
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    def start(index: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, env={**env, WORKER_INDEX_ENV: str(index)})
        LOG.info("worker %d of %d started (pid %d)", index + 1, count, proc.pid)
        return proc

    workers = [start(i) for i in range(count)]
    died_at: dict[int, float] = {}
    while not stopping:
        time.sleep(0.2)
        for i, proc in enumerate(workers):
            code = proc.poll()
            if code is None or stopping:
                continue
            now = time.monotonic()
            if i not in died_at:
                LOG.error("worker pid %d exited with %s; starting another", proc.pid, code)
                died_at[i] = now
            elif now - died_at[i] >= RESTART_DELAY:
                del died_at[i]
                workers[i] = start(i)
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(stopping[0])
    deadline = time.monotonic() + stop_timeout
    codes = []
    for proc in workers:
        try:
            codes.append(proc.wait(timeout=max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            LOG.error("worker pid %d did not stop in %s s; killing it", proc.pid, stop_timeout)
            proc.kill()
            codes.append(proc.wait())
    # A worker stops on the signal with 0, or dies of it when the signal came
    # before it had set up its handlers (it was still starting): both are the
    # clean stop asked for. Anything else is reported.
    clean = (0, -stopping[0])
    return 0 if all(c in clean for c in codes) else 1
