"""The crash suite's conductor: ``nubes`` that dies like ``kill -9`` at chosen step boundaries.

``python -m nubes.testing.crash --config-file nubes.conf conductor`` runs
the ordinary ``nubes`` command with a step-boundary hook given to the task
engine at construction (``TaskEngine(boundary=...)``): when a run passes a
boundary named in ``NUBES_TEST_CRASH_AT`` (``kind:after:step`` once a step
committed, ``kind:sent:step`` once a host was asked; comma-separated), the
process exits at once with status 137, as if killed. Production code reads
no such variable: only this entry point does (``nubes.testing.processes``
starts it for ``start_conductor(crash_at=...)``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from nubes.cmd import main as nubes_main

LOG = logging.getLogger(__name__)

#: Environment variable naming the boundaries at which the conductor dies.
CRASH_ENV = "NUBES_TEST_CRASH_AT"
#: Exit status of a process that crashed on purpose (as if killed with -9).
CRASH_EXIT_CODE = 137


class CrashAt:
    """A ``TaskEngine`` boundary hook that ends the process at ``points``."""

    def __init__(self, points: frozenset[str]) -> None:
        self.points = points

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CrashAt:
        raw = environ.get(CRASH_ENV, "")
        return cls(frozenset(p.strip() for p in raw.split(",") if p.strip()))

    def __call__(self, point: str) -> None:
        if point in self.points:
            LOG.warning("crashing at %s (%s)", point, CRASH_ENV)
            os._exit(CRASH_EXIT_CODE)


def main() -> int:
    return nubes_main.main(sys.argv[1:], step_boundary=CrashAt.from_environ(os.environ))


if __name__ == "__main__":
    sys.exit(main())
