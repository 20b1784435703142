"""The flavors boots name, kept by each API process while no flavor changes.

Every ``POST /servers`` reads its flavor with its extra specs and access
list: two statements, for rows that change about never. An API process keeps
the rows it read under the value of the flavors' generation counter
(:data:`nubes.db.api.generations.FLAVORS`) it read *before* them. Every write
in :mod:`nubes.db.api.flavors` (create, delete, description, extra specs,
access) bumps that counter in its own transaction, so the counter and the
change become visible together.

A lookup reads the counter first (one primary-key row, in the caller's
read block, on the primary) and takes a kept row only when the counter has
the value the row was kept under: no flavor write committed since that row
was read, so it is what the tables hold now. Otherwise it reads the flavor
and keeps it under the new value. A flavor deleted, disabled, made private
or taken from a project's access list is therefore seen by the next request
after the commit, in every API process, exactly as when each boot read the
flavor; and the checks (may the project use it, is it disabled) run on the
row each time, kept or not. A flavor that is not found is not kept.

Rolling upgrade: API processes of a release before this one write flavors
without bumping the counter. So that such a write cannot go unseen for
long, nothing is kept longer than :data:`KEEP_SECONDS`; once every API
process runs this release, the counter alone decides.
"""

from __future__ import annotations

import time
from typing import Any

from nubes.db.api import flavors as flavors_db
from nubes.db.api import generations
from nubes.db.engine import Connection

#: Most flavors kept; past it the process starts over (a deployment has tens).
LIMIT = 1024
#: Seconds a kept row may serve at most, whatever the counter says: the bound
#: on how long a write that did not bump it (an older release's) goes unseen.
KEEP_SECONDS = 60.0


class FlavorCache:
    """Flavor rows by ``flavorid``, valid under one value of the flavors' generation."""

    def __init__(self) -> None:
        self._generation: int | None = None
        self._rows: dict[str, dict[str, Any]] = {}
        #: time.monotonic() when the kept rows started to be kept.
        self._since = float("-inf")

    async def get_by_flavor_id(self, conn: Connection, flavorid: str) -> dict[str, Any]:
        """:func:`nubes.db.api.flavors.get_by_flavor_id` (live flavors), as the
        tables hold it now (FlavorNotFound when there is none)."""
        generation = await generations.get(conn, generations.FLAVORS)
        now = time.monotonic()
        if (
            self._generation is None
            or generation > self._generation
            or now - self._since >= KEEP_SECONDS
        ):
            # Something changed since (or may have: KEEP_SECONDS): nothing
            # kept is sure to be current.
            self._generation, self._rows, self._since = generation, {}, now
        row = self._rows.get(flavorid) if generation == self._generation else None
        if row is None:
            # Read after the counter: at least as new as the value it is kept under.
            row = await flavors_db.get_by_flavor_id(conn, flavorid)
            # A request that read an older value than the newest seen (it
            # raced a write) uses its row but does not keep it.
            if generation == self._generation:
                if len(self._rows) >= LIMIT:
                    self._rows = {}
                self._rows[flavorid] = row
        return _copy(row)


def _copy(row: dict[str, Any]) -> dict[str, Any]:
    # Callers may change what they get; the kept row must not change with it.
    return {**row, "extra_specs": dict(row["extra_specs"]), "projects": list(row["projects"])}
