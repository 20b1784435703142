"""Compute's steps of live migration (checks, pre, migrate with progress, post, rollback, abort, force complete).

Mixed into :class:`~nubes.compute.manager.ComputeManager`; every method
is a conductor task step run through ``_run_step`` (once per task id,
step and try; the outcome reported back). Move steps do driver work only:
the conductor writes the instance's and the migration's state
(``docs/moves.md``).
"""

from __future__ import annotations


class LiveMigrationSteps:
    """The live_migration steps of a compute host."""
