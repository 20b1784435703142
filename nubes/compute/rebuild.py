"""Compute's steps of rebuild in place and evacuation to this host, and removing an evacuated instance's remains.

Mixed into :class:`~nubes.compute.manager.ComputeManager`; every method
is a conductor task step run through ``_run_step`` (once per task id,
step and try; the outcome reported back). Move steps do driver work only:
the conductor writes the instance's and the migration's state
(``docs/moves.md``).
"""

from __future__ import annotations


class RebuildSteps:
    """The rebuild steps of a compute host."""
